import os
import stat

import numpy as np
import pytest
from PIL import Image

from fourview import atomic
from fourview.errors import InputError
from fourview.images import MIN_PHOTO_SIDE, read_rgba, write_png


@pytest.mark.parametrize(
    "img,mode",
    [
        (np.random.default_rng(0).random((5, 7, 4), dtype=np.float32), "RGBA"),
        (np.random.default_rng(1).random((5, 7, 3), dtype=np.float32), "RGB"),
        (np.random.default_rng(2).random((5, 7, 1), dtype=np.float32), "L"),
        (np.arange(35, dtype=np.uint16).reshape(5, 7) * 1000, "I;16"),
    ],
)
def test_write_png_round_trips_8_and_16_bit(tmp_path, img, mode):
    path = tmp_path / "x.png"
    write_png(path, img)
    with Image.open(path) as im:
        assert im.mode == mode and im.size == (7, 5)
        stored = np.asarray(im)
    expected = img if img.dtype == np.uint16 else np.rint(img * 255).astype(np.uint8).squeeze()
    np.testing.assert_array_equal(stored, expected)
    if mode == "RGBA":
        np.testing.assert_allclose(read_rgba(path), expected / 255.0, atol=1e-7)
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]  # no temporary left behind


@pytest.mark.parametrize("umask,file_mode", [(0o022, 0o644), (0o077, 0o600)])
def test_write_png_gives_the_mode_of_the_umask(tmp_path, umask, file_mode):
    old = os.umask(umask)
    try:
        write_png(tmp_path / "x.png", np.zeros((2, 2, 3), np.float32))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.png").stat().st_mode) == file_mode


def test_a_failed_write_keeps_the_old_png(tmp_path, monkeypatch):
    path = tmp_path / "x.png"
    write_png(path, np.zeros((2, 2, 3), np.float32))
    before = path.read_bytes()
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(InputError, match="No space left"):
        write_png(path, np.ones((2, 2, 3), np.float32))
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["x.png"]
    with pytest.raises(InputError, match="does not exist"):
        write_png(tmp_path / "nope" / "x.png", np.ones((2, 2, 3), np.float32))


def test_16_bit_grayscale_is_scaled_by_its_depth(tmp_path):
    ramp = np.linspace(0, 65535, 16 * 64).round().astype(np.uint16).reshape(16, 64)  # a gradient, 0 to white
    Image.fromarray(ramp).save(tmp_path / "gray16.png")
    with Image.open(tmp_path / "gray16.png") as im:
        assert im.mode == "I;16"  # what Pillow gives for a 16-bit grayscale PNG
    rgba = read_rgba(tmp_path / "gray16.png")
    assert rgba.shape == (16, 64, 4) and rgba.dtype == np.float32
    for c in range(3):
        np.testing.assert_allclose(rgba[..., c], ramp / 65535.0, atol=1e-6)  # not clipped to a white silhouette
    assert (rgba[..., 3] == 1).all()
    write_png(tmp_path / "again.png", ramp)  # 16-bit through write_png too
    np.testing.assert_allclose(read_rgba(tmp_path / "again.png")[..., 0], ramp / 65535.0, atol=1e-6)


def test_palette_la_cmyk_and_exif_orientation(tmp_path):
    pal = Image.new("P", (20, 16), 0)
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.paste(1, (5, 4, 15, 12))
    pal.info["transparency"] = 0  # palette index 0 is transparent
    pal.save(tmp_path / "pal.png", transparency=0)
    rgba = read_rgba(tmp_path / "pal.png")
    assert rgba.shape == (16, 20, 4)
    np.testing.assert_array_equal(rgba[8, 10], [0, 0, 1, 1])
    assert rgba[0, 0, 3] == 0

    la = np.zeros((16, 16, 2), np.uint8)
    la[..., 0], la[4:12, 4:12, 1] = 128, 255
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    rgba = read_rgba(tmp_path / "la.png")
    np.testing.assert_allclose(rgba[8, 8], [128 / 255] * 3 + [1.0])
    assert rgba[0, 0, 3] == 0

    Image.new("CMYK", (16, 16), (255, 0, 0, 0)).save(tmp_path / "cmyk.tif")  # pure cyan ink
    Image.new("CMYK", (16, 16), (0, 0, 0, 255)).save(tmp_path / "black.jpg", quality=95)
    np.testing.assert_array_equal(read_rgba(tmp_path / "cmyk.tif")[0, 0], [0, 1, 1, 1])
    assert read_rgba(tmp_path / "black.jpg")[..., :3].max() < 0.05

    tall = np.zeros((32, 16, 3), np.uint8)
    tall[:4] = 255  # a white bar at the top of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(tall).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    shown = read_rgba(tmp_path / "phone.jpg")
    assert shown.shape == (16, 32, 4) and shown[8, -2, 0] > 0.9 and shown[8, 1, 0] < 0.1  # the bar on the right


def _png_declaring(tmp_path, width: int, height: int):
    """A small PNG file whose header declares width x height (a decompression bomb's trick)."""
    import struct
    import zlib

    path = tmp_path / f"{width}x{height}.png"
    Image.new("L", (16, 16)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = bytearray(data[12:29])  # b"IHDR" + 13 bytes of fields
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    "size, needle",
    [((20000, 20000), "decompression bomb"), ((12000, 9000), "decompression bomb"), ((8000, 6000), "over the limit")],
)
def test_huge_images_and_decompression_bombs_are_refused_in_one_line(tmp_path, size, needle):
    path = _png_declaring(tmp_path, *size)
    with pytest.raises(InputError, match=needle) as e:
        read_rgba(path)
    assert "\n" not in str(e.value) and "megapixels" in str(e.value)


def test_tiny_images_are_refused(tmp_path):
    write_png(tmp_path / "dot.png", np.zeros((1, 1, 3), np.float32))
    with pytest.raises(InputError, match=r"^image .*dot.png is 1x1 pixels: too small \(at least 2 pixels a side\)$"):
        read_rgba(tmp_path / "dot.png")  # the size's own message, not wrapped in "cannot read image"
    write_png(tmp_path / "small.png", np.zeros((12, 20, 3), np.float32))
    assert read_rgba(tmp_path / "small.png").shape == (12, 20, 4)
    with pytest.raises(InputError, match="20x12 pixels: too small"):
        read_rgba(tmp_path / "small.png", min_side=MIN_PHOTO_SIDE)

import os
import stat

import numpy as np
import pytest
from PIL import Image

from fourview import atomic
from fourview.errors import InputError
from fourview.images import read_rgba, write_png


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

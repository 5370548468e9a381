"""What a client submits: settings by kind, upload size and type, decoding, background removal, the inputs written."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fourview.errors import InputError
from fourview.server.submission import (
    JobSettings,
    UnsupportedImage,
    Upload,
    UploadTooLarge,
    check_upload,
    display_name,
    image_type,
    view_paths,
    write_photo_inputs,
    write_views_inputs,
)
from tests.server.conftest import cutout_view, png_bytes, product_photo


@pytest.mark.parametrize(
    "data, kind",
    [
        (png_bytes(product_photo()), "png"),
        (png_bytes(product_photo(), "JPEG"), "jpeg"),
        (png_bytes(product_photo(), "WEBP"), "webp"),
        (png_bytes(product_photo(), "GIF"), None),
        (b"RIFF\0\0\0\0WAVEfmt ", None),
        (b"", None),
    ],
)
def test_image_type_by_the_first_bytes(data, kind):
    assert image_type(data) == kind


def test_uploads_over_the_limit_or_of_another_type_are_refused_with_their_status():
    with pytest.raises(UploadTooLarge, match=r"^'a.png' is 0.0 MB, over the limit of 1e-05 MB$") as error:
        check_upload(Upload("a.png", png_bytes(product_photo())), 10)
    assert error.value.status_code == 413
    with pytest.raises(UnsupportedImage, match=r"^'x.bmp' is not a PNG, JPEG or WebP image$") as error:
        check_upload(Upload("x.bmp", png_bytes(product_photo(), "BMP")), 10**6)
    assert error.value.status_code == 415 and isinstance(error.value, InputError)


def test_display_names_are_one_printable_line():
    assert display_name("a\nb\x00c.png") == "abc.png"
    assert display_name(None) == display_name("\n") == "upload"
    assert len(display_name("x" * 500)) == 80


@pytest.mark.parametrize(
    "kind, settings, match",
    [
        ("text", {}, r"^prompt is empty; describe the object"),
        ("text", {"prompt": "   "}, r"^prompt is empty"),
        ("photo", {"prompt": " "}, r"^prompt is empty; describe what the photo shows, or leave it out$"),
        ("views", {"seed": 4}, r"^'seed' is a setting of the generator"),
        ("views", {"prompt": "a mug"}, r"^'prompt' is a setting of the generator"),
        ("text", {"prompt": "a", "matting": "alpha"}, r"^'matting' is a setting of photo and views jobs$"),
        ("text", {"prompt": "a", "texture_size": 48}, r"^texture size must be a power of two"),
    ],
)
def test_settings_a_kind_of_job_cannot_take(kind, settings, match):
    with pytest.raises(InputError, match=match):
        JobSettings(**settings).check(kind)


def test_settings_become_the_pipelines_settings():
    s = JobSettings(prompt="a mug", seed=7, steps=3, guidance=2.5, negative="blurry", candidates=2, elevation=10,
                    method="dmtet", faces=900, texture_size=128, grid=48)  # fmt: skip
    s.check("text")
    sampling, export = s.sampling(), s.export()
    assert (sampling.seed, sampling.steps, sampling.guidance_scale, sampling.negative_prompt) == (7, 3, 2.5, "blurry")
    assert sampling.candidates == 2 and sampling.elevation_deg == 10.0
    assert (export.face_budget, export.texture_size, export.grid_resolution, export.method) == (900, 128, 48, "dmtet")


def test_a_photo_is_cut_out_and_its_mask_kept(tmp_path):
    record = write_photo_inputs(Upload("shot.png", png_bytes(product_photo())), JobSettings(), tmp_path, 10**6)
    assert record["photo"] == "shot.png" and record["matting"]["method"] == "grabcut"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.png", "photo_rgba.png"]  # the upload itself is gone
    rgba = np.asarray(Image.open(tmp_path / "photo_rgba.png"))
    assert rgba.shape == (96, 96, 4) and rgba[48, 48, 3] == 255 and rgba[2, 2, 3] == 0
    (tmp_path / "keyed").mkdir()
    keyed = write_photo_inputs(Upload("s.png", png_bytes(product_photo())), JobSettings(matting="border_key"),
                               tmp_path / "keyed", 10**6)  # fmt: skip
    assert keyed["matting"]["method"] == "border_key"


def test_four_opaque_photos_are_cut_out_with_a_two_by_two_mask(tmp_path):
    uploads = [Upload(f"{name}.jpg", png_bytes(product_photo(64), "JPEG")) for name in ("f", "r", "b", "l")]
    record = write_views_inputs(uploads, JobSettings(), tmp_path, 10**6)
    assert record["views"] == ["f.jpg", "r.jpg", "b.jpg", "l.jpg"]
    assert [m["method"] for m in record["matting"]] == ["grabcut"] * 4
    mask = np.asarray(Image.open(tmp_path / "mask.png"))
    assert mask.shape == (128, 128) and mask[32, 32] > 200 and mask[96, 96] > 200 and mask[2, 2] < 50
    for path in view_paths(tmp_path):
        assert np.asarray(Image.open(path)).shape == (64, 64, 4)


def test_cut_outs_are_kept_as_they_are_and_views_must_match(tmp_path):
    uploads = [Upload(f"{i}.png", png_bytes(cutout_view())) for i in range(4)]
    assert write_views_inputs(uploads, JobSettings(), tmp_path, 10**6)["matting"] is None
    assert not (tmp_path / "mask.png").exists()
    np.testing.assert_array_equal(np.asarray(Image.open(view_paths(tmp_path)[0])), cutout_view())
    clear = [Upload(f"{i}.png", png_bytes(np.zeros((32, 32, 4), np.uint8))) for i in range(4)]
    with pytest.raises(InputError, match=r"^view az 0 is fully transparent: no object to reconstruct$"):
        write_views_inputs(clear, JobSettings(), tmp_path, 10**6)
    not_square = [Upload(f"{i}.png", png_bytes(np.zeros((32, 48, 4), np.uint8))) for i in range(4)]
    with pytest.raises(InputError, match=r"^views must be square, got 48x32$"):
        write_views_inputs(not_square, JobSettings(), tmp_path, 10**6)

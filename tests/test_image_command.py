"""`fourview image PHOTO -o DIR`, and `fourview reconstruct` with four opaque photos: their backgrounds removed."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image

from fourview.matting import needs_background_removal
from tests.mvgen.test_generate import FAST, run, tiny_mvgen  # noqa: F401 (tiny_mvgen is a fixture)
from tests.test_matting import iou, product_photo


@pytest.fixture(autouse=True)
def no_rembg(monkeypatch):
    """The classical path, whatever is installed here."""
    monkeypatch.setitem(sys.modules, "rembg", None)


def _save(path, rgb):
    Image.fromarray(np.rint(np.clip(rgb, 0, 1) * 255).astype(np.uint8)).save(path)
    return path


def test_image_writes_the_asset_with_its_mask(tiny_mvgen, tmp_path, capsys):  # noqa: F811
    img, truth = product_photo((0.2, 0.4, 0.85))
    photo = _save(tmp_path / "bottle.png", img)
    out = tmp_path / "bottle"
    code, stdout, err = run(["image", photo, "-o", out, "--mvgen", tiny_mvgen, "--turntable", 0, *FAST], capsys)
    assert code == 0, err
    assert "warning" not in err  # not the demo generator
    assert (out / "model.glb").read_bytes()[:4] == b"glTF"
    with Image.open(out / "mask.png") as im:
        assert im.mode == "L" and im.size == (160, 120)
        mask = np.asarray(im) >= 128
    assert iou(mask, truth) > 0.9
    with Image.open(out / "photo_rgba.png") as im:
        assert im.mode == "RGBA" and im.size == (160, 120)
        np.testing.assert_array_equal(np.asarray(im)[..., 3] >= 128, mask)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["matting"]["method"] == "grabcut" and "rembg is not installed" in meta["matting"]["note"]
    assert meta["prompt"] == "an object" and meta["image"] == str(photo) and "warning" not in meta
    assert {"mask.png", "photo_rgba.png", "views.png", "model.glb"} <= set(meta["files"])
    views = np.asarray(Image.open(out / "views.png").convert("RGB"), np.float32) / 255.0
    front = views[:32, :32]
    assert front[16, 16, 2] > 0.5 and front[16, 16, 0] < 0.4  # the blue bottle, recentred
    assert front[1, 1].min() > 0.95  # on white: the backdrop is gone
    assert "wrote" in stdout


def test_image_with_the_demo_generator_warns(tiny_mvgen, tmp_path, capsys, monkeypatch):  # noqa: F811
    """With ``--mvgen demo`` (the default) a photo gets the warning in meta.json and one line on stderr."""
    from fourview.pipeline import FourViewPipeline

    load = FourViewPipeline.from_pretrained.__func__

    def tiny_for_demo(cls, mvgen="demo", **kwargs):  # the tiny generator stands in for the demo's weights
        assert mvgen == "demo"
        pipe = load(cls, str(tiny_mvgen), **kwargs)
        pipe.names["mvgen"] = "demo"
        return pipe

    monkeypatch.setattr(FourViewPipeline, "from_pretrained", classmethod(tiny_for_demo))
    rgba = np.zeros((48, 40, 4), np.float32)
    rgba[8:40, 10:30] = [0.1, 0.6, 0.2, 1.0]
    Image.fromarray(np.rint(rgba * 255).astype(np.uint8), "RGBA").save(tmp_path / "cutout.png")
    out = tmp_path / "demo"
    code, _, err = run(
        ["image", tmp_path / "cutout.png", "-o", out, "--prompt", "a green bottle", "--turntable", 0, *FAST], capsys
    )
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("fourview: warning:")]
    assert len(warnings) == 1 and "demo generator" in warnings[0] and "20 object classes" in warnings[0]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["warning"] in warnings[0] and meta["prompt"] == "a green bottle"
    assert meta["matting"] == {"method": "alpha", "note": "the photo's own alpha channel"}
    np.testing.assert_array_equal(np.asarray(Image.open(out / "mask.png")), np.rint(rgba[..., 3] * 255))


@pytest.mark.parametrize(
    "make, args, needle",
    [
        (None, [], "image not found"),
        (lambda: np.ones((8, 8, 3)), [], "8x8 pixels: too small (at least 16"),
        (lambda: np.broadcast_to([0.3, 0.5, 0.7], (40, 40, 3)), [], "no object found"),
        (lambda: product_photo()[0], ["--matting", "alpha"], "no transparent pixels"),
        (lambda: product_photo()[0], ["--matting", "model"], "no segmentation model"),
        (lambda: product_photo()[0], ["--prompt", " "], "--prompt is empty"),
        (lambda: product_photo()[0], ["--steps", "0"], "steps"),
    ],
)
def test_bad_photos_fail_in_one_line_before_any_model_loads(make, args, needle, tmp_path, capsys, monkeypatch):
    import fourview.pipeline as pipeline_module

    def no_loading(*a, **k):
        raise AssertionError("a model loaded before the inputs were checked")

    monkeypatch.setattr(pipeline_module.FourViewPipeline, "from_pretrained", no_loading)
    photo = tmp_path / "photo.png"
    if make is not None:
        _save(photo, np.asarray(make(), np.float32))
    out = tmp_path / "out" / "asset"
    code, _, err = run(["image", photo, "-o", out, *args], capsys)
    assert code == 2, err
    assert needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def _photo_rig(tmp_path, backdrop: str):
    """Four square views of a bottle: opaque photos on a gradient backdrop, or renders on white."""
    paths = []
    for i in range(4):
        img, _ = product_photo((0.85, 0.25, 0.1), h=64, w=64, seed=i)
        if backdrop == "white":
            img = np.where(product_photo(h=64, w=64, seed=i)[1][..., None], img, 1.0)
        paths.append(_save(tmp_path / f"{backdrop}{i}.png", img))
    return paths


def test_reconstruct_cuts_out_four_opaque_photos(tmp_path, capsys):
    out = tmp_path / "photos"
    views = _photo_rig(tmp_path, "gradient")
    code, _, err = run(["reconstruct", *views, "-o", out, "--grid", "16", "--texture-size", "64"], capsys)
    assert code == 0, err
    with Image.open(out / "mask.png") as im:
        assert im.size == (128, 128)  # the 2x2 grid of the views' masks, laid out as views.png
        grid = np.asarray(im) >= 128
    _, truth = product_photo(h=64, w=64)
    for cell in (grid[:64, :64], grid[:64, 64:], grid[64:, :64], grid[64:, 64:]):
        assert iou(cell, truth) > 0.9
    meta = json.loads((out / "meta.json").read_text())
    assert [m["view"] for m in meta["matting"]] == ["az 0", "az 90", "az 180", "az 270"]
    assert {m["method"] for m in meta["matting"]} == {"grabcut"}
    sheet = np.asarray(Image.open(out / "views.png").convert("RGB"), np.float32) / 255.0
    assert sheet[1, 1].min() > 0.95  # the views on white: the backdrop went


def test_reconstruct_keeps_renders_on_white_as_they_are(tmp_path, capsys):
    out = tmp_path / "renders"
    code, _, err = run(
        ["reconstruct", *_photo_rig(tmp_path, "white"), "-o", out, "--grid", "16", "--texture-size", "64"], capsys
    )
    assert code == 0, err
    assert not (out / "mask.png").exists() and "matting" not in json.loads((out / "meta.json").read_text())


def test_which_views_need_background_removal():
    photo, truth = product_photo(h=32, w=32)
    on_white = np.where(truth[..., None], photo, 1.0)
    opaque = lambda rgb: np.concatenate([rgb, np.ones((*rgb.shape[:2], 1))], -1)  # noqa: E731
    assert needs_background_removal(np.stack([opaque(photo)] * 4))
    assert needs_background_removal(np.stack([opaque(on_white)] * 3 + [opaque(photo)]))  # one photo among renders
    assert not needs_background_removal(np.stack([opaque(on_white)] * 4))  # renders on white
    cutout = np.concatenate([photo, truth[..., None].astype(np.float64)], -1)
    assert not needs_background_removal(np.stack([cutout] * 4))  # cut-outs keep their alpha


def test_reconstruct_refuses_opaque_views_with_no_object(tmp_path, capsys):
    views = [_save(tmp_path / f"grey{i}.png", np.full((32, 32, 3), 0.5)) for i in range(4)]  # grey, no backdrop
    code, _, err = run(["reconstruct", *views, "-o", tmp_path / "out"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "view az 0 is fully opaque and its background could not be removed: no object found" in err
    assert not (tmp_path / "out").exists()

"""Background removal: the selection order (alpha, rembg model on disk, GrabCut), product photos, refusals."""

from __future__ import annotations

import sys
import types

import cv2
import numpy as np
import pytest
from PIL import Image

from fourview.errors import InputError
from fourview.matting import (
    MattingConfig,
    border_key,
    fill_holes,
    find_segmentation_model,
    largest_parts,
    remove_background,
)

BACKDROP = np.array([0.35, 0.55, 0.8], np.float32)


def product_photo(colour=(0.85, 0.25, 0.1), h=120, w=160, seed=0, texture=0.03, shadow=0.55):
    """A bottle on a vertical-gradient, textured backdrop with a soft shadow beside it; and its true mask.

    Returns:
        [h, w, 3] float32 RGB, [h, w] bool object mask (the shadow is not object).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (yy / (h - 1))[..., None]
    backdrop = np.array([0.78, 0.80, 0.84], np.float32) * (1 - t) + np.array([0.62, 0.60, 0.58], np.float32) * t
    backdrop = backdrop + texture * np.sin(xx / 3.0 + yy / 5.0)[..., None] + rng.normal(0, texture / 2, (h, w, 3))
    cy, cx = h * 0.55, w * 0.48
    body = ((xx - cx) / (w * 0.16)) ** 2 + ((yy - cy) / (h * 0.28)) ** 2 < 1
    neck = (np.abs(xx - cx) < w * 0.05) & (yy > h * 0.12) & (yy < cy)
    obj = body | neck
    spread = ((xx - cx - w * 0.12) / (w * 0.25)) ** 2 + ((yy - cy - h * 0.25) / (h * 0.07)) ** 2
    img = backdrop * (1 - (1 - shadow) * np.exp(-1.5 * spread))[..., None]  # darker, same hue
    shading = (0.75 + 0.35 * np.clip(1 - np.abs(xx - cx) / (w * 0.16), 0, 1))[..., None]
    colour = np.asarray(colour, np.float32) * shading + rng.normal(0, 0.01, (h, w, 3))
    img = np.where(obj[..., None], colour, img)
    return np.clip(img, 0, 1).astype(np.float32), obj


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.fixture
def no_rembg(monkeypatch):
    """rembg not importable, whatever is installed here."""
    monkeypatch.setitem(sys.modules, "rembg", None)


@pytest.mark.parametrize("colour", [(0.85, 0.25, 0.1), (0.2, 0.4, 0.85), (0.3, 0.3, 0.3), (0.7, 0.65, 0.6)])
@pytest.mark.parametrize("seed", [0, 1])
def test_grabcut_finds_the_object_on_a_gradient_textured_backdrop_with_a_shadow(no_rembg, colour, seed):
    img, truth = product_photo(colour, seed=seed)
    matte = remove_background(img)
    assert matte.method == "grabcut" and "rembg is not installed" in matte.note
    # measured 0.999 for each; without the shadow rule (shadow_min=1) the beige bottle takes its shadow: 0.925
    assert iou(matte.mask >= 0.5, truth) > 0.97
    assert matte.rgba.shape == (120, 160, 4) and matte.rgba.dtype == np.float32
    np.testing.assert_array_equal(matte.rgba[..., 3], matte.mask)
    np.testing.assert_allclose(matte.rgba[..., :3], img)
    soft = (matte.mask > 0.02) & (matte.mask < 0.98)
    kernel = np.ones((5, 5), np.uint8)
    edge = cv2.dilate(truth.astype(np.uint8), kernel) > cv2.erode(truth.astype(np.uint8), kernel)
    assert soft.sum() > 0.5 * edge.sum() / 5 and (soft & ~edge).sum() < 0.02 * soft.sum()  # a soft edge, at the edge
    # the plain border-colour key cannot model the gradient: it takes a band of the backdrop for object
    assert iou(border_key(img) >= 0.5, truth) < 0.6


def test_a_large_hole_through_the_object_stays_background(no_rembg):
    ring = np.zeros((60, 100, 3), np.float32) + BACKDROP
    rr, cc = np.mgrid[0:60, 0:100] + 0.5
    r = np.hypot(rr - 30, cc - 50)
    ring[(r > 12) & (r < 22)] = [0.8, 0.1, 0.1]
    ring[30, 70] = BACKDROP  # a speck of backdrop colour on the ring: filled
    alpha = remove_background(ring).mask
    assert alpha[30, 50] == 0.0 and alpha[30, 33] == 1.0 and alpha[30, 70] == 1.0


def test_fill_holes_and_largest_parts():
    mask = np.zeros((40, 40), bool)
    mask[5:35, 5:35] = True
    mask[10:20, 10:20] = False  # a large hole that looks like the backdrop: stays
    mask[25:30, 25:30] = False  # as large, but not backdrop-like (a pale part of the object): filled
    mask[22, 12] = False  # a speck: filled
    like = np.zeros((40, 40), bool)
    like[10:20, 10:20] = True
    filled = fill_holes(mask, 0.01, like)
    assert not filled[10:20, 10:20].any() and filled[25:30, 25:30].all() and filled[22, 12]
    assert not fill_holes(mask, 0.01)[25:30, 25:30].any()  # without the backdrop test every large region is a hole
    parts = np.zeros((40, 60), bool)
    parts[5:25, 5:25] = True  # 400 px
    parts[5:22, 35:52] = True  # 289 px: at least half of the largest, kept (a pair)
    parts[30:35, 30:35] = True  # 25 px: dropped
    kept = largest_parts(parts)
    assert kept[5:25, 5:25].all() and kept[5:22, 35:52].all() and not kept[30:35, 30:35].any()


def test_rgba_photo_keeps_its_alpha():
    rgba = np.zeros((32, 32, 4), np.float32)
    rgba[8:24, 10:20] = [0.1, 0.6, 0.2, 1.0]
    rgba[8:24, 9] = [0.1, 0.6, 0.2, 0.4]  # a soft edge column
    matte = remove_background(rgba)
    assert matte.method == "alpha" and matte.note == "the photo's own alpha channel"
    np.testing.assert_array_equal(matte.mask, rgba[..., 3])
    np.testing.assert_array_equal(matte.rgba, rgba)


@pytest.mark.parametrize(
    "image, needle",
    [
        (np.zeros((32, 32, 4), np.float32), "no object found"),  # all transparent
        (np.concatenate([np.ones((32, 32, 3)), np.full((32, 32, 1), 0.9)], -1), "whole photo"),  # all object
    ],
)
def test_all_background_and_all_foreground_are_refused(no_rembg, image, needle):
    with pytest.raises(InputError, match=needle) as e:
        remove_background(np.asarray(image, np.float32))
    assert "give an RGBA photo" in str(e.value) and "\n" not in str(e.value)


def test_a_framed_photo_is_all_foreground_and_backdrop_only_is_no_object(no_rembg):
    rng = np.random.default_rng(0)
    framed = np.ones((64, 64, 3), np.float32)
    framed[3:-3, 3:-3] = rng.random((58, 58, 3)) * 0.5  # a busy picture in a white frame: nothing to cut out
    with pytest.raises(InputError, match="whole photo looks like the object"):
        remove_background(framed)
    img, _ = product_photo()
    backdrop_only = np.broadcast_to(img[:, :3].mean(axis=1, keepdims=True), img.shape).copy()  # the gradient alone
    with pytest.raises(InputError, match="no object found"):
        remove_background(backdrop_only)
    with pytest.raises(InputError, match="no object found"):
        remove_background(np.broadcast_to(BACKDROP, (20, 20, 3)), MattingConfig(method="border_key"))


def test_bad_inputs_and_methods(no_rembg):
    img, _ = product_photo()
    with pytest.raises(InputError, match="too small"):
        remove_background(np.ones((1, 1, 3), np.float32))
    with pytest.raises(InputError, match="too small"):
        remove_background(np.ones((15, 40, 3), np.float32))
    with pytest.raises(InputError, match=r"\[H, W, 3\|4\]"):
        remove_background(np.ones((20, 20), np.float32))
    with pytest.raises(InputError, match="non-finite"):
        remove_background(np.full((20, 20, 3), np.nan, np.float32))
    with pytest.raises(InputError, match="no transparent pixels"):
        remove_background(img, MattingConfig(method="alpha"))
    with pytest.raises(InputError, match="no segmentation model: rembg is not installed"):
        remove_background(img, MattingConfig(method="model"))
    with pytest.raises(InputError, match="thresholds"):
        MattingConfig(background_low=0.3, background_high=0.2)
    assert remove_background(img, MattingConfig(method="border_key")).method == "border_key"


# -- the optional segmentation model, through a fake rembg ---------------------------------------


class FakeRembg(types.ModuleType):
    """rembg's two entry points: new_session(name) and remove(image, session=, only_mask=True)."""

    def __init__(self, home, fail: bool = False):
        super().__init__("rembg")
        self.home, self.fail, self.sessions = home, fail, []

    def new_session(self, name):
        assert (self.home / f"{name}.onnx").is_file(), "a session for a model that is not on disk would download it"
        self.sessions.append(name)
        return name

    def remove(self, image, session=None, only_mask=False):
        assert only_mask and session in self.sessions
        if self.fail:
            raise RuntimeError("onnxruntime exploded")
        mask = np.zeros((image.height, image.width), np.uint8)
        mask[10:40, 20:60] = 255  # a rectangle, unlike anything GrabCut would find
        return Image.fromarray(mask, "L")


@pytest.fixture
def rembg_home(tmp_path, monkeypatch):
    home = tmp_path / "u2net"
    home.mkdir()
    monkeypatch.setenv("U2NET_HOME", str(home))
    return home


def test_a_segmentation_model_on_disk_comes_before_grabcut(rembg_home, monkeypatch):
    fake = FakeRembg(rembg_home)
    monkeypatch.setitem(sys.modules, "rembg", fake)
    img, _ = product_photo()
    (rembg_home / "u2net.onnx").write_bytes(b"weights")
    matte = remove_background(img)
    assert matte.method == "rembg:u2net" and str(rembg_home / "u2net.onnx") in matte.note
    expected = np.zeros((120, 160), np.float32)
    expected[10:40, 20:60] = 1.0
    np.testing.assert_array_equal(matte.mask, expected)
    (rembg_home / "isnet-general-use.onnx").write_bytes(b"weights")
    assert remove_background(img).method == "rembg:isnet-general-use"  # the better model first
    assert remove_background(img, MattingConfig(method="grabcut")).method == "grabcut"  # when asked
    rgba = np.concatenate([img, np.zeros((120, 160, 1), np.float32)], -1)
    rgba[30:90, 50:110, 3] = 1.0
    assert remove_background(rgba).method == "alpha"  # the photo's own alpha first of all
    assert fake.sessions == ["u2net", "isnet-general-use"]


def test_rembg_without_its_model_file_falls_back_and_never_downloads(rembg_home, monkeypatch):
    fake = FakeRembg(rembg_home)
    monkeypatch.setitem(sys.modules, "rembg", fake)
    img, truth = product_photo()
    matte = remove_background(img)
    assert matte.method == "grabcut" and "none of its models" in matte.note and str(rembg_home) in matte.note
    assert fake.sessions == [] and iou(matte.mask >= 0.5, truth) > 0.9
    model, why = find_segmentation_model(("u2net",))
    assert model is None and "u2net" in why
    with pytest.raises(InputError, match="no segmentation model: rembg is installed but none"):
        remove_background(img, MattingConfig(method="model"))


def test_a_failing_segmentation_model_falls_back_to_grabcut(rembg_home, monkeypatch):
    monkeypatch.setitem(sys.modules, "rembg", FakeRembg(rembg_home, fail=True))
    (rembg_home / "u2net.onnx").write_bytes(b"weights")
    img, truth = product_photo()
    matte = remove_background(img)
    assert matte.method == "grabcut" and "RuntimeError: onnxruntime exploded" in matte.note
    assert iou(matte.mask >= 0.5, truth) > 0.9


def test_rembg_home_follows_rembg(monkeypatch, tmp_path):
    from fourview.matting import rembg_home

    monkeypatch.delenv("U2NET_HOME", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert rembg_home() == tmp_path / ".u2net"
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "models"))
    assert rembg_home() == tmp_path / "models"


# -- the border-colour key --------------------------------------------------------------------------


def disc_photo(h: int = 60, w: int = 100):
    """An opaque photo: a red disc (with a backdrop-coloured spot inside it) off-centre on a blue backdrop."""
    img = np.broadcast_to(BACKDROP, (h, w, 3)).copy()
    rr, cc = np.mgrid[0:h, 0:w] + 0.5
    disc = (rr - 25) ** 2 + (cc - 65) ** 2 < 15**2
    img[disc] = [0.8, 0.1, 0.1]
    img[24:27, 64:67] = BACKDROP  # enclosed by the object: not background
    img += np.random.default_rng(0).normal(0, 0.01, img.shape).astype(np.float32)  # sensor noise
    return np.clip(img, 0, 1), disc


def test_border_key_from_the_border_colour():
    img, disc = disc_photo()
    a = border_key(img)
    assert a.shape == (60, 100)
    assert a[0].max() == 0 and a[-1].max() == 0 and a[:, 0].max() == 0 and a[:, -1].max() == 0
    assert (a[disc] == 1.0).all()  # the whole disc, including its backdrop-coloured spot
    assert a[~disc].mean() < 0.01
    ring = np.zeros((60, 100, 3), np.float32) + BACKDROP  # a thick red ring around a big backdrop hole
    rr, cc = np.mgrid[0:60, 0:100] + 0.5
    r = np.hypot(rr - 30, cc - 50)
    ring[(r > 12) & (r < 22)] = [0.8, 0.1, 0.1]
    alpha = border_key(ring)
    assert alpha[30, 50] == 0.0 and alpha[30, 33] == 1.0  # the backdrop seen through the hole is background


@pytest.mark.parametrize("name", ["teddy_rgba.png", "catstatue_rgba.png"])
@pytest.mark.parametrize("backdrop", ["white", "green", "gradient"])
def test_real_cutouts_on_a_backdrop_with_a_shadow(shared_data, no_rembg, name, backdrop):
    """Real photos' cut-outs composited on a backdrop, with a soft shadow under them: the matte matches their alpha."""
    from fourview.images import read_rgba

    rgba = read_rgba(shared_data / "photos" / name)
    h, w = rgba.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w] / h
    back = {
        "white": np.ones((h, w, 3)),
        "green": np.broadcast_to([0.2, 0.5, 0.3], (h, w, 3)),
        "gradient": np.stack([0.8 - 0.3 * yy, 0.75 - 0.2 * yy, 0.7 - 0.1 * yy + 0.03 * np.sin(xx * 60)], -1),
    }[backdrop]
    a = rgba[..., 3:]
    bottom = np.nonzero(a[..., 0].max(axis=1) > 0.5)[0].max() / h
    back = back * (1 - 0.4 * np.exp(-(((xx - 0.5) / 0.3) ** 2) - ((yy - bottom) / 0.05) ** 2))[..., None]
    rgb = (rgba[..., :3] * a + back * (1 - a)).astype(np.float32)
    matte = remove_background(rgb)
    assert matte.method == "grabcut"
    assert iou(matte.mask >= 0.5, a[..., 0] >= 0.5) > 0.95  # measured 0.984-0.995
    assert np.abs(matte.mask - a[..., 0]).mean() < 0.02  # measured 0.004-0.006

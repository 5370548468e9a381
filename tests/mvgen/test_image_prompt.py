"""A photo as the front view: background removal, framing, mask geometry, and the inpainting pass."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from fourview.errors import InputError
from fourview.mvgen.blobs import blob_image, decode_latents, encode_images
from fourview.mvgen.image_prompt import (
    ImagePromptConfig,
    conditioning_grid,
    photo_to_rgba,
    place_in_cell,
    remove_background,
)
from fourview.mvgen.pipeline import BLOB_SIGMA
from tests.mvgen.test_pipeline import tiny_pipeline

BACKDROP = np.array([0.35, 0.55, 0.8], np.float32)


def _photo(h: int = 60, w: int = 100) -> np.ndarray:
    """An opaque photo: a red disc (with a backdrop-coloured spot inside it) off-centre on a blue backdrop."""
    img = np.broadcast_to(BACKDROP, (h, w, 3)).copy()
    rr, cc = np.mgrid[0:h, 0:w] + 0.5
    disc = (rr - 25) ** 2 + (cc - 65) ** 2 < 15**2
    img[disc] = [0.8, 0.1, 0.1]
    img[24:27, 64:67] = BACKDROP  # enclosed by the object: not background
    img += np.random.default_rng(0).normal(0, 0.01, img.shape).astype(np.float32)  # sensor noise
    return np.clip(img, 0, 1), disc


def test_remove_background_from_border_colour():
    img, disc = _photo()
    rgba = remove_background(img)
    a = rgba[..., 3]
    assert rgba.shape == (60, 100, 4)
    np.testing.assert_array_equal(rgba[..., :3], img)
    assert a[0].max() == 0 and a[-1].max() == 0 and a[:, 0].max() == 0 and a[:, -1].max() == 0
    assert (a[disc] == 1.0).all()  # the whole disc, including its backdrop-coloured spot
    assert a[~disc].mean() < 0.01
    ring = np.zeros((60, 100, 3), np.float32) + BACKDROP  # a thick red ring around a big backdrop hole
    rr, cc = np.mgrid[0:60, 0:100] + 0.5
    r = np.hypot(rr - 30, cc - 50)
    ring[(r > 12) & (r < 22)] = [0.8, 0.1, 0.1]
    alpha = remove_background(ring)[..., 3]
    assert alpha[30, 50] == 0.0 and alpha[30, 33] == 1.0  # the backdrop seen through the hole is background


def test_photo_to_rgba_keeps_real_alpha_and_rejects_empty():
    rgba = np.zeros((20, 20, 4), np.float32)
    rgba[5:15, 5:15] = [0.0, 1.0, 0.0, 1.0]
    np.testing.assert_array_equal(photo_to_rgba(rgba), rgba)
    with pytest.raises(InputError, match="no object"):
        photo_to_rgba(np.zeros((20, 20, 4), np.float32))
    with pytest.raises(InputError, match="no object"):
        photo_to_rgba(np.broadcast_to(BACKDROP, (20, 20, 3)))  # nothing but backdrop
    with pytest.raises(InputError, match=re.escape("expected an RGB or RGBA image [H, W, 3|4], got (20, 20)")):
        photo_to_rgba(np.zeros((20, 20), np.float32))


@pytest.mark.parametrize("fill", [0.5, 0.8])
def test_place_in_cell_recentres_and_scales(fill):
    rgba = np.zeros((60, 100, 4), np.float32)
    rgba[5:25, 60:100] = [0.2, 0.4, 0.9, 1.0]  # 20 x 40 box in the top-right corner
    cell = 64
    out = place_in_cell(rgba, cell, fill)
    assert out.shape == (cell, cell, 4)
    rows, cols = np.nonzero(out[..., 3] >= 0.5)
    assert (cols.max() + 1 - cols.min()) == pytest.approx(fill * cell, abs=1.0)  # longer side = fill
    assert (rows.max() + 1 - rows.min()) == pytest.approx(fill * cell / 2, abs=1.0)  # aspect kept
    assert (rows.min() + rows.max() + 1) / 2 == pytest.approx(cell / 2, abs=1.0)  # centred
    assert (cols.min() + cols.max() + 1) / 2 == pytest.approx(cell / 2, abs=1.0)
    # premultiplied resampling: edge pixels keep the object's colour (no dark fringe from the empty surround)
    covered = out[..., 3] > 0.05
    assert covered.sum() > (out[..., 3] > 0.99).sum()  # there are soft edge pixels
    np.testing.assert_allclose(out[covered, :3], np.broadcast_to([0.2, 0.4, 0.9], (covered.sum(), 3)), atol=1e-4)


def test_conditioning_grid_and_mask_geometry():
    img, _ = _photo()
    cond = conditioning_grid(img, 64)
    assert cond.grid.shape == (64, 64, 3) and cond.mask.shape == (64, 64) and cond.front.shape == (32, 32, 4)
    assert (cond.mask[:32, :32] == 0).all()  # keep the front cell (az 0, top-left)
    assert (cond.mask[32:] == 1).all() and (cond.mask[:, 32:] == 1).all()  # generate the other three
    assert (cond.grid[32:] == 1).all() and (cond.grid[:, 32:] == 1).all()  # white when no start image
    a = cond.front[..., 3:]
    np.testing.assert_allclose(cond.grid[:32, :32], cond.front[..., :3] * a + 1 - a, atol=1e-6)
    obj = cond.front[..., 3] > 0.5
    assert obj[16, 4] and not obj[2, 2] and not obj[29, 29]  # the disc is in the middle
    assert cond.front[obj, 0].mean() > 0.6 and cond.front[obj, 2].mean() < 0.3  # and it is red
    blob = blob_image(64, 0.2)
    with_blob = conditioning_grid(img, 64, fill_other=blob)
    np.testing.assert_array_equal(with_blob.grid[32:], blob[32:])
    np.testing.assert_array_equal(with_blob.grid[:32, :32], cond.grid[:32, :32])
    with pytest.raises(InputError, match="grid size must be a positive even number of pixels, got 63"):
        conditioning_grid(img, 63)
    with pytest.raises(InputError, match=re.escape("image fill must be in (0, 1], got 0.0")):
        ImagePromptConfig(fill=0.0)


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


@pytest.mark.parametrize("strength", [1.0, 0.6])
def test_inpainting_keeps_the_front_cell_and_generates_the_rest(pipe, strength):
    img, _ = _photo()
    out = pipe("a red ball", num_inference_steps=5, seed=0, image=img, blob_strength=strength)
    cond = conditioning_grid(img, 64, fill_other=blob_image(64, BLOB_SIGMA) if strength < 1 else None)
    known = encode_images(pipe.sdxl.vae, torch.from_numpy(cond.grid).permute(2, 0, 1)[None])  # [1, 4, 32, 32]
    # with a 4-channel UNet diffusers blends the known latents back every step; after the last step
    # the front cell's latents are exactly the photo's
    torch.testing.assert_close(out.latents[..., :16, :16], known[..., :16, :16], rtol=1e-5, atol=1e-5)
    for rows, cols in [(slice(0, 16), slice(16, 32)), (slice(16, 32), slice(0, 16)), (slice(16, 32), slice(16, 32))]:
        assert (out.latents[..., rows, cols] - known[..., rows, cols]).abs().mean() > 0.05
    # the output's front cell is the photo itself (keep_photo), its front view the photo's RGBA
    np.testing.assert_array_equal(out.grids[0, :32, :32], cond.grid[:32, :32])
    np.testing.assert_array_equal(out.views[0, 0], cond.front)
    # without keep_photo the front cell is the decoded latents (the VAE round trip; closeness in pixels
    # needs a trained VAE: tests/mvgen/test_generate.py checks it with the demo weights)
    raw = pipe("a red ball", num_inference_steps=5, seed=0, image=img, blob_strength=strength,
               image_config=ImagePromptConfig(keep_photo=False))  # fmt: skip
    decoded = decode_latents(pipe.sdxl.vae, raw.latents)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(raw.grids[0], decoded, atol=1e-6)
    torch.testing.assert_close(raw.latents, out.latents)


def test_inpainting_with_rgba_photo_and_batch(pipe):
    rgba = np.zeros((40, 40, 4), np.float32)
    rgba[10:30, 15:25] = [0.1, 0.6, 0.2, 1.0]
    out = pipe(["a green bottle", "a green vase"], num_inference_steps=3, seed=[0, 1], image=rgba)
    assert out.grids.shape == (2, 64, 64, 3)
    torch.testing.assert_close(out.latents[0, :, :16, :16], out.latents[1, :, :16, :16], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["teddy_rgba.png", "catstatue_rgba.png"])
@pytest.mark.parametrize("backdrop", [(1.0, 1.0, 1.0), (0.2, 0.5, 0.3)])
def test_background_removal_on_real_cutouts(shared_data, name, backdrop):
    """Real photos' cut-outs composited on a plain backdrop: the estimated alpha matches theirs."""
    from fourview.images import read_rgba

    rgba = read_rgba(shared_data / "photos" / name)
    rgb = rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:]) * np.asarray(backdrop, np.float32)
    est = remove_background(rgb)[..., 3]
    truth, got = rgba[..., 3] > 0.5, est > 0.5
    assert (truth & got).sum() / (truth | got).sum() > 0.95  # measured 0.970-0.996
    assert np.abs(est - rgba[..., 3]).mean() < 0.03  # measured 0.003-0.016


def test_inpainting_and_blob_start_with_an_8_channel_latent():
    """diffusers' img2img/inpainting pipelines take latents only from 4-channel VAEs; ours any (the demo has 8)."""
    from dataclasses import replace

    from fourview.mvgen.components import build_components
    from fourview.mvgen.config import mvgen_preset
    from fourview.mvgen.pipeline import MultiViewPipeline

    tiny = mvgen_preset("tiny")
    cfg = replace(tiny, vae=replace(tiny.vae, latent_channels=8))
    pipe = MultiViewPipeline.from_components(build_components(cfg, seed=0), name="tiny8")
    img, _ = _photo()
    out = pipe("a red ball", num_inference_steps=4, seed=0, image=img, blob_strength=0.6)
    cond = conditioning_grid(img, 64, fill_other=blob_image(64, BLOB_SIGMA))
    known = encode_images(pipe.sdxl.vae, torch.from_numpy(cond.grid).permute(2, 0, 1)[None])  # [1, 8, 32, 32]
    assert out.latents.shape == (1, 8, 32, 32)
    torch.testing.assert_close(out.latents[..., :16, :16], known[..., :16, :16], rtol=1e-5, atol=1e-5)
    assert (out.latents[..., 16:, 16:] - known[..., 16:, 16:]).abs().mean() > 0.05
    blob = pipe("a red ball", num_inference_steps=4, seed=0, blob_strength=0.6)
    assert blob.latents.shape == (1, 8, 32, 32) and np.isfinite(blob.grids).all()

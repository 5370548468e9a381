"""A photo as the front view: framing, mask geometry, and the inpainting pass (background removal: test_matting)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from fourview.errors import InputError
from fourview.matting import MattingConfig, remove_background
from fourview.mvgen.blobs import blob_image, decode_latents, encode_images
from fourview.mvgen.image_prompt import (
    PHOTO_PROMPT,
    ImagePromptConfig,
    conditioning_grid,
    demo_photo_warning,
    place_in_cell,
)
from fourview.mvgen.pipeline import BLOB_SIGMA
from tests.mvgen.test_pipeline import tiny_pipeline
from tests.test_matting import BACKDROP, disc_photo


def test_the_grid_takes_a_photo_or_its_matte():
    rgba = np.zeros((20, 20, 4), np.float32)
    rgba[5:15, 5:15] = [0.0, 1.0, 0.0, 1.0]
    cond = conditioning_grid(rgba, 32)
    np.testing.assert_array_equal(conditioning_grid(remove_background(rgba), 32).front, cond.front)
    img, _ = disc_photo()
    key = conditioning_grid(img, 64, ImagePromptConfig(matting=MattingConfig(method="border_key")))
    matte = remove_background(img, MattingConfig(method="border_key"))
    np.testing.assert_array_equal(conditioning_grid(matte, 64).front, key.front)
    with pytest.raises(InputError, match="no object"):
        conditioning_grid(np.zeros((20, 20, 4), np.float32), 32)
    with pytest.raises(InputError, match="no object"):
        conditioning_grid(np.broadcast_to(BACKDROP, (20, 20, 3)), 32)  # nothing but backdrop
    with pytest.raises(InputError):
        conditioning_grid(np.zeros((20, 20), np.float32), 32)


def test_the_demo_generator_warns_about_photos():
    from fourview.data.synthetic import SHAPES

    warning = demo_photo_warning("demo")
    assert f"{len(SHAPES)} object classes" in warning and "mug" in warning and "--mvgen" in warning
    assert "\n" not in warning
    assert demo_photo_warning("stabilityai/stable-diffusion-xl-base-1.0") is None and demo_photo_warning(None) is None
    assert PHOTO_PROMPT == "an object"


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
    img, _ = disc_photo()
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
    img, _ = disc_photo()
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


def test_inpainting_and_blob_start_with_an_8_channel_latent():
    """diffusers' img2img/inpainting pipelines take latents only from 4-channel VAEs; ours any (the demo has 8)."""
    from dataclasses import replace

    from fourview.mvgen.components import build_components
    from fourview.mvgen.config import mvgen_preset
    from fourview.mvgen.pipeline import MultiViewPipeline

    tiny = mvgen_preset("tiny")
    cfg = replace(tiny, vae=replace(tiny.vae, latent_channels=8))
    pipe = MultiViewPipeline.from_components(build_components(cfg, seed=0), name="tiny8")
    img, _ = disc_photo()
    out = pipe("a red ball", num_inference_steps=4, seed=0, image=img, blob_strength=0.6)
    cond = conditioning_grid(img, 64, fill_other=blob_image(64, BLOB_SIGMA))
    known = encode_images(pipe.sdxl.vae, torch.from_numpy(cond.grid).permute(2, 0, 1)[None])  # [1, 8, 32, 32]
    assert out.latents.shape == (1, 8, 32, 32)
    torch.testing.assert_close(out.latents[..., :16, :16], known[..., :16, :16], rtol=1e-5, atol=1e-5)
    assert (out.latents[..., 16:, 16:] - known[..., 16:, 16:]).abs().mean() > 0.05
    blob = pipe("a red ball", num_inference_steps=4, seed=0, blob_strength=0.6)
    assert blob.latents.shape == (1, 8, 32, 32) and np.isfinite(blob.grids).all()

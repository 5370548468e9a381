"""The Gaussian-blob start: blob image geometry, its encoding, and how strength enters sampling."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from fourview.errors import InputError
from fourview.mvgen.blobs import blob_image, blob_latents, check_strength, decode_latents, encode_images
from tests.mvgen.test_pipeline import tiny_pipeline


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


def test_blob_image_one_gaussian_centred_in_each_cell():
    size, sigma = 96, 0.15
    img = blob_image(size, sigma, colour=0.25)
    assert img.shape == (size, size, 3) and img.dtype == np.float32
    cell = size // 2
    centre = (np.arange(cell) + 0.5).reshape(-1, 1)
    for r0 in (0, cell):
        for c0 in (0, cell):
            w = 1.0 - img[r0 : r0 + cell, c0 : c0 + cell, 0].astype(np.float64)  # [cell, cell] blob weight
            # centroid at the cell centre, spread sigma * cell (truncation at the cell border is tiny)
            row_c = (w * centre).sum() / w.sum()
            col_c = (w * centre.T).sum() / w.sum()
            assert row_c == pytest.approx(cell / 2, abs=1e-9) and col_c == pytest.approx(cell / 2, abs=1e-9)
            spread = np.sqrt((w * (centre - cell / 2) ** 2).sum() / w.sum())
            assert spread == pytest.approx(sigma * cell, rel=0.02)
            darkest = np.unravel_index(np.argmin(img[r0 : r0 + cell, c0 : c0 + cell, 0]), (cell, cell))
            assert set(darkest) <= {cell // 2 - 1, cell // 2}
    # the four cells are the same blob; centre has about the blob colour; corners are white
    np.testing.assert_array_equal(img[:cell, :cell], img[cell:, cell:])
    assert img[cell // 2, cell // 2, 0] == pytest.approx(0.25, abs=0.01)
    assert img[0, 0].min() > 0.999 and img[cell - 1, cell].min() > 0.999


def test_blob_sigma_sets_the_object_size_and_colour_is_rgb():
    small = (blob_image(64, 0.1)[..., 0] < 0.75).mean()
    large = (blob_image(64, 0.3)[..., 0] < 0.75).mean()
    assert large > 4 * small  # area grows with sigma squared
    rgb = blob_image(64, 0.2, colour=(1.0, 0.0, 0.5))
    np.testing.assert_allclose(rgb[16, 16], [1.0, 0.006, 0.503], atol=0.002)  # 0.7 px from the centre


@pytest.mark.parametrize(
    "args, message",
    [((63, 0.2), "grid size must be a positive even"), ((0, 0.2), "grid size must be a positive even")]
    + [((64, 0.0), "blob sigma must be > 0"), ((64, -1.0), "blob sigma must be > 0")],
)
def test_blob_image_rejects_bad_settings(args, message):
    with pytest.raises(InputError, match=message):
        blob_image(*args)
    with pytest.raises(InputError, match=re.escape("blob colour must lie in [0, 1], got 1.5")):
        blob_image(64, 0.2, colour=1.5)


def test_check_strength():
    check_strength(1.0, 1)
    check_strength(0.5, 2)
    for strength, steps, message in [
        (0.0, 10, re.escape("blob strength must be in (0, 1]")),
        (1.5, 10, re.escape("blob strength must be in (0, 1]")),
        (0.05, 10, "blob strength 0.05 with 10 steps runs no denoising step"),
    ]:
        with pytest.raises(InputError, match=message):
            check_strength(strength, steps)


def test_encoding_is_deterministic_and_matches_the_vae(pipe):
    vae = pipe.sdxl.vae
    a = blob_latents(vae, 64, 0.2)
    b = blob_latents(vae, 64, 0.2)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    x = torch.from_numpy(blob_image(64, 0.2)).permute(2, 0, 1)[None] * 2 - 1
    with torch.no_grad():
        ref = vae.encode(x).latent_dist.mean * vae.config.scaling_factor
    torch.testing.assert_close(a, ref)
    assert a.shape == (1, 4, 32, 32)
    img = decode_latents(vae, a)
    assert img.shape == (1, 3, 64, 64) and 0 <= img.min() and img.max() <= 1
    with torch.no_grad():
        torch.testing.assert_close(img, (vae.decode(ref / vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1))
    torch.testing.assert_close(encode_images(vae, torch.ones(1, 3, 64, 64)).shape, a.shape)


def test_strength_one_is_plain_text_to_image(pipe):
    out = pipe("a red mug", num_inference_steps=4, seed=3, blob_strength=1.0, blob_sigma=0.1)
    ref = pipe.sdxl(
        "a red mug", num_inference_steps=4, generator=[torch.Generator().manual_seed(3)], output_type="latent"
    ).images  # diffusers' own text-to-image with the same seed
    torch.testing.assert_close(out.latents, ref, rtol=0, atol=0)


def _count_unet_calls(pipe, **kwargs) -> tuple[int, torch.Tensor]:
    calls = []
    handle = pipe.sdxl.unet.register_forward_hook(lambda *a: calls.append(1))
    try:
        out = pipe("a red mug", seed=3, **kwargs)
    finally:
        handle.remove()
    return len(calls), out.latents


def test_blob_start_runs_the_tail_of_the_schedule_and_depends_on_the_blob(pipe):
    n_full, plain = _count_unet_calls(pipe, num_inference_steps=10, blob_strength=1.0)
    n_part, narrow = _count_unet_calls(pipe, num_inference_steps=10, blob_strength=0.3, blob_sigma=0.1)
    _, wide = _count_unet_calls(pipe, num_inference_steps=10, blob_strength=0.3, blob_sigma=0.35)
    assert (n_full, n_part) == (10, 3)  # int(steps * strength) steps from the noised blob
    assert (narrow - wide).abs().max() > 1e-3  # the blob shapes the result
    assert (narrow - plain).abs().max() > 1e-3
    _, same_narrow = _count_unet_calls(pipe, num_inference_steps=10, blob_strength=0.3, blob_sigma=0.1)
    torch.testing.assert_close(narrow, same_narrow, rtol=0, atol=0)


def test_low_strength_stays_closer_to_the_blob(pipe):
    """The less of the schedule runs, the closer the result stays to the encoded blob."""
    target = blob_latents(pipe.sdxl.vae, 64, 0.2)
    dists = []
    for strength in (1.0, 0.5, 0.1):
        out = pipe("a red mug", num_inference_steps=20, seed=0, blob_strength=strength, guidance_scale=1.0)
        dists.append(float((out.latents - target).pow(2).mean().sqrt()))
    assert dists[2] < dists[1] < dists[0]

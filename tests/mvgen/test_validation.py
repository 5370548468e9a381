"""Validation samples of the generator's trainers (`fourview.mvgen.validation`) on a tiny random SDXL."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from fourview.mvgen.components import build_components
from fourview.mvgen.config import mvgen_preset
from fourview.mvgen.validation import default_val_prompts, validation_images, write_validation


def test_latents_are_decoded_one_at_a_time_with_the_batchs_images(monkeypatch):
    from diffusers import StableDiffusionXLPipeline

    torch.set_num_threads(1)
    pipe = StableDiffusionXLPipeline(**build_components(mvgen_preset("tiny"), seed=0), add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    prompts = ("a red box", "a blue box", "a green box")
    gens = [torch.Generator().manual_seed(7 + i) for i in range(3)]
    reference = pipe(prompt=list(prompts), num_inference_steps=2, guidance_scale=2.0, height=64, width=64,
                     generator=gens, output_type="np").images  # fmt: skip
    sizes = []
    decode = pipe.vae._decode
    monkeypatch.setattr(pipe.vae, "_decode", lambda z, *a, **k: sizes.append(z.shape[0]) or decode(z, *a, **k))
    images = validation_images(pipe, prompts, 64, 2, 2.0, seed=7)
    assert sizes == [1, 1, 1] and not pipe.vae.use_slicing  # one latent per decode; the VAE as it was
    assert len(images) == 3 and images[0].shape == (64, 64, 3)
    np.testing.assert_allclose(np.stack(images), reference, atol=1e-5)


def test_write_validation_tiles_and_settings(tmp_path):
    images = [np.full((8, 8, 3), v, np.float32) for v in (0.0, 0.5, 1.0, 0.25, 0.75)]
    folder = write_validation(tmp_path, 12, images, {"prompts": list("abcde"), "seed": 3})
    assert folder == tmp_path / "val" / "step_000012" and len(list(folder.glob("*.png"))) == 5
    mosaic = np.asarray(Image.open(tmp_path / "val" / "step_000012.png"))
    assert mosaic.shape == (16, 32, 3)  # rows of 4
    assert (mosaic[8:, 0:8] == 191).all() and (mosaic[8:, 8:] == 255).all()  # the fifth, then white
    assert json.loads((tmp_path / "val" / "settings.json").read_text())["seed"] == 3
    assert len(default_val_prompts()) == 12 and all(p.startswith("a ") for p in default_val_prompts())

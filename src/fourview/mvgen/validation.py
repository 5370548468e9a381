"""Validation samples of the generator's trainers: drawn with fixed seeds, written as PNGs and one mosaic."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fourview.atomic import write_file_atomic, write_text_atomic
from fourview.data.synthetic import combinations


def default_val_prompts() -> tuple[str, ...]:
    """Eight held-out (shape, colour) combinations of the synthetic world, then four training ones."""
    held, seen = combinations("heldout"), combinations("train")
    picks = [held[i] for i in range(0, len(held), max(1, len(held) // 8))][:8]
    picks += [seen[i] for i in range(0, len(seen), max(1, len(seen) // 4))][:4]
    return tuple(f"a {colour} {shape}" for shape, colour in picks)


def validation_images(pipe, prompts, resolution: int, steps: int, guidance: float, seed: int) -> list[np.ndarray]:
    """The validation samples: prompt ``i`` drawn with ``torch.Generator().manual_seed(seed + i)``.

    The prompts are denoised as one batch; the VAE decodes their latents one at a time (at full
    size a batch of decoded images would not fit in memory).

    Args:
        pipe: a ``StableDiffusionXLPipeline``.
        prompts: the prompts.
        resolution: grid side, pixels.
        steps: sampler steps.
        guidance: classifier-free guidance scale (1: none).
        seed: the first prompt's seed.

    Returns:
        One ``[R, R, 3]`` float array in [0, 1] per prompt.
    """
    gens = [torch.Generator().manual_seed(seed + i) for i in range(len(prompts))]
    vae = pipe.vae
    slicing = vae.use_slicing
    vae.use_slicing = True  # AutoencoderKL.decode: one latent at a time
    try:
        with torch.no_grad():
            out = pipe(
                prompt=list(prompts),
                num_inference_steps=steps,
                guidance_scale=guidance,
                height=resolution,
                width=resolution,
                generator=gens,
                output_type="np",
            )
    finally:
        vae.use_slicing = slicing
    return list(out.images)


def write_validation(out: Path, step: int, images: list[np.ndarray], settings: dict) -> Path:
    """Write ``OUT/val/step_NNNNNN/NN.png``, all of them in ``OUT/val/step_NNNNNN.png`` (rows of 4) and
    ``OUT/val/settings.json`` (how they were drawn); returns the step's folder.

    Args:
        out: the run's folder.
        step: the optimizer step.
        images: ``[R, R, 3]`` float arrays in [0, 1] (`validation_images`).
        settings: prompts, resolution, sampler settings and seed, as JSON.
    """
    folder = out / "val" / f"step_{step:06d}"
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "val" / "settings.json", json.dumps(settings, indent=1) + "\n")
    tiles = [(np.clip(im, 0, 1) * 255).round().astype(np.uint8) for im in images]
    for i, t in enumerate(tiles):
        _write_png(folder / f"{i:02d}.png", t)
    side = tiles[0].shape[0]
    cols = min(4, len(tiles))
    rows = math.ceil(len(tiles) / cols)
    mosaic = np.full((rows * side, cols * side, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        r, k = divmod(i, cols)
        mosaic[r * side : (r + 1) * side, k * side : (k + 1) * side] = t
    _write_png(out / "val" / f"step_{step:06d}.png", mosaic)
    return folder


def _write_png(path: Path, image: np.ndarray) -> None:
    write_file_atomic(path, lambda f: Image.fromarray(image).save(f, format="PNG"))

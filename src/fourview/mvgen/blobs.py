"""The Gaussian-blob start of the multi-view generator (the seed's trick).

Instead of pure noise, sampling starts from an image of four 2D Gaussians on white, one centred in
each cell of the 2x2 grid (`fourview.cameras`: ``[[az 0, az 90], [az 180, az 270]]``), encoded by
the VAE and noised to an intermediate step of the schedule (img2img with ``strength < 1``). The
blobs pin one object to the centre of each cell, keep the background clean, and their width sets
the object's size. ``strength`` is the fraction of the schedule that is run: 1.0 starts from pure
noise (the blob has no influence: plain text-to-image), smaller values keep more of the blob.
"""

from __future__ import annotations

import numpy as np
import torch

from fourview.errors import InputError

BLOB_SIGMA: float = 0.17
"""Default width of each start blob, as a fraction of the cell side: the spread of the synthetic
world's rig renders (the standard deviation of their alpha about the view's centre, x and y)."""


def blob_image(size: int, sigma: float = BLOB_SIGMA, colour: float | tuple[float, float, float] = 0.5) -> np.ndarray:
    """Four Gaussian blobs on white, one centred in each cell of a ``size`` x ``size`` grid.

    Pixel ``(row, col)`` has its centre at ``(row + 0.5, col + 0.5)``; the blob of the cell with
    top-left corner ``(r0, c0)`` is centred at ``(r0 + cell / 2, c0 + cell / 2)`` with
    ``cell = size / 2``. Each pixel is ``1 - g * (1 - colour)`` with ``g = exp(-d^2 / (2 s^2))``,
    ``d`` the distance to its cell's centre and ``s = sigma * cell``; so the blob's centre has the
    blob colour and the background is white. Cells do not leak into each other (each pixel sees
    only its own cell's blob), which keeps the four objects apart.

    Args:
        size: grid side, pixels (even).
        sigma: standard deviation of each Gaussian as a fraction of the cell side, > 0.
        colour: blob colour at its centre, grey level or RGB in [0, 1].

    Returns:
        [size, size, 3] float32 RGB in [0, 1], row 0 at the top.

    Raises:
        InputError: an odd or non-positive size, a non-positive sigma, a colour outside [0, 1].
    """
    if size < 2 or size % 2:
        raise InputError(f"grid size must be a positive even number of pixels, got {size}")
    if not sigma > 0:
        raise InputError(f"blob sigma must be > 0 (a fraction of the cell side), got {sigma}")
    rgb = np.broadcast_to(np.asarray(colour, dtype=np.float64), (3,))
    if not ((rgb >= 0) & (rgb <= 1)).all():
        raise InputError(f"blob colour must lie in [0, 1], got {colour}")
    cell = size // 2
    c = (np.arange(cell) + 0.5) - cell / 2.0  # pixel centres relative to the cell centre
    d2 = c[:, None] ** 2 + c[None, :] ** 2  # [cell, cell]
    g = np.exp(-d2 / (2.0 * (sigma * cell) ** 2))  # [cell, cell]
    one_cell = 1.0 - g[..., None] * (1.0 - rgb)  # [cell, cell, 3]
    return np.tile(one_cell, (2, 2, 1)).astype(np.float32)  # [size, size, 3]


@torch.no_grad()
def encode_images(vae, images: torch.Tensor) -> torch.Tensor:
    """Deterministic VAE latents of RGB images, scaled as the diffusion model expects.

    The mean of the latent distribution (no sampling, so no random numbers are drawn), then
    diffusers' SDXL scaling: ``(z - latents_mean) * scaling_factor / latents_std`` when the VAE's
    config carries ``latents_mean``/``latents_std``, else ``z * scaling_factor``.

    Args:
        vae: a diffusers ``AutoencoderKL``.
        images: [B, 3, H, W] float RGB in [0, 1] (H, W multiples of the VAE's downsampling).

    Returns:
        [B, C, H / f, W / f] latents in the VAE's dtype and device.
    """
    param = next(vae.parameters())
    x = images.to(device=param.device, dtype=param.dtype) * 2.0 - 1.0  # [B, 3, H, W] in [-1, 1]
    z = vae.encode(x).latent_dist.mean  # [B, C, h, w]
    cfg = vae.config
    mean, std = getattr(cfg, "latents_mean", None), getattr(cfg, "latents_std", None)
    if mean is not None and std is not None:
        mean = torch.tensor(mean, device=z.device, dtype=z.dtype).view(1, -1, 1, 1)
        std = torch.tensor(std, device=z.device, dtype=z.dtype).view(1, -1, 1, 1)
        return (z - mean) * cfg.scaling_factor / std
    return z * cfg.scaling_factor


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """Inverse of `encode_images`'s scaling, then the VAE decoder: [B, C, h, w] -> [B, 3, H, W] RGB in [0, 1]."""
    param = next(vae.parameters())
    cfg = vae.config
    z = latents.to(device=param.device, dtype=param.dtype)
    mean, std = getattr(cfg, "latents_mean", None), getattr(cfg, "latents_std", None)
    if mean is not None and std is not None:
        mean = torch.tensor(mean, device=z.device, dtype=z.dtype).view(1, -1, 1, 1)
        std = torch.tensor(std, device=z.device, dtype=z.dtype).view(1, -1, 1, 1)
        z = z * std / cfg.scaling_factor + mean
    else:
        z = z / cfg.scaling_factor
    x = vae.decode(z).sample  # [B, 3, H, W] in about [-1, 1]
    return (x.float() / 2.0 + 0.5).clamp(0.0, 1.0)


def blob_latents(
    vae, size: int, sigma: float = BLOB_SIGMA, colour: float | tuple[float, float, float] = 0.5
) -> torch.Tensor:
    """`encode_images` of `blob_image`: [1, C, size / f, size / f]."""
    img = torch.from_numpy(blob_image(size, sigma, colour)).permute(2, 0, 1)[None]  # [1, 3, size, size]
    return encode_images(vae, img)


def check_strength(strength: float, steps: int) -> None:
    """Reject a start strength outside (0, 1] or one that leaves no denoising step.

    diffusers runs ``int(steps * strength)`` of the ``steps`` steps when starting from an image.

    Raises:
        InputError: the strength is not in (0, 1], or ``int(steps * strength) < 1``.
    """
    if not 0.0 < strength <= 1.0:
        raise InputError(f"blob strength must be in (0, 1] (1 = start from pure noise), got {strength}")
    if int(steps * strength) < 1:
        raise InputError(
            f"blob strength {strength} with {steps} steps runs no denoising step; raise the strength or the steps"
        )

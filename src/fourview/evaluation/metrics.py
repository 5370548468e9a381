"""Image metrics of rendered novel views against the ground truth's: PSNR, SSIM and LPIPS.

Images are composited on white first (RGBA renders; docs/conventions.md). Every metric is
computed per view and averaged over the views. PSNR and SSIM are `fourview.recon.losses`' (SSIM:
11 x 11 Gaussian window, sigma 1.5, data range 1, the numbers of scikit-image's
``structural_similarity`` with Gaussian weights).

LPIPS (AlexNet backbone) runs only when its weights are on this machine: the ``lpips`` package
ships its linear layers, but the backbone's ImageNet weights come from torchvision downloads,
which we never attempt (`fourview.recon.losses.lpips_status` looks for them in torch hub's
cache, as training's ``perceptual="auto"`` does). Without them LPIPS is reported unavailable,
with the reason, and no other metric takes its place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fourview.errors import InputError
from fourview.images import composite_on_white
from fourview.recon.losses import PerceptualLoss, lpips_status, make_perceptual_loss, psnr, ssim


@dataclass(frozen=True)
class Lpips:
    """LPIPS when its weights are present, else the reason it is not.

    Attributes:
        loss: the LPIPS module (a `PerceptualLoss` of kind "lpips"), or None when unavailable.
        note: which weights compute it, or why it is unavailable.
    """

    loss: PerceptualLoss | None
    note: str

    @property
    def available(self) -> bool:
        return self.loss is not None


def load_lpips(net: str = "alex") -> Lpips:
    """LPIPS with backbone ``net`` when its weights are on this machine (nothing is downloaded)."""
    ok, reason = lpips_status(net)
    return Lpips(make_perceptual_loss("lpips", net) if ok else None, reason)


@dataclass(frozen=True)
class ImageScores:
    """Image metrics over a set of views, each the mean of the per-view values.

    Attributes:
        psnr: dB.
        ssim: in [-1, 1].
        lpips: lower is more alike; None when LPIPS is unavailable (see ``lpips_note``).
        lpips_note: which weights computed LPIPS, or why it is unavailable.
        views: how many views were compared.
    """

    psnr: float
    ssim: float
    lpips: float | None
    lpips_note: str
    views: int


def image_scores(pred: np.ndarray, target: np.ndarray, lpips: Lpips | None = None) -> ImageScores:
    """PSNR, SSIM and (when ``lpips`` is available) LPIPS of rendered views against the ground truth.

    Args:
        pred: [V, H, W, 4] straight-alpha RGBA (composited on white here) or [V, H, W, 3] RGB, in [0, 1].
        target: the same views of the ground truth, same shape.
        lpips: from `load_lpips`; None reports LPIPS as not requested.

    Raises:
        InputError: the shapes differ or are not [V, H, W, 3 or 4].
    """
    if pred.shape != target.shape or pred.ndim != 4 or pred.shape[-1] not in (3, 4):
        raise InputError(
            f"image scores need two [V, H, W, 3 or 4] stacks of one shape, got {pred.shape} and {target.shape}"
        )
    a, b = (_as_batch(x) for x in (pred, target))
    note = "not requested" if lpips is None else lpips.note
    value = None
    if lpips is not None and lpips.loss is not None:
        with torch.no_grad():
            value = float(lpips.loss(a, b).mean())
    return ImageScores(float(psnr(a, b).mean()), float(ssim(a, b).mean()), value, note, len(pred))


def _as_batch(images: np.ndarray) -> torch.Tensor:
    """[V, H, W, 3 or 4] -> [V, 3, H, W] float32 RGB on white."""
    rgb = composite_on_white(images) if images.shape[-1] == 4 else images
    return torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(0, 3, 1, 2)

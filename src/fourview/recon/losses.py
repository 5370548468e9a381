"""Losses and metrics of the reconstructor: MSE, a perceptual term (LPIPS, else SSIM), opacity; PSNR, SSIM.

The seed trains with LPIPS + MSE. LPIPS needs the ImageNet weights of its backbone (torchvision's
AlexNet or VGG16), which the ``lpips`` package downloads from the network on first use.
`lpips_status` looks for them in torch hub's cache without downloading; when they are missing,
`make_perceptual_loss` (kind ``"auto"``) says so once and uses ``1 - SSIM`` instead, named
``"ssim"`` everywhere (logs, metrics) -- never ``"lpips"``.

Images here are ``[N, 3, H, W]`` RGB in [0, 1] (composited on white); per-ray losses take ``[..., 3]``.

SSIM is the standard one (Wang et al. 2004): an 11 x 11 Gaussian window with sigma 1.5, constants
``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2`` for data range ``L = 1``, population (not sample)
statistics, computed per channel on the "valid" part of the image (window fully inside) and
averaged -- the numbers of ``skimage.metrics.structural_similarity(..., gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=-1)``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from fourview.errors import InputError

__all__ = [
    "LPIPS_BACKBONE_FILES",
    "LossConfig",
    "LossTerms",
    "PerceptualLoss",
    "gaussian_window",
    "lpips_status",
    "make_perceptual_loss",
    "mask_loss",
    "psnr",
    "reconstruction_loss",
    "ssim",
]

logger = logging.getLogger(__name__)

LPIPS_BACKBONE_FILES: dict[str, str] = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}
"""File names of torchvision's ImageNet weights that ``lpips`` loads for each backbone (torch hub cache)."""


def psnr(pred: torch.Tensor, target: torch.Tensor, max_val: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, dB.

    Args:
        pred: [N, ...] values in [0, max_val].
        target: same shape.
        max_val: the data range.

    Returns:
        [N] ``10 log10(max_val^2 / MSE)`` over all but the first dimension (inf for identical images).
    """
    if pred.shape != target.shape:
        raise InputError(f"psnr needs equal shapes, got {tuple(pred.shape)} and {tuple(target.shape)}")
    mse = (pred.float() - target.float()).square().flatten(1).mean(1)  # [N]
    return 10.0 * torch.log10(max_val**2 / mse)


def gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[size] normalised 1-D Gaussian of ``sigma`` samples, centred (for separable blurs)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g.to(dtype=dtype, device=device)  # [size]


def ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    window_size: int = 11,
    sigma: float = 1.5,
    data_range: float = 1.0,
) -> torch.Tensor:
    """Structural similarity per image (see the module docstring), differentiable.

    Args:
        pred: [N, C, H, W] in [0, data_range], H and W >= ``window_size``.
        target: same shape.
        window_size: side of the Gaussian window (odd).
        sigma: its standard deviation, pixels.
        data_range: L, the value range.

    Returns:
        [N] mean SSIM over channels and valid pixels, in [-1, 1].
    """
    if pred.shape != target.shape or pred.ndim != 4:
        raise InputError(
            f"ssim needs two [N, C, H, W] images of one shape, got {tuple(pred.shape)}, {tuple(target.shape)}"
        )
    n, c, h, w = pred.shape
    if h < window_size or w < window_size:
        raise InputError(f"ssim needs images of at least {window_size}x{window_size}, got {h}x{w}")
    dtype = pred.dtype if pred.dtype == torch.float64 else torch.float32
    x, y = pred.to(dtype), target.to(dtype)
    g = gaussian_window(window_size, sigma, dtype, pred.device)
    gx = g.view(1, 1, 1, -1).expand(c, 1, 1, window_size)  # separable: rows then columns
    gy = g.view(1, 1, -1, 1).expand(c, 1, window_size, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, gx, groups=c), gy, groups=c)  # [N, C, H - 10, W - 10] valid

    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x**2
    syy = blur(y * y) - mu_y**2
    sxy = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1)  # [N]


def lpips_status(net: Literal["alex", "vgg", "squeeze"] = "alex") -> tuple[bool, str]:
    """Whether LPIPS can run offline: the ``lpips`` package and its backbone's weights in torch hub's cache.

    Looks only at files (``torch.hub.get_dir()/checkpoints/<torchvision file>``); downloads nothing.

    Returns:
        (available, reason): the reason says what is missing, or where the weights were found.
    """
    if net not in LPIPS_BACKBONE_FILES:
        raise InputError(f"unknown LPIPS backbone {net!r}; use 'alex', 'vgg' or 'squeeze'")
    try:
        import lpips
    except ImportError:
        return False, "the lpips package is not installed (pip install lpips)"
    linear = os.path.join(os.path.dirname(lpips.__file__), "weights", "v0.1", f"{net}.pth")
    if not os.path.isfile(linear):
        return False, f"lpips' own linear-layer weights are missing: {linear}"
    backbone = os.path.join(torch.hub.get_dir(), "checkpoints", LPIPS_BACKBONE_FILES[net])
    if not os.path.isfile(backbone):
        return False, f"LPIPS backbone weights not in the torch hub cache ({backbone}); no download attempted"
    return True, f"LPIPS-{net} with backbone weights {backbone}"


class PerceptualLoss(nn.Module):
    """A perceptual distance between images: LPIPS (``kind="lpips"``) or ``1 - SSIM`` (``kind="ssim"``).

    Build it with `make_perceptual_loss`. Frozen: it has no trainable parameters.

    Attributes:
        kind: "lpips" or "ssim" -- what the term really is, for logs and metrics.
    """

    def __init__(self, kind: Literal["lpips", "ssim"], lpips_module: nn.Module | None = None) -> None:
        super().__init__()
        if (kind == "lpips") != (lpips_module is not None):
            raise InputError("PerceptualLoss: an LPIPS module is needed exactly for kind 'lpips'")
        self.kind = kind
        self.lpips = lpips_module
        if lpips_module is not None:
            lpips_module.eval()
            for p in lpips_module.parameters():
                p.requires_grad_(False)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] images in [0, 1] -> [N] distances (lower is more alike)."""
        if self.kind == "lpips":
            # lpips expects [-1, 1]; it returns [N, 1, 1, 1]
            return self.lpips(pred.float() * 2 - 1, target.float() * 2 - 1).flatten()
        return 1.0 - ssim(pred, target)


def make_perceptual_loss(
    kind: Literal["auto", "lpips", "ssim", "none"] = "auto", net: Literal["alex", "vgg", "squeeze"] = "alex"
) -> PerceptualLoss | None:
    """Build the perceptual term.

    Args:
        kind: "lpips" (its weights must be present), "ssim", "none" (no perceptual term: None), or
            "auto": LPIPS when `lpips_status` finds its weights, else SSIM with a one-time warning.
        net: LPIPS backbone.

    Raises:
        InputError: kind "lpips" without the weights present, or an unknown kind.
    """
    if kind == "none":
        return None
    if kind == "ssim":
        return PerceptualLoss("ssim")
    if kind in ("auto", "lpips"):
        ok, reason = lpips_status(net)
        if ok:
            import lpips

            # pretrained=True: lpips' linear layers (in the package); the backbone comes from the hub cache.
            return PerceptualLoss("lpips", lpips.LPIPS(net=net, pretrained=True, verbose=False))
        if kind == "lpips":
            raise InputError(f"LPIPS unavailable: {reason}")
        logger.warning("LPIPS unavailable (%s): the perceptual loss term is 1 - SSIM instead", reason)
        return PerceptualLoss("ssim")
    raise InputError(f"unknown perceptual loss {kind!r}; use 'auto', 'lpips', 'ssim' or 'none'")


def mask_loss(opacity: torch.Tensor, alpha: torch.Tensor, kind: Literal["bce", "l1"] = "bce") -> torch.Tensor:
    """Mean opacity loss between rendered opacity and the frames' alpha, both [...] in [0, 1].

    ``"bce"``: binary cross-entropy (opacity clamped to [1e-5, 1 - 1e-5]); ``"l1"``: mean absolute error.
    """
    if opacity.shape != alpha.shape:
        raise InputError(f"opacity {tuple(opacity.shape)} and alpha {tuple(alpha.shape)} must have one shape")
    if kind == "bce":
        o = opacity.float().clamp(1e-5, 1.0 - 1e-5)
        return F.binary_cross_entropy(o, alpha.float())
    elif kind == "l1":
        return (opacity.float() - alpha.float()).abs().mean()
    else:
        raise InputError(f"unknown mask loss {kind!r}; use 'bce' or 'l1'")


@dataclass(frozen=True)
class LossConfig:
    """Weights of the reconstruction loss terms."""

    mse_weight: float = 1.0
    """Weight of the MSE between rendered and target RGB (on white)."""
    perceptual_weight: float = 1.0
    """Weight of the perceptual term (LPIPS, or 1 - SSIM); used only when images (not scattered rays) are rendered."""
    mask_weight: float = 0.1
    """Weight of the opacity loss against the frames' alpha."""
    mask_kind: Literal["bce", "l1"] = "bce"
    """Opacity loss: binary cross-entropy or L1."""

    def __post_init__(self) -> None:
        for name in ("mse_weight", "perceptual_weight", "mask_weight"):
            if getattr(self, name) < 0:
                raise InputError(f"LossConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.mask_kind not in ("bce", "l1"):
            raise InputError(f"LossConfig.mask_kind must be 'bce' or 'l1', got {self.mask_kind!r}")


@dataclass
class LossTerms:
    """The loss and its unweighted terms (scalars).

    Attributes:
        total: the weighted sum that is optimised.
        mse: MSE of RGB on white.
        mask: opacity loss.
        perceptual: LPIPS or 1 - SSIM (see ``perceptual_kind``), or None when not computed.
        perceptual_kind: "lpips", "ssim" or None.
    """

    total: torch.Tensor
    mse: torch.Tensor
    mask: torch.Tensor
    perceptual: torch.Tensor | None = None
    perceptual_kind: str | None = None

    def as_floats(self) -> dict[str, float]:
        """Plain numbers for logs: ``loss``, ``mse``, ``mask`` and ``lpips`` or ``ssim_loss``."""
        out = {"loss": float(self.total.detach()), "mse": float(self.mse.detach()), "mask": float(self.mask.detach())}
        if self.perceptual is not None:
            out["lpips" if self.perceptual_kind == "lpips" else "ssim_loss"] = float(self.perceptual.detach())
        return out


def reconstruction_loss(
    rgb: torch.Tensor,
    opacity: torch.Tensor,
    target_rgb: torch.Tensor,
    target_alpha: torch.Tensor,
    config: LossConfig = LossConfig(),
    perceptual: PerceptualLoss | None = None,
) -> LossTerms:
    """The training loss of rendered views against the dataset frames.

    Args:
        rgb: [..., 3] rendered RGB on white, or [B, V, H, W, 3] images.
        opacity: [...] rendered opacity.
        target_rgb: same shape as ``rgb``, frames on white.
        target_alpha: same shape as ``opacity``.
        config: term weights.
        perceptual: the perceptual term; applied only to images (``rgb`` of [B, V, H, W, 3] with
            H, W >= 11) and when ``config.perceptual_weight > 0``.

    Returns:
        `LossTerms`.
    """
    if rgb.shape != target_rgb.shape:
        raise InputError(f"rendered rgb {tuple(rgb.shape)} and target {tuple(target_rgb.shape)} must have one shape")
    mse = (rgb.float() - target_rgb.float()).square().mean()
    m = mask_loss(opacity, target_alpha, config.mask_kind)
    total = config.mse_weight * mse + config.mask_weight * m
    p_val, p_kind = None, None
    if perceptual is not None and config.perceptual_weight > 0 and rgb.ndim == 5 and min(rgb.shape[2:4]) >= 11:
        flat = rgb.flatten(0, 1).permute(0, 3, 1, 2)  # [B * V, 3, H, W]
        flat_t = target_rgb.flatten(0, 1).permute(0, 3, 1, 2)
        p_val = perceptual(flat, flat_t).mean()
        p_kind = perceptual.kind
        total = total + config.perceptual_weight * p_val
    return LossTerms(total=total, mse=mse, mask=m, perceptual=p_val, perceptual_kind=p_kind)

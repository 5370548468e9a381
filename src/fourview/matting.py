"""Background removal: a photo's object as an alpha matte (`remove_background`).

In this order (``MattingConfig.method="auto"``):

1. the photo's own alpha, when it has any transparency (an RGBA cut-out);
2. a segmentation model, when `rembg <https://github.com/danielgatis/rembg>`_ is installed (the
   ``[matting]`` extra) and one of its model files is already on disk (``$U2NET_HOME``, by default
   ``~/.u2net``); nothing is ever downloaded here;
3. otherwise a classical method for product photos (an object on a plain, gradient or lightly
   textured backdrop, maybe with a soft shadow): OpenCV's GrabCut seeded from the image border.
   The backdrop is modelled as a smooth colour field fitted to the border (a quadratic per
   channel), its noise measured there; the border band is sure background, the pixels far from the
   backdrop (the border key's foreground) probable foreground, except those that are the backdrop
   darkened without a change of hue (a shadow) when the foreground keeps most of itself without
   them. GrabCut's result then gets its small holes filled, keeps its largest connected part (and
   parts at least half as big), and a soft edge.

`border_key`, the simpler key from the border colour (the median of the border; pixels close to it
and connected to the border are background), stays available as a method of its own and as the
fallback when GrabCut cannot run.

A photo where nothing, or everything, is found to be the object is refused with one line telling
the user to give an RGBA photo (the object cut out, the rest transparent).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from PIL import Image

from fourview.errors import InputError
from fourview.images import MIN_PHOTO_SIDE, WHITE_ALPHA_HIGH, to_uint8

MattingMethod = Literal["auto", "alpha", "model", "grabcut", "border_key"]

REMBG_MODELS: tuple[str, ...] = ("birefnet-general", "isnet-general-use", "u2net", "silueta", "u2netp")
"""rembg models `remove_background` looks for on disk, best first."""

SHADOW_CHROMA: float = 0.02
"""Largest change of chromaticity ((r, g, b) / (r + g + b), max over channels) of a shadow on the backdrop."""

_ASK_FOR_RGBA = "give an RGBA photo with the background removed (transparent)"


@dataclass(frozen=True)
class MattingConfig:
    """How `remove_background` finds the object in a photo."""

    method: MattingMethod = "auto"
    """Background removal: auto (the photo's alpha, else a rembg model on disk, else GrabCut), alpha, model, grabcut
    or border_key (the plain border-colour key)."""
    background_low: float = 0.06
    """Colour distance to the backdrop (max over RGB, [0, 1] scale) below which a pixel is fully background (the
    border key's soft edge starts here)."""
    background_high: float = 0.16
    """Colour distance above which a pixel is foreground for the border key and GrabCut's seed (raised to 4 times the
    backdrop's own noise on a textured backdrop)."""
    min_hole: float = 0.002
    """Enclosed background regions of at least this fraction of the image are holes (the backdrop seen through a
    chair's back); smaller ones are filled."""
    border: float = 0.02
    """Width of the border band that is sure background for GrabCut, fraction of the shorter side (at least 2 px)."""
    iterations: int = 5
    """GrabCut iterations."""
    max_side: int = 512
    """GrabCut runs on the photo scaled down to at most this side, pixels (its mask is scaled back up)."""
    shadow_min: float = 0.45
    """A pixel that is the backdrop darkened to no less than this fraction, without a change of hue, is a shadow
    candidate (seeded as background); 1 turns shadow handling off."""
    feather: float = 1.0
    """Soft edge of the GrabCut mask: Gaussian sigma, pixels of GrabCut's working size (0: a hard edge)."""
    models: tuple[str, ...] = REMBG_MODELS
    """rembg model names to look for on disk, in order."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.background_low < self.background_high <= 1.0:
            raise InputError(
                f"background thresholds must satisfy 0 <= low < high <= 1, got {self.background_low}, "
                f"{self.background_high}"
            )
        if not 0.0 <= self.min_hole <= 1.0 or not 0.0 < self.border < 0.25:
            raise InputError(f"min_hole must be in [0, 1] and border in (0, 0.25), got {self.min_hole}, {self.border}")
        if not 1 <= self.iterations <= 50 or not 32 <= self.max_side <= 4096:
            raise InputError(
                f"GrabCut iterations must be in [1, 50] and max_side in [32, 4096], got {self.iterations}, "
                f"{self.max_side}"
            )
        if not 0.0 <= self.shadow_min <= 1.0 or not 0.0 <= self.feather <= 16.0:
            raise InputError(
                f"shadow_min must be in [0, 1] and feather in [0, 16], got {self.shadow_min}, {self.feather}"
            )


@dataclass(frozen=True)
class Matte:
    """A photo with its object's alpha.

    Attributes:
        rgba: [H, W, 4] float32 straight-alpha RGBA: the photo's colours and ``mask``.
        mask: [H, W] float32 alpha in [0, 1] (soft edge), 1 on the object.
        method: what made it: ``alpha``, ``rembg:<model>``, ``grabcut`` or ``border_key``.
        note: one line on why this method (what was not available), for ``meta.json``.
    """

    rgba: np.ndarray
    mask: np.ndarray
    method: str
    note: str


def remove_background(image: np.ndarray, config: MattingConfig = MattingConfig()) -> Matte:
    """The photo's object as an alpha matte, by the first method that applies (module docstring).

    Args:
        image: [H, W, 3] or [H, W, 4] float in [0, 1] (e.g. `fourview.images.read_rgba`).
        config: the method and its settings.

    Returns:
        `Matte`.

    Raises:
        InputError: not an image, smaller than `MIN_PHOTO_SIDE`, the method asked for is not
            available (no alpha, no model), or nothing / everything found to be the object.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise InputError(f"expected an RGB or RGBA image [H, W, 3|4], got {tuple(image.shape)}")
    h, w = image.shape[:2]
    if min(h, w) < MIN_PHOTO_SIDE:
        raise InputError(f"the photo is {w}x{h} pixels: too small (at least {MIN_PHOTO_SIDE} pixels a side)")
    if not np.isfinite(image).all():
        raise InputError("the photo holds non-finite values")
    rgb = np.clip(image[..., :3], 0.0, 1.0)
    has_alpha = image.shape[-1] == 4 and float(image[..., 3].min()) < 1.0
    method = config.method
    if method in ("auto", "alpha") and has_alpha:
        return _checked(rgb, np.clip(image[..., 3], 0.0, 1.0), "alpha", "the photo's own alpha channel")
    if method == "alpha":
        raise InputError(f"the photo has no transparent pixels to use as its alpha; {_ASK_FOR_RGBA}")
    why = "the photo is opaque"
    if method in ("auto", "model"):
        model, reason = find_segmentation_model(config.models)
        if model is not None:
            try:
                alpha = model(rgb)
            except Exception as e:  # a broken model install must not stop the classical path
                reason = f"the segmentation model failed ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
            else:
                return _checked(rgb, alpha, f"rembg:{model.name}", f"{why}; rembg model {model.path}")
        if method == "model":
            raise InputError(f"no segmentation model: {reason}; use --matting grabcut, or {_ASK_FOR_RGBA}")
        why = f"{why}; {reason}"
    inside = ~border_band((h, w), config.border)  # the keys take the border for backdrop: judge the rest
    if method == "border_key":
        return _checked(rgb, border_key(rgb, config), "border_key", "the border-colour key, as asked", inside)
    try:
        alpha = grabcut_alpha(rgb, config)
    except cv2.error as e:  # degenerate colour models: the plain key still gives an answer
        first = str(e).strip().splitlines()[-1][:120] if str(e).strip() else "cv2.error"
        return _checked(rgb, border_key(rgb, config), "border_key", f"{why}; GrabCut failed ({first})", inside)
    return _checked(rgb, alpha, "grabcut", f"{why}; GrabCut seeded from the border", inside)


def _checked(rgb: np.ndarray, alpha: np.ndarray, method: str, note: str, inside: np.ndarray | None = None) -> Matte:
    """The matte, checked; the keys' (``inside`` given) are judged inside the border band they take for backdrop."""
    alpha = np.asarray(alpha, dtype=np.float32)
    if alpha.shape != rgb.shape[:2]:
        raise InputError(f"{method} gave a mask of shape {alpha.shape} for a {rgb.shape[1]}x{rgb.shape[0]} photo")
    if inside is None:
        check_foreground(alpha, method)
    else:  # an object filling 90% of the photo inside its border is more likely a photo with no backdrop
        check_foreground(alpha, method, inside, max_fraction=0.9)
    rgba = np.empty((*alpha.shape, 4), np.float32)
    rgba[..., :3], rgba[..., 3] = rgb, alpha
    return Matte(rgba=rgba, mask=alpha, method=method, note=note)


def check_foreground(
    alpha: np.ndarray,
    method: str,
    region: np.ndarray | None = None,
    min_fraction: float = 0.0005,
    max_fraction: float = 0.98,
) -> None:
    """Refuse a matte with no object, or one that is the whole photo.

    Args:
        alpha: [H, W] in [0, 1].
        method: named in the message.
        region: [H, W] bool, the pixels the fractions are taken over (all when None).
        min_fraction: least fraction of ``region`` (alpha >= 0.5) that is an object.
        max_fraction: a larger fraction is the whole photo: no backdrop was found to remove.

    Raises:
        InputError: one line, asking for an RGBA photo.
    """
    covered = float((alpha >= 0.5)[region if region is not None else ...].mean())
    if covered <= min_fraction:
        raise InputError(f"no object found in the photo ({method}: it all looks like background); {_ASK_FOR_RGBA}")
    if covered >= max_fraction:
        raise InputError(
            f"the whole photo looks like the object ({method}: no backdrop found around it); {_ASK_FOR_RGBA}"
        )


def needs_background_removal(images: np.ndarray, white: float = WHITE_ALPHA_HIGH) -> bool:
    """Whether views are opaque photos whose background must be removed before reconstruction.

    True when every view is opaque (no alpha) and some view's border is not near-white; renders
    on white (every border within ``white`` of white, ``1 - min(R, G, B)``, on 98% of its pixels)
    and cut-outs with alpha are used as they are.

    Args:
        images: [V, H, W, 4] float RGBA in [0, 1].
    """
    images = np.asarray(images, dtype=np.float32)
    if float(images[..., 3].min()) < 1.0:
        return False
    for view in images:
        border = np.concatenate([view[0], view[-1], view[:, 0], view[:, -1]])[:, :3]  # [2H + 2W, 3]
        if float((1.0 - border.min(axis=-1) < white).mean()) < 0.98:
            return True
    return False


# -- the segmentation model (optional) -------------------------------------------------------------


@dataclass(frozen=True)
class SegmentationModel:
    """A rembg model whose file is on disk; calling it gives [H, W] alpha for [H, W, 3] RGB."""

    name: str
    path: Path
    rembg: object
    """The imported ``rembg`` module."""

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        session = self.rembg.new_session(self.name)
        mask = self.rembg.remove(Image.fromarray(to_uint8(rgb)), session=session, only_mask=True)
        alpha = np.asarray(mask, dtype=np.float32)
        return (alpha[..., 0] if alpha.ndim == 3 else alpha) / 255.0


def rembg_home() -> Path:
    """rembg's model folder: ``$U2NET_HOME``, else ``$XDG_DATA_HOME/.u2net`` or ``~/.u2net`` (rembg's rule)."""
    default = os.path.join(os.environ.get("XDG_DATA_HOME", "~"), ".u2net")
    return Path(os.path.expanduser(os.environ.get("U2NET_HOME", default)))


def find_segmentation_model(names: tuple[str, ...] = REMBG_MODELS) -> tuple[SegmentationModel | None, str]:
    """The first rembg model of ``names`` whose file is on disk, or None and why not.

    rembg is imported only here (it imports onnxruntime: seconds, and an optional extra). Its
    sessions download a missing model file; this looks for the file first, so nothing is fetched.
    """
    try:
        import rembg  # optional extra [matting]; heavy (onnxruntime)
    except ImportError:
        return None, "rembg is not installed (pip install 'fourview[matting]')"
    except Exception as e:  # a broken install is reported, not raised
        return None, f"rembg does not import ({type(e).__name__})"
    home = rembg_home()
    for name in names:
        path = home / f"{name}.onnx"
        if path.is_file():
            return SegmentationModel(name, path, rembg), ""
    return None, f"rembg is installed but none of its models ({', '.join(names)}) is in {home}"


# -- the border-colour key -------------------------------------------------------------------------


def background_regions(candidate: np.ndarray, min_hole: float) -> np.ndarray:
    """Which background-like pixels are background.

    Those connected to the image border (4-connected), and enclosed regions (holes: between a
    chair's legs, inside a mug's handle) of at least ``min_hole`` of the image's area; smaller
    enclosed regions belong to the object.

    Args:
        candidate: [H, W] bool, pixels that look like the background.
        min_hole: area fraction in [0, 1]; more than 1 keeps every enclosed region opaque.

    Returns:
        [H, W] bool.
    """
    n, labels = cv2.connectedComponents(np.asarray(candidate, np.uint8), connectivity=4)
    if n <= 1:
        return np.zeros(candidate.shape, dtype=bool)
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    keep = np.zeros(n, dtype=bool)
    keep[border[border > 0]] = True
    keep[1:] |= np.bincount(labels.ravel(), minlength=n)[1:] >= min_hole * candidate.size
    keep[0] = False
    return keep[labels]


def _key_alpha(dist: np.ndarray, low: float, high: float, min_hole: float) -> np.ndarray:
    """Alpha from the distance to the backdrop: a ramp from ``low`` to ``high`` on background regions, 1 elsewhere."""
    connected = background_regions(dist < high, min_hole)  # [H, W]
    ramp = np.clip((dist - low) / (high - low), 0.0, 1.0)
    return np.where(connected, ramp, 1.0).astype(np.float32)


def border_key(rgb: np.ndarray, config: MattingConfig = MattingConfig()) -> np.ndarray:
    """Alpha of an opaque photo on a plain backdrop, from its border colour.

    The backdrop colour is the median of the image border; pixels within ``background_high`` of it
    (max over RGB) that are connected to the border, or lie in enclosed regions of at least
    ``min_hole`` of the image, are background, with a linear ramp from ``background_low`` (alpha 0)
    to ``background_high`` (alpha 1); smaller enclosed regions that match the backdrop stay opaque.

    Args:
        rgb: [H, W, 3] float RGB in [0, 1].
        config: thresholds.

    Returns:
        [H, W] float32 alpha.
    """
    rgb = np.asarray(rgb, dtype=np.float32)[..., :3]
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])  # [2H + 2W, 3]
    dist = np.abs(rgb - np.median(border, axis=0)).max(axis=-1)  # [H, W]
    return _key_alpha(dist, config.background_low, config.background_high, config.min_hole)


# -- GrabCut ---------------------------------------------------------------------------------------


def border_band(shape: tuple[int, int], fraction: float) -> np.ndarray:
    """[H, W] bool: the pixels within ``fraction`` of the shorter side (at least 2 px) of the image border."""
    h, w = shape
    width = max(2, int(round(fraction * min(h, w))))
    band = np.ones((h, w), dtype=bool)
    band[width : h - width, width : w - width] = False
    return band


def fit_backdrop(rgb: np.ndarray, band: np.ndarray) -> tuple[np.ndarray, float]:
    """A smooth backdrop fitted to the border band: a quadratic in x, y per channel, and its noise.

    Two least-squares passes; the second leaves out band pixels far from the first fit (an object
    touching the border).

    Args:
        rgb: [H, W, 3] float RGB.
        band: [H, W] bool, the pixels to fit.

    Returns:
        backdrop [H, W, 3] float32, and the noise: a robust standard deviation (1.4826 x median
        absolute residual, max over RGB) of the inliers.
    """
    h, w = band.shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    x, y = 2.0 * x / max(w - 1, 1) - 1.0, 2.0 * y / max(h - 1, 1) - 1.0
    basis = np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=-1)  # [H, W, 6]
    a, b = basis[band], rgb[band]  # [N, 6], [N, 3]
    keep = np.ones(len(a), dtype=bool)
    for _ in range(2):
        coef, *_ = np.linalg.lstsq(a[keep], b[keep], rcond=None)  # [6, 3]
        resid = np.abs(a @ coef - b).max(axis=-1)  # [N]
        noise = 1.4826 * float(np.median(resid[keep]))
        keep = resid <= max(3.0 * noise, 0.05)
    return (basis @ coef).astype(np.float32), noise


@dataclass(frozen=True)
class GrabCutSeed:
    """GrabCut's start for an opaque photo.

    Attributes:
        labels: [H, W] uint8 of ``cv2.GC_BGD`` (the backdrop-like border band), ``cv2.GC_PR_FGD``
            (the key's foreground, shadows left out) and ``cv2.GC_PR_BGD`` (the rest).
        backdrop_like: [H, W] bool, pixels within the key's lower threshold of the fitted backdrop
            (what the backdrop seen through a hole in the object looks like).
    """

    labels: np.ndarray
    backdrop_like: np.ndarray


def grabcut_seed(rgb: np.ndarray, config: MattingConfig = MattingConfig()) -> GrabCutSeed:
    """GrabCut's starting labels for an opaque photo (see the module docstring).

    Args:
        rgb: [H, W, 3] float RGB in [0, 1].
        config: thresholds, border band and shadow settings.
    """
    band = border_band(rgb.shape[:2], config.border)
    backdrop, noise = fit_backdrop(rgb, band)
    dist = np.abs(rgb - backdrop).max(axis=-1)  # [H, W]
    high = max(config.background_high, 4.0 * noise)
    low = min(config.background_low * high / config.background_high, high * 0.99)
    foreground = _key_alpha(dist, low, high, config.min_hole) >= 0.5
    if config.shadow_min < 1.0:
        # The backdrop darkened by s in [shadow_min, 1) keeping its chromaticity (r, g, b) / (r + g + b).
        total, backdrop_total = rgb.sum(-1), np.maximum(backdrop.sum(-1), 1e-6)  # [H, W]
        s = total / backdrop_total
        chroma = np.abs(rgb / np.maximum(total, 1e-6)[..., None] - backdrop / backdrop_total[..., None]).max(-1)
        shadow = (s >= config.shadow_min) & (s < 1.0) & (chroma < SHADOW_CHROMA)
        # A neutral object on a neutral backdrop looks like a shadow all over: then keep it.
        if (foreground & ~shadow).sum() >= 0.3 * foreground.sum():
            foreground &= ~shadow
    labels = np.full(dist.shape, cv2.GC_PR_BGD, np.uint8)
    labels[foreground] = cv2.GC_PR_FGD
    labels[band & (dist <= high)] = cv2.GC_BGD
    return GrabCutSeed(labels=labels, backdrop_like=dist < low)


def grabcut_alpha(rgb: np.ndarray, config: MattingConfig = MattingConfig()) -> np.ndarray:
    """Alpha of an opaque photo by GrabCut seeded from its border (see the module docstring).

    Args:
        rgb: [H, W, 3] float RGB in [0, 1].
        config: seed, size and clean-up settings.

    Returns:
        [H, W] float32 alpha, soft at the edge.

    Raises:
        cv2.error: GrabCut could not model the colours (`remove_background` falls back to `border_key`).
    """
    h, w = rgb.shape[:2]
    scale = min(1.0, config.max_side / max(h, w))
    small = rgb
    if scale < 1.0:
        size = (max(MIN_PHOTO_SIDE, round(w * scale)), max(MIN_PHOTO_SIDE, round(h * scale)))
        small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    seed = grabcut_seed(small, config)
    labels = seed.labels.copy()
    if not (labels == cv2.GC_PR_FGD).any():
        return np.zeros((h, w), np.float32)  # nothing differs from the backdrop: refused by `check_foreground`
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.grabCut(to_uint8(small), labels, None, bgd, fgd, config.iterations, cv2.GC_INIT_WITH_MASK)
    mask = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    mask = largest_parts(fill_holes(mask, config.min_hole, seed.backdrop_like))
    alpha = mask.astype(np.float32)
    if config.feather > 0:
        alpha = cv2.GaussianBlur(alpha, (0, 0), config.feather)
        alpha = np.clip((alpha - 0.5) * 1.5 + 0.5, 0.0, 1.0)  # the edge stays where the mask's is, a little steeper
    if scale < 1.0:
        alpha = cv2.resize(alpha, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(alpha, 0.0, 1.0, out=alpha)


def fill_holes(mask: np.ndarray, min_hole: float, backdrop_like: np.ndarray | None = None) -> np.ndarray:
    """Fill the enclosed background regions of ``mask`` that are not holes through the object.

    A region of the background not connected to the image border (4-connected) stays background
    when it covers at least ``min_hole`` of the image and, given ``backdrop_like``, at least half
    of its pixels look like the backdrop (a chair's back, a mug's handle); the others are filled
    (specks, and pale parts of the object that GrabCut took for a white backdrop).

    Args:
        mask: [H, W] bool foreground.
        min_hole: area fraction.
        backdrop_like: [H, W] bool, or None (every large region is a hole).

    Returns:
        [H, W] bool.
    """
    mask = np.asarray(mask, dtype=bool)
    n, labels = cv2.connectedComponents((~mask).astype(np.uint8), connectivity=4)
    if n <= 1:
        return mask
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    hole = np.bincount(labels.ravel(), minlength=n) >= min_hole * mask.size  # [n]
    if backdrop_like is not None:
        like = np.bincount(labels.ravel(), weights=np.asarray(backdrop_like, np.float64).ravel(), minlength=n)
        hole &= like >= 0.5 * np.bincount(labels.ravel(), minlength=n)
    hole[border] = True  # connected to the border: background
    hole[0] = True  # label 0 is the foreground itself
    return mask | ~hole[labels]


def largest_parts(mask: np.ndarray, min_part: float = 0.5) -> np.ndarray:
    """[H, W] bool: the largest 8-connected part of ``mask``, and parts at least ``min_part`` of its area (a pair)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(np.asarray(mask, np.uint8), connectivity=8)
    if n <= 2:
        return np.asarray(mask, dtype=bool)
    areas = stats[1:, cv2.CC_STAT_AREA]  # [n - 1]
    keep = np.zeros(n, dtype=bool)
    keep[1:] = areas >= min_part * areas.max()
    return keep[labels]


__all__ = [
    "REMBG_MODELS",
    "Matte",
    "MattingConfig",
    "SegmentationModel",
    "background_regions",
    "border_key",
    "check_foreground",
    "find_segmentation_model",
    "grabcut_alpha",
    "needs_background_removal",
    "remove_background",
]

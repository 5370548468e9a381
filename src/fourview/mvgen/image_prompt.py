"""A photo as the front view: background removal, recentring, and the inpainting grid and mask.

The image-conditioned path of the multi-view generator puts the photo's object into the front
cell (azimuth 0, top-left) of the 2x2 grid and lets the same model inpaint the other three cells
(`MultiViewPipeline` with ``image=``). This module prepares its inputs:

1. `photo_to_rgba`: an RGBA photo keeps its alpha. An opaque photo gets a simple background
   removal (no segmentation weights ship here): the background colour is estimated as the median
   of the image border, pixels within a colour distance of it that are connected to the border
   become transparent, with a soft ramp over the edge. This suits product shots on a plain
   backdrop; a cluttered background needs a real matting model (give an RGBA file).
2. `place_in_cell`: the object's bounding box (alpha >= 0.5) is centred in a square cell and
   scaled so its longer side is ``fill`` of the cell (the rig renders' object size).
3. `conditioning_grid`: the grid on white with the front cell filled, and the inpainting mask
   (1 = generate, 0 = keep) that is 0 exactly on the front cell.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fourview.errors import InputError


@dataclass(frozen=True)
class ImagePromptConfig:
    """How a photo becomes the front cell.

    Attributes:
        fill: longer side of the object's bounding box as a fraction of the cell, in (0, 1].
        keep_photo: the output's front cell (and front view) is the recentred photo itself rather
            than its VAE round trip (the model reproduces the known cell only up to the VAE).
        background_low: colour distance (max over RGB channels, [0, 1] scale) to the border
            colour below which a pixel connected to the border is fully background.
        background_high: distance above which a pixel is fully object; in between alpha ramps
            linearly (the soft edge).
        min_hole: enclosed background-like regions of at least this fraction of the image are
            holes (background); smaller ones are part of the object.
    """

    fill: float = 0.8
    keep_photo: bool = True
    background_low: float = 0.06
    background_high: float = 0.16
    min_hole: float = 0.002

    def __post_init__(self) -> None:
        if not 0.0 < self.fill <= 1.0:
            raise InputError(f"image fill must be in (0, 1], got {self.fill}")
        if not 0.0 <= self.background_low < self.background_high <= 1.0:
            raise InputError(
                f"background thresholds must satisfy 0 <= low < high <= 1, got {self.background_low}, "
                f"{self.background_high}"
            )


@dataclass
class ImagePrompt:
    """The inputs of the inpainting pass.

    Attributes:
        grid: [S, S, 3] float32 RGB on white in [0, 1]; the front cell holds the photo.
        mask: [S, S] float32, 1 where the model generates (cells az 90, 180, 270), 0 on the front cell.
        front: [S / 2, S / 2, 4] float32 RGBA, the recentred photo (straight alpha).
    """

    grid: np.ndarray
    mask: np.ndarray
    front: np.ndarray


def background_regions(candidate: np.ndarray, min_hole: float) -> np.ndarray:
    """Which background-like pixels are background.

    Those connected to the image border, and enclosed regions (holes: between a chair's legs,
    inside a mug's handle) of at least ``min_hole`` of the image's area; smaller enclosed regions
    belong to the object.

    Args:
        candidate: [H, W] bool, pixels that look like the background.
        min_hole: area fraction in [0, 1]; more than 1 keeps every enclosed region opaque.

    Returns:
        [H, W] bool.
    """
    from scipy.ndimage import label

    labels, n = label(candidate)
    if n == 0:
        return np.zeros_like(candidate, dtype=bool)
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    keep = np.zeros(n + 1, dtype=bool)
    keep[border[border > 0]] = True
    keep[1:] |= np.bincount(labels.ravel(), minlength=n + 1)[1:] >= min_hole * candidate.size
    keep[0] = False
    return keep[labels]


def remove_background(rgb: np.ndarray, config: ImagePromptConfig = ImagePromptConfig()) -> np.ndarray:
    """Alpha for an opaque photo on a plain backdrop, estimated from its border colour.

    Args:
        rgb: [H, W, 3] float RGB in [0, 1].
        config: thresholds (see `ImagePromptConfig`).

    Returns:
        [H, W, 4] float32 RGBA: the input colours and the estimated alpha. Only pixels connected
        to the border through background-like pixels (distance < ``background_high``), or in
        enclosed background-like regions of at least ``min_hole`` of the image (the backdrop seen
        through a chair's back), can become transparent; smaller enclosed regions that happen to
        match the backdrop colour stay opaque.
    """
    rgb = np.asarray(rgb, dtype=np.float32)[..., :3]
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])  # [2H + 2W, 3]
    bg = np.median(border, axis=0)  # [3]
    dist = np.abs(rgb - bg).max(axis=-1)  # [H, W]
    lo, hi = config.background_low, config.background_high
    connected = background_regions(dist < hi, config.min_hole)  # [H, W]
    ramp = np.clip((dist - lo) / (hi - lo), 0.0, 1.0)
    alpha = np.where(connected, ramp, 1.0).astype(np.float32)
    return np.concatenate([rgb, alpha[..., None]], axis=-1)


def photo_to_rgba(image: np.ndarray, config: ImagePromptConfig = ImagePromptConfig()) -> np.ndarray:
    """An RGBA photo with a real alpha channel as is; otherwise `remove_background`.

    Args:
        image: [H, W, 3] or [H, W, 4] float in [0, 1] (e.g. `fourview.images.read_rgba`).

    Returns:
        [H, W, 4] float32 RGBA.

    Raises:
        InputError: wrong shape, or no object left (alpha empty).
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise InputError(f"expected an RGB or RGBA image [H, W, 3|4], got {tuple(image.shape)}")
    if image.shape[-1] == 4 and float(image[..., 3].min()) < 1.0:
        rgba = image
    else:
        rgba = remove_background(image[..., :3], config)
    if float(rgba[..., 3].max()) < 0.5:
        raise InputError("no object found in the photo: it is transparent, or all of it matches its border colour")
    return rgba


def place_in_cell(rgba: np.ndarray, cell: int, fill: float = 0.8) -> np.ndarray:
    """Centre the object's bounding box in a ``cell`` x ``cell`` square and scale it to ``fill``.

    The bounding box is that of the pixels with alpha >= 0.5; its centre goes to the cell centre
    and its longer side to ``fill * cell`` pixels. Resampling is done on premultiplied colour
    (bilinear with antialiasing), so the edges do not pick up the old background.

    Args:
        rgba: [H, W, 4] float RGBA in [0, 1] (straight alpha).
        cell: side of the output, pixels.
        fill: in (0, 1].

    Returns:
        [cell, cell, 4] float32 RGBA (straight alpha), transparent outside the object.
    """
    rgba = np.asarray(rgba, dtype=np.float32)
    rows, cols = np.nonzero(rgba[..., 3] >= 0.5)
    if len(rows) == 0:
        raise InputError("no object found in the photo (alpha below 0.5 everywhere)")
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    scale = fill * cell / max(r1 - r0, c1 - c0)
    # Pixel (r, c) of the output samples the input at ((r + 0.5) - cell/2) / scale + centre.
    centre_r, centre_c = (r0 + r1) / 2.0, (c0 + c1) / 2.0
    h, w = rgba.shape[:2]
    pre = torch.from_numpy(np.concatenate([rgba[..., :3] * rgba[..., 3:], rgba[..., 3:]], axis=-1))
    pre = pre.permute(2, 0, 1)[None]  # [1, 4, H, W] premultiplied
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    resized = F.interpolate(pre, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)[0]
    sy, sx = new_h / h, new_w / w
    out = torch.zeros(4, cell, cell)
    # Integer offset of the resized image in the cell (sub-pixel centring is not worth a resample).
    top = int(round(cell / 2.0 - centre_r * sy))
    left = int(round(cell / 2.0 - centre_c * sx))
    src_t, src_l = max(0, -top), max(0, -left)
    dst_t, dst_l = max(0, top), max(0, left)
    hh = min(new_h - src_t, cell - dst_t)
    ww = min(new_w - src_l, cell - dst_l)
    if hh > 0 and ww > 0:
        out[:, dst_t : dst_t + hh, dst_l : dst_l + ww] = resized[:, src_t : src_t + hh, src_l : src_l + ww]
    out = out.permute(1, 2, 0).numpy()  # [cell, cell, 4] premultiplied
    alpha = np.clip(out[..., 3:], 0.0, 1.0)
    rgb = np.where(alpha > 1e-6, out[..., :3] / np.maximum(alpha, 1e-6), 0.0)
    return np.concatenate([np.clip(rgb, 0.0, 1.0), alpha], axis=-1).astype(np.float32)


def conditioning_grid(
    image: np.ndarray,
    size: int,
    config: ImagePromptConfig = ImagePromptConfig(),
    fill_other: np.ndarray | None = None,
) -> ImagePrompt:
    """The photo in the front cell of a ``size`` grid, and the inpainting mask of the other cells.

    Args:
        image: [H, W, 3|4] float photo in [0, 1].
        size: grid side, pixels (even).
        config: background removal and framing.
        fill_other: [size, size, 3] image for the three generated cells (e.g. `blob_image`, which
            becomes their start when the sampling strength is below 1); white when None.

    Returns:
        `ImagePrompt`: grid, mask (0 on the front cell, 1 elsewhere), recentred front RGBA.
    """
    if size < 2 or size % 2:
        raise InputError(f"grid size must be a positive even number of pixels, got {size}")
    cell = size // 2
    front = place_in_cell(photo_to_rgba(image, config), cell, config.fill)  # [cell, cell, 4]
    grid = np.ones((size, size, 3), np.float32) if fill_other is None else np.array(fill_other, np.float32)
    if grid.shape != (size, size, 3):
        raise InputError(f"fill image must be [{size}, {size}, 3], got {tuple(grid.shape)}")
    a = front[..., 3:]
    grid[:cell, :cell] = front[..., :3] * a + (1.0 - a)  # on white
    mask = np.ones((size, size), np.float32)
    mask[:cell, :cell] = 0.0
    return ImagePrompt(grid=grid, mask=mask, front=front)

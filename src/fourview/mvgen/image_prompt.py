"""A photo as the front view: background removal, recentring, and the inpainting grid and mask.

The image-conditioned path of the multi-view generator puts the photo's object into the front
cell (azimuth 0, top-left) of the 2x2 grid and lets the same model inpaint the other three cells
(`MultiViewPipeline` with ``image=``). This module prepares its inputs:

1. `fourview.matting.remove_background`: the photo's alpha, a segmentation model when one is on
   disk, or GrabCut seeded from the border (a product shot on a plain, gradient or lightly
   textured backdrop); a cluttered background needs an RGBA file.
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

from fourview.data.synthetic import SHAPES
from fourview.errors import InputError
from fourview.matting import Matte, MattingConfig, background_regions, remove_background

PHOTO_PROMPT: str = "an object"
"""The caption of a photo given without one: neutral, so that the photo alone says what the object is."""


@dataclass(frozen=True)
class ImagePromptConfig:
    """How a photo becomes the front cell.

    Attributes:
        fill: longer side of the object's bounding box as a fraction of the cell, in (0, 1].
        keep_photo: the output's front cell (and front view) is the recentred photo itself rather
            than its VAE round trip (the model reproduces the known cell only up to the VAE).
        matting: how the photo's object is cut out (`fourview.matting.MattingConfig`).
    """

    fill: float = 0.8
    keep_photo: bool = True
    matting: MattingConfig = MattingConfig()

    def __post_init__(self) -> None:
        if not 0.0 < self.fill <= 1.0:
            raise InputError(f"image fill must be in (0, 1], got {self.fill}")


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
    image: np.ndarray | Matte,
    size: int,
    config: ImagePromptConfig = ImagePromptConfig(),
    fill_other: np.ndarray | None = None,
) -> ImagePrompt:
    """The photo in the front cell of a ``size`` grid, and the inpainting mask of the other cells.

    Args:
        image: [H, W, 3|4] float photo in [0, 1], or its `Matte` (background already removed).
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
    matte = image if isinstance(image, Matte) else remove_background(image, config.matting)
    front = place_in_cell(matte.rgba, cell, config.fill)  # [cell, cell, 4]
    grid = np.ones((size, size, 3), np.float32) if fill_other is None else np.array(fill_other, np.float32)
    if grid.shape != (size, size, 3):
        raise InputError(f"fill image must be [{size}, {size}, 3], got {tuple(grid.shape)}")
    a = front[..., 3:]
    grid[:cell, :cell] = front[..., :3] * a + (1.0 - a)  # on white
    mask = np.ones((size, size), np.float32)
    mask[:cell, :cell] = 0.0
    return ImagePrompt(grid=grid, mask=mask, front=front)


def demo_photo_warning(mvgen: str | None) -> str | None:
    """The one-line warning for a photo given to the shipped demo generator (``mvgen == "demo"``), else None.

    The demo generator learnt the synthetic world's objects (`fourview.data.synthetic.SHAPES`) and
    the rig grids of the real household objects of its training scans; a photo of anything else
    comes back as a wrong object, and nothing in the photo tells us which it is.
    """
    if mvgen != "demo":
        return None
    return (
        f"the demo generator knows a small synthetic world of {len(SHAPES)} object classes ({', '.join(SHAPES[:5])}, "
        "...) and a few hundred real household objects: a photo of anything else gives a wrong object; for real "
        "photos pass real SDXL-architecture weights with --mvgen"
    )


__all__ = [
    "PHOTO_PROMPT",
    "ImagePrompt",
    "ImagePromptConfig",
    "background_regions",  # fourview.mvgen.pipeline.white_to_alpha's key; it lives in fourview.matting
    "conditioning_grid",
    "demo_photo_warning",
    "place_in_cell",
]

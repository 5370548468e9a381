"""The four rig views as the reconstructor's input: read from files, checked, tiled.

A user gives either four images in rig order (azimuths 0, 90, 180, 270; see
`fourview.cameras`) or one 2x2 grid image laid out ``[[az 0, az 90], [az 180, az 270]]``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fourview.cameras import grid_to_views, views_to_grid
from fourview.errors import InputError
from fourview.images import composite_on_white, read_rgba


def load_views(paths: list[str | os.PathLike]) -> np.ndarray:
    """Read four view images, or one 2x2 grid image, as RGBA float32 [4, H, W, 4] in rig order.

    Raises:
        InputError: not 4 views nor 1 grid, unreadable files, views of different sizes, or a grid
            that is not square with an even side.
    """
    if len(paths) not in (1, 4):
        raise InputError(f"expected 4 view images (az 0, 90, 180, 270) or one 2x2 grid image, got {len(paths)}")
    images = [read_rgba(p) for p in paths]
    if len(images) == 1:
        grid = images[0]
        h, w = grid.shape[:2]
        if h != w or h % 2:
            raise InputError(f"a 2x2 grid image must be square with an even side, got {w}x{h}: {paths[0]}")
        return grid_to_views(torch.from_numpy(grid).permute(2, 0, 1)).permute(0, 2, 3, 1).numpy()
    sizes = {img.shape[:2] for img in images}
    if len(sizes) != 1:
        listing = ", ".join(f"{Path(p).name} {img.shape[1]}x{img.shape[0]}" for p, img in zip(paths, images))
        raise InputError(f"the 4 views must have the same size, got {listing}")
    h, w = images[0].shape[:2]
    if h != w:
        raise InputError(f"views must be square, got {w}x{h}")
    return np.stack(images)


def check_views(views: np.ndarray) -> None:
    """Reject inputs with no object in them: fully transparent views, or all views fully transparent.

    Raises:
        InputError: a view is empty (alpha 0 everywhere).
    """
    for i, view in enumerate(views):
        if view.shape[-1] == 4 and float(view[..., 3].max()) == 0.0:
            raise InputError(f"view {i} (azimuth {90 * i}) is fully transparent: no object to reconstruct")


def views_to_model_input(views: np.ndarray, resolution: int) -> torch.Tensor:
    """RGBA views [4, H, W, 4] to the model's input [1, 4, 3, R, R]: RGB on white, resized (area filter)."""
    rgb = composite_on_white(views) if views.shape[-1] == 4 else views
    t = torch.from_numpy(np.ascontiguousarray(rgb)).float().permute(0, 3, 1, 2)  # [4, 3, H, W]
    if t.shape[-1] != resolution:
        mode = "area" if t.shape[-1] > resolution else "bilinear"
        t = F.interpolate(
            t, size=(resolution, resolution), mode=mode, **({} if mode == "area" else {"align_corners": False})
        )
    return t.clamp(0.0, 1.0)[None]


def grid_image(views: np.ndarray) -> np.ndarray:
    """[4, H, W, C] views to the [2H, 2W, C] grid image (rig order)."""
    return views_to_grid(torch.from_numpy(np.ascontiguousarray(views)).permute(0, 3, 1, 2)).permute(1, 2, 0).numpy()

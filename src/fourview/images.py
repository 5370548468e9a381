"""Image files: reading user images, writing PNGs atomically, compositing on white.

Inside the code images are float32 arrays in [0, 1], [H, W, C] (RGBA: straight, not
premultiplied, alpha); on disk they are PNG. Models see RGB composited on white.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fourview.atomic import write_file_atomic
from fourview.errors import InputError

WHITE_ALPHA_LOW: float = 0.03
"""Distance from white (``1 - min(R, G, B)``) below which a background pixel of a view on white is clear."""
WHITE_ALPHA_HIGH: float = 0.08
"""Distance from white above which a pixel of a view on white is object (opaque). Calibrated with
`WHITE_ALPHA_LOW` on rig renders of the synthetic world (docs/benchmarks.md); white objects on the
white background are what it misses."""


def read_rgba(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGBA float32 [H, W, 4] in [0, 1]; opaque if it has no alpha.

    Raises:
        InputError: the file is missing or not a readable image.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise InputError(
            f"cannot read image {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None
    return rgba


def to_uint8(img: np.ndarray) -> np.ndarray:
    """[H, W, C] float in [0, 1] to uint8 with rounding."""
    return np.clip(np.rint(np.asarray(img, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


def write_png(path: str | os.PathLike, img: np.ndarray) -> None:
    """Write [H, W], [H, W, 3] or [H, W, 4] float in [0, 1] (or uint8/uint16 as is) to a PNG, atomically.

    The file appears complete or not at all (`fourview.atomic.write_file_atomic`).

    Raises:
        InputError: the folder is missing or not writable.
    """
    arr = np.asarray(img)
    if arr.dtype not in (np.uint8, np.uint16):
        arr = to_uint8(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    image = Image.fromarray(arr)
    write_file_atomic(path, lambda f: image.save(f, format="PNG"))


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """[..., 4] straight-alpha RGBA to [..., 3] RGB over a white background."""
    rgb, a = rgba[..., :3], rgba[..., 3:4]
    return rgb * a + (1.0 - a)

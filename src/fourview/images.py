"""Image files: reading user images, writing PNGs atomically, compositing on white.

Inside the code images are float32 arrays in [0, 1], [H, W, C] (RGBA: straight, not
premultiplied, alpha); on disk they are PNG. Models see RGB composited on white.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fourview.atomic import write_file_atomic
from fourview.errors import InputError

WHITE_ALPHA_LOW: float = 0.03
"""Distance from white (``1 - min(R, G, B)``) below which a background pixel of a view on white is clear."""
WHITE_ALPHA_HIGH: float = 0.08
"""Distance from white above which a pixel of a view on white is object (opaque). Calibrated with
`WHITE_ALPHA_LOW` on rig renders of the synthetic world (docs/benchmarks.md); white objects on the
white background are what it misses."""


MAX_IMAGE_PIXELS: int = 40_000_000
"""Largest image `read_rgba` decodes (width x height): 40 megapixels, a 7300 x 5470 photo. Larger files, and
decompression bombs (a small file declaring a huge image), are refused before their pixels are decoded."""
MIN_PHOTO_SIDE: int = 16
"""Smallest side of a photo to find an object in, pixels (`fourview.matting`)."""
MIN_VIEW_SIDE: int = 16
"""Smallest side of a view file to reconstruct from, pixels (`fourview.views.PosedViews.read`): smaller views
hold no shape to speak of, yet the reconstructor would still make a full mesh of them."""
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def read_rgba(path: str | os.PathLike, min_side: int = 2) -> np.ndarray:
    """Read an image file as RGBA float32 [H, W, 4] in [0, 1]; opaque if it has no alpha.

    Converted by mode: 8-bit images (1, L, LA, P with or without transparency, RGB, RGBA, CMYK,
    YCbCr...) through Pillow's RGBA conversion; 16-bit grayscale (I;16, and I as Pillow reads
    16-bit PNGs) scaled by 65535 (Pillow's own conversion would clip it to white); 32-bit float (F)
    clipped to [0, 1]. A camera's EXIF orientation is applied (phone photos are stored sideways).

    Args:
        path: the image file.
        min_side: smallest width and height accepted, pixels (`MIN_PHOTO_SIDE` for photos).

    Raises:
        InputError: the file is missing, not a readable image, larger than `MAX_IMAGE_PIXELS`
            (or a decompression bomb), or smaller than ``min_side`` on a side.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # refused below, never decoded
            with Image.open(path) as im:
                _check_image_size(path, im.size, min_side)
                rgba = _to_rgba(ImageOps.exif_transpose(im))
    except InputError:  # the size checks' own message (InputError is a ValueError)
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(
            f"image {path} declares more pixels than Pillow decodes safely (a decompression bomb?); "
            f"the limit is {MAX_IMAGE_PIXELS // 1_000_000} megapixels"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise InputError(
            f"cannot read image {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None
    return rgba


def _check_image_size(path: Path, size: tuple[int, int], min_side: int) -> None:
    w, h = size
    if w * h > MAX_IMAGE_PIXELS:
        raise InputError(
            f"image {path} is {w}x{h} pixels, over the limit of {MAX_IMAGE_PIXELS // 1_000_000} megapixels; "
            "scale it down first"
        )
    if min(w, h) < min_side:
        raise InputError(f"image {path} is {w}x{h} pixels: too small (at least {min_side} pixels a side)")


def _to_rgba(im: Image.Image) -> np.ndarray:
    """[H, W, 4] float32 in [0, 1] from a Pillow image of any mode, scaled by its bit depth."""
    if im.mode in _SIXTEEN_BIT_MODES or im.mode == "F":
        scale = 1.0 if im.mode == "F" else 65535.0
        grey = np.clip(np.asarray(im, dtype=np.float32) / scale, 0.0, 1.0)  # [H, W]
        return np.concatenate([np.repeat(grey[..., None], 3, axis=-1), np.ones_like(grey)[..., None]], axis=-1)
    if im.mode == "CMYK":  # through RGB: CMYK has no alpha
        im = im.convert("RGB")
    return np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0


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

"""Training pairs of the multi-view generator: (caption, 2x2 grid) and optional plain 2D pairs.

Grid data is the dataset renderer's output (``fourview data render``): one folder per object with
``grid.png`` (the four rig views, row major [az 0, az 90; az 180, az 270], on white) and
``caption.txt``. Folders without both files are skipped.

Plain 2D pairs (``--mix-2d DIR``, MVDream's joint 2D + 3D training) are a flat folder of images
with a caption file of the same stem: ``DIR/NAME.png`` (or ``.jpg`` / ``.jpeg`` / ``.webp``) and
``DIR/NAME.txt`` (one line of UTF-8 text). Images are centre-cropped to a square and resized to
the grid resolution; transparent pixels are composited on white.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from fourview.errors import InputError

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp")
"""Image files accepted as plain 2D pairs."""


@dataclass(frozen=True)
class CaptionedImages:
    """Captioned square images, loaded eagerly (small datasets; latents are cached from them).

    Attributes:
        paths: image files, sorted.
        captions: one caption per image.
        resolution: side the images are resized to, pixels.
    """

    paths: tuple[Path, ...]
    captions: tuple[str, ...]
    resolution: int

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, i: int) -> torch.Tensor:
        """Image ``i`` as RGB in [-1, 1] on white, centre-cropped and resized: ``[3, R, R]``."""
        return load_image(self.paths[i], self.resolution)


def grid_dataset(root: str | Path, resolution: int) -> CaptionedImages:
    """The (grid.png, caption.txt) pairs under ``root`` (one folder per object).

    Raises:
        InputError: ``root`` missing or without any object folder holding both files.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"mvgen training data folder not found: {root}")
    paths, captions = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        grid, cap = folder / "grid.png", folder / "caption.txt"
        if grid.is_file() and cap.is_file():
            paths.append(grid)
            captions.append(_caption(cap))
    if not paths:
        raise InputError(f"no object folders with grid.png and caption.txt in {root}")
    return CaptionedImages(tuple(paths), tuple(captions), resolution)


def pairs_2d(root: str | Path, resolution: int) -> CaptionedImages:
    """Plain 2D text-image pairs: ``NAME.png`` (or .jpg/.jpeg/.webp) + ``NAME.txt`` in ``root``.

    Raises:
        InputError: ``root`` missing or without any complete pair.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"2D pair folder not found: {root}")
    paths, captions = [], []
    for p in sorted(root.iterdir()):
        if p.suffix.lower() in IMAGE_SUFFIXES and p.with_suffix(".txt").is_file():
            paths.append(p)
            captions.append(_caption(p.with_suffix(".txt")))
    if not paths:
        raise InputError(f"no image + .txt caption pairs in 2D pair folder {root}")
    return CaptionedImages(tuple(paths), tuple(captions), resolution)


def load_image(path: Path, resolution: int) -> torch.Tensor:
    """An image file as RGB in [-1, 1] composited on white, centre-cropped square, resized: ``[3, R, R]``."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGBA")
            rgba = np.asarray(im, dtype=np.float32) / 255.0  # [H, W, 4]
    except OSError as e:
        raise InputError(f"cannot read image {path}: {e}") from e
    rgb = rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])  # on white
    h, w = rgb.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    x = torch.from_numpy(np.ascontiguousarray(rgb[top : top + s, left : left + s])).permute(2, 0, 1)  # [3, s, s]
    if s != resolution:
        x = F.interpolate(
            x[None], size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False
        )[0]
    return (x * 2.0 - 1.0).clamp(-1.0, 1.0)


def _caption(path: Path) -> str:
    text = " ".join(path.read_text(encoding="utf-8").split())
    if not text:
        raise InputError(f"empty caption file: {path}")
    return text

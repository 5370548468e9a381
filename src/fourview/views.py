"""Posed views: the one value for images of an object with their cameras.

Every stage that looks at views takes a `PosedViews`: reading the user's inputs, the reconstructor
(`fourview.recon.model.Reconstructor.reconstruct`), the per-object fit and refinement
(`fourview.recon.optimize`), the texture projection (`fourview.export.projection`), and the saved
reconstruction (``reconstruction/views.npz``). They are built from

- the orthogonal rig: four images in rig order (azimuths 0, 90, 180, 270; `fourview.cameras`), or
  one 2x2 grid image laid out ``[[az 0, az 90], [az 180, az 270]]``, at any elevation
  (`PosedViews.from_rig`, `PosedViews.from_grid`, `PosedViews.read`);
- any images described by a dataset-renderer ``cameras.json`` (`PosedViews.from_cameras_json`);
- a saved ``views.npz`` (`PosedViews.load`).

Images are straight-alpha RGBA float32 in [0, 1], row 0 at the top; cameras are camera-to-world
matrices with OpenGL axes in the object frame, with a vertical field of view each.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fourview.atomic import write_file_atomic
from fourview.cameras import (
    DEFAULT_ELEVATION_DEG,
    RIG_AZIMUTHS_DEG,
    Camera,
    grid_to_views,
    orthogonal_rig,
    perspective,
)
from fourview.errors import InputError
from fourview.images import MIN_VIEW_SIDE, WHITE_ALPHA_HIGH, composite_on_white, read_rgba

RIG_VIEW_NAMES: tuple[str, ...] = tuple(f"az {int(a)}" for a in RIG_AZIMUTHS_DEG)
"""Names of the four rig views, in rig order."""


@dataclass(frozen=True)
class PosedViews:
    """Images of one object with their cameras.

    Attributes:
        images: [V, H, W, 4] float32 RGBA in [0, 1] (straight alpha), row 0 at the top.
        c2w: [V, 4, 4] float64 camera-to-world matrices (OpenGL camera axes), object frame.
        fov_deg: [V] float64 vertical fields of view, degrees.
        names: one name per view, for messages (file names, or ``az 0`` ... for the rig).
    """

    images: np.ndarray
    c2w: np.ndarray
    fov_deg: np.ndarray
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        images = np.asarray(self.images, dtype=np.float32)
        c2w = np.asarray(self.c2w, dtype=np.float64)
        fov = np.asarray(self.fov_deg, dtype=np.float64).reshape(-1)
        if images.ndim != 4 or images.shape[-1] != 4:
            raise InputError(f"views must be RGBA images [V, H, W, 4], got shape {tuple(images.shape)}")
        n = images.shape[0]
        if n < 1:
            raise InputError("no views given")
        if c2w.shape != (n, 4, 4) or fov.shape != (n,) or len(self.names) != n:
            raise InputError(f"{n} views need {n} cameras and names, got {len(c2w)} poses, {len(fov)} fields of view")
        if not np.isfinite(images).all() or not np.isfinite(c2w).all() or not np.isfinite(fov).all():
            raise InputError("views or cameras hold non-finite values")
        if not ((fov > 0.0) & (fov < 180.0)).all():
            raise InputError(f"fields of view must be in (0, 180) degrees, got {fov.tolist()}")
        object.__setattr__(self, "images", images)
        object.__setattr__(self, "c2w", c2w)
        object.__setattr__(self, "fov_deg", fov)
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))

    # -- construction ----------------------------------------------------------------------------

    @classmethod
    def from_cameras(cls, images: np.ndarray, cameras: list[Camera], names: tuple[str, ...] | None = None):
        """Images taken by `fourview.cameras.Camera` s; RGB images get opaque alpha."""
        images = _rgba(np.asarray(images, dtype=np.float32))
        if len(cameras) != len(images):
            raise InputError(f"{len(images)} views need {len(images)} cameras, got {len(cameras)}")
        names = names or tuple(f"az {c.azimuth_deg:g} el {c.elevation_deg:g}" for c in cameras)
        return cls(images, np.stack([c.c2w() for c in cameras]), np.array([c.fov_deg for c in cameras]), names)

    @classmethod
    def from_rig(cls, images: np.ndarray, elevation_deg: float = DEFAULT_ELEVATION_DEG) -> PosedViews:
        """The four rig views (azimuths 0, 90, 180, 270 at ``elevation_deg``).

        Args:
            images: [4, H, W, 3|4] float in [0, 1], rig order; RGB views get opaque alpha.

        Raises:
            InputError: not four square views, or an elevation outside [-90, 90].
        """
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[0] != 4 or images.shape[-1] not in (3, 4):
            raise InputError(f"expected four rig views [4, H, W, 3|4], got shape {tuple(images.shape)}")
        if images.shape[1] != images.shape[2]:
            raise InputError(f"views must be square, got {images.shape[2]}x{images.shape[1]}")
        if not -90.0 <= elevation_deg <= 90.0:
            raise InputError(f"elevation must be in [-90, 90] degrees, got {elevation_deg}")
        return cls.from_cameras(images, orthogonal_rig(elevation_deg), RIG_VIEW_NAMES)

    @classmethod
    def from_grid(cls, grid: np.ndarray, elevation_deg: float = DEFAULT_ELEVATION_DEG) -> PosedViews:
        """The rig views from one 2x2 grid image [S, S, 3|4] (``[[az 0, az 90], [az 180, az 270]]``)."""
        grid = np.asarray(grid, dtype=np.float32)
        h, w = grid.shape[:2]
        if grid.ndim != 3 or h != w or h % 2:
            raise InputError(f"a 2x2 grid image must be square with an even side, got {w}x{h}")
        views = grid_to_views(torch.from_numpy(np.ascontiguousarray(grid)).permute(2, 0, 1))
        return cls.from_rig(views.permute(0, 2, 3, 1).numpy(), elevation_deg)

    @classmethod
    def read(cls, paths: list[str | os.PathLike], elevation_deg: float = DEFAULT_ELEVATION_DEG) -> PosedViews:
        """Read four rig view files (rig order) or one 2x2 grid image file.

        Raises:
            InputError: not 4 views nor 1 grid, unreadable files, views smaller than `MIN_VIEW_SIDE`
                or of different sizes, or a grid that is not square with an even side.
        """
        if len(paths) not in (1, 4):
            raise InputError(f"expected 4 view images (az 0, 90, 180, 270) or one 2x2 grid image, got {len(paths)}")
        min_side = MIN_VIEW_SIDE * (2 if len(paths) == 1 else 1)  # a grid holds two views a side
        images = [read_rgba(p, min_side) for p in paths]
        if len(images) == 1:
            try:
                return cls.from_grid(images[0], elevation_deg)
            except InputError as e:
                raise InputError(f"{e}: {paths[0]}") from None
        sizes = {img.shape[:2] for img in images}
        if len(sizes) != 1:
            listing = ", ".join(f"{Path(p).name} {img.shape[1]}x{img.shape[0]}" for p, img in zip(paths, images))
            raise InputError(f"the 4 views must have the same size, got {listing}")
        return cls.from_rig(np.stack(images), elevation_deg)

    @classmethod
    def from_cameras_json(cls, images: list[str | os.PathLike], cameras_json: str | os.PathLike) -> PosedViews:
        """Images with their cameras from a ``cameras.json`` written by the dataset renderer.

        Each image must be one of the file's frames: its path, resolved, equals the frame's
        ``image`` resolved against the JSON file's folder. The frame's ``c2w`` and ``fov_deg`` are its
        camera; its ``resolution`` must be the image's size.

        Raises:
            InputError: an unreadable file, an image without a frame or smaller than `MIN_VIEW_SIDE`, a
                size that does not match its frame, or images of different sizes.
        """
        path = Path(cameras_json)
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
            by_path = {(path.parent / f["image"]).resolve(): f for f in meta["frames"]}
        except FileNotFoundError:
            raise InputError(f"cameras file not found: {path}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise InputError(f"cannot read cameras from {path}: {_one_line(e)}") from None
        if not images:
            raise InputError(f"no images given for the cameras in {path}")
        imgs, c2w, fov, names = [], [], [], []
        for p in images:
            frame = by_path.get(Path(p).resolve())
            if frame is None:
                raise InputError(f"{p} has no frame in {path} (frames name images relative to that file's folder)")
            img = read_rgba(p, MIN_VIEW_SIDE)
            try:
                h, w = (int(v) for v in frame["resolution"])
                m = np.asarray(frame["c2w"], dtype=np.float64)
                f = float(frame["fov_deg"])
            except (KeyError, TypeError, ValueError) as e:
                raise InputError(f"frame of {p} in {path} is incomplete: {_one_line(e)}") from None
            if img.shape[:2] != (h, w):
                raise InputError(
                    f"{p} is {img.shape[1]}x{img.shape[0]} but its frame in {path} says {w}x{h}: "
                    "cameras do not match the images"
                )
            if m.shape != (4, 4) or not 0.0 < f < 180.0:
                raise InputError(f"frame of {p} in {path} needs a 4x4 c2w and a fov in (0, 180) degrees")
            imgs.append(img), c2w.append(m), fov.append(f), names.append(Path(p).name)
        if len({i.shape[:2] for i in imgs}) != 1:
            listing = ", ".join(f"{n} {i.shape[1]}x{i.shape[0]}" for n, i in zip(names, imgs))
            raise InputError(f"the views must have the same size, got {listing}")
        return cls(np.stack(imgs), np.stack(c2w), np.array(fov), tuple(names))

    # -- saving ----------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> Path:
        """Write the views as a compressed ``.npz`` (RGBA as 8-bit, poses in float64), atomically."""
        rgba = np.round(np.clip(self.images, 0.0, 1.0) * 255.0).astype(np.uint8)
        arrays = {"rgba": rgba, "c2w": self.c2w, "fov_deg": self.fov_deg, "names": np.array(self.names)}
        return write_file_atomic(path, lambda f: np.savez_compressed(f, **arrays))

    @classmethod
    def load(cls, path: str | os.PathLike) -> PosedViews:
        """Read views written by `save` (files without names get ``view 0``, ``view 1``, ...).

        Raises:
            InputError: the file is missing or is not such a file.
        """
        try:
            with np.load(path) as d:
                rgba = d["rgba"].astype(np.float32) / 255.0
                names = (
                    tuple(str(n) for n in d["names"]) if "names" in d else tuple(f"view {i}" for i in range(len(rgba)))
                )
                return cls(rgba, d["c2w"], d["fov_deg"], names)
        except (OSError, KeyError, ValueError) as e:
            raise InputError(f"cannot read views {path}: {_one_line(e)}") from None

    # -- views of the views ------------------------------------------------------------------------

    @property
    def num_views(self) -> int:
        return int(self.images.shape[0])

    @property
    def resolution(self) -> tuple[int, int]:
        """(H, W) of the images."""
        return int(self.images.shape[1]), int(self.images.shape[2])

    def rgb_on_white(self) -> np.ndarray:
        """[V, H, W, 3] the views composited on white (what the models see)."""
        return composite_on_white(self.images)

    def mvp(self, i: int) -> np.ndarray:
        """[4, 4] object frame to clip space of view ``i`` (square images)."""
        return perspective(float(self.fov_deg[i])) @ np.linalg.inv(self.c2w[i])

    def rig_elevation_deg(self, atol_deg: float = 0.01) -> float:
        """The elevation of the orthogonal rig these views were taken by.

        Raises:
            InputError: the views are not the four rig views (azimuths 0, 90, 180, 270 in that order,
                one elevation, looking at the origin).
        """
        cams = []
        if self.num_views == 4:
            try:
                cams = [Camera.from_c2w(m, f) for m, f in zip(self.c2w, self.fov_deg)]
            except InputError:
                cams = []
        azimuths = [c.azimuth_deg % 360.0 for c in cams]
        if not cams or any(
            abs((a - r + 180.0) % 360.0 - 180.0) > atol_deg for a, r in zip(azimuths, RIG_AZIMUTHS_DEG)
        ):
            raise InputError(
                "the reconstructor takes the four rig views (azimuths 0, 90, 180, 270 at one elevation); "
                f"got {self.num_views} views ({', '.join(self.names)}); use --optimize for other cameras"
            )
        elevations = [c.elevation_deg for c in cams]
        if max(elevations) - min(elevations) > atol_deg:
            raise InputError(f"the four rig views must share one elevation, got {[round(e, 2) for e in elevations]}")
        return float(np.mean(elevations))

    def model_input(self, resolution: int) -> torch.Tensor:
        """[1, V, 3, R, R] the views on white, resized to ``resolution`` (area filter down, bilinear up)."""
        t = torch.from_numpy(np.ascontiguousarray(self.rgb_on_white())).permute(0, 3, 1, 2)  # [V, 3, H, W]
        if t.shape[-1] != resolution:
            mode = "area" if t.shape[-1] > resolution else "bilinear"
            extra = {} if mode == "area" else {"align_corners": False}
            t = F.interpolate(t, size=(resolution, resolution), mode=mode, **extra)
        return t.clamp(0.0, 1.0)[None]

    def contact_sheet(self) -> np.ndarray:
        """[H', W', 3] the views on white in one image: the 2x2 grid for four views, else rows of up to four."""
        rgb = self.rgb_on_white()
        cols = 2 if self.num_views == 4 else min(4, self.num_views)
        rows = -(-self.num_views // cols)
        h, w = self.resolution
        sheet = np.ones((rows * h, cols * w, 3), np.float32)
        for i, img in enumerate(rgb):
            r, c = divmod(i, cols)
            sheet[r * h : (r + 1) * h, c * w : (c + 1) * w] = img
        return sheet

    def check_objects(self) -> None:
        """Reject views that show no object (alpha 0 everywhere).

        Raises:
            InputError: a fully transparent view.
        """
        for name, img in zip(self.names, self.images):
            if float(img[..., 3].max()) <= 0.0:
                raise InputError(f"view {name} is fully transparent: no object to reconstruct")

    def with_white_key(self) -> PosedViews:
        """The views with alpha keyed from the white background when none of them has any transparency.

        Views on white without alpha (RGB files, opaque PNGs) would otherwise paint the background
        onto the mesh's edges where their colours are projected: pixels clearly not white
        (``1 - min(R, G, B) > WHITE_ALPHA_HIGH``) become opaque, the rest clear.
        """
        if float(self.images[..., 3].min()) < 1.0:
            return self
        rgb = self.images[..., :3]
        alpha = ((1.0 - rgb.min(axis=-1)) > WHITE_ALPHA_HIGH).astype(np.float32)
        return PosedViews(np.concatenate([rgb, alpha[..., None]], axis=-1), self.c2w, self.fov_deg, self.names)


def _rgba(images: np.ndarray) -> np.ndarray:
    """[..., 3|4] to [..., 4]: RGB gets opaque alpha."""
    if images.shape[-1] == 4:
        return images
    if images.shape[-1] != 3:
        raise InputError(f"views must be RGB or RGBA, got {images.shape[-1]} channels")
    return np.concatenate([images, np.ones_like(images[..., :1])], axis=-1)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__

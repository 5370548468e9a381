"""The camera convention of fourview, written once.

Every stage (dataset rendering, the multi-view generator's grid, the reconstructor, export) uses
these functions; `docs/conventions.md` states the same rules in prose.

Object frame
    Right-handed, +Y up, the object's front faces +Z. A loaded object is normalised so that the
    centre of its bounding box is at the origin and its farthest vertex is at distance 1.

Cameras
    Perspective, looking at the origin with world up +Y, vertical field of view 30 degrees, at
    distance 4. A camera at azimuth ``az`` and elevation ``el`` (degrees) sits at
    ``radius * (cos el * sin az, sin el, cos el * cos az)``: azimuth 0 looks at the front (+Z),
    azimuth 90 looks from +X. Camera axes are OpenGL's: the camera looks down its -Z axis, +Y is
    up in the image, +X is right. ``c2w`` maps camera coordinates to world coordinates.

Images
    Row 0 is the top of the image. Pixel ``(row, col)`` has its centre at normalised device
    coordinates ``x = (col + 0.5) / W * 2 - 1``, ``y = 1 - (row + 0.5) / H * 2``.

Orthogonal rig and grid
    Azimuths 0, 90, 180, 270 at one elevation (default 20 degrees). The 2x2 grid is row major:
    ``[[az 0, az 90], [az 180, az 270]]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from fourview.errors import InputError

FOV_DEG: float = 30.0
"""Vertical field of view of every camera, degrees."""
RADIUS: float = 4.0
"""Distance of every camera from the origin, object-frame units."""
DEFAULT_ELEVATION_DEG: float = 20.0
"""Elevation of the orthogonal rig unless a setting says otherwise, degrees."""
RIG_AZIMUTHS_DEG: tuple[float, float, float, float] = (0.0, 90.0, 180.0, 270.0)
"""Azimuths of the orthogonal rig, in grid order (row major: top-left, top-right, bottom-left, bottom-right)."""
NEAR: float = 0.1
FAR: float = 100.0


@dataclass(frozen=True)
class Camera:
    """One perspective camera looking at the origin.

    Attributes:
        azimuth_deg: rotation about +Y, degrees; 0 looks at the front (+Z), 90 from +X.
        elevation_deg: angle above the XZ plane, degrees, in [-90, 90].
        radius: distance from the origin.
        fov_deg: vertical field of view, degrees.
    """

    azimuth_deg: float
    elevation_deg: float
    radius: float = RADIUS
    fov_deg: float = FOV_DEG

    def __post_init__(self) -> None:
        if not -90.0 <= self.elevation_deg <= 90.0:
            raise ValueError(f"elevation must be in [-90, 90] degrees, got {self.elevation_deg}")
        if not self.radius > 0:
            raise ValueError(f"camera radius must be positive, got {self.radius}")
        if not 0.0 < self.fov_deg < 180.0:
            raise ValueError(f"field of view must be in (0, 180) degrees, got {self.fov_deg}")

    @property
    def position(self) -> np.ndarray:
        """Camera centre in the object frame, float64 [3]."""
        return camera_position(self.azimuth_deg, self.elevation_deg, self.radius)

    def c2w(self) -> np.ndarray:
        """Camera-to-world matrix (OpenGL camera axes), float64 [4, 4]."""
        return look_at(self.position)

    def w2c(self) -> np.ndarray:
        """World-to-camera matrix, float64 [4, 4]."""
        return np.linalg.inv(self.c2w())

    def projection(self, aspect: float = 1.0, near: float = NEAR, far: float = FAR) -> np.ndarray:
        """OpenGL projection matrix (camera space to clip space), float64 [4, 4]."""
        return perspective(self.fov_deg, aspect, near, far)

    def mvp(self, aspect: float = 1.0) -> np.ndarray:
        """World-to-clip matrix ``projection @ w2c``, float64 [4, 4]."""
        return self.projection(aspect) @ self.w2c()

    def focal_px(self, height: int) -> float:
        """Focal length in pixels for an image ``height`` pixels tall."""
        return 0.5 * height / math.tan(math.radians(self.fov_deg) / 2.0)

    @classmethod
    def from_c2w(cls, c2w: np.ndarray, fov_deg: float = FOV_DEG, atol: float = 1e-4) -> Camera:
        """The camera with this camera-to-world matrix.

        Raises:
            InputError: the matrix is not a look-at-the-origin camera with world up +Y (as `Camera.c2w`).
        """
        c2w = np.asarray(c2w, dtype=np.float64)
        pos = c2w[:3, 3]
        radius = float(np.linalg.norm(pos))
        if not radius > 0:
            raise InputError("camera at the origin: expected a camera looking at the origin from a distance")
        el = math.degrees(math.asin(max(-1.0, min(1.0, pos[1] / radius))))
        az = math.degrees(math.atan2(pos[0], pos[2]))
        cam = cls(az, el, radius, float(fov_deg))
        if not np.allclose(cam.c2w(), c2w, atol=atol * max(1.0, radius)):
            raise InputError(
                "expected a look-at-the-origin camera (fourview.cameras.look_at); got a c2w matrix that is not one"
            )
        return cam

    def to_json(self, resolution: int | tuple[int, int]) -> dict:
        """The record written to ``cameras.json`` by the dataset renderer."""
        h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
        return {
            "azimuth_deg": float(self.azimuth_deg),
            "elevation_deg": float(self.elevation_deg),
            "radius": float(self.radius),
            "fov_deg": float(self.fov_deg),
            "resolution": [int(h), int(w)],
            "c2w": self.c2w().tolist(),
        }


def camera_position(azimuth_deg: float, elevation_deg: float, radius: float = RADIUS) -> np.ndarray:
    """``radius * (cos el sin az, sin el, cos el cos az)``, float64 [3]."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    return radius * np.array([math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)])


def look_at(eye: np.ndarray, target: np.ndarray | None = None, up: np.ndarray | None = None) -> np.ndarray:
    """Camera-to-world matrix of a camera at ``eye`` looking at ``target`` (OpenGL axes), float64 [4, 4].

    At the poles (looking straight along ``up``) the camera's up vector falls back to -Z, so that
    the image's top points towards the object's back, as if the camera had tilted over the top.
    """
    eye = np.asarray(eye, dtype=np.float64)
    target = np.zeros(3) if target is None else np.asarray(target, dtype=np.float64)
    up = np.array([0.0, 1.0, 0.0]) if up is None else np.asarray(up, dtype=np.float64)
    back = eye - target  # camera +Z points away from what it looks at
    back = back / np.linalg.norm(back)
    right = np.cross(up, back)
    if np.linalg.norm(right) < 1e-9:
        right = np.cross(np.array([0.0, 0.0, -1.0]) * np.sign(back[1]), back)
    right = right / np.linalg.norm(right)
    cam_up = np.cross(back, right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, cam_up, back, eye
    return c2w


def perspective(fov_deg: float, aspect: float = 1.0, near: float = NEAR, far: float = FAR) -> np.ndarray:
    """OpenGL perspective projection; ``aspect`` is width / height. Float64 [4, 4]."""
    f = 1.0 / math.tan(math.radians(fov_deg) / 2.0)
    return np.array(
        [
            [f / aspect, 0.0, 0.0, 0.0],
            [0.0, f, 0.0, 0.0],
            [0.0, 0.0, (far + near) / (near - far), 2.0 * far * near / (near - far)],
            [0.0, 0.0, -1.0, 0.0],
        ]
    )


def orthogonal_rig(
    elevation_deg: float = DEFAULT_ELEVATION_DEG, radius: float = RADIUS, fov_deg: float = FOV_DEG
) -> list[Camera]:
    """The four rig cameras at azimuths 0, 90, 180, 270, in grid order."""
    return [Camera(az, elevation_deg, radius, fov_deg) for az in RIG_AZIMUTHS_DEG]


def random_cameras(
    n: int,
    seed: int = 0,
    elevation_range_deg: tuple[float, float] = (-90.0, 90.0),
    radius: float = RADIUS,
    fov_deg: float = FOV_DEG,
) -> list[Camera]:
    """``n`` cameras distributed uniformly over the sphere (restricted to an elevation band).

    Uniform over the sphere's area means ``sin(elevation)`` is uniform, not the elevation itself.
    The same ``seed`` gives the same cameras.
    """
    lo, hi = elevation_range_deg
    if not -90.0 <= lo <= hi <= 90.0:
        raise ValueError(f"elevation range must satisfy -90 <= lo <= hi <= 90, got {elevation_range_deg}")
    if n < 0:
        raise ValueError(f"number of cameras must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    s = rng.uniform(math.sin(math.radians(lo)), math.sin(math.radians(hi)), size=n)
    az = rng.uniform(0.0, 360.0, size=n)
    el = np.degrees(np.arcsin(np.clip(s, -1.0, 1.0)))
    return [Camera(float(a), float(e), radius, fov_deg) for a, e in zip(az, el)]


def project_points(points: np.ndarray, camera: Camera, resolution: int | tuple[int, int]) -> np.ndarray:
    """Project object-frame points to pixel coordinates.

    Args:
        points: [N, 3] object-frame positions.
        camera: the camera.
        resolution: ``H`` or ``(H, W)``.

    Returns:
        [N, 3] float64: ``(col, row, depth)`` where ``(col, row)`` are continuous pixel
        coordinates (pixel ``(r, c)`` covers ``[c, c+1) x [r, r+1)``, row 0 at the top) and
        ``depth`` is the distance along the camera's viewing axis.
    """
    h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    clip = np.concatenate([pts, np.ones((len(pts), 1))], axis=1) @ camera.mvp(w / h).T  # [N, 4]
    ndc = clip[:, :3] / clip[:, 3:4]
    col = (ndc[:, 0] + 1.0) * 0.5 * w
    row = (1.0 - ndc[:, 1]) * 0.5 * h
    return np.stack([col, row, clip[:, 3]], axis=1)


def pixel_rays(camera: Camera, resolution: int | tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Rays through pixel centres.

    Returns:
        origins [H, W, 3] and unit directions [H, W, 3], float64, object frame.
    """
    h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
    c2w = camera.c2w()
    t = math.tan(math.radians(camera.fov_deg) / 2.0)
    x = ((np.arange(w) + 0.5) / w * 2.0 - 1.0) * t * (w / h)
    y = (1.0 - (np.arange(h) + 0.5) / h * 2.0) * t
    xx, yy = np.meshgrid(x, y)  # [H, W]
    d_cam = np.stack([xx, yy, -np.ones_like(xx)], axis=-1)  # camera looks down -Z
    d = d_cam @ c2w[:3, :3].T
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    o = np.broadcast_to(c2w[:3, 3], d.shape).copy()
    return o, d


def views_to_grid(views: torch.Tensor) -> torch.Tensor:
    """Tile four views into the 2x2 grid.

    Args:
        views: [..., 4, C, H, W] in rig order (az 0, 90, 180, 270).

    Returns:
        [..., C, 2H, 2W] laid out ``[[az 0, az 90], [az 180, az 270]]``.
    """
    if views.shape[-4] != 4:
        raise ValueError(f"expected 4 views in dimension -4, got shape {tuple(views.shape)}")
    top = torch.cat([views[..., 0, :, :, :], views[..., 1, :, :, :]], dim=-1)  # [..., C, H, 2W]
    bottom = torch.cat([views[..., 2, :, :, :], views[..., 3, :, :, :]], dim=-1)
    return torch.cat([top, bottom], dim=-2)  # [..., C, 2H, 2W]


def grid_to_views(grid: torch.Tensor) -> torch.Tensor:
    """Split a 2x2 grid [..., C, 2H, 2W] into four views [..., 4, C, H, W] in rig order."""
    h2, w2 = grid.shape[-2:]
    if h2 != w2 or h2 % 2:
        raise ValueError(f"a 2x2 grid must be square with an even side, got {h2}x{w2}")
    h = h2 // 2
    cells = [grid[..., :h, :h], grid[..., :h, h:], grid[..., h:, :h], grid[..., h:, h:]]
    return torch.stack(cells, dim=-4)

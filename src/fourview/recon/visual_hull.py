"""The visual hull of posed silhouettes, and colours projected from the views onto a surface.

`carve_visual_hull` keeps the points of a regular grid over the object frame's cube [-1, 1]^3
whose projection lies inside every view's silhouette (alpha >= 0.5; points that project outside
an image are outside its silhouette: the views see the whole object). `hull_sdf` turns that
occupancy into a signed distance (Euclidean distance transforms, negative inside, object-frame
units). `ProjectedColors` colours any surface by blending the views' pixels at its points' projections,
weighted by how squarely each view sees the point and zero where the surface hides it
(sphere tracing of the surface's own SDF). `HullField` is the two together: the plain visual hull
with projected colours, the reference baseline of `benchmarks/bench_optimize.py` and the start of
`fourview.recon.optimize`.

Projection follows `fourview.cameras`: OpenGL camera axes (the camera looks down -Z), vertical
field of view ``fov``, image row 0 at the top, pixel centres at ``(col + 0.5, row + 0.5)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

__all__ = ["HullField", "ProjectedColors", "carve_visual_hull", "grid_lookup", "hull_sdf", "project", "sample_images"]


def project(xyz: torch.Tensor, c2w: torch.Tensor, fov_deg: torch.Tensor, aspect: float = 1.0) -> torch.Tensor:
    """Object-frame points to normalised image coordinates of each view.

    Args:
        xyz: [N, 3] points, object frame.
        c2w: [V, 4, 4] camera-to-world matrices (OpenGL camera axes).
        fov_deg: [V] vertical fields of view, degrees.
        aspect: width / height of the images.

    Returns:
        [V, N, 3]: ``(gx, gy, depth)``: ``gx`` in [-1, 1] from the left edge to the right, ``gy``
        in [-1, 1] from the top row to the bottom (``F.grid_sample``'s ``align_corners=False``
        convention on images stored row 0 at the top), ``depth`` the distance along the viewing
        axis (negative behind the camera).
    """
    w2c = torch.linalg.inv(c2w)  # [V, 4, 4]
    cam = xyz[None] @ w2c[:, :3, :3].transpose(1, 2) + w2c[:, None, :3, 3]  # [V, N, 3]
    depth = -cam[..., 2]
    t = torch.tan(torch.deg2rad(fov_deg) / 2.0)[:, None]  # [V, 1]
    safe = torch.where(depth.abs() < 1e-9, torch.full_like(depth, 1e-9), depth)
    gx = cam[..., 0] / (safe * t * aspect)
    gy = -cam[..., 1] / (safe * t)  # image y is up; rows count down
    return torch.stack([gx, gy, depth], dim=-1)


def sample_images(images: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Bilinear lookups: images [V, C, H, W], g [V, N, 2] -> [V, N, C] (zero outside the images)."""
    out = F.grid_sample(images, g[:, :, None, :], mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[..., 0].transpose(1, 2)  # [V, N, C]


@torch.no_grad()
def carve_visual_hull(
    alpha: torch.Tensor, c2w: torch.Tensor, fov_deg: torch.Tensor, resolution: int, threshold: float = 0.5
) -> np.ndarray:
    """Occupancy of the visual hull on a grid.

    Args:
        alpha: [V, H, W] silhouettes (coverage in [0, 1]), row 0 at the top.
        c2w: [V, 4, 4] cameras; fov_deg: [V] degrees.
        resolution: grid points per axis; point ``(i, j, k)`` is at ``-1 + 2 (i, j, k) / (R - 1)``.
        threshold: alpha at or above which a pixel is inside the silhouette.

    Returns:
        [R, R, R] bool, indexed ``[ix, iy, iz]``.
    """
    lin = torch.linspace(-1.0, 1.0, resolution, dtype=torch.float32)
    occ = np.empty((resolution, resolution, resolution), dtype=bool)
    yz = torch.stack(torch.meshgrid(lin, lin, indexing="ij"), dim=-1).reshape(-1, 2)  # [R*R, 2]
    a = alpha.float()[:, None]  # [V, 1, H, W]
    aspect = alpha.shape[2] / alpha.shape[1]
    for i, x in enumerate(lin):
        pts = torch.cat([x.expand(len(yz), 1), yz], dim=1)  # [R*R, 3]
        g = project(pts, c2w.float(), fov_deg.float(), aspect)  # [V, R*R, 3]
        inside = (sample_images(a, g[..., :2])[..., 0] >= threshold) & (g[..., 2] > 0)  # [V, R*R]
        occ[i] = inside.all(0).reshape(resolution, resolution).numpy()
    return occ


def hull_sdf(occupancy: np.ndarray, smooth_voxels: float = 0.0) -> np.ndarray:
    """Signed distance of an occupancy grid over [-1, 1]^3 (negative inside), object-frame units.

    Args:
        occupancy: [R, R, R] bool, grid points as in `carve_visual_hull`.
        smooth_voxels: standard deviation of a Gaussian blur of the distance, voxels (0: none).

    Returns:
        [R, R, R] float32; the zero level lies half way between inside and outside points.
    """
    h = 2.0 / (occupancy.shape[0] - 1)
    if not occupancy.any():
        return np.full(occupancy.shape, 1.0, np.float32)
    outside = ndimage.distance_transform_edt(~occupancy)  # distance to the nearest inside point, voxels
    inside = ndimage.distance_transform_edt(occupancy)
    sdf = np.where(occupancy, -(inside - 0.5), outside - 0.5) * h
    if smooth_voxels > 0:
        sdf = ndimage.gaussian_filter(sdf, smooth_voxels, mode="nearest")
    return sdf.astype(np.float32)


def grid_lookup(grid: torch.Tensor, xyz: torch.Tensor) -> torch.Tensor:
    """Trilinear value of a [R, R, R] grid (points as in `carve_visual_hull`) at [N, 3] points -> [N].

    Outside the cube the border value is used.
    """
    vol = grid[None, None].permute(0, 1, 4, 3, 2)  # [1, 1, Z, Y, X]: grid_sample reads (x, y, z) as (W, H, D)
    g = xyz.to(grid.dtype)[None, None, None]  # [1, 1, 1, N, 3]
    out = F.grid_sample(vol, g, mode="bilinear", padding_mode="border", align_corners=True)
    return out.reshape(-1)


def _fd_normals(sdf_fn: Callable[[torch.Tensor], torch.Tensor], xyz: torch.Tensor, h: float) -> torch.Tensor:
    """Unit normals [N, 3] of an SDF by central differences with step ``h``."""
    eye = torch.eye(3, dtype=xyz.dtype, device=xyz.device) * h  # [3, 3]
    pts = torch.cat([xyz[:, None] + eye, xyz[:, None] - eye], dim=1).reshape(-1, 3)  # [N * 6, 3]
    v = sdf_fn(pts).reshape(-1, 2, 3)
    return F.normalize(v[:, 0] - v[:, 1], dim=-1)


class ProjectedColors:
    """Colours of a surface's points blended from the posed views that see them.

    Args:
        images: [V, H, W, 4] RGBA float in [0, 1] (straight alpha), row 0 at the top.
        c2w: [V, 4, 4] cameras; fov_deg: [V] degrees.
        sdf_fn: the surface, ``xyz [N, 3] -> [N]`` signed distance (negative inside), used for
            normals and for the visibility test.
        sharpness: exponent of the cosine weight (higher favours the view that faces the point).
        step: finite-difference step for normals, object-frame units.
    """

    def __init__(
        self,
        images: np.ndarray,
        c2w: np.ndarray,
        fov_deg: np.ndarray,
        sdf_fn: Callable[[torch.Tensor], torch.Tensor],
        sharpness: float = 4.0,
        step: float = 0.01,
    ) -> None:
        img = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).permute(0, 3, 1, 2)  # [V, 4, H, W]
        # Premultiplied colour + alpha, so bilinear lookups at the outline do not pull in the background.
        self.premult = torch.cat([img[:, :3] * img[:, 3:4], img[:, 3:4]], dim=1)
        self.c2w = torch.as_tensor(c2w, dtype=torch.float32)
        self.fov = torch.as_tensor(fov_deg, dtype=torch.float32)
        self.aspect = img.shape[3] / img.shape[2]
        self.sdf_fn = sdf_fn
        self.sharpness = sharpness
        self.step = step

    @torch.no_grad()
    def visible(self, xyz: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
        """[V, N] bool: the surface does not hide point ``xyz`` from camera v (sphere tracing)."""
        cams = self.c2w[:, :3, 3]  # [V, 3]
        start = xyz + normals * (2.0 * self.step)  # just off the surface
        out = []
        for c in cams:
            d = c[None] - start
            length = d.norm(dim=-1)
            d = d / length[:, None]
            t = torch.zeros_like(length)
            hit = torch.zeros_like(length, dtype=torch.bool)
            far = torch.minimum(length, torch.full_like(length, 3.5))  # leaves the unit cube by then
            for _ in range(48):
                s = self.sdf_fn(start + t[:, None] * d)
                hit |= (s < 0.25 * self.step) & (t < far)
                t = t + s.clamp(min=0.5 * self.step)
                if bool((t >= far).all()):
                    break
            out.append(~hit)
        return torch.stack(out)  # [V, N]

    @torch.no_grad()
    def __call__(self, xyz: torch.Tensor) -> torch.Tensor:
        """[N, 3] surface points -> [N, 3] sRGB colours in [0, 1]."""
        xyz = xyz.float()
        normals = _fd_normals(self.sdf_fn, xyz, self.step)  # [N, 3]
        g = project(xyz, self.c2w, self.fov, self.aspect)  # [V, N, 3]
        samples = sample_images(self.premult, g[..., :2])  # [V, N, 4]
        to_cam = F.normalize(self.c2w[:, None, :3, 3] - xyz[None], dim=-1)  # [V, N, 3]
        cos = (to_cam * normals[None]).sum(-1).clamp(min=0.0)  # [V, N]
        vis = self.visible(xyz, normals).float()
        w = (cos**self.sharpness + 1e-4) * samples[..., 3]  # [V, N]; alpha weights the outline down
        wv = w * vis
        # Points no view sees (hidden everywhere) take the views that face them, visibility ignored.
        w = torch.where(wv.sum(0, keepdim=True) > 1e-6, wv, w)
        rgb = (w[..., None] * samples[..., :3] / samples[..., 3:4].clamp(min=1e-4)).sum(0)
        total = w.sum(0)[:, None]
        fallback = torch.full_like(rgb, 0.5)
        return torch.where(total > 1e-8, rgb / total.clamp(min=1e-8), fallback).clamp(0.0, 1.0)


@dataclass
class HullField:
    """The visual hull as a `fourview.recon.fields.SurfaceField`, coloured by `ProjectedColors`.

    Attributes:
        sdf_grid: [R, R, R] signed distance on the grid of `carve_visual_hull` (`hull_sdf`).
        colors: the colour projector (built on this field's SDF); set by `from_views`.
    """

    sdf_grid: torch.Tensor
    colors: ProjectedColors | None = None

    @classmethod
    def from_views(
        cls,
        images: np.ndarray,
        c2w: np.ndarray,
        fov_deg: np.ndarray,
        resolution: int = 128,
        smooth_voxels: float = 0.0,
    ) -> HullField:
        """Carve the hull of RGBA ``images`` [V, H, W, 4] seen from ``c2w`` [V, 4, 4], ``fov_deg`` [V]."""
        alpha = torch.from_numpy(np.ascontiguousarray(images[..., 3], dtype=np.float32))
        occ = carve_visual_hull(alpha, torch.as_tensor(c2w), torch.as_tensor(fov_deg), resolution)
        field = cls(torch.from_numpy(hull_sdf(occ, smooth_voxels)))
        field.colors = ProjectedColors(images, c2w, fov_deg, field.sdf, step=2.0 / (resolution - 1))
        return field

    def sdf(self, xyz: torch.Tensor) -> torch.Tensor:
        return grid_lookup(self.sdf_grid, xyz.float())

    def color(self, xyz: torch.Tensor) -> torch.Tensor:
        if self.colors is None:
            return torch.full((xyz.shape[0], 3), 0.5)
        return self.colors(xyz)

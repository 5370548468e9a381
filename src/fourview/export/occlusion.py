"""Ambient occlusion baked from the field: how much of the sky each surface point sees.

`vertex_occlusion` samples the field's signed distance once on a coarse grid over the object
frame's cube (`OcclusionConfig.grid` per axis), then, from each vertex (lifted one grid cell off
the surface along its normal), marches a fixed set of cosine-distributed directions of the
normal's hemisphere out to `OcclusionConfig.distance`: a direction is blocked when a sample lands
inside the field (signed distance < 0, read trilinearly from the grid). The occlusion value is
one minus the mean over directions of ``1 - hit / distance`` (a near hit occludes more than a far
one, which keeps the map smooth), then averaged with the neighbouring vertices a few times
(`OcclusionConfig.smoothing`) against the noise of a few dozen directions. 1 = open sky, glTF's
convention. Only the sign of the field is used, so fields whose "distance" is a log-density level
(the reconstructor's) work as well as true distances.

Occlusion is smooth at the scale of the budget mesh's triangles, so it is computed per vertex and
interpolated over the atlas (`bake_occlusion`); the field is queried ``grid^3`` times whatever the
texture size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.ndimage import map_coordinates
from scipy.sparse import coo_matrix

from fourview.errors import InputError
from fourview.export.bake import UVTexels
from fourview.export.tangents import orthogonal_unit
from fourview.recon.fields import SurfaceField


@dataclass(frozen=True)
class OcclusionConfig:
    """Settings of `vertex_occlusion`.

    Attributes:
        grid: samples of the field per axis over [-1, 1]^3.
        directions: rays per vertex over the hemisphere (cosine-distributed).
        steps: samples per ray.
        distance: ray length, object-frame units (the object fits in the unit sphere).
        smoothing: passes of averaging each vertex with its neighbours.
    """

    grid: int = 64
    directions: int = 32
    steps: int = 10
    distance: float = 0.6
    smoothing: int = 3

    def __post_init__(self) -> None:
        if self.grid < 8 or self.directions < 1 or self.steps < 1:
            raise InputError(f"occlusion needs grid >= 8, directions >= 1, steps >= 1, got {self}")
        if not self.distance > 0:
            raise InputError(f"occlusion distance must be positive, got {self.distance}")


@torch.no_grad()
def vertex_occlusion(
    field: SurfaceField,
    verts: np.ndarray,
    faces: np.ndarray,
    normals: np.ndarray,
    config: OcclusionConfig = OcclusionConfig(),
    chunk: int = 262144,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Ambient occlusion at each vertex (see the module docstring).

    Args:
        field: the field the mesh was extracted from.
        verts: [V, 3] positions, object frame.
        faces: [F, 3] the mesh's faces (for the smoothing).
        normals: [V, 3] unit outward normals.
        config: settings.
        chunk: points per ``field.sdf`` call.
        device: torch device for the field queries.

    Returns:
        [V] float32 in [0, 1], 1 = unoccluded.
    """
    n = config.grid
    axis = np.linspace(-1.0, 1.0, n, dtype=np.float32)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)
    sdf = np.empty(len(grid), dtype=np.float32)
    for i in range(0, len(grid), chunk):
        sdf[i : i + chunk] = field.sdf(torch.from_numpy(grid[i : i + chunk]).to(device)).float().cpu().numpy()
    sdf = sdf.reshape(n, n, n)
    cell = 2.0 / (n - 1)
    verts = np.asarray(verts, dtype=np.float64)
    normals = np.asarray(normals, dtype=np.float64)
    local = _hemisphere(config.directions)  # [K, 3] around +Z
    tangent = orthogonal_unit(normals)
    bitangent = np.cross(normals, tangent)
    dirs = (
        local[None, :, 0:1] * tangent[:, None]
        + local[None, :, 1:2] * bitangent[:, None]
        + local[None, :, 2:3] * normals[:, None]
    )  # [V, K, 3]
    start = verts + normals * cell  # off the surface, so that the first samples do not see it
    ts = cell + (config.distance - cell) * (np.arange(1, config.steps + 1) / config.steps)  # [S]
    hit = np.full(dirs.shape[:2], config.distance)  # [V, K] distance of the first sample inside
    for t in ts[::-1]:  # far to near: the nearest inside sample is written last
        points = start[:, None] + dirs * t  # [V, K, 3]
        coords = ((points.reshape(-1, 3) + 1.0) / cell).T  # [3, V*K] grid index space
        values = map_coordinates(sdf, coords, order=1, mode="nearest").reshape(hit.shape)
        hit = np.where(values < 0.0, t, hit)
    occlusion = 1.0 - (1.0 - hit / config.distance).mean(axis=1)  # [V]
    return np.clip(_smooth(occlusion, verts, faces, config.smoothing), 0.0, 1.0).astype(np.float32)


def _smooth(values: np.ndarray, verts: np.ndarray, faces: np.ndarray, passes: int) -> np.ndarray:
    """[V] ``values`` averaged ``passes`` times with their neighbours (vertices at one position joined)."""
    if passes == 0:
        return values
    _, node = np.unique(verts, axis=0, return_inverse=True)
    node = node.reshape(-1)
    n = int(node.max()) + 1
    f = node[np.asarray(faces)]
    rows = np.concatenate([f[:, 0], f[:, 1], f[:, 2], f[:, 0], f[:, 1], f[:, 2]])
    cols = np.concatenate([f[:, 1], f[:, 2], f[:, 0], f[:, 0], f[:, 1], f[:, 2]])  # edges and self loops
    adjacency = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n)).tocsr()
    adjacency.data[:] = 1.0
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    x = np.bincount(node, weights=values, minlength=n) / np.maximum(np.bincount(node, minlength=n), 1)
    for _ in range(passes):
        x = (adjacency @ x) / degree
    return x[node]


def bake_occlusion(texels: UVTexels, faces: np.ndarray, occlusion: np.ndarray, dilation_px: int = 8) -> np.ndarray:
    """[T, T] float32 occlusion map: per-vertex ``occlusion`` [V] interpolated at the atlas's texels."""
    values = np.einsum("nk,nk->n", texels.bary, np.asarray(occlusion, np.float64)[faces[texels.tri]])
    return np.clip(texels.image(values[:, None], dilation_px)[..., 0], 0.0, 1.0)


def _hemisphere(count: int) -> np.ndarray:
    """[K, 3] cosine-distributed unit directions around +Z (a Fibonacci spiral on the disc, lifted)."""
    k = np.arange(count) + 0.5
    radius = np.sqrt(k / count)  # uniform on the unit disc -> cosine-weighted on the hemisphere
    angle = k * math.pi * (3.0 - math.sqrt(5.0))
    x, y = radius * np.cos(angle), radius * np.sin(angle)
    return np.stack([x, y, np.sqrt(np.maximum(1.0 - x * x - y * y, 0.0))], axis=1)

"""Geometry metrics between a reconstructed mesh and its ground truth: Chamfer distance, F-score, volume IoU.

Points. `surface_points` draws points uniformly over a mesh's surface area (trimesh's sampler:
faces chosen with probability proportional to their area, then a uniform point in the face) from
a generator seeded by ``seed``, so the same mesh and seed give the same points.

Chamfer distance (`geometry_scores`). With ``d(p, G)`` the Euclidean distance from ``p`` to its
nearest neighbour in the point set ``G``::

    CD = 0.5 * (mean over p in P of d(p, G) + mean over g in G of d(g, P))

the mean of both directions of plain (not squared) nearest-neighbour distances, sometimes called
the L1 Chamfer distance; it is in the units of the points' frame.

F-score at a threshold ``tau``: precision is the share of predicted points ``p`` with
``d(p, G) < tau``, recall the share of ground-truth points ``g`` with ``d(g, P) < tau``, and
``F = 2 P R / (P + R)`` (0 when both are 0).

Volume IoU (`volume_iou`). Both meshes are voxelised on one grid over a cube (by default 64^3
over the object cube [-1, 1]^3) and compared cell by cell (`voxel_iou`). Scans are not always
watertight, so a cell's inside test is a vote (`occupancy_grid`): along each of the three axes a
ray through the cell's column counts the mesh's triangles it crosses before the cell (parity: odd
is inside), and a cell is occupied when at least two axes say inside. A hole in the surface flips
the parity along the rays that pass through it, which is along one axis for most cells around it;
the other two outvote it. The rays pass 1/1000 of a cell beside the cell centres (by different
irrational fractions per axis) so that none runs exactly along an edge or through a vertex of
axis-aligned geometry, where a crossing would be counted twice or not at all. Overlapping closed
parts (two boxes pushed into each other) cancel in the overlap: the parity rule voxelises one
surface, not a union of solids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import trimesh
from scipy.spatial import cKDTree

from fourview.errors import InputError
from fourview.evaluation.protocol import FSCORE_THRESHOLDS, SURFACE_POINTS, VOLUME_RESOLUTION
from fourview.mesh import MeshAsset

# Offsets of the rays from the cell centres, in cells, per (axis, other axis): small irrational fractions.
_RAY_NUDGE = 1e-3 * np.array([[math.sqrt(2) - 1, math.sqrt(3) - 1], [math.sqrt(5) - 2, math.sqrt(7) - 2],
                              [math.sqrt(11) - 3, math.sqrt(13) - 3]])  # fmt: skip
_PAIR_CHUNK = 4_000_000  # (triangle, ray) pairs tested at once, to bound memory


@dataclass(frozen=True)
class GeometryScores:
    """Chamfer distance and F-scores between two point sets (see the module docstring).

    Attributes:
        chamfer: the mean of both directions' mean nearest-neighbour distances.
        fscore: threshold -> F-score in [0, 1].
        precision: threshold -> share of predicted points within the threshold of the ground truth.
        recall: threshold -> share of ground-truth points within the threshold of the prediction.
    """

    chamfer: float
    fscore: dict[float, float]
    precision: dict[float, float]
    recall: dict[float, float]


def asset_trimesh(asset: MeshAsset) -> trimesh.Trimesh:
    """All parts of ``asset`` as one untextured trimesh (vertices as the parts hold them, not welded)."""
    if not asset.parts:
        raise InputError(f"asset {asset.name!r} has no parts")
    verts, faces, offset = [], [], 0
    for part in asset.parts:
        verts.append(part.verts)
        faces.append(part.faces + offset)
        offset += len(part.verts)
    return trimesh.Trimesh(np.concatenate(verts), np.concatenate(faces), process=False)


def surface_points(asset: MeshAsset, n: int = SURFACE_POINTS, seed: int = 0) -> np.ndarray:
    """[n, 3] float64 points uniform over the asset's surface area, from a generator seeded by ``seed``.

    Raises:
        InputError: the asset has no surface area.
    """
    mesh = asset_trimesh(asset)
    if not mesh.area > 0:
        raise InputError(f"asset {asset.name!r} has no surface area to sample")
    points, _ = trimesh.sample.sample_surface(mesh, n, seed=seed)
    return np.asarray(points, dtype=np.float64)


def nearest_distances(points: np.ndarray, to: np.ndarray) -> np.ndarray:
    """[N] Euclidean distance from each of ``points`` [N, 3] to its nearest neighbour in ``to`` [M, 3]."""
    return cKDTree(to).query(points)[0]


def chamfer_distance(pred: np.ndarray, gt: np.ndarray) -> float:
    """Chamfer distance between point sets ``pred`` [N, 3] and ``gt`` [M, 3] (the module docstring's)."""
    return 0.5 * float(nearest_distances(pred, gt).mean() + nearest_distances(gt, pred).mean())


def geometry_scores(
    pred: np.ndarray, gt: np.ndarray, thresholds: tuple[float, ...] = FSCORE_THRESHOLDS
) -> GeometryScores:
    """Chamfer distance and F-score at each threshold between ``pred`` [N, 3] and ``gt`` [M, 3] points.

    Raises:
        InputError: an empty point set, or a threshold that is not positive.
    """
    if len(pred) == 0 or len(gt) == 0:
        raise InputError(f"geometry scores need points on both sides, got {len(pred)} and {len(gt)}")
    if any(not t > 0 for t in thresholds):
        raise InputError(f"F-score thresholds must be positive, got {thresholds}")
    d_pg = nearest_distances(pred, gt)  # [N]
    d_gp = nearest_distances(gt, pred)  # [M]
    fscore, precision, recall = {}, {}, {}
    for tau in thresholds:
        p, r = float((d_pg < tau).mean()), float((d_gp < tau).mean())
        precision[tau], recall[tau] = p, r
        fscore[tau] = 0.0 if p + r == 0 else 2 * p * r / (p + r)
    return GeometryScores(0.5 * float(d_pg.mean() + d_gp.mean()), fscore, precision, recall)


def cell_centres(resolution: int, half_extent: float = 1.0) -> np.ndarray:
    """[R] centres of a grid's cells along one axis over [-half_extent, half_extent]."""
    return ((np.arange(resolution) + 0.5) / resolution * 2.0 - 1.0) * half_extent


def occupancy_grid(
    verts: np.ndarray, faces: np.ndarray, resolution: int = VOLUME_RESOLUTION, half_extent: float = 1.0
) -> np.ndarray:
    """Which cells of a grid over the cube [-half_extent, half_extent]^3 a mesh encloses (3-axis parity vote).

    Args:
        verts: [V, 3] positions.
        faces: [F, 3] vertex indices (orientation does not matter).
        resolution: cells per side, R.
        half_extent: half the cube's side.

    Returns:
        [R, R, R] bool indexed (x, y, z); cell centres at `cell_centres`.
    """
    if resolution < 1:
        raise InputError(f"grid resolution must be >= 1, got {resolution}")
    tri = np.asarray(verts, dtype=np.float64)[np.asarray(faces, dtype=np.int64)]  # [F, 3, 3]
    votes = np.zeros((resolution,) * 3, dtype=np.int8)
    for axis in range(3):
        votes += _parity_along(tri, axis, resolution, half_extent, _RAY_NUDGE[axis])
    return votes >= 2


def _parity_along(tri: np.ndarray, axis: int, resolution: int, half_extent: float, nudge: np.ndarray) -> np.ndarray:
    """[R, R, R] int8 (x, y, z): 1 where rays along ``axis`` cross the triangles an odd number of times first."""
    r, cell = resolution, 2.0 * half_extent / resolution
    u_axis, v_axis = [a for a in range(3) if a != axis]
    uv = tri[:, :, [u_axis, v_axis]]  # [F, 3, 2] the triangles seen along the rays
    depth = tri[:, :, axis]  # [F, 3]
    offset = nudge * cell  # [2] the rays' offsets from the cell centres

    def index_range(lo: np.ndarray, hi: np.ndarray, off: float) -> tuple[np.ndarray, np.ndarray]:
        # Columns whose ray coordinate (centre + off) lies in [lo, hi].
        first = np.ceil((lo - off + half_extent) / cell - 0.5).astype(np.int64)
        last = np.floor((hi - off + half_extent) / cell - 0.5).astype(np.int64)
        return np.clip(first, 0, r), np.clip(last, -1, r - 1)

    i0, i1 = index_range(uv[:, :, 0].min(1), uv[:, :, 0].max(1), offset[0])
    j0, j1 = index_range(uv[:, :, 1].min(1), uv[:, :, 1].max(1), offset[1])
    ni, nj = np.maximum(i1 - i0 + 1, 0), np.maximum(j1 - j0 + 1, 0)
    count = ni * nj  # [F] candidate rays per triangle
    crossings = np.zeros((r * r, r + 1), dtype=np.int32)  # per ray: crossings below each cell (as steps)
    tris = np.flatnonzero(count)
    ends = np.cumsum(count[tris])  # [T] pairs up to and including each triangle
    start = 0
    while start < len(tris):
        done = ends[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, done + _PAIR_CHUNK, side="right")))
        chunk, start = tris[start:stop], stop
        f = np.repeat(chunk, count[chunk])  # [K] triangle of each (triangle, ray) pair
        k = np.arange(len(f)) - np.repeat(np.cumsum(count[chunk]) - count[chunk], count[chunk])
        i, j = i0[f] + k % ni[f], j0[f] + k // ni[f]  # [K] the ray's column
        p = np.stack([(i + 0.5) * cell - half_extent + offset[0], (j + 0.5) * cell - half_extent + offset[1]], 1)
        a, b, c = uv[f, 0], uv[f, 1], uv[f, 2]  # [K, 2]
        area = _cross(b - a, c - a)  # [K] twice the signed area seen along the ray
        with np.errstate(divide="ignore", invalid="ignore"):
            wa, wb = _cross(b - p, c - p) / area, _cross(c - p, a - p) / area
            wc = 1.0 - wa - wb
        hit = (area != 0) & (wa >= 0) & (wb >= 0) & (wc >= 0)  # edge-on triangles are never crossed
        d = wa[hit] * depth[f[hit], 0] + wb[hit] * depth[f[hit], 1] + wc[hit] * depth[f[hit], 2]
        first_above = np.clip(np.floor((d + half_extent) / cell + 0.5).astype(np.int64), 0, r)  # cells beyond d
        np.add.at(crossings, (i[hit] * r + j[hit], first_above), 1)
    parity = (np.cumsum(crossings[:, :r], axis=1) % 2).astype(np.int8).reshape(r, r, r)  # [u, v, along]
    order = np.empty(3, dtype=np.int64)
    order[[u_axis, v_axis, axis]] = [0, 1, 2]
    return parity.transpose(order)  # [x, y, z]


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[K] z component of the cross product of [K, 2] vectors."""
    return a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]


def voxel_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean occupancy grids of the same shape (0 if both empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def volume_iou(pred: MeshAsset, gt: MeshAsset, resolution: int = VOLUME_RESOLUTION, half_extent: float = 1.0) -> float:
    """Volume IoU of two assets in one frame, voxelised by `occupancy_grid` over [-half_extent, half_extent]^3."""
    grids = []
    for asset in (pred, gt):
        mesh = asset_trimesh(asset)
        grids.append(occupancy_grid(mesh.vertices, mesh.faces, resolution, half_extent))
    return voxel_iou(*grids)

"""Baking a colour field into a texture atlas (or into vertex colours).

`bake_texture` rasterises the mesh in UV space: clip position ``(u * 2 - 1, v * 2 - 1, 0, 1)``
for each vertex, so every texel centre inside a chart learns its triangle and barycentrics, and
interpolating the vertex positions gives the texel's 3D point on the surface. ``field.color``
is queried there. The rasteriser (`fourview.render.raster`, nvdiffrast's layout) puts row 0 at
v = 0, the bottom of the texture; the result is flipped so that row 0 is the top, as texture
arrays are stored (docs/conventions.md).

Seams: texels whose centres fall just outside a chart are still sampled by bilinear filtering
at the chart's edge. The baker fills them in two passes:

1. Extrapolation (``extrapolate_px`` rings): an empty texel next to a baked one takes that
   neighbour's triangle, extends the triangle's UV-to-surface map to its own centre (barycentrics
   may be slightly negative) and queries the field at that point. Bilinear filtering of these
   texels reproduces the field's colour up to the chart's edge.
2. Dilation (``dilation_px`` rings): each remaining empty texel next to filled ones gets their
   mean; whatever is still empty after that takes the nearest filled texel's colour, so no
   background colour reaches any mip level.

`bake_vertex_colors` is the fast path without UVs: the field's colour at each vertex.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt

from fourview.errors import InputError
from fourview.export.projection import (
    ProjectionConfig,
    SurfaceProjector,
    barycentric,
    face_normals,
    propagate_colours,
    vertex_normals,
)
from fourview.recon.fields import SurfaceField
from fourview.render.raster import interpolate, rasterize
from fourview.views import PosedViews

MAX_TEXTURE_SIZE = 16384
"""Largest texture side accepted, texels."""
_NEIGHBOURS = ((0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (1, -1), (-1, 1), (-1, -1))
"""(drow, dcol) offsets, 4-neighbours first so that extrapolation prefers them."""


@dataclass(frozen=True)
class BakeOutput:
    """A baked texture.

    Attributes:
        texture: [T, T, 3] float32 sRGB in [0, 1], row 0 at the top (v = 1).
        coverage: [T, T] bool, True where a texel centre lies inside a triangle (same layout).
    """

    texture: np.ndarray
    coverage: np.ndarray


def check_texture_size(size: int) -> int:
    """Validate a texture side: a power of two between 1 and `MAX_TEXTURE_SIZE`.

    Raises:
        InputError: otherwise.
    """
    if isinstance(size, bool) or int(size) != size or size < 1 or int(size) & (int(size) - 1):
        raise InputError(f"texture size must be a power of two (e.g. 256, 1024), got {size}")
    if size > MAX_TEXTURE_SIZE:
        raise InputError(f"texture size must be at most {MAX_TEXTURE_SIZE}, got {size}")
    return int(size)


@torch.no_grad()
def bake_texture(
    field: SurfaceField,
    verts: np.ndarray,
    faces: np.ndarray,
    uv: np.ndarray,
    texture_size: int = 1024,
    dilation_px: int = 8,
    extrapolate_px: int = 2,
    chunk: int = 262144,
    device: str | torch.device = "cpu",
    views: PosedViews | None = None,
    projection: ProjectionConfig = ProjectionConfig(),
) -> BakeOutput:
    """Bake ``field.color`` into a texture over a mesh's UV atlas.

    Args:
        field: the colour field (``field.color(xyz [N, 3]) -> [N, 3]`` sRGB), object frame.
        verts: [V, 3] positions, object frame.
        faces: [F, 3] vertex indices.
        uv: [V, 2] texture coordinates in [0, 1], OBJ convention (v up).
        texture_size: texture side, texels; a power of two.
        dilation_px: rings of seam padding by averaging (after extrapolation).
        extrapolate_px: rings of exact extrapolated samples around each chart.
        chunk: points per ``field.color`` call.
        device: torch device for rasterising and field queries.
        views: images with cameras whose colours replace the field's where they see the surface
            (`fourview.export.projection`); None bakes the field alone.
        projection: settings of that projection.

    Returns:
        `BakeOutput` (row 0 at the top).

    Raises:
        InputError: a bad texture size or padding, or arrays of the wrong shapes.
    """
    size = check_texture_size(texture_size)
    if dilation_px < 0 or extrapolate_px < 0:
        raise InputError(f"dilation and extrapolation must be >= 0 texels, got {dilation_px}, {extrapolate_px}")
    verts = np.asarray(verts, dtype=np.float32)
    faces = np.asarray(faces, dtype=np.int64)
    uv = np.asarray(uv, dtype=np.float32)
    if verts.ndim != 2 or verts.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise InputError(f"verts must be [V, 3] and faces [F, 3], got {verts.shape} and {faces.shape}")
    if uv.shape != (len(verts), 2):
        raise InputError(f"uv must be [{len(verts)}, 2] (one per vertex), got {uv.shape}")
    if len(faces) == 0 or faces.min() < 0 or faces.max() >= len(verts):
        raise InputError(f"faces must be non-empty with indices in [0, {len(verts)})")

    dev = torch.device(device)
    uv_t = torch.from_numpy(uv).to(dev)
    pos = torch.cat([uv_t * 2.0 - 1.0, torch.zeros_like(uv_t[:, :1]), torch.ones_like(uv_t[:, :1])], dim=1)  # [V, 4]
    tri = torch.from_numpy(faces).to(dev, torch.int32)
    rast, _ = rasterize(pos[None], tri, (size, size))  # [1, T, T, 4], row 0 = v 0 (bottom)
    xyz, _ = interpolate(torch.from_numpy(verts).to(dev)[None], rast, tri)  # [1, T, T, 3]
    tri_id = (rast[0, ..., 3].round().long() - 1).cpu().numpy()  # [T, T], -1 where empty
    covered = tri_id >= 0
    color = np.zeros((size, size, 3), dtype=np.float32)
    normals = face_normals(verts, faces) if views is not None else None
    projector = SurfaceProjector.build(verts, faces, views, projection) if views is not None else None
    fallback = None  # [V, 3] vertex colours under the projection where the views see little
    if projector is not None and projection.unseen == "propagate":
        at_verts = projector.colours(verts, vertex_normals(verts, faces))
        known = at_verts.weight >= projection.full_weight
        fallback = propagate_colours(verts, faces, at_verts.color, known, _query_color(field, verts, chunk, dev))

    def colour_at(points: np.ndarray, tris: np.ndarray) -> np.ndarray:
        """[N, 3] colours of surface points ``points`` [N, 3] on triangles ``tris`` [N]."""
        if fallback is None:
            base = _query_color(field, points, chunk, dev)
        else:
            bary = barycentric(points, verts, faces, tris)  # [N, 3]
            base = (bary[:, :, None] * fallback[faces[tris]]).sum(1).clip(0.0, 1.0).astype(np.float32)
        if projector is None:
            return base
        return projector.colours(points, normals[tris]).blend_over(base, projection.full_weight)

    color[covered] = colour_at(xyz[0].cpu().numpy()[covered], tri_id[covered])

    filled = covered.copy()
    owner = tri_id.copy()  # triangle whose plane gives each texel's point
    for _ in range(extrapolate_px):
        ring = _ring(filled)
        if not ring.any():
            break
        rows, cols = np.nonzero(ring)
        source = np.full(len(rows), -1, dtype=np.int64)
        for dr, dc in _NEIGHBOURS:
            r2, c2 = rows + dr, cols + dc
            ok = (source < 0) & (r2 >= 0) & (r2 < size) & (c2 >= 0) & (c2 < size)
            src = np.full(len(rows), -1, dtype=np.int64)
            src[ok] = owner[r2[ok], c2[ok]]
            source = np.where(source < 0, src, source)
        have = source >= 0
        rows, cols, source = rows[have], cols[have], source[have]
        centre = np.stack([(cols + 0.5) / size, (rows + 0.5) / size], axis=1)  # [N, 2] (u, v)
        points, valid = _extend_triangles(verts, faces, uv, source, centre)
        rows, cols, source = rows[valid], cols[valid], source[valid]
        if len(rows) == 0:
            break
        color[rows, cols] = colour_at(points[valid], source)
        owner[rows, cols] = source
        filled[rows, cols] = True

    color = _dilate(color, filled, dilation_px)
    return BakeOutput(texture=np.ascontiguousarray(color[::-1]), coverage=np.ascontiguousarray(covered[::-1]))


@torch.no_grad()
def bake_vertex_colors(
    field: SurfaceField, verts: np.ndarray, chunk: int = 262144, device: str | torch.device = "cpu"
) -> np.ndarray:
    """The field's colour at each vertex (the ``--vertex-colors`` fast path, no UVs).

    Args:
        field: the colour field, object frame.
        verts: [V, 3] positions.
        chunk: points per ``field.color`` call.
        device: torch device for the field queries.

    Returns:
        [V, 3] float32 sRGB in [0, 1].
    """
    verts = np.asarray(verts, dtype=np.float32)
    if verts.ndim != 2 or verts.shape[1] != 3:
        raise InputError(f"verts must be [V, 3], got {verts.shape}")
    return _query_color(field, verts, chunk, torch.device(device))


def _query_color(field: SurfaceField, xyz: np.ndarray, chunk: int, device: torch.device) -> np.ndarray:
    """[N, 3] points -> [N, 3] float32 sRGB colours clipped to [0, 1], ``chunk`` points per call."""
    out = np.empty((len(xyz), 3), dtype=np.float32)
    pts = torch.from_numpy(np.ascontiguousarray(xyz, dtype=np.float32))
    for i in range(0, len(xyz), chunk):
        c = field.color(pts[i : i + chunk].to(device))
        out[i : i + chunk] = c.float().clamp(0.0, 1.0).cpu().numpy()
    return out


def _ring(filled: np.ndarray) -> np.ndarray:
    """Empty texels with at least one filled 8-neighbour."""
    p = np.pad(filled, 1)
    h, w = filled.shape
    grown = np.zeros_like(filled)
    for dr, dc in _NEIGHBOURS:
        grown |= p[1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w]
    return grown & ~filled


def _extend_triangles(
    verts: np.ndarray, faces: np.ndarray, uv: np.ndarray, tri: np.ndarray, centre: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Map UV points through the affine extension of their triangles' UV-to-surface maps.

    Args:
        tri: [N] triangle index per point.
        centre: [N, 2] UV points (OBJ convention).

    Returns:
        [N, 3] float32 surface-plane points and [N] bool, False where a triangle's UV area is ~0.
    """
    f = faces[tri]  # [N, 3]
    a, b, c = (uv[f[:, k]].astype(np.float64) for k in range(3))  # [N, 2] each
    e1, e2, d = b - a, c - a, centre - a
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]  # [N] twice the signed UV area
    valid = np.abs(det) > 1e-14
    det = np.where(valid, det, 1.0)
    s = (d[:, 0] * e2[:, 1] - d[:, 1] * e2[:, 0]) / det  # weight of b
    t = (e1[:, 0] * d[:, 1] - e1[:, 1] * d[:, 0]) / det  # weight of c
    p0, p1, p2 = (verts[f[:, k]].astype(np.float64) for k in range(3))
    points = p0 + s[:, None] * (p1 - p0) + t[:, None] * (p2 - p0)
    return points.astype(np.float32), valid


def _dilate(color: np.ndarray, filled: np.ndarray, rings: int) -> np.ndarray:
    """Fill empty texels: ``rings`` steps of neighbour averaging, then nearest filled texel."""
    if not filled.any():
        return color
    color, filled = color.copy(), filled.copy()
    h, w = filled.shape
    for _ in range(rings):
        ring = _ring(filled)
        if not ring.any():
            break
        cp = np.pad(color * filled[..., None], ((1, 1), (1, 1), (0, 0)))
        fp = np.pad(filled, 1).astype(np.float32)
        total = np.zeros_like(color)
        count = np.zeros((h, w), dtype=np.float32)
        for dr, dc in _NEIGHBOURS:
            total += cp[1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w]
            count += fp[1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w]
        color[ring] = total[ring] / count[ring][:, None]
        filled |= ring
    if not filled.all():
        nearest = distance_transform_edt(~filled, return_distances=False, return_indices=True)  # [2, H, W]
        color = color[nearest[0], nearest[1]]
    return color

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

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt

from fourview.errors import InputError
from fourview.export.projection import (
    ProjectionConfig,
    SurfaceProjector,
    face_normals,
    propagate_colours,
    vertex_normals,
)
from fourview.recon.fields import SurfaceField
from fourview.render.raster import rasterize
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
    texels: UVTexels | None = None,
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
        texels: the atlas's texels (`uv_texels` of this mesh at ``texture_size``), when the
            caller already has them; None rasterises the atlas here.

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
    if texels is None:
        texels = uv_texels(verts, faces, uv, size, extrapolate_px, dev)
    elif texels.size != size:
        raise InputError(f"texels are for a {texels.size}^2 texture, not {size}^2")
    normals = face_normals(verts, faces) if views is not None else None
    projector = SurfaceProjector.build(verts, faces, views, projection) if views is not None else None
    fallback = None  # [V, 3] vertex colours under the projection where the views see little
    if projector is not None and projection.unseen == "propagate":
        at_verts = projector.colours(verts, vertex_normals(verts, faces))
        known = at_verts.weight >= projection.full_weight
        fallback = propagate_colours(verts, faces, at_verts.color, known, _query_color(field, verts, chunk, dev))
    if fallback is None:
        color = _query_color(field, texels.xyz, chunk, dev)
    else:
        color = (texels.bary[:, :, None] * fallback[faces[texels.tri]]).sum(1).clip(0.0, 1.0).astype(np.float32)
    if projector is not None:
        color = projector.colours(texels.xyz, normals[texels.tri]).blend_over(color, projection.full_weight)
    return BakeOutput(texture=texels.image(color, dilation_px), coverage=texels.coverage())


@dataclass(frozen=True)
class UVTexels:
    """The texels of a texture that a mesh's UV atlas reaches, each with its point on the surface.

    Texel ``(row, col)`` counts rows from the top of the image (v = 1), as textures are stored.

    Attributes:
        size: the texture's side, texels.
        rows: [N] int64 texel rows (0 = top).
        cols: [N] int64 texel columns.
        tri: [N] int64 the triangle whose UV-to-surface map gives each texel's point.
        bary: [N, 3] float64 barycentric coordinates of the texel's centre in that triangle's UVs
            (outside [0, 1] for the extrapolated texels around the charts).
        xyz: [N, 3] float32 the texel's point on the surface (on the triangle's plane).
        inside: [N] bool, True where the texel's centre lies inside its triangle.
    """

    size: int
    rows: np.ndarray
    cols: np.ndarray
    tri: np.ndarray
    bary: np.ndarray
    xyz: np.ndarray
    inside: np.ndarray
    _padding: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)  # dilation_px -> _Padding

    def image(self, values: np.ndarray, dilation_px: int) -> np.ndarray:
        """[T, T, C] float32 texture of per-texel ``values`` [N, C], seams padded (see the module docstring)."""
        values = np.asarray(values, dtype=np.float32)
        out = np.zeros((self.size, self.size, values.shape[1]), dtype=np.float32)
        out[self.rows, self.cols] = values
        if dilation_px not in self._padding:  # the same for every map of this atlas
            filled = np.zeros((self.size, self.size), dtype=bool)
            filled[self.rows, self.cols] = True
            self._padding[dilation_px] = _Padding.plan(filled, dilation_px)
        return self._padding[dilation_px].apply(out)

    def coverage(self) -> np.ndarray:
        """[T, T] bool, True where a texel centre lies inside a triangle (row 0 at the top)."""
        covered = np.zeros((self.size, self.size), dtype=bool)
        covered[self.rows[self.inside], self.cols[self.inside]] = True
        return covered


@torch.no_grad()
def uv_texels(
    verts: np.ndarray,
    faces: np.ndarray,
    uv: np.ndarray,
    size: int,
    extrapolate_px: int = 2,
    device: str | torch.device = "cpu",
) -> UVTexels:
    """Rasterise a mesh in UV space: every texel a chart covers, plus ``extrapolate_px`` rings around.

    Args:
        verts: [V, 3] positions; faces: [F, 3]; uv: [V, 2] in [0, 1], OBJ convention.
        size: texture side, texels.
        extrapolate_px: rings of texels around each chart given the nearest triangle's extended
            UV-to-surface map (see the module docstring).
        device: torch device for the rasteriser.

    Returns:
        `UVTexels`, the texels inside triangles first.
    """
    verts = np.asarray(verts, dtype=np.float32)
    faces = np.asarray(faces, dtype=np.int64)
    uv = np.asarray(uv, dtype=np.float32)
    dev = torch.device(device)
    uv_t = torch.from_numpy(uv).to(dev)
    pos = torch.cat([uv_t * 2.0 - 1.0, torch.zeros_like(uv_t[:, :1]), torch.ones_like(uv_t[:, :1])], dim=1)  # [V, 4]
    tri = torch.from_numpy(faces).to(dev, torch.int32)
    rast, _ = rasterize(pos[None], tri, (size, size))  # [1, T, T, 4], row 0 = v 0 (bottom)
    tri_id = (rast[0, ..., 3].round().long() - 1).cpu().numpy()  # [T, T], -1 where empty
    covered = tri_id >= 0
    rows, cols = np.nonzero(covered)
    parts = [(rows, cols, tri_id[rows, cols])]
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
        keep = source >= 0
        rows, cols, source = rows[keep], cols[keep], source[keep]
        keep = _uv_area_ok(uv, faces, source)
        rows, cols, source = rows[keep], cols[keep], source[keep]
        if len(rows) == 0:
            break
        parts.append((rows, cols, source))
        owner[rows, cols] = source
        filled[rows, cols] = True
    rows, cols, tris = (np.concatenate(x) for x in zip(*parts))
    centre = np.stack([(cols + 0.5) / size, (rows + 0.5) / size], axis=1)  # [N, 2] (u, v)
    bary = _uv_barycentric(uv, faces, tris, centre)
    xyz = np.einsum("nk,nkc->nc", bary, verts[faces[tris]].astype(np.float64)).astype(np.float32)
    return UVTexels(
        size=size,
        rows=size - 1 - rows,  # the rasteriser's row 0 is v = 0, the bottom
        cols=cols,
        tri=tris,
        bary=bary,
        xyz=xyz,
        inside=np.arange(len(rows)) < len(parts[0][0]),
    )


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


def _uv_barycentric(uv: np.ndarray, faces: np.ndarray, tri: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """[N, 3] barycentric coordinates of UV points ``centre`` [N, 2] in triangles ``tri`` [N] (any sign)."""
    f = faces[tri]  # [N, 3]
    a, b, c = (uv[f[:, k]].astype(np.float64) for k in range(3))  # [N, 2] each
    e1, e2, d = b - a, c - a, centre - a
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]  # [N] twice the signed UV area
    det = np.where(np.abs(det) > 1e-14, det, 1.0)
    s = (d[:, 0] * e2[:, 1] - d[:, 1] * e2[:, 0]) / det  # weight of b
    t = (e1[:, 0] * d[:, 1] - e1[:, 1] * d[:, 0]) / det  # weight of c
    return np.stack([1.0 - s - t, s, t], axis=1)


def _uv_area_ok(uv: np.ndarray, faces: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """[N] bool: triangles ``tri`` whose UV area is not ~0 (their UV-to-surface map extends)."""
    a, b, c = (uv[faces[tri, k]].astype(np.float64) for k in range(3))
    e1, e2 = b - a, c - a
    return np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]) > 1e-14


@dataclass(frozen=True)
class _Padding:
    """How `UVTexels.image` pads a texture's empty texels (seam dilation), worked out once per atlas.

    Attributes:
        rings: per ring of averaging: (target [R] flat texel indices, source [P] flat indices,
            owner [P] index into target of each source, count [R] sources per target).
        nearest: [T*T] flat index of the texel each texel finally copies (itself when filled).
    """

    rings: tuple[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], ...]
    nearest: np.ndarray | None

    @classmethod
    def plan(cls, filled: np.ndarray, rings: int) -> _Padding:
        filled = filled.copy()
        h, w = filled.shape
        steps = []
        for _ in range(rings):
            ring = _ring(filled)
            if not ring.any():
                break
            rows, cols = np.nonzero(ring)
            sources, owners = [], []
            for dr, dc in _NEIGHBOURS:
                r2, c2 = rows + dr, cols + dc
                ok = (r2 >= 0) & (r2 < h) & (c2 >= 0) & (c2 < w)
                ok[ok] = filled[r2[ok], c2[ok]]
                sources.append(r2[ok] * w + c2[ok])
                owners.append(np.nonzero(ok)[0])
            owner = np.concatenate(owners)
            steps.append((rows * w + cols, np.concatenate(sources), owner, np.bincount(owner, minlength=len(rows))))
            filled |= ring
        nearest = None
        if not filled.all() and filled.any():
            idx = distance_transform_edt(~filled, return_distances=False, return_indices=True)  # [2, H, W]
            nearest = (idx[0] * w + idx[1]).reshape(-1)
        return cls(tuple(steps), nearest)

    def apply(self, color: np.ndarray) -> np.ndarray:
        """``color`` [H, W, C] with its empty texels filled."""
        flat = color.reshape(-1, color.shape[-1]).copy()
        for target, source, owner, count in self.rings:
            for c in range(flat.shape[1]):
                flat[target, c] = np.bincount(owner, weights=flat[source, c], minlength=len(target)) / count
        if self.nearest is not None:
            flat = flat[self.nearest]
        return flat.reshape(color.shape)

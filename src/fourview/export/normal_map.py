"""Tangent-space normal maps: the dense surface's shading baked onto the budget mesh.

The extracted surface (marching cubes of the field at the extraction grid, hundreds of thousands
of faces) is far finer than a game budget of 10k faces; simplification keeps its silhouette but
loses the small-scale normals. `bake_normal_map` gives them back: for every texel of the budget
mesh's atlas (`fourview.export.bake.UVTexels`), the closest point of the dense surface
(`DenseSurface.normals_at`) gives the normal the dense mesh shades with there, and the texel stores
that normal in the budget mesh's tangent frame at the texel, ``(n + 1) / 2``.

The frame is the one glTF viewers rebuild per pixel (the Khronos sample viewer, three.js): the
vertex normal N, tangent T (`fourview.export.tangents.vertex_tangents`) and bitangent
``B = w * cross(N, T)``, each interpolated over the triangle and normalised; the shaded normal is
``normalize(x T + y B + z N)`` for the texel's ``(x, y, z)``. The baker stores
``normalize([T B N]^-1 n_dense)``, which that product turns back into ``n_dense`` exactly (up to
8-bit quantisation and bilinear filtering).

`shaded_render` renders a mesh lit by one directional light with that per-pixel normal (its normal
map when it has one, else the interpolated vertex normal): the measurement of what a normal map
gives back (tests, benchmarks/bench_export.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from numba import njit
from scipy.spatial import cKDTree

from fourview.cameras import Camera
from fourview.errors import InputError
from fourview.export.bake import UVTexels
from fourview.mesh import MeshAsset, linear_to_srgb
from fourview.meshio.part_arrays import vertex_normals
from fourview.render.raster import interpolate, rasterize, texture

FLAT_NORMAL = (0.5, 0.5, 1.0)
"""The encoded tangent-space normal (0, 0, 1): the surface's own normal."""


@dataclass(frozen=True)
class DenseSurface:
    """A fine triangle mesh whose interpolated vertex normals are the reference shading.

    Attributes:
        verts: [V, 3] float64 positions; faces: [F, 3] int64.
        normals: [V, 3] float64 unit vertex normals (the writers' smooth normals).
    """

    verts: np.ndarray
    faces: np.ndarray
    normals: np.ndarray

    @classmethod
    def build(cls, verts: np.ndarray, faces: np.ndarray) -> DenseSurface:
        verts = np.asarray(verts, dtype=np.float64)
        faces = np.asarray(faces, dtype=np.int64)
        return cls(verts, faces, vertex_normals(verts, faces).astype(np.float64))

    def closest_points(self, points: np.ndarray, candidates: int = 4) -> tuple[np.ndarray, np.ndarray]:
        """The closest surface point to each of ``points`` [N, 3], among the triangles around its
        ``candidates`` nearest vertices.

        Returns:
            [N] int64 triangle and [N, 3] float64 barycentric coordinates (in [0, 1]).
        """
        points = np.ascontiguousarray(points, dtype=np.float64)
        k = min(candidates, len(self.verts))
        _, nearest = cKDTree(self.verts).query(points, k=k, workers=-1)
        nearest = np.ascontiguousarray(nearest.reshape(len(points), k), dtype=np.int64)
        order = np.argsort(self.faces.reshape(-1), kind="stable")
        ring_faces = (order // 3).astype(np.int64)  # faces around each vertex, CSR by vertex
        ring_start = np.searchsorted(self.faces.reshape(-1)[order], np.arange(len(self.verts) + 1))
        tri = np.zeros(len(points), dtype=np.int64)
        bary = np.zeros((len(points), 3), dtype=np.float64)
        _closest_on_rings(points, nearest, self.verts, self.faces, ring_start, ring_faces, tri, bary)
        return tri, bary

    def normals_at(self, points: np.ndarray) -> np.ndarray:
        """[N, 3] float64 unit normals of the dense surface at its closest points to ``points``."""
        tri, bary = self.closest_points(points, candidates=2)
        n = np.einsum("nk,nkc->nc", bary, self.normals[self.faces[tri]])
        return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-30)


def bake_normal_map(
    texels: UVTexels,
    dense: DenseSurface,
    faces: np.ndarray,
    normals: np.ndarray,
    tangents: np.ndarray,
    dilation_px: int = 8,
) -> np.ndarray:
    """Bake the dense surface's normals into a tangent-space normal map of the budget mesh.

    Args:
        texels: the budget mesh's atlas texels (`fourview.export.bake.uv_texels`).
        dense: the reference surface.
        faces: [F, 3] the budget mesh's faces (the ones ``texels`` were rasterised from).
        normals: [V, 3] its unit vertex normals, as written to the file.
        tangents: [V, 4] its tangents (`fourview.export.tangents.vertex_tangents`).
        dilation_px: seam padding, texels.

    Returns:
        [T, T, 3] float32 encoded normals ``(n + 1) / 2``, row 0 at the top.
    """
    frame = _tangent_frames(texels.tri, texels.bary, faces, normals, tangents)  # [N, 3, 3] columns T, B, N
    target = dense.normals_at(texels.xyz)  # [N, 3]
    local = np.linalg.solve(frame, target[:, :, None])[:, :, 0]  # [N, 3]
    bad = ~np.isfinite(local).all(axis=1)
    local[bad] = (0.0, 0.0, 1.0)
    local /= np.maximum(np.linalg.norm(local, axis=1, keepdims=True), 1e-30)
    padded = texels.image(local, dilation_px)  # the padding averages neighbours: unit length again
    padded /= np.maximum(np.linalg.norm(padded, axis=-1, keepdims=True), 1e-12)
    return np.clip(padded * 0.5 + 0.5, 0.0, 1.0)


def _tangent_frames(
    tri: np.ndarray, bary: np.ndarray, faces: np.ndarray, normals: np.ndarray, tangents: np.ndarray
) -> np.ndarray:
    """[N, 3, 3] per-point frames, columns T, B, N: each interpolated with ``bary`` and normalised."""
    n_v = np.asarray(normals, dtype=np.float64)
    t_v = np.asarray(tangents[:, :3], dtype=np.float64)
    b_v = np.cross(n_v, t_v) * np.asarray(tangents[:, 3:], dtype=np.float64)
    corners = faces[tri]  # [N, 3]
    columns = []
    for per_vertex in (t_v, b_v, n_v):
        x = np.einsum("nk,nkc->nc", bary, per_vertex[corners])
        columns.append(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30))
    return np.stack(columns, axis=2)


@njit(cache=True)
def _closest_on_triangle(p, a, b, c):  # pragma: no cover - numba
    """Closest point of triangle abc to p (Ericson, Real-Time Collision Detection 5.1.5): (dist^2, wa, wb, wc)."""
    ab0, ab1, ab2 = b[0] - a[0], b[1] - a[1], b[2] - a[2]
    ac0, ac1, ac2 = c[0] - a[0], c[1] - a[1], c[2] - a[2]
    ap0, ap1, ap2 = p[0] - a[0], p[1] - a[1], p[2] - a[2]
    d1 = ab0 * ap0 + ab1 * ap1 + ab2 * ap2
    d2 = ac0 * ap0 + ac1 * ap1 + ac2 * ap2
    if d1 <= 0.0 and d2 <= 0.0:
        wa, wb, wc = 1.0, 0.0, 0.0
    else:
        bp0, bp1, bp2 = p[0] - b[0], p[1] - b[1], p[2] - b[2]
        d3 = ab0 * bp0 + ab1 * bp1 + ab2 * bp2
        d4 = ac0 * bp0 + ac1 * bp1 + ac2 * bp2
        cp0, cp1, cp2 = p[0] - c[0], p[1] - c[1], p[2] - c[2]
        d5 = ab0 * cp0 + ab1 * cp1 + ab2 * cp2
        d6 = ac0 * cp0 + ac1 * cp1 + ac2 * cp2
        vc = d1 * d4 - d3 * d2
        vb = d5 * d2 - d1 * d6
        va = d3 * d6 - d5 * d4
        if d3 >= 0.0 and d4 <= d3:
            wa, wb, wc = 0.0, 1.0, 0.0
        elif d6 >= 0.0 and d5 <= d6:
            wa, wb, wc = 0.0, 0.0, 1.0
        elif vc <= 0.0 and d1 >= 0.0 and d3 <= 0.0:
            t = d1 / (d1 - d3)
            wa, wb, wc = 1.0 - t, t, 0.0
        elif vb <= 0.0 and d2 >= 0.0 and d6 <= 0.0:
            t = d2 / (d2 - d6)
            wa, wb, wc = 1.0 - t, 0.0, t
        elif va <= 0.0 and (d4 - d3) >= 0.0 and (d5 - d6) >= 0.0:
            t = (d4 - d3) / ((d4 - d3) + (d5 - d6))
            wa, wb, wc = 0.0, 1.0 - t, t
        else:
            den = va + vb + vc
            if den == 0.0:
                wa, wb, wc = 1.0, 0.0, 0.0
            else:
                wb, wc = vb / den, vc / den
                wa = 1.0 - wb - wc
    q0 = wa * a[0] + wb * b[0] + wc * c[0] - p[0]
    q1 = wa * a[1] + wb * b[1] + wc * c[1] - p[1]
    q2 = wa * a[2] + wb * b[2] + wc * c[2] - p[2]
    return q0 * q0 + q1 * q1 + q2 * q2, wa, wb, wc


@njit(cache=True)
def _closest_on_rings(points, nearest, verts, faces, ring_start, ring_faces, tri, bary):  # pragma: no cover
    """For each point, the closest point on the faces around its nearest vertices (outputs in place)."""
    for i in range(points.shape[0]):
        best = np.inf
        p = points[i]
        for j in range(nearest.shape[1]):
            vtx = nearest[i, j]
            for r in range(ring_start[vtx], ring_start[vtx + 1]):
                f = ring_faces[r]
                d, wa, wb, wc = _closest_on_triangle(p, verts[faces[f, 0]], verts[faces[f, 1]], verts[faces[f, 2]])
                if d < best:
                    best = d
                    tri[i] = f
                    bary[i, 0], bary[i, 1], bary[i, 2] = wa, wb, wc


@torch.no_grad()
def shaded_render(
    mesh: MeshAsset,
    camera: Camera,
    resolution: int,
    normal_map: bool = True,
    supersample: int = 2,
    light_direction: tuple[float, float, float] = (0.4, 1.0, 0.7),
    albedo: float = 0.7,
    shininess: float = 32.0,
) -> tuple[np.ndarray, np.ndarray]:
    """A grey, lit render of a one-part mesh with per-pixel normals, on white.

    Diffuse ``albedo * (0.3 + 0.7 max(n.l, 0))`` plus a Blinn-Phong highlight
    ``0.3 max(n.h, 0)^shininess``, in linear RGB, written as sRGB. The normal is the mesh's normal
    map in the frame of its interpolated vertex normal and tangent (module docstring) when
    ``normal_map`` and the part has one, else the interpolated vertex normal.

    Args:
        mesh: the mesh (its first and only part is drawn).
        camera: the camera.
        resolution: image side, pixels.
        normal_map: use the part's normal map.
        supersample: samples per pixel along each axis.

    Returns:
        [H, W] float32 grey in [0, 1] (row 0 at the top) and [H, W] float32 coverage.
    """
    if len(mesh.parts) != 1:
        raise InputError(f"shaded_render draws one-part meshes, got {len(mesh.parts)} parts")
    part = mesh.parts[0]
    use_map = normal_map and part.material.normal_map is not None and part.tangents is not None
    res = resolution * supersample
    verts = part.verts.astype(np.float32)
    tri = torch.from_numpy(part.faces.astype(np.int32))
    homogeneous = np.concatenate([verts, np.ones((len(verts), 1), np.float32)], axis=1)
    pos = torch.from_numpy(homogeneous @ camera.mvp().astype(np.float32).T)[None]
    rast, _ = rasterize(pos, tri, (res, res))  # row 0 = bottom
    n_v = vertex_normals(verts, part.faces)
    attrs = [verts, n_v]
    if use_map:
        t_v = part.tangents[:, :3]
        b_v = np.cross(n_v, t_v) * part.tangents[:, 3:]
        attrs += [t_v, b_v, np.stack([part.uv[:, 0], 1.0 - part.uv[:, 1]], axis=1)]  # texel rows from the top
    values, _ = interpolate(torch.from_numpy(np.concatenate(attrs, axis=1).astype(np.float32))[None], rast, tri)
    values = values[0]  # [res, res, C]
    point, normal = values[..., :3], torch.nn.functional.normalize(values[..., 3:6], dim=-1)
    if use_map:
        tangent = torch.nn.functional.normalize(values[..., 6:9], dim=-1)
        bitangent = torch.nn.functional.normalize(values[..., 9:12], dim=-1)
        encoded = torch.from_numpy(np.ascontiguousarray(part.material.normal_map, dtype=np.float32))[None]
        local = texture(encoded, values[None, ..., 12:14], boundary_mode="clamp")[0] * 2.0 - 1.0
        normal = local[..., :1] * tangent + local[..., 1:2] * bitangent + local[..., 2:3] * normal
        normal = torch.nn.functional.normalize(normal, dim=-1)
    light = torch.nn.functional.normalize(torch.tensor(light_direction, dtype=torch.float32), dim=0)
    view = torch.nn.functional.normalize(torch.from_numpy(camera.position.astype(np.float32)) - point, dim=-1)
    half = torch.nn.functional.normalize(view + light, dim=-1)
    diffuse = albedo * (0.3 + 0.7 * (normal @ light).clamp(min=0.0))
    specular = 0.3 * ((normal * half).sum(-1).clamp(min=0.0) ** shininess)
    covered = (rast[0, ..., 3] > 0).float()
    grey = torch.where(covered > 0, diffuse + specular, torch.ones_like(diffuse))
    grey = grey.reshape(resolution, supersample, resolution, supersample).mean(dim=(1, 3)).numpy()
    alpha = covered.reshape(resolution, supersample, resolution, supersample).mean(dim=(1, 3)).numpy()
    return linear_to_srgb(np.clip(grey, 0.0, 1.0))[::-1].copy(), alpha[::-1].copy()


def surface_psnr(image: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> float:
    """PSNR (dB) of ``image`` against ``reference`` over the pixels of ``mask`` (values in [0, 1])."""
    diff = (np.asarray(image, np.float64) - np.asarray(reference, np.float64))[mask]
    mse = float(np.mean(diff**2)) if diff.size else 0.0
    return math.inf if mse == 0.0 else -10.0 * math.log10(mse)

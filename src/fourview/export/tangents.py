"""Per-vertex tangent frames for tangent-space normal maps, in MikkTSpace's conventions.

`vertex_tangents` gives glTF's ``TANGENT`` attribute: per triangle, the directions of increasing
u and v on the surface (from its UV derivatives); per vertex, these are projected onto the plane
of the vertex normal, weighted by the triangle's angle at that vertex, summed and normalised (as
MikkTSpace does); the handedness w = +-1 says whether ``cross(normal, tangent)`` points along
increasing v (+1) or against it (-1, a mirrored chart). UVs follow the OBJ convention (v up), so
the bitangent points up the texture image: glTF's "+Y up" normal maps.

What makes a baked normal map shade as it was baked is that the baker and the renderer use the
same frame: `fourview.export.normal_map` bakes with these tangents and the writers' vertex normals
(`fourview.meshio.part_arrays.vertex_normals`), and the GLB stores both; a viewer rebuilds the
frame per pixel from the interpolated vertex normal and tangent, ``bitangent = w * cross(n, t)``.
"""

from __future__ import annotations

import numpy as np


def vertex_tangents(verts: np.ndarray, faces: np.ndarray, uv: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Unit tangents orthogonal to ``normals``, with handedness.

    Args:
        verts: [V, 3] positions.
        faces: [F, 3] vertex indices, counter-clockwise seen from outside.
        uv: [V, 2] texture coordinates, OBJ convention (v up); seams split into separate vertices.
        normals: [V, 3] unit vertex normals (the ones written with the mesh).

    Returns:
        [V, 4] float32: xyz unit tangent along increasing u, w in {+1, -1}. A vertex whose
        triangles have no usable UV derivative gets any unit vector orthogonal to its normal.
    """
    v = np.asarray(verts, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    t = np.asarray(uv, dtype=np.float64)
    n = np.asarray(normals, dtype=np.float64)
    p0, p1, p2 = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    t0, t1, t2 = t[f[:, 0]], t[f[:, 1]], t[f[:, 2]]
    e1, e2 = p1 - p0, p2 - p0  # [F, 3]
    d1, d2 = t1 - t0, t2 - t0  # [F, 2]
    det = d1[:, 0] * d2[:, 1] - d2[:, 0] * d1[:, 1]  # [F] twice the signed UV area
    ok = np.abs(det) > 1e-20
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)[:, None]
    face_t = (e1 * d2[:, 1:2] - e2 * d1[:, 1:2]) * inv  # [F, 3] dP/du
    face_b = (e2 * d1[:, 0:1] - e1 * d2[:, 0:1]) * inv  # [F, 3] dP/dv
    tan = np.zeros_like(v)
    bit = np.zeros_like(v)
    for k in range(3):
        corner = f[:, k]
        a = v[f[:, (k + 1) % 3]] - v[corner]
        b = v[f[:, (k + 2) % 3]] - v[corner]
        cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
        angle = np.arccos(np.clip(cos, -1.0, 1.0))[:, None]  # [F, 1] the corner's angle
        nk = n[corner]
        for acc, vec in ((tan, face_t), (bit, face_b)):
            proj = vec - nk * (vec * nk).sum(1, keepdims=True)
            proj /= np.maximum(np.linalg.norm(proj, axis=1, keepdims=True), 1e-30)
            np.add.at(acc, corner, proj * angle)
    tan -= n * (tan * n).sum(1, keepdims=True)
    length = np.linalg.norm(tan, axis=1, keepdims=True)
    fallback = orthogonal_unit(n)
    tan = np.where(length > 1e-12, tan / np.maximum(length, 1e-30), fallback)
    w = np.where((np.cross(n, tan) * bit).sum(1) < 0.0, -1.0, 1.0)[:, None]
    return np.concatenate([tan, w], axis=1).astype(np.float32)


def orthogonal_unit(n: np.ndarray) -> np.ndarray:
    """[V, 3] a unit vector orthogonal to each unit ``n`` [V, 3]."""
    helper = np.where(np.abs(n[:, :1]) < 0.9, np.array([[1.0, 0.0, 0.0]]), np.array([[0.0, 1.0, 0.0]]))
    out = np.cross(n, helper)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-30)

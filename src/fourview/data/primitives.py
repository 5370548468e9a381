"""Closed triangle-mesh primitives with texture coordinates, for the synthetic world.

Every primitive is a `Piece`: a closed, outward-facing surface (watertight once vertices are welded
by position) with one UV coordinate per vertex. Vertices are duplicated along UV seams and along
creases (sharp edges such as the rim of a cylinder), so a piece is not watertight as indexed, only
after welding; `weld` does that for checks.

UV coordinates follow the OBJ convention of `fourview.mesh` (``(0, 0)`` bottom-left) and lie in
[0, 1]; every piece maps its surface onto the whole texture once:

- surfaces of revolution (`revolve` and the primitives built on it): ``u`` goes once around the
  axis starting at the back (-Z), ``v`` follows the profile's arc length from its first point;
- boxes and prisms: every flat face maps onto the whole square.

Frames: +Y up (the axis of revolution), lengths in arbitrary object units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class Piece:
    """One closed primitive surface with texture coordinates.

    Attributes:
        verts: [V, 3] float64 positions.
        faces: [F, 3] int64 vertex indices, counter-clockwise seen from outside.
        uv: [V, 2] float64 texture coordinates in [0, 1] (OBJ convention).
    """

    verts: np.ndarray
    faces: np.ndarray
    uv: np.ndarray

    def transformed(self, matrix: np.ndarray) -> Piece:
        """The piece mapped by a 4x4 affine ``matrix`` (faces flipped if it mirrors)."""
        verts = self.verts @ matrix[:3, :3].T + matrix[:3, 3]
        faces = self.faces[:, ::-1].copy() if np.linalg.det(matrix[:3, :3]) < 0 else self.faces
        return replace(self, verts=verts, faces=faces)

    def moved(self, x: float = 0.0, y: float = 0.0, z: float = 0.0) -> Piece:
        """The piece translated by ``(x, y, z)``."""
        return replace(self, verts=self.verts + np.array([x, y, z]))

    def scaled(self, x: float, y: float | None = None, z: float | None = None) -> Piece:
        """The piece scaled about the origin (one factor: uniform)."""
        s = np.diag([x, x if y is None else y, x if z is None else z, 1.0])
        return self.transformed(s)

    def rotated(self, axis: str, degrees: float) -> Piece:
        """The piece rotated about the origin by ``degrees`` (right-handed) about ``axis`` in "xyz"."""
        return self.transformed(rotation(axis, degrees))


def rotation(axis: str, degrees: float) -> np.ndarray:
    """4x4 right-handed rotation about the x, y or z axis by ``degrees``."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    m = np.eye(4)
    if axis == "x":
        m[1:3, 1:3] = [[c, -s], [s, c]]
    elif axis == "y":
        m[0, 0], m[0, 2], m[2, 0], m[2, 2] = c, s, -s, c
    elif axis == "z":
        m[0:2, 0:2] = [[c, -s], [s, c]]
    else:
        raise ValueError(f"axis must be 'x', 'y' or 'z', got {axis!r}")
    return m


def revolve(
    profile: np.ndarray,
    sections: int = 24,
    creases: tuple[int, ...] = (),
    closed: bool = False,
    arc_deg: float = 360.0,
) -> Piece:
    """Surface of revolution of a profile curve about the +Y axis.

    A point ``(r, y)`` of the profile at angle ``t`` sits at ``(r sin t, y, r cos t)``; ``t`` runs
    from 180 degrees (the back, -Z) at ``u = 0`` through -X, the front (+Z) and +X, so that seen
    from outside ``u`` grows to the right and ``v`` upwards (textures are not mirrored).

    Args:
        profile: [P, 2] ``(radius, y)`` points, radius >= 0. An open profile must start and end on
            the axis (radius 0) so that the surface is closed, and must run counter-clockwise
            around the cross-section in the (r, y) half-plane, the solid on its left (out along
            the bottom, up the outside wall: ``(0, 0) -> (1, 0) -> (1, 1) -> (0, 1)``). A closed
            profile (``closed=True``, a loop such as a torus' circle) runs counter-clockwise too.
        sections: segments around the axis.
        creases: indices of profile points where the surface has a sharp edge; their ring of
            vertices is duplicated so that the two sides get separate shading normals.
        closed: the profile is a loop (its last point connects back to its first).
        arc_deg: sweep angle; below 360 the two ends are closed by flat caps (a fan from the
            profile's mean point, so the profile must be star-shaped around it).

    Returns:
        The piece.
    """
    prof = np.asarray(profile, dtype=np.float64)  # [P, 2]
    if prof.ndim != 2 or prof.shape[1] != 2 or len(prof) < 2:
        raise ValueError(f"profile must be [P >= 2, 2], got {prof.shape}")
    if (prof[:, 0] < 0).any():
        raise ValueError("profile radii must be >= 0")
    partial = arc_deg < 360.0 - 1e-9
    if not closed and not partial and (prof[0, 0] != 0.0 or prof[-1, 0] != 0.0):
        raise ValueError("an open profile must start and end on the axis (radius 0)")
    if closed:
        prof = np.concatenate([prof, prof[:1]], axis=0)  # repeat the first point to close the loop
    seg = np.linalg.norm(np.diff(prof, axis=0), axis=1)  # [P-1]
    arclen = np.concatenate([[0.0], np.cumsum(seg)])
    v_of_point = arclen / arclen[-1]  # [P]

    # Rings: one per profile point, two at an inner crease (the first ends the strip below, the
    # second starts the strip above), so the two sides of a crease get separate normals.
    ring_points: list[int] = []  # profile index of each ring
    first_ring: dict[int, int] = {}
    last_ring: dict[int, int] = {}
    for k in range(len(prof)):
        copies = 2 if k in creases and 0 < k < len(prof) - 1 else 1
        first_ring[k] = len(ring_points)
        ring_points.extend([k] * copies)
        last_ring[k] = len(ring_points) - 1
    strips = [(last_ring[k], first_ring[k + 1]) for k in range(len(prof) - 1)]  # (ring below, ring above)

    n_u = sections + 1  # seam vertices duplicated
    t = math.pi + np.radians(arc_deg) * np.linspace(0.0, 1.0, n_u)  # [n_u]
    u = np.linspace(0.0, 1.0, n_u)
    radii = prof[ring_points, 0]  # [R]
    heights = prof[ring_points, 1]
    verts = np.stack(
        [
            radii[:, None] * np.sin(t)[None],
            np.broadcast_to(heights[:, None], (len(radii), n_u)),
            radii[:, None] * np.cos(t)[None],
        ],
        axis=-1,
    ).reshape(-1, 3)  # [R * n_u, 3]
    uv = np.stack(np.broadcast_arrays(u[None, :], v_of_point[ring_points][:, None]), axis=-1).reshape(-1, 2)

    faces = []
    i = np.arange(sections)
    for lo, hi in strips:
        a, b = lo * n_u + i, lo * n_u + i + 1
        c, d = hi * n_u + i, hi * n_u + i + 1
        if radii[lo] > 0:
            faces.append(np.stack([a, b, c], axis=1))
        if radii[hi] > 0:
            faces.append(np.stack([b, d, c], axis=1))
    faces_arr = np.concatenate(faces, axis=0).astype(np.int64)  # [F, 3]
    piece = Piece(verts=verts, faces=faces_arr, uv=uv)
    if partial:
        piece = _cap_ends(piece, prof, t[0], t[-1])
    return piece


def _cap_ends(piece: Piece, prof: np.ndarray, t0: float, t1: float) -> Piece:
    """Close a partial revolution with two flat fans (one per end), each with planar UVs."""
    loop = prof[:-1] if np.allclose(prof[0], prof[-1]) else prof  # [P, 2] unique points
    centre = loop.mean(axis=0)
    lo, hi = loop.min(axis=0), loop.max(axis=0)
    span = np.maximum(hi - lo, 1e-12)
    verts, faces, uvs = [piece.verts], [piece.faces], [piece.uv]
    base = len(piece.verts)
    for t, flip in ((t0, False), (t1, True)):
        pts = np.concatenate([centre[None], loop], axis=0)  # [P+1, 2]
        xyz = np.stack([pts[:, 0] * math.sin(t), pts[:, 1], pts[:, 0] * math.cos(t)], axis=1)
        n = len(loop)
        j = np.arange(n)
        fan = np.stack([np.zeros(n, dtype=np.int64), 1 + j, 1 + (j + 1) % n], axis=1) + base
        faces.append(fan[:, ::-1] if flip else fan)
        verts.append(xyz)
        uvs.append((pts - lo) / span)
        base += len(pts)
    return Piece(np.concatenate(verts), np.concatenate(faces).astype(np.int64), np.concatenate(uvs))


def cylinder(radius: float, height: float, sections: int = 24) -> Piece:
    """Capped cylinder on the +Y axis, from y = 0 to y = ``height``."""
    return frustum(radius, radius, height, sections)


def frustum(bottom_radius: float, top_radius: float, height: float, sections: int = 24) -> Piece:
    """Capped truncated cone on the +Y axis, from y = 0 to y = ``height`` (a top radius of 0 is a cone)."""
    if top_radius == 0.0:
        return revolve(np.array([[0.0, 0.0], [bottom_radius, 0.0], [0.0, height]]), sections, creases=(1,))
    profile = np.array([[0.0, 0.0], [bottom_radius, 0.0], [top_radius, height], [0.0, height]])
    return revolve(profile, sections, creases=(1, 2))


def sphere(radius: float, sections: int = 16, rings: int = 10) -> Piece:
    """UV sphere centred at the origin, poles on the Y axis."""
    phi = np.linspace(-math.pi / 2, math.pi / 2, rings + 1)
    profile = np.stack([radius * np.cos(phi), radius * np.sin(phi)], axis=1)
    profile[0, 0] = profile[-1, 0] = 0.0
    return revolve(profile, sections)


def capsule(radius: float, height: float, sections: int = 16, cap_rings: int = 4) -> Piece:
    """Capsule on the +Y axis from y = 0 to y = ``height`` (including the two hemispherical caps)."""
    height = max(height, 2.0 * radius)
    phi = np.linspace(-math.pi / 2, 0.0, cap_rings + 1)
    bottom = np.stack([radius * np.cos(phi), radius + radius * np.sin(phi)], axis=1)
    top = np.stack([radius * np.cos(-phi[::-1]), height - radius + radius * np.sin(-phi[::-1])], axis=1)
    profile = np.concatenate([bottom, top], axis=0)
    profile[0, 0] = profile[-1, 0] = 0.0
    return revolve(profile, sections)


def torus(
    major_radius: float, minor_radius: float, sections: int = 24, tube_sections: int = 8, arc_deg: float = 360.0
) -> Piece:
    """Torus about the +Y axis centred at the origin (ring in the XZ plane); a partial arc is capped.

    A partial arc starts at the back (-Z) and runs through -X, like `revolve`.
    """
    a = np.linspace(0.0, 2.0 * math.pi, tube_sections, endpoint=False)
    profile = np.stack([major_radius + minor_radius * np.cos(a), minor_radius * np.sin(a)], axis=1)
    return revolve(profile, sections, closed=True, arc_deg=arc_deg)


def box(sx: float, sy: float, sz: float) -> Piece:
    """Axis-aligned box of size ``(sx, sy, sz)`` centred at the origin; each face maps onto the whole texture."""
    # Each face: (normal axis, sign); corners in CCW order seen from outside.
    half = np.array([sx, sy, sz]) / 2.0
    verts, faces, uvs = [], [], []
    corners_uv = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    for axis in range(3):
        for sign in (1.0, -1.0):
            n = np.zeros(3)
            n[axis] = sign
            # Tangent (u) and bitangent (v) with u x v = n; v points up (+Y) on side faces.
            v_dir = np.array([0.0, 1.0, 0.0]) if axis != 1 else np.array([0.0, 0.0, -sign])
            u_dir = np.cross(v_dir, n)
            quad = [n * half + (2 * cu - 1) * u_dir * half + (2 * cv - 1) * v_dir * half for cu, cv in corners_uv]
            base = len(verts) * 4
            verts.append(np.array(quad))
            uvs.append(corners_uv)
            faces.append(np.array([[0, 1, 2], [0, 2, 3]]) + base)
    return Piece(np.concatenate(verts), np.concatenate(faces).astype(np.int64), np.concatenate(uvs))


def prism(polygon_zy: np.ndarray, width: float) -> Piece:
    """A convex polygon in the ZY plane extruded along X, centred on x = 0.

    Args:
        polygon_zy: [P, 2] ``(z, y)`` corners of a convex polygon, counter-clockwise in the (z, y) plane
            (z to the right, y up).
        width: extent along X.

    Returns:
        The piece; every face (the two polygon ends and each side rectangle) maps onto the whole texture.
    """
    poly = np.asarray(polygon_zy, dtype=np.float64)
    p = len(poly)
    half = width / 2.0
    lo, span = poly.min(axis=0), np.maximum(np.ptp(poly, axis=0), 1e-12)
    verts, faces, uvs = [], [], []
    base = 0
    for x, flip in ((half, False), (-half, True)):
        xyz = np.stack([np.full(p, x), poly[:, 1], poly[:, 0]], axis=1)
        fan = np.stack([np.zeros(p - 2, dtype=np.int64), np.arange(1, p - 1), np.arange(2, p)], axis=1)
        # CCW in (z, y) is clockwise seen from +X (where +Z points left): reverse the +X end.
        faces.append((fan if flip else fan[:, ::-1]) + base)
        verts.append(xyz)
        uvs.append((poly - lo) / span)
        base += p
    for j in range(p):
        a, b = poly[j], poly[(j + 1) % p]
        quad = np.array([[-half, a[1], a[0]], [half, a[1], a[0]], [half, b[1], b[0]], [-half, b[1], b[0]]])
        verts.append(quad)
        uvs.append(np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]))
        faces.append(np.array([[0, 1, 2], [0, 2, 3]]) + base)
        base += 4
    return Piece(np.concatenate(verts), np.concatenate(faces).astype(np.int64), np.concatenate(uvs))


def concatenate(pieces: list[Piece]) -> Piece:
    """All pieces as one (index offsets applied); they stay separate closed components."""
    offsets = np.cumsum([0] + [len(p.verts) for p in pieces[:-1]])
    return Piece(
        verts=np.concatenate([p.verts for p in pieces]),
        faces=np.concatenate([p.faces + o for p, o in zip(pieces, offsets)]).astype(np.int64),
        uv=np.concatenate([p.uv for p in pieces]),
    )


def weld(verts: np.ndarray, faces: np.ndarray, tol: float = 1e-7) -> tuple[np.ndarray, np.ndarray]:
    """Merge vertices closer than ``tol``: [V', 3] verts (one per group), [F, 3] re-indexed faces."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    verts = np.asarray(verts, dtype=np.float64)
    pairs = cKDTree(verts).query_pairs(tol, output_type="ndarray")  # [K, 2]
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(verts), len(verts)))
    _, label = connected_components(graph, directed=False)  # [V] group of each vertex
    first = np.full(label.max() + 1, len(verts))
    np.minimum.at(first, label, np.arange(len(verts)))
    return verts[first], label[faces]

"""Mesh repair and simplification between extraction and UV unwrapping.

`clean_mesh` turns what an extractor gives (marching cubes, marching tetrahedra, a loaded file)
into a mesh a game engine accepts: exact-duplicate vertices merged, degenerate and duplicate
faces dropped, small floating components removed, unreferenced vertices dropped, winding made
consistent across every edge shared by two faces, and each closed piece turned so that its faces
wind counter-clockwise seen from outside (outward normals, docs/conventions.md).
`simplify_mesh` reduces the face count to a budget with quadric edge collapse (the
`fast_simplification` package) and repairs again. Input arrays are checked with
`fourview.meshio.part_arrays.check_mesh`, the check the writers use.

All positions are object-frame units; faces are ``[F, 3]`` int64 vertex indices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import breadth_first_order, connected_components

from fourview.errors import InputError
from fourview.meshio.part_arrays import check_mesh


@dataclass(frozen=True)
class CleanupConfig:
    """Settings of `clean_mesh`.

    Attributes:
        min_component_faces: connected pieces (by shared vertices) with fewer faces are dropped.
        min_component_area_fraction: pieces whose area is below this fraction of the whole
            mesh's area are dropped. The piece with the most area is always kept.
        orient: make winding consistent and normals point outwards.
        degenerate_area_rel: faces whose area is below this times the squared bounding-box
            diagonal count as degenerate.
    """

    min_component_faces: int = 16
    min_component_area_fraction: float = 0.01
    orient: bool = True
    degenerate_area_rel: float = 1e-14

    def __post_init__(self) -> None:
        if self.min_component_faces < 0:
            raise InputError(f"min_component_faces must be >= 0, got {self.min_component_faces}")
        if not 0.0 <= self.min_component_area_fraction < 1.0:
            raise InputError(f"min_component_area_fraction must be in [0, 1), got {self.min_component_area_fraction}")
        if self.degenerate_area_rel < 0:
            raise InputError(f"degenerate_area_rel must be >= 0, got {self.degenerate_area_rel}")


@dataclass(frozen=True)
class CleanupOutput:
    """A repaired mesh and what was removed.

    Attributes:
        verts: [V, 3] float32 object-frame positions (only referenced vertices).
        faces: [F, 3] int64 vertex indices, counter-clockwise seen from outside.
        merged_verts: vertices merged into an exact duplicate.
        degenerate_faces: faces dropped for repeated indices or (near) zero area.
        duplicate_faces: faces dropped for using the same three vertices as an earlier face.
        small_components: connected pieces dropped as too small.
        flipped_faces: faces whose winding was reversed.
    """

    verts: np.ndarray
    faces: np.ndarray
    merged_verts: int = 0
    degenerate_faces: int = 0
    duplicate_faces: int = 0
    small_components: int = 0
    flipped_faces: int = 0


def clean_mesh(verts: np.ndarray, faces: np.ndarray, config: CleanupConfig = CleanupConfig()) -> CleanupOutput:
    """Repair a triangle mesh (see the module docstring for the steps).

    Args:
        verts: [V, 3] float positions, object frame.
        faces: [F, 3] integer vertex indices.
        config: thresholds.

    Returns:
        `CleanupOutput` with float32 verts and int64 faces.

    Raises:
        InputError: wrong shapes, indices out of range, non-finite positions, or no face left.
    """
    verts, faces = check_mesh(verts, faces)
    n_verts = len(verts)
    verts, faces = _merge_duplicate_verts(verts, faces)
    merged = n_verts - len(verts)
    faces, degenerate = _drop_degenerate(verts, faces, config.degenerate_area_rel)
    faces, duplicate = _drop_duplicate_faces(faces)
    faces, small = _drop_small_components(verts, faces, config.min_component_faces, config.min_component_area_fraction)
    if len(faces) == 0:
        raise InputError("mesh has no faces left after removing degenerate faces")
    flipped = 0
    if config.orient:
        faces, flipped = orient_faces(verts, faces)
    verts, faces = _compact(verts, faces)
    return CleanupOutput(
        verts=verts.astype(np.float32),
        faces=faces,
        merged_verts=merged,
        degenerate_faces=degenerate,
        duplicate_faces=duplicate,
        small_components=small,
        flipped_faces=flipped,
    )


def simplify_mesh(
    verts: np.ndarray, faces: np.ndarray, face_budget: int, aggressiveness: float = 7.0, orient: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Reduce a mesh to at most ``face_budget`` faces by quadric edge collapse, then repair it.

    A mesh already within the budget is returned repaired but otherwise unchanged.

    Args:
        verts: [V, 3] float positions, object frame.
        faces: [F, 3] integer vertex indices.
        face_budget: the most faces the result may have (> 0).
        aggressiveness: `fast_simplification`'s ``agg`` (higher is faster and coarser).
        orient: re-orient faces outwards after collapsing (see `orient_faces`).

    Returns:
        verts [V', 3] float32 and faces [F', 3] int64 with ``F' <= face_budget``.

    Raises:
        InputError: ``face_budget`` is not positive, or the mesh is malformed.
    """
    if int(face_budget) != face_budget or face_budget <= 0:
        raise InputError(f"face budget must be a positive integer, got {face_budget}")
    verts, faces = check_mesh(verts, faces)
    if len(faces) > face_budget:
        import fast_simplification

        v, f = fast_simplification.simplify(
            verts.astype(np.float64), faces.astype(np.int32), target_count=int(face_budget), agg=aggressiveness
        )
        verts, faces = np.asarray(v, dtype=np.float64), np.asarray(f, dtype=np.int64).reshape(-1, 3)
        # Collapses stop near the target but may overshoot it by a few faces; trim deterministically.
        if len(faces) > face_budget:
            verts, faces = _trim_to_budget(verts, faces, int(face_budget))
    faces, _ = _drop_degenerate(verts, faces, CleanupConfig.degenerate_area_rel)
    faces, _ = _drop_duplicate_faces(faces)
    if len(faces) == 0:
        raise InputError(f"simplification to {face_budget} faces left no faces")
    if orient:
        faces, _ = orient_faces(verts, faces)
    verts, faces = _compact(verts, faces)
    return verts.astype(np.float32), faces


def orient_faces(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, int]:
    """Make winding consistent over each edge-connected piece and turn closed pieces outwards.

    Two faces sharing an edge (and only those two) are consistent when they traverse it in
    opposite directions. Each piece is walked breadth-first from one face; every face takes its
    parent's orientation through their shared edge (non-manifold edges, with more than two
    faces, are not walked). Then a piece whose signed volume (about its own centroid) is
    negative is flipped whole, so that faces wind counter-clockwise seen from outside.

    Args:
        verts: [V, 3] positions.
        faces: [F, 3] int64 vertex indices.

    Returns:
        faces [F, 3] int64 (same order, some reversed) and the number of faces reversed.
    """
    n_faces = len(faces)
    edges = np.stack([faces, np.roll(faces, -1, axis=1)], axis=-1).reshape(-1, 2)  # [3F, 2] directed a -> b
    face_of = np.repeat(np.arange(n_faces), 3)  # [3F]
    key = np.sort(edges, axis=1)
    n_v = int(faces.max()) + 1
    key_id = key[:, 0] * n_v + key[:, 1]  # [3F] undirected edge id
    order = np.argsort(key_id, kind="stable")
    sorted_id = key_id[order]
    starts = np.flatnonzero(np.r_[True, sorted_id[1:] != sorted_id[:-1]])
    counts = np.diff(np.r_[starts, len(sorted_id)])
    pair = starts[counts == 2]  # manifold edges: exactly two face corners
    e1, e2 = order[pair], order[pair + 1]  # [P] directed-edge indices of the two faces
    f1, f2 = face_of[e1], face_of[e2]
    keep = f1 != f2
    e1, e2, f1, f2 = e1[keep], e2[keep], f1[keep], f2[keep]
    # Same direction over the shared edge means one of the two must flip (relative parity 1).
    rel = (edges[e1, 0] == edges[e2, 0]).astype(np.int8)  # [P]

    # Face adjacency graph plus a virtual root joined to one face of each piece.
    n_comp, comp = connected_components(
        coo_matrix((np.ones(len(f1)), (f1, f2)), shape=(n_faces, n_faces)), directed=False
    )
    first_face = np.full(n_comp, -1, dtype=np.int64)
    first_face[comp[::-1]] = np.arange(n_faces)[::-1]
    root = n_faces
    rows = np.r_[f1, f2, np.full(n_comp, root)]
    cols = np.r_[f2, f1, first_face]
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_faces + 1, n_faces + 1)).tocsr()
    _, pred = breadth_first_order(graph, root, directed=True, return_predecessors=True)
    pred = pred[:n_faces].astype(np.int64)  # [F] parent face, or root

    # Relative parity of each face to its parent, by lookup of the (face, parent) pair.
    pair_key = np.r_[f1 * (n_faces + 1) + f2, f2 * (n_faces + 1) + f1]
    pair_rel = np.r_[rel, rel]
    sort = np.argsort(pair_key)
    pair_key, pair_rel = pair_key[sort], pair_rel[sort]
    has_parent = pred != root
    parity = np.zeros(n_faces + 1, dtype=np.int8)  # index `root` stays 0
    query = np.arange(n_faces) * (n_faces + 1) + pred
    pos = np.clip(np.searchsorted(pair_key, query[has_parent]), 0, len(pair_key) - 1)
    parity[:n_faces][has_parent] = pair_rel[pos]
    # Parity relative to the piece's root: XOR along the path, by pointer jumping.
    parent = np.r_[np.where(has_parent, pred, root), root]
    while True:
        up = parent[parent]
        parity = parity ^ parity[parent]
        if np.array_equal(up, parent):
            break
        parity[root] = 0
        parent = up
        parent[root] = root
    flip = parity[:n_faces].astype(bool)
    out = faces.copy()
    out[flip] = out[flip][:, ::-1]

    # Outward: signed volume of each piece about its centroid.
    tri = verts[out]  # [F, 3, 3]
    centre = np.zeros((n_comp, 3))
    np.add.at(centre, comp, tri.mean(axis=1))
    centre /= np.maximum(np.bincount(comp, minlength=n_comp), 1)[:, None]
    rel_tri = tri - centre[comp][:, None, :]
    vol = np.einsum("ij,ij->i", rel_tri[:, 0], np.cross(rel_tri[:, 1], rel_tri[:, 2]))  # [F] 6 x signed volume
    comp_vol = np.bincount(comp, weights=vol, minlength=n_comp)
    inward = comp_vol[comp] < 0
    out[inward] = out[inward][:, ::-1]
    n_flipped = int(np.count_nonzero(flip ^ inward))
    return out, n_flipped


def face_areas(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """[F] triangle areas, in squared object-frame units."""
    tri = np.asarray(verts, dtype=np.float64)[faces]
    return 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)


def _merge_duplicate_verts(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    unique, first, inverse = np.unique(verts, axis=0, return_index=True, return_inverse=True)
    if len(unique) == len(verts):
        return verts, faces
    # Keep the survivors in their original order so that output is stable.
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return verts[first[order]], rank[inverse.reshape(-1)][faces]


def _drop_degenerate(verts: np.ndarray, faces: np.ndarray, area_rel: float) -> tuple[np.ndarray, int]:
    repeated = (faces[:, 0] == faces[:, 1]) | (faces[:, 1] == faces[:, 2]) | (faces[:, 0] == faces[:, 2])
    diag2 = float(np.sum((verts.max(axis=0) - verts.min(axis=0)) ** 2)) if len(verts) else 0.0
    tiny = face_areas(verts, faces) <= area_rel * diag2
    bad = repeated | tiny
    return faces[~bad], int(np.count_nonzero(bad))


def _drop_duplicate_faces(faces: np.ndarray) -> tuple[np.ndarray, int]:
    _, first = np.unique(np.sort(faces, axis=1), axis=0, return_index=True)
    if len(first) == len(faces):
        return faces, 0
    return faces[np.sort(first)], len(faces) - len(first)


def _drop_small_components(
    verts: np.ndarray, faces: np.ndarray, min_faces: int, min_area_fraction: float
) -> tuple[np.ndarray, int]:
    if len(faces) == 0:
        return faces, 0
    n_v = len(verts)
    rows = np.r_[faces[:, 0], faces[:, 1]]
    cols = np.r_[faces[:, 1], faces[:, 2]]
    n_comp, label = connected_components(
        coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_v, n_v)), directed=False
    )
    face_comp = label[faces[:, 0]]  # [F]
    count = np.bincount(face_comp, minlength=n_comp)
    area = np.bincount(face_comp, weights=face_areas(verts, faces), minlength=n_comp)
    used = count > 0
    keep = used & (count >= min_faces) & (area >= min_area_fraction * area.sum())
    keep[int(np.argmax(area))] = True
    return faces[keep[face_comp]], int(np.count_nonzero(used & ~keep))


def _compact(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop unreferenced vertices, keeping the others in order."""
    used = np.zeros(len(verts), dtype=bool)
    used[faces.reshape(-1)] = True
    remap = np.cumsum(used) - 1
    return verts[used], remap[faces].astype(np.int64)


def _trim_to_budget(verts: np.ndarray, faces: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """Drop the smallest faces until ``budget`` remain (used only for a collapse overshoot of a few faces)."""
    keep = np.sort(np.argsort(-face_areas(verts, faces), kind="stable")[:budget])
    return verts, faces[keep]

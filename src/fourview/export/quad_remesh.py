"""Optional quad remeshing of the dense surface (Instant Meshes), before simplification.

A field-aligned quad remesh gives even, flowing topology (what an artist's retopology gives, and
what SF3D ships); glTF holds triangles, so each quad is split along its shorter diagonal. It needs
the optional ``pynanoinstantmeshes`` package (a compiled extension, imported only here); without
it, asking for a remesh is an `InputError` that says what to install.
"""

from __future__ import annotations

import numpy as np

from fourview.errors import InputError
from fourview.meshio.part_arrays import check_mesh

INSTALL_HINT = "pip install pynanoinstantmeshes"


def quad_remesh(verts: np.ndarray, faces: np.ndarray, face_budget: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Remesh a triangle mesh into quads (about ``face_budget / 2`` of them), returned as triangles.

    Args:
        verts: [V, 3] positions; faces: [F, 3] vertex indices.
        face_budget: the triangle count to aim at (two per quad); None keeps about the input's.

    Returns:
        verts [V', 3] float32 and faces [F', 3] int64.

    Raises:
        InputError: ``pynanoinstantmeshes`` is not installed, or the remesh failed.
    """
    try:
        import pynanoinstantmeshes  # optional compiled extension
    except ImportError as error:
        raise InputError(f"--quad-remesh needs the optional 'pynanoinstantmeshes' package ({INSTALL_HINT})") from error
    verts64, faces64 = check_mesh(verts, faces)
    # Instant Meshes ends with a regular subdivision of its mesh into quads (each face into about 4): about
    # 4 vertex_count quads, 8 vertex_count triangles.
    target = max(8, (face_budget or len(faces64)) // 8)
    out_verts, quads = pynanoinstantmeshes.remesh(
        verts64.astype(np.float32), faces64.astype(np.uint32), vertex_count=target, deterministic=True
    )
    out_verts = np.asarray(out_verts, dtype=np.float64)
    quads = np.asarray(quads, dtype=np.int64).reshape(-1, 4)
    if len(quads) == 0:
        raise InputError("the quad remesh produced no faces")
    return out_verts.astype(np.float32), split_quads(out_verts, quads)


def split_quads(verts: np.ndarray, quads: np.ndarray) -> np.ndarray:
    """[Q, 4] quads (a repeated last index marks a triangle) -> [F, 3] triangles, each quad split
    along its shorter diagonal."""
    a, b, c, d = (quads[:, k] for k in range(4))
    short_ac = np.linalg.norm(verts[a] - verts[c], axis=1) <= np.linalg.norm(verts[b] - verts[d], axis=1)
    first = np.where(short_ac[:, None], np.stack([a, b, c], 1), np.stack([a, b, d], 1))
    second = np.where(short_ac[:, None], np.stack([a, c, d], 1), np.stack([b, c, d], 1))
    tris = np.concatenate([first, second])
    return tris[(tris[:, 0] != tris[:, 1]) & (tris[:, 1] != tris[:, 2]) & (tris[:, 0] != tris[:, 2])]

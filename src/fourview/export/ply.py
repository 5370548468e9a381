"""Stanford PLY writer: positions, normals, 8-bit sRGB vertex colours, triangles.

Binary little-endian by default (``binary=False`` writes ASCII). Header::

    ply
    format binary_little_endian 1.0      (or: format ascii 1.0)
    comment fourview
    element vertex V
    property float x / y / z             object frame, +Y up
    property float nx / ny / nz          (when normals are written)
    property uchar red / green / blue    sRGB, round(255 * c) (when colours are given)
    element face F
    property list uchar int vertex_indices   counter-clockwise seen from outside
    end_header

The file is written atomically (`fourview.export.obj.write_files_atomic`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def write_ply(
    path: str | os.PathLike,
    verts: np.ndarray,
    faces: np.ndarray,
    vertex_colors: np.ndarray | None = None,
    normals: np.ndarray | None = None,
    binary: bool = True,
    write_normals: bool = True,
) -> list[Path]:
    """Write a mesh with optional vertex colours as a PLY file.

    Args:
        path: the ``.ply`` file.
        verts: [V, 3] float positions, object frame.
        faces: [F, 3] int vertex indices, counter-clockwise seen from outside.
        vertex_colors: [V, 3] float sRGB in [0, 1], or None.
        normals: [V, 3] unit normals, or None to compute smooth ones.
        binary: binary little-endian (True) or ASCII (False).
        write_normals: include ``nx ny nz``.

    Returns:
        ``[path]``.

    Raises:
        InputError: malformed arrays or an unwritable folder.
    """
    from fourview.export.obj import write_files_atomic

    files = ply_files(path, verts, faces, vertex_colors, normals, binary, write_normals)
    write_files_atomic(files)
    return list(files)


def ply_files(
    path: str | os.PathLike,
    verts: np.ndarray,
    faces: np.ndarray,
    vertex_colors: np.ndarray | None = None,
    normals: np.ndarray | None = None,
    binary: bool = True,
    write_normals: bool = True,
) -> dict[Path, bytes]:
    """What `write_ply` would write, as ``{path: bytes}``, without writing it (same arguments)."""
    from fourview.export.gltf import check_export_arrays

    verts, faces, _, _, vertex_colors, normals = check_export_arrays(verts, faces, None, None, vertex_colors, normals)
    return {Path(path): ply_bytes(verts, faces, vertex_colors, normals if write_normals else None, binary)}


def ply_bytes(
    verts: np.ndarray,
    faces: np.ndarray,
    vertex_colors: np.ndarray | None,
    normals: np.ndarray | None,
    binary: bool,
) -> bytes:
    """The PLY file's bytes (see the module docstring); arrays already validated."""
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if normals is not None:
        fields += [("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
    if vertex_colors is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vertex = np.zeros(len(verts), dtype=fields)
    vertex["x"], vertex["y"], vertex["z"] = verts[:, 0], verts[:, 1], verts[:, 2]
    if normals is not None:
        vertex["nx"], vertex["ny"], vertex["nz"] = normals[:, 0], normals[:, 1], normals[:, 2]
    if vertex_colors is not None:
        rgb = np.round(np.clip(vertex_colors, 0.0, 1.0) * 255.0).astype(np.uint8)
        vertex["red"], vertex["green"], vertex["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    face = np.zeros(len(faces), dtype=[("n", "u1"), ("i", "<i4", (3,))])
    face["n"] = 3
    face["i"] = faces

    ply_type = {"<f4": "float", "u1": "uchar"}
    header = ["ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0", "comment fourview"]
    header.append(f"element vertex {len(verts)}")
    header += [f"property {ply_type[t]} {name}" for name, t in fields]
    header += [f"element face {len(faces)}", "property list uchar int vertex_indices", "end_header"]
    head = ("\n".join(header) + "\n").encode("ascii")
    if binary:
        return head + vertex.tobytes() + face.tobytes()
    rows = []
    for record in vertex.tolist():
        rows.append(" ".join("%.9g" % v if isinstance(v, float) else str(v) for v in record))
    rows += ["3 %d %d %d" % tuple(f) for f in faces.tolist()]
    return head + ("\n".join(rows) + "\n").encode("ascii")

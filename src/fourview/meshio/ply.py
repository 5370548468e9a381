"""Stanford PLY writer: positions, normals, 8-bit sRGB vertex colours, triangles.

A PLY has no parts and no textures: the mesh's parts are written as one vertex list and one face
list, in part order. Vertex colours are written when any part has them; a part without them takes
its material's base colour (sRGB-encoded) at every vertex.

Binary little-endian by default (``binary=False`` writes ASCII). Header::

    ply
    format binary_little_endian 1.0      (or: format ascii 1.0)
    comment fourview
    element vertex V
    property float x / y / z             object frame, +Y up
    property float nx / ny / nz          (when normals are written)
    property uchar red / green / blue    sRGB, round(255 * c) (when colours are written)
    element face F
    property list uchar int vertex_indices   counter-clockwise seen from outside
    end_header

The file is written atomically (`fourview.atomic.write_files_atomic`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fourview.atomic import write_files_atomic
from fourview.mesh import MeshAsset, linear_to_srgb
from fourview.meshio.part_arrays import mesh_part_arrays


def write_ply(path: str | os.PathLike, mesh: MeshAsset, binary: bool = True, write_normals: bool = True) -> list[Path]:
    """Write a mesh as a PLY file, atomically.

    Args:
        path: the ``.ply`` file.
        mesh: the mesh in the object frame (see the module docstring for parts and colours).
        binary: binary little-endian (True) or ASCII (False).
        write_normals: include ``nx ny nz`` (smooth unit normals).

    Returns:
        ``[path]``.

    Raises:
        InputError: a malformed part or an unwritable folder.
    """
    data = ply_bytes(mesh, binary, write_normals)
    write_files_atomic({Path(path): data})
    return [Path(path)]


def ply_bytes(mesh: MeshAsset, binary: bool = True, write_normals: bool = True) -> bytes:
    """The PLY file's bytes (see the module docstring).

    Raises:
        InputError: a malformed part or a texture without UVs.
    """
    parts = mesh_part_arrays(mesh)
    offsets = np.cumsum([0] + [len(p.verts) for p in parts])[:-1]
    verts = np.concatenate([p.verts for p in parts])  # [V, 3]
    faces = np.concatenate([p.faces + offset for p, offset in zip(parts, offsets)])  # [F, 3]
    normals = np.concatenate([p.normals for p in parts]) if write_normals else None
    colors = None
    if any(p.vertex_colors is not None or (p.texture is not None and p.uv is not None) for p in parts):
        colors = np.concatenate([_vertex_colours(p) for p in parts])  # [V, 3] sRGB
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if normals is not None:
        fields += [("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
    if colors is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vertex = np.zeros(len(verts), dtype=fields)
    vertex["x"], vertex["y"], vertex["z"] = verts[:, 0], verts[:, 1], verts[:, 2]
    if normals is not None:
        vertex["nx"], vertex["ny"], vertex["nz"] = normals[:, 0], normals[:, 1], normals[:, 2]
    if colors is not None:
        rgb = np.round(np.clip(colors, 0.0, 1.0) * 255.0).astype(np.uint8)
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


def _vertex_colours(part) -> np.ndarray:
    """[V, 3] sRGB per vertex: its vertex colours, else its texture at the vertices' UVs, else its base colour."""
    if part.vertex_colors is not None:
        return part.vertex_colors
    if part.texture is not None and part.uv is not None:
        tex = np.asarray(part.texture, dtype=np.float32)[..., :3]
        h, w = tex.shape[:2]
        x = np.clip(part.uv[:, 0] * w - 0.5, 0.0, w - 1.0)  # OBJ convention: v grows upwards, row 0 at the top
        y = np.clip((1.0 - part.uv[:, 1]) * h - 0.5, 0.0, h - 1.0)
        x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
        x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
        fx, fy = (x - x0)[:, None], (y - y0)[:, None]
        top = tex[y0, x0] * (1 - fx) + tex[y0, x1] * fx
        bottom = tex[y1, x0] * (1 - fx) + tex[y1, x1] * fx
        return top * (1 - fy) + bottom * fy
    return np.tile(linear_to_srgb(np.asarray(part.material.base_color[:3])), (len(part.verts), 1))

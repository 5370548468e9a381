"""Wavefront OBJ writer (OBJ + MTL + PNG).

Layout of ``NAME.obj``, one object per part (``o NAME`` for a one-part mesh, else ``o NAME_i``)::

    # fourview OBJ
    mtllib NAME.mtl
    o NAME
    v x y z [r g b]        positions, object frame (+Y up); sRGB vertex colours of an untextured part
    vt u v                 OBJ convention: (0, 0) is the texture's bottom-left
    vn x y z               smooth unit normals
    usemtl MATERIAL
    f a/t/a b/t/b c/t/c    counter-clockwise seen from outside (a//a without UVs)

``NAME.mtl`` holds one material per part (named after the part's material; a name used by several
parts gets ``_i`` appended): ``Kd`` (the linear base colour; 1 1 1 with a texture, which alone
gives the colour, as Blender reads it), ``d`` (alpha), ``Pm`` / ``Pr`` (metallic / roughness) and
``map_Kd`` naming the texture: ``NAME.png`` when one part has a texture, ``NAME_i.png`` (part
``i``) when several do. Numbers are printed with ``%.9g`` (float32 round-trips exactly).
Readers that take colours only from a file whose every ``v`` line has them (trimesh) lose them
when a vertex-coloured part shares the file with a part without colours.

The files are written all or none (`fourview.atomic.write_files_atomic`).
"""

from __future__ import annotations

import io
import os
from collections import Counter
from pathlib import Path

import numpy as np

from fourview.atomic import write_files_atomic
from fourview.mesh import Material, MeshAsset
from fourview.meshio.part_arrays import PartArrays, encode_png, mesh_part_arrays


def write_obj(path: str | os.PathLike, mesh: MeshAsset) -> list[Path]:
    """Write a mesh as ``path`` (.obj), its ``.mtl`` and the PNG of each texture, all or none.

    Args:
        path: the ``.obj`` file; the MTL and PNGs take its stem and folder.
        mesh: the mesh in the object frame (see the module docstring).

    Returns:
        The files written: ``[obj, mtl]``, then the PNGs in part order.

    Raises:
        InputError: a malformed part, a texture without UVs, or an unwritable folder.
    """
    files = obj_files(path, mesh)
    write_files_atomic(files)
    return list(files)


def obj_files(path: str | os.PathLike, mesh: MeshAsset) -> dict[Path, bytes]:
    """What `write_obj` would write, as ``{path: bytes}`` in the order obj, mtl, PNGs, without writing it.

    Raises:
        InputError: a malformed part or a texture without UVs.
    """
    path = Path(path)
    parts = mesh_part_arrays(mesh)
    mtl_path = path.with_suffix(".mtl")
    textured = [i for i, part in enumerate(parts) if part.texture is not None]
    png_paths = {i: path.with_name(f"{path.stem}{'' if len(textured) == 1 else f'_{i}'}.png") for i in textured}
    counts = Counter(part.material.name for part in parts)
    material_names = [p.material.name if counts[p.material.name] == 1 else f"{p.material.name}_{i}" for i, p in
                      enumerate(parts)]  # fmt: skip
    objects = [path.stem] if len(parts) == 1 else [f"{path.stem}_{i}" for i in range(len(parts))]
    files = {
        path: _obj_text(parts, objects, mtl_path.name, material_names).encode("utf-8"),
        mtl_path: "".join(
            ["# fourview MTL\n"]
            + [
                _mtl_entry(part.material, name, png_paths[i].name if i in png_paths else None)
                for i, (part, name) in enumerate(zip(parts, material_names))
            ]
        ).encode("utf-8"),
    }
    for i, png_path in png_paths.items():
        files[png_path] = encode_png(parts[i].texture)
    return files


def _obj_text(parts: list[PartArrays], objects: list[str], mtl_name: str, material_names: list[str]) -> str:
    """The OBJ file's text (see the module docstring)."""
    out = io.StringIO()
    out.write(f"# fourview OBJ\nmtllib {mtl_name}\n")
    v_base = vt_base = 1  # OBJ indices are 1-based and count over the whole file
    for part, name, material_name in zip(parts, objects, material_names):
        out.write(f"o {name}\n")
        colors = part.untextured_colors
        _write_rows(out, "v", part.verts if colors is None else np.concatenate([part.verts, colors], axis=1))
        if part.uv is not None:
            _write_rows(out, "vt", part.uv)
        _write_rows(out, "vn", part.normals)
        out.write(f"usemtl {material_name}\n")
        v = part.faces + v_base
        if part.uv is not None:
            t = part.faces + vt_base
            rows = np.stack([v[:, 0], t[:, 0], v[:, 1], t[:, 1], v[:, 2], t[:, 2]], axis=1)
            fmt = "f {0}/{1}/{0} {2}/{3}/{2} {4}/{5}/{4}\n"
            vt_base += len(part.uv)
        else:
            rows, fmt = v, "f {0}//{0} {1}//{1} {2}//{2}\n"
        out.write("".join(fmt.format(*row) for row in rows.tolist()))
        v_base += len(part.verts)
    return out.getvalue()


def _mtl_entry(material: Material, name: str, texture_name: str | None) -> str:
    """One material's lines of the MTL file, with ``map_Kd texture_name`` when given."""
    kd = (1.0, 1.0, 1.0) if texture_name is not None else tuple(material.base_color[:3])
    lines = [
        f"newmtl {name}",
        "Kd " + " ".join(_fmt(c) for c in kd),
        "Ka 0 0 0",
        "Ks 0 0 0",
        f"d {_fmt(material.base_color[3])}",
        "illum 1",
        f"Pm {_fmt(material.metallic)}",
        f"Pr {_fmt(material.roughness)}",
    ]
    if texture_name is not None:
        lines.append(f"map_Kd {texture_name}")
    return "\n".join(lines) + "\n"


def _fmt(x: float) -> str:
    return "%.9g" % float(x)


def _write_rows(out: io.StringIO, tag: str, rows: np.ndarray) -> None:
    fmt = tag + " %.9g" * rows.shape[1]
    out.write("\n".join(fmt % tuple(r) for r in rows.astype(np.float64).tolist()))
    out.write("\n")

"""Wavefront OBJ writer (OBJ + MTL + PNG), and the atomic file writing all writers share.

Layout of ``NAME.obj`` (one object, one material)::

    # fourview OBJ
    mtllib NAME.mtl
    o NAME
    v x y z [r g b]        positions, object frame (+Y up), sRGB vertex colours if given
    vt u v                 OBJ convention: (0, 0) is the texture's bottom-left
    vn x y z               smooth unit normals
    usemtl MATERIAL
    f a/a/a b/b/b c/c/c    counter-clockwise seen from outside (a//a without UVs)

``NAME.mtl`` gives ``Kd`` (the linear base colour; 1 1 1 with a texture, which alone gives the
colour, as Blender reads it), ``d`` (alpha), ``Pm`` / ``Pr`` (metallic / roughness) and
``map_Kd NAME.png``. Numbers are printed with ``%.9g`` (float32 round-trips exactly).

Atomicity: every file is written to a temporary file in its target folder and renamed over its
target only once all of them are complete (`write_files_atomic`); on an error before that the
temporaries are removed and no target is touched.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np

from fourview.errors import InputError
from fourview.mesh import Material


def write_obj(
    path: str | os.PathLike,
    verts: np.ndarray,
    faces: np.ndarray,
    uv: np.ndarray | None = None,
    texture: np.ndarray | None = None,
    vertex_colors: np.ndarray | None = None,
    normals: np.ndarray | None = None,
    material: Material = Material(),
) -> list[Path]:
    """Write a mesh as ``path`` (.obj), its ``.mtl`` and, with a texture, its ``.png``.

    Args:
        path: the ``.obj`` file; the MTL and PNG take its stem and folder.
        verts: [V, 3] float positions, object frame.
        faces: [F, 3] int vertex indices, counter-clockwise seen from outside.
        uv: [V, 2] texture coordinates, OBJ convention (v up), or None.
        texture: [H, W, 3|4] float sRGB in [0, 1], row 0 at the top, or None; used with ``uv``.
            None falls back to ``material.texture``.
        vertex_colors: [V, 3] float sRGB in [0, 1], or None (written as ``v x y z r g b``).
        normals: [V, 3] unit normals, or None to compute smooth ones (`vertex_normals`).
        material: name, linear base colour, metallic and roughness.

    Returns:
        The files written: ``[obj, mtl]`` or ``[obj, mtl, png]``.

    Raises:
        InputError: malformed arrays, a texture without UVs, or an unwritable folder.
    """
    files = obj_files(path, verts, faces, uv, texture, vertex_colors, normals, material)
    write_files_atomic(files)
    return list(files)


def obj_files(
    path: str | os.PathLike,
    verts: np.ndarray,
    faces: np.ndarray,
    uv: np.ndarray | None = None,
    texture: np.ndarray | None = None,
    vertex_colors: np.ndarray | None = None,
    normals: np.ndarray | None = None,
    material: Material = Material(),
) -> dict[Path, bytes]:
    """What `write_obj` would write, as ``{path: bytes}`` in the order obj, mtl, png, without writing it."""
    from fourview.export.gltf import check_export_arrays, encode_png

    path = Path(path)
    texture = material.texture if texture is None else texture
    verts, faces, uv, texture, vertex_colors, normals = check_export_arrays(
        verts, faces, uv, texture, vertex_colors, normals
    )
    mtl_path, png_path = path.with_suffix(".mtl"), path.with_suffix(".png")
    files = {
        path: obj_text(
            verts,
            faces,
            uv,
            vertex_colors,
            normals,
            name=path.stem,
            mtl_name=mtl_path.name,
            material_name=material.name,
        ).encode("utf-8"),
        mtl_path: mtl_text(material, png_path.name if texture is not None else None).encode("utf-8"),
    }
    if texture is not None:
        files[png_path] = encode_png(texture)
    return files


def obj_text(
    verts: np.ndarray,
    faces: np.ndarray,
    uv: np.ndarray | None,
    vertex_colors: np.ndarray | None,
    normals: np.ndarray,
    name: str,
    mtl_name: str,
    material_name: str,
) -> str:
    """The OBJ file's text (see the module docstring); arrays already validated."""
    out = io.StringIO()
    out.write(f"# fourview OBJ\nmtllib {mtl_name}\no {name}\n")
    if vertex_colors is None:
        _write_rows(out, "v", verts)
    else:
        _write_rows(out, "v", np.concatenate([verts, vertex_colors], axis=1))
    if uv is not None:
        _write_rows(out, "vt", uv)
    _write_rows(out, "vn", normals)
    out.write(f"usemtl {material_name}\n")
    idx = faces + 1  # OBJ indices are 1-based
    if uv is not None:
        fmt = "f {0}/{0}/{0} {1}/{1}/{1} {2}/{2}/{2}\n"
    else:
        fmt = "f {0}//{0} {1}//{1} {2}//{2}\n"
    out.write("".join(fmt.format(a, b, c) for a, b, c in idx.tolist()))
    return out.getvalue()


def mtl_text(material: Material, texture_name: str | None) -> str:
    """The MTL file's text for one material, with ``map_Kd texture_name`` when given."""
    kd = (1.0, 1.0, 1.0) if texture_name is not None else tuple(material.base_color[:3])
    lines = [
        "# fourview MTL",
        f"newmtl {material.name}",
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


def write_files_atomic(files: dict[Path, bytes]) -> None:
    """Write several files so that none is touched unless all of them could be written.

    Each file goes to a temporary file beside its target (same folder, so the rename is atomic
    on one file system); only when every temporary is complete and synced are they renamed over
    the targets, one by one. A failure before that point removes the temporaries and leaves every
    target as it was.

    Raises:
        InputError: a folder is missing or not writable (nothing is left behind).
    """
    temps: list[tuple[str, Path]] = []
    umask = os.umask(0)
    os.umask(umask)
    try:
        for target, data in files.items():
            target = Path(target)
            if not target.parent.is_dir():
                raise InputError(f"cannot write {target}: folder {target.parent} does not exist")
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            temps.append((tmp, target))
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        for tmp, target in temps:
            os.replace(tmp, target)
        temps = []
    except OSError as error:
        raise InputError(f"cannot write {', '.join(str(p) for p in files)}: {error.strerror or error}") from error
    finally:
        for tmp, _ in temps:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _fmt(x: float) -> str:
    return "%.9g" % float(x)


def _write_rows(out: io.StringIO, tag: str, rows: np.ndarray) -> None:
    fmt = tag + " %.9g" * rows.shape[1]
    out.write("\n".join(fmt % tuple(r) for r in rows.astype(np.float64).tolist()))
    out.write("\n")

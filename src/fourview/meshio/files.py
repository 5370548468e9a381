"""Several formats of one mesh, written together: all of the files or none of them.

The suffix of each path picks its writer: ``.glb`` (`fourview.meshio.gltf`), ``.obj`` with its
``.mtl`` and PNGs beside it (`fourview.meshio.obj`) and ``.ply`` (`fourview.meshio.ply`, binary,
with normals, and vertex colours when the mesh has them).

A mesh with levels of detail (`fourview.mesh.MeshAsset.lods`) gets, beside each ``NAME.glb``,
one GLB per coarser level (``NAME_lod1.glb``, ...) and all levels in one GLB with ``MSFT_lod``
(``NAME_lods.glb``); every one of them holds the same texture set. OBJ and PLY hold the finest
level only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from fourview.atomic import write_files_atomic
from fourview.errors import InputError
from fourview.mesh import MeshAsset
from fourview.meshio.gltf import glb_bytes
from fourview.meshio.obj import obj_files
from fourview.meshio.ply import ply_bytes

MESH_SUFFIXES = (".glb", ".obj", ".ply")
"""The file suffixes `write_mesh_files` writes (lower case; the check ignores case)."""


def write_mesh_files(mesh: MeshAsset, paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Write ``mesh`` to every path in ``paths``, in one atomic step.

    Every file is complete and synced before the first one is renamed into place; when anything
    fails before that, none is created or replaced.

    Args:
        mesh: the mesh.
        paths: output files; each suffix picks a format (`MESH_SUFFIXES`).

    Returns:
        Every file written, in the order of ``paths`` (an OBJ followed by its MTL and PNGs).

    Raises:
        InputError: an unknown suffix, a malformed part, or a folder that is missing or not writable.
    """
    files = mesh_files(mesh, paths)
    write_files_atomic(files)
    return list(files)


def mesh_files(mesh: MeshAsset, paths: Sequence[str | os.PathLike]) -> dict[Path, bytes]:
    """What `write_mesh_files` would write, as ``{path: bytes}``, without writing it.

    Raises:
        InputError: an unknown suffix, a malformed part, or no paths.
    """
    if isinstance(paths, (str, os.PathLike)):
        raise TypeError("paths must be a sequence of paths, not one path")
    paths = [Path(p) for p in paths]
    if not paths:
        raise InputError("no output files given")
    for path in paths:
        if path.suffix.lower() not in MESH_SUFFIXES:
            raise InputError(f"unknown output format {path.suffix!r} for {path}; use .glb, .obj or .ply")
    files: dict[Path, bytes] = {}
    png_cache: dict = {}  # each texture encoded once for all the GLBs
    for path in paths:
        suffix = path.suffix.lower()
        if suffix == ".glb":
            files[path] = glb_bytes(mesh, png_cache=png_cache)
            if mesh.lods:
                lod_paths = lod_glb_paths(path, len(mesh.lods) + 1)
                for level, lod_path in zip(mesh.lods, lod_paths.levels[1:]):
                    files[lod_path] = glb_bytes(replace(level, placement=mesh.placement), png_cache=png_cache)
                files[lod_paths.chain] = glb_bytes(mesh, lod_extension=True, png_cache=png_cache)
        elif suffix == ".obj":
            files.update(obj_files(path, mesh))
        else:
            files[path] = ply_bytes(mesh)
    return files


@dataclass(frozen=True)
class LODPaths:
    """The GLB files of a chain of levels of detail.

    Attributes:
        levels: one file per level, finest first (level 0 is the given path itself).
        chain: the one file holding every level with ``MSFT_lod``.
    """

    levels: tuple[Path, ...]
    chain: Path


def lod_glb_paths(path: str | os.PathLike, num_levels: int) -> LODPaths:
    """Where `write_mesh_files` writes ``num_levels`` levels of detail given the GLB ``path``."""
    path = Path(path)
    levels = (path, *(path.with_name(f"{path.stem}_lod{k}{path.suffix}") for k in range(1, num_levels)))
    return LODPaths(levels=levels, chain=path.with_name(f"{path.stem}_lods{path.suffix}"))

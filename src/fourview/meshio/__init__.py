"""Mesh files: GLB, OBJ (+ MTL + PNG) and PLY writers of one `fourview.mesh.MeshAsset`.

Each writer takes the whole mesh (its parts with their materials and textures) and writes
atomically (`fourview.atomic`); `write_mesh_files` writes several formats of one mesh all or
none. Reading mesh files is `fourview.data.assets.load_asset`.
"""

from fourview.meshio.files import MESH_SUFFIXES, LODPaths, lod_glb_paths, mesh_files, write_mesh_files
from fourview.meshio.gltf import glb_bytes, read_glb_json, write_glb
from fourview.meshio.obj import obj_files, write_obj
from fourview.meshio.ply import ply_bytes, write_ply

__all__ = [
    "MESH_SUFFIXES",
    "LODPaths",
    "glb_bytes",
    "lod_glb_paths",
    "mesh_files",
    "obj_files",
    "ply_bytes",
    "read_glb_json",
    "write_glb",
    "write_mesh_files",
    "write_obj",
    "write_ply",
]

"""The export stage: fields to game-ready files.

Mesh extraction (marching cubes or marching tetrahedra) and clean-up, simplification to a face
budget, xatlas UV atlas, texture baking with seam padding, GLB/OBJ/PLY writers, previews.
"""

from fourview.export.bake import bake_texture, bake_vertex_colors
from fourview.export.extract import ExportConfig, ExportResult, export_field, extract_mesh
from fourview.export.gltf import write_glb
from fourview.export.mesh_cleanup import clean_mesh, simplify_mesh
from fourview.export.obj import write_obj
from fourview.export.ply import write_ply
from fourview.export.uv import unwrap_uv

__all__ = [
    "ExportConfig",
    "ExportResult",
    "bake_texture",
    "bake_vertex_colors",
    "clean_mesh",
    "export_field",
    "extract_mesh",
    "simplify_mesh",
    "unwrap_uv",
    "write_glb",
    "write_obj",
    "write_ply",
]

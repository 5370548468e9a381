"""The export stage: fields to game-ready textured meshes.

Mesh extraction (marching cubes or marching tetrahedra) and clean-up, simplification to a face
budget, xatlas UV atlas, texture baking with seam padding (`export_field` runs them all and
returns a `fourview.mesh.MeshAsset`), export presets, previews. Writing mesh files is
`fourview.meshio`.
"""

from fourview.export.bake import bake_texture, bake_vertex_colors
from fourview.export.exporter import ExportConfig, ExportedMesh, export_field
from fourview.export.extract import extract_mesh
from fourview.export.mesh_cleanup import clean_mesh, simplify_mesh
from fourview.export.uv import unwrap_uv

__all__ = [
    "ExportConfig",
    "ExportedMesh",
    "bake_texture",
    "bake_vertex_colors",
    "clean_mesh",
    "export_field",
    "extract_mesh",
    "simplify_mesh",
    "unwrap_uv",
]

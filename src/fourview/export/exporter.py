"""The export stage: a field to a textured, game-ready mesh in memory.

`export_field` runs the chain, timing each step: extract the surface (`extract.extract_mesh`),
repair it (`mesh_cleanup.clean_mesh`), simplify it to a face budget (`mesh_cleanup.simplify_mesh`),
unwrap a UV atlas (`uv.unwrap_uv`) and bake the field's colour into a texture
(`bake.bake_texture`, with the input views projected onto it when given). The field's colour is
also baked at every vertex: a PLY, which has no textures, stores those. The result is a
`fourview.mesh.MeshAsset`; `fourview.meshio.write_mesh_files` writes it as GLB / OBJ / PLY.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from fourview.errors import InputError
from fourview.export.bake import bake_texture, bake_vertex_colors, check_texture_size
from fourview.export.extract import ExtractMethod, extract_mesh
from fourview.export.mesh_cleanup import CleanupConfig, clean_mesh, simplify_mesh
from fourview.export.uv import UVConfig, unwrap_uv
from fourview.mesh import Material, MeshAsset, MeshPart
from fourview.recon.fields import SurfaceField
from fourview.views import PosedViews

MATERIAL_NAME = "fourview"
"""Name of the exported mesh and of its material (the GLB node's name)."""


@dataclass(frozen=True)
class ExportConfig:
    """Settings of `export_field`.

    Attributes:
        resolution: extraction grid (marching cubes samples per axis, or tet-grid cells per axis).
        method: ``"marching_cubes"`` or ``"dmtet"``.
        coarse_factor: marching cubes: coarse-to-fine field evaluation with coarse cells of this
            many grid cells (see `extract_mesh`; same mesh, fewer field queries); 1 evaluates
            every grid point (the dense reference).
        face_budget: the most faces of the exported mesh; None keeps every face.
        min_component_area_fraction: pieces smaller than this fraction of the area are dropped.
        texture_size: side of the square baked texture, a power of two (1024 full, 256 demo).
        vertex_colors: skip UVs and the texture; the mesh has the field's colour per vertex only.
        dilation_px: seam padding of the baked texture, texels.
        max_chart_faces: UV chart size cap, about this many average faces per chart (see
            `fourview.export.uv.UVConfig`; 0 = no cap, slow on large meshes).
        metallic: glTF/MTL metallic factor.
        roughness: glTF/MTL roughness factor.
        chunk: field points per call.
        device: torch device for field queries.
    """

    resolution: int = 256
    method: ExtractMethod = "marching_cubes"
    coarse_factor: int = 2
    face_budget: int | None = 50_000
    min_component_area_fraction: float = 0.01
    texture_size: int = 1024
    vertex_colors: bool = False
    dilation_px: int = 8
    max_chart_faces: int = 200
    metallic: float = 0.0
    roughness: float = 0.8
    chunk: int = 262144
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.face_budget is not None and self.face_budget <= 0:
            raise InputError(f"face budget must be positive, got {self.face_budget}")
        if int(self.coarse_factor) != self.coarse_factor or self.coarse_factor < 1:
            raise InputError(f"coarse factor must be an integer >= 1, got {self.coarse_factor}")
        check_texture_size(self.texture_size)
        for name in ("metallic", "roughness"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InputError(f"{name} must be in [0, 1], got {getattr(self, name)}")


@dataclass(frozen=True)
class ExportedMesh:
    """What `export_field` made.

    Attributes:
        mesh: one part in the object frame: verts, faces, and UVs with the baked texture in its
            material (or, with `ExportConfig.vertex_colors`, the field's colour per vertex instead),
            the material also holding the metallic and roughness factors.
        timings: seconds per step: ``extract``, ``cleanup``, ``simplify``, ``uv``, ``bake`` and
            ``total``.
    """

    mesh: MeshAsset
    timings: dict[str, float]

    num_verts = property(lambda self: self.mesh.num_verts, doc="Vertices (after UV seams split them).")
    num_faces = property(lambda self: self.mesh.num_faces, doc="Faces.")
    texture_size = property(lambda self: self.mesh.texture_size, doc="Baked texture side; None with vertex colours.")


@torch.no_grad()
def export_field(
    field: SurfaceField, config: ExportConfig = ExportConfig(), views: PosedViews | None = None
) -> ExportedMesh:
    """Turn a field into a textured mesh (see the module docstring for the steps).

    Args:
        field: the SDF + colour field, object frame.
        config: settings.
        views: the input views with their cameras: where they see the surface, their colours
            replace the field's in the baked texture (`fourview.export.projection`).

    Returns:
        `ExportedMesh`: the mesh and the time each step took.

    Raises:
        InputError: a bad setting or a field without a surface.
    """
    timings: dict[str, float] = {}
    start = clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = now - clock
        clock = now

    extracted = extract_mesh(
        field, config.resolution, config.method, config.chunk, device=config.device, coarse_factor=config.coarse_factor
    )
    lap("extract")
    cleaned = clean_mesh(
        extracted.verts,
        extracted.faces,
        CleanupConfig(min_component_area_fraction=config.min_component_area_fraction),
    )
    verts, faces = cleaned.verts, cleaned.faces
    lap("cleanup")
    if config.face_budget is not None:
        verts, faces = simplify_mesh(verts, faces, config.face_budget)
    lap("simplify")
    uv = None
    if not config.vertex_colors:
        unwrapped = unwrap_uv(
            verts, faces, UVConfig(resolution=config.texture_size, max_chart_faces=config.max_chart_faces)
        )
        verts, faces, uv = unwrapped.verts, unwrapped.faces, unwrapped.uv
    lap("uv")
    texture = None
    if uv is not None:
        texture = bake_texture(
            field,
            verts,
            faces,
            uv,
            config.texture_size,
            dilation_px=config.dilation_px,
            chunk=config.chunk,
            device=config.device,
            views=views,
        ).texture
    # A textured mesh's colour is its texture (as in its files; a renderer would multiply vertex
    # colours into it); the PLY writer samples the texture at the vertices.
    colors = bake_vertex_colors(field, verts, chunk=config.chunk, device=config.device) if uv is None else None
    lap("bake")
    material = Material(name=MATERIAL_NAME, texture=texture, metallic=config.metallic, roughness=config.roughness)
    part = MeshPart(verts, faces, material, uv=uv, vertex_colors=colors)
    timings["total"] = time.perf_counter() - start
    return ExportedMesh(mesh=MeshAsset(MATERIAL_NAME, (part,)), timings=timings)

"""The export stage: a field to a textured, game-ready mesh in memory.

`export_field` runs the chain, timing each step: extract the surface (`extract.extract_mesh`),
repair it (`mesh_cleanup.clean_mesh`), simplify it to a face budget (`mesh_cleanup.simplify_mesh`),
simplify that further into levels of detail (``lods``: each level half the faces of the one
before), unwrap one UV atlas for all levels (`uv.unwrap_uv_levels`) and bake into it the field's
colour (`bake.bake_texture`, with the input views projected onto it when given), a tangent-space
normal map of the dense extracted surface (`normal_map.bake_normal_map`, with the tangents of
`tangents.vertex_tangents`) and the field's ambient occlusion (`occlusion`); finally scale the
mesh to a real-world height and move its origin to the pivot (`placement.place_mesh`). Without
UVs (``vertex_colors``) the field's colour is baked at every vertex instead. The result is a
`fourview.mesh.MeshAsset` (its ``lods`` the coarser levels, sharing its material and so its one
texture set); `fourview.meshio.write_mesh_files` writes it as GLB / OBJ / PLY.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from fourview.errors import InputError
from fourview.export.bake import bake_texture, bake_vertex_colors, check_texture_size, uv_texels
from fourview.export.extract import ExtractMethod, extract_mesh
from fourview.export.mesh_cleanup import CleanupConfig, clean_mesh, simplify_mesh
from fourview.export.normal_map import DenseSurface, bake_normal_map
from fourview.export.occlusion import bake_occlusion, vertex_occlusion
from fourview.export.placement import place_mesh
from fourview.export.quad_remesh import quad_remesh
from fourview.export.tangents import vertex_tangents
from fourview.export.uv import UVConfig, UVOutput, unwrap_uv_levels
from fourview.mesh import Material, MeshAsset, MeshPart, Pivot
from fourview.meshio.part_arrays import vertex_normals
from fourview.recon.fields import SurfaceField
from fourview.views import PosedViews

ExportTarget = Literal["game", "film", "print"]
"""What an export is for (`fourview.export.presets.target_overrides` gives each one's settings)."""
MAX_LODS = 6
"""Most levels of detail (the finest included): 100, 50, 25, 12.5, 6.25 and 3.125 % of the budget."""

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
        metallic: glTF/MTL metallic factor (the reconstructor predicts none: a constant).
        roughness: glTF/MTL roughness factor (a constant, as ``metallic``).
        normal_map: bake a tangent-space normal map of the dense extracted surface (needs UVs).
        occlusion: bake the field's ambient occlusion (the GLB's occlusion-roughness-metallic
            texture; needs UVs).
        lods: levels of detail, the finest included (1 = none); level k has ``face_budget / 2^k``
            faces, all levels share one texture set.
        height: scale the mesh so that its bounding box is this tall along +Y, metres; None keeps
            the object frame's size (the object fits in the unit sphere).
        pivot: the origin: ``object`` (the object frame's), ``bottom`` (centre of the bounding
            box's base) or ``center`` (the bounding box's centre).
        target: the export target these settings were made for (recorded), or None.
        quad_remesh: remesh the dense surface into quads (then triangles) before simplifying;
            needs the optional ``pynanoinstantmeshes`` package.
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
    normal_map: bool = False
    occlusion: bool = False
    lods: int = 1
    height: float | None = None
    pivot: Pivot = "object"
    target: ExportTarget | None = None
    quad_remesh: bool = False
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
        if isinstance(self.lods, bool) or int(self.lods) != self.lods or not 1 <= self.lods <= MAX_LODS:
            raise InputError(
                f"--lods must be an integer in [1, {MAX_LODS}] (levels, the finest included), got {self.lods}"
            )
        if self.height is not None and not (math.isfinite(self.height) and self.height > 0):
            raise InputError(f"--height must be a positive number of metres, got {self.height}")
        if self.pivot not in ("object", "bottom", "center"):
            raise InputError(f"unknown pivot {self.pivot!r}; expected 'bottom', 'center' or 'object'")
        if self.target not in (None, "game", "film", "print"):
            raise InputError(f"unknown export target {self.target!r}; expected 'game', 'film' or 'print'")
        if self.vertex_colors and (self.normal_map or self.occlusion):
            raise InputError("a normal map and occlusion are textures; they need UVs, not --vertex-colors")
        if self.lods > 1 and self.face_budget is None:
            raise InputError("levels of detail need a face budget (--faces)")


@dataclass(frozen=True)
class ExportedMesh:
    """What `export_field` made.

    Attributes:
        mesh: one part in the object frame: verts, faces, and UVs with the baked texture in its
            material (or, with `ExportConfig.vertex_colors`, the field's colour per vertex instead),
            the material also holding the metallic and roughness factors.
        timings: seconds per step: ``extract``, ``cleanup``, ``simplify``, ``lods``, ``uv``,
            ``bake``, ``normal_map``, ``occlusion``, ``place`` and ``total``.
    """

    mesh: MeshAsset
    timings: dict[str, float]

    num_verts = property(lambda self: self.mesh.num_verts, doc="Vertices (after UV seams split them).")
    lods = property(lambda self: self.mesh.lods, doc="The coarser levels of detail.")
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
    dense = cleaned.verts, cleaned.faces
    verts, faces = dense
    lap("cleanup")
    if config.quad_remesh:
        verts, faces = quad_remesh(verts, faces, config.face_budget)
    if config.face_budget is not None:
        verts, faces = simplify_mesh(verts, faces, config.face_budget)
    lap("simplify")
    levels = [(verts, faces)]
    for k in range(1, config.lods):
        levels.append(simplify_mesh(*levels[-1], max(4, config.face_budget // 2**k)))
    lap("lods")
    if config.vertex_colors:
        parts = [
            MeshPart(v, f, _material(config), vertex_colors=bake_vertex_colors(field, v, config.chunk, config.device))
            for v, f in levels
        ]
        lap("bake")
    else:
        parts = _textured_levels(field, levels, dense, config, views, lap)
    mesh = MeshAsset(MATERIAL_NAME, (parts[0],), lods=tuple(MeshAsset(MATERIAL_NAME, (p,)) for p in parts[1:]))
    mesh = place_mesh(mesh, config.height, config.pivot, config.target)
    lap("place")
    timings["total"] = time.perf_counter() - start
    return ExportedMesh(mesh=mesh, timings=timings)


def _material(config: ExportConfig, **maps) -> Material:
    return Material(name=MATERIAL_NAME, metallic=config.metallic, roughness=config.roughness, **maps)


def _textured_levels(field, levels, dense, config: ExportConfig, views, lap) -> list[MeshPart]:
    """The levels of detail unwrapped into one atlas and baked into one texture set (module docstring)."""
    unwrapped = unwrap_uv_levels(
        levels, UVConfig(resolution=config.texture_size, max_chart_faces=config.max_chart_faces)
    )
    lap("uv")
    # Every level in one mesh: one rasterisation of the atlas serves every map.
    verts, faces, uv = _concatenate(unwrapped)
    texels = uv_texels(verts, faces, uv, config.texture_size, device=config.device)
    texture = bake_texture(
        field, verts, faces, uv, config.texture_size, config.dilation_px, chunk=config.chunk,
        device=config.device, views=views, texels=texels,
    ).texture  # fmt: skip
    lap("bake")
    level_normals = [vertex_normals(u.verts, u.faces) for u in unwrapped]  # the normals the writers store
    normals = np.concatenate(level_normals)
    tangents = normal_map = occlusion = None
    if config.normal_map:
        tangents = np.concatenate(
            [vertex_tangents(u.verts, u.faces, u.uv, n) for u, n in zip(unwrapped, level_normals)]
        )
        normal_map = bake_normal_map(texels, DenseSurface.build(*dense), faces, normals, tangents, config.dilation_px)
    lap("normal_map")
    if config.occlusion:
        at_verts = vertex_occlusion(field, verts, faces, normals, chunk=config.chunk, device=config.device)
        occlusion = bake_occlusion(texels, faces, at_verts, config.dilation_px)
    lap("occlusion")
    material = _material(config, texture=texture, normal_map=normal_map, occlusion=occlusion)
    parts, offset = [], 0
    for u in unwrapped:
        n = len(u.verts)
        level_tangents = None if tangents is None else tangents[offset : offset + n]
        parts.append(MeshPart(u.verts, u.faces, material, uv=u.uv, tangents=level_tangents))
        offset += n
    return parts


def _concatenate(meshes: list[UVOutput]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """verts [V, 3], faces [F, 3] and uv [V, 2] of several unwrapped meshes as one."""
    offsets = np.cumsum([0] + [len(m.verts) for m in meshes[:-1]])
    return (
        np.concatenate([m.verts for m in meshes]),
        np.concatenate([m.faces + o for m, o in zip(meshes, offsets)]),
        np.concatenate([m.uv for m in meshes]),
    )

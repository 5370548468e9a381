"""Export settings: the named presets, and the settings that fit what is being exported.

- `export_preset`: ``demo`` (small and fast on a CPU) or ``full``.
- `optimize_export_config`: a field fitted per object (`fourview reconstruct --optimize`).
- `recon_export_config`: a reconstructor's prediction: the preset of the reconstructor's size
  (`recon_preset_name`, the one place that picks it), the user's overrides, then its trained
  surface (`trained_surface_export`).
- `reexport_config`: a saved field, re-exported by ``fourview export``.
- `target_overrides`: what an export is for (``--target game|film|print``): the face budget,
  texture size, maps and pivot of that use, applied over the preset of the model's size (whose
  extraction grid it keeps).

``overrides`` are `ExportConfig` fields the user set (the command line's export options); they win
over the preset.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Literal

from fourview.errors import InputError
from fourview.export.exporter import ExportConfig, ExportTarget
from fourview.recon.config import ReconConfig

ExportPresetName = Literal["demo", "full"]

DEMO_PLANE_RESOLUTION = 64
"""Reconstructors whose triplanes have at most this many texels per side get the ``demo`` preset."""


def export_preset(name: ExportPresetName) -> ExportConfig:
    """Export settings by name: ``demo`` (128^3 grid, 20k faces, 256^2 texture) or ``full`` (the defaults).

    Raises:
        InputError: an unknown name.
    """
    if name == "demo":
        return ExportConfig(resolution=128, face_budget=20_000, texture_size=256)
    if name == "full":
        return ExportConfig()
    raise InputError(f"unknown export preset {name!r}; expected 'demo' or 'full'")


def target_overrides(target: ExportTarget) -> dict[str, object]:
    """The `ExportConfig` fields an export target sets (the user's own options win over them).

    - ``game``: 10k triangles, a 1024^2 texture set (base colour, tangent-space normal map,
      occlusion-roughness-metallic), the origin at the base (props stand on the ground).
    - ``film``: 100k triangles, 2048^2 textures with the same maps, the origin at the centre.
    - ``print``: 200k triangles with the colour per vertex (printers and slicers read vertex
      colours, not texture atlases), no maps, the origin at the base (it sits on the bed).

    Raises:
        InputError: an unknown target.
    """
    if target == "game":
        return dict(
            face_budget=10_000, texture_size=1024, normal_map=True, occlusion=True, pivot="bottom", target=target
        )
    if target == "film":
        return dict(
            face_budget=100_000, texture_size=2048, normal_map=True, occlusion=True, pivot="center", target=target
        )
    if target == "print":
        return dict(
            face_budget=200_000, vertex_colors=True, normal_map=False, occlusion=False, pivot="bottom", target=target
        )
    raise InputError(f"unknown export target {target!r}; expected 'game', 'film' or 'print'")


def optimize_export_config() -> ExportConfig:
    """Export settings for a per-object optimised field (`fourview reconstruct --optimize`).

    Finer than the ``demo`` preset: the optimised field holds detail at the views' resolution
    (128 px by default), which a 128^3 grid and a 256 px texture would blur.
    """
    return ExportConfig(resolution=160, face_budget=40_000, texture_size=512)


def recon_preset_name(recon: ReconConfig) -> ExportPresetName:
    """The export preset that fits a reconstructor's size: ``demo`` for planes of at most
    `DEMO_PLANE_RESOLUTION` texels (the demo model, exported quickly on a CPU), else ``full``."""
    return "demo" if recon.unet.resolution <= DEMO_PLANE_RESOLUTION else "full"


def sized_export_config(recon: ReconConfig, overrides: Mapping[str, object], device: str) -> ExportConfig:
    """The preset of a reconstructor's size (`recon_preset_name`), then ``overrides``, on ``device``."""
    return replace(export_preset(recon_preset_name(recon)), **{**overrides, "device": device})


def trained_surface_export(recon: ReconConfig, export: ExportConfig, overrides: Mapping[str, object]) -> ExportConfig:
    """``export`` set to extract the surface a stage-B (DMTet) reconstructor was trained to render.

    Such a model's surface is its deformed tet-grid mesh (`fourview.recon.model.DMTetRenderer`):
    marching tetrahedra with the decoder's deformation, on its ``tet_grid_resolution`` grid (or the
    user's ``resolution``). Marching cubes of its SDF would ignore the trained deformation. A
    ``method`` in ``overrides`` (the user's choice) and stage-A models keep ``export`` as it is.
    """
    if recon.renderer != "dmtet" or "method" in overrides:
        return export
    return replace(export, method="dmtet", resolution=int(overrides.get("resolution", recon.tet_grid_resolution)))


def recon_export_config(recon: ReconConfig, overrides: Mapping[str, object], device: str) -> ExportConfig:
    """Export settings for a reconstructor's prediction: `sized_export_config`, on its trained surface."""
    return trained_surface_export(recon, sized_export_config(recon, overrides, device), overrides)


def reexport_config(
    recon: ReconConfig, metadata: Mapping[str, object], export: ExportConfig, overrides: Mapping[str, object]
) -> ExportConfig:
    """`fourview export`'s settings for a saved field: extracted as the command that saved it did.

    A fitted or refined field (``metadata["method"]`` "optimize" or "refine", written by
    `fourview.pipeline.optimize_views`) was fitted to volume renders and keeps ``export`` (marching
    cubes); a reconstructor's prediction gets `trained_surface_export`.
    """
    if metadata.get("method") in ("optimize", "refine"):
        return export
    return trained_surface_export(recon, export, overrides)

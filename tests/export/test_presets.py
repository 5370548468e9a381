from dataclasses import replace

import pytest

from fourview.errors import InputError
from fourview.export.exporter import ExportConfig
from fourview.export.presets import (
    export_preset,
    optimize_export_config,
    recon_export_config,
    recon_preset_name,
    reexport_config,
    sized_export_config,
)
from fourview.recon.config import recon_preset


def test_every_preset_builds_and_the_demo_is_the_smallest():
    demo, full, optimize = export_preset("demo"), export_preset("full"), optimize_export_config()
    assert full == ExportConfig()
    for cfg in (demo, optimize):
        assert cfg.resolution < full.resolution and cfg.face_budget < full.face_budget
        assert cfg.texture_size < full.texture_size
    assert (demo.resolution, demo.face_budget, demo.texture_size) < (
        optimize.resolution,
        optimize.face_budget,
        optimize.texture_size,
    )
    with pytest.raises(InputError, match="unknown export preset 'huge'"):
        export_preset("huge")


@pytest.mark.parametrize("size,preset", [("tiny", "demo"), ("demo", "demo"), ("full", "full")])
def test_the_preset_follows_the_reconstructor_size(size, preset):
    recon = recon_preset(size)
    assert recon_preset_name(recon) == preset
    cfg = sized_export_config(recon, {"face_budget": 123}, "cuda")
    assert cfg == replace(export_preset(preset), face_budget=123, device="cuda")


def test_stage_b_models_export_their_trained_surface():
    """A DMTet-trained reconstructor is extracted on its tet grid (with its deformation), unless told otherwise."""
    volume, dmtet = recon_preset("demo", "volume"), recon_preset("demo", "dmtet")
    assert recon_export_config(volume, {}, "cpu").method == "marching_cubes"
    cfg = recon_export_config(dmtet, {}, "cpu")
    assert (cfg.method, cfg.resolution) == ("dmtet", dmtet.tet_grid_resolution)
    cfg = recon_export_config(dmtet, {"resolution": 64, "face_budget": 100}, "cpu")
    assert (cfg.method, cfg.resolution, cfg.face_budget) == ("dmtet", 64, 100)
    cfg = recon_export_config(dmtet, {"method": "marching_cubes"}, "cpu")
    assert (cfg.method, cfg.resolution) == ("marching_cubes", 128)  # the user's choice, at the preset's grid
    # `fourview export` of a saved field: as the command that saved it extracted it.
    preset = recon_export_config(volume, {}, "cpu")
    assert reexport_config(dmtet, {"recon": "demo"}, preset, {}).method == "dmtet"  # a prediction
    assert reexport_config(dmtet, {"method": "refine", "recon": "demo"}, preset, {}) == preset  # fitted to volume
    assert reexport_config(volume, {"recon": "demo"}, preset, {}) == preset  # stage A: marching cubes

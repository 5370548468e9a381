"""The silhouettes' outer bound: its zero set is the visual hull, its scale is object units, carved fields keep it."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from fourview.errors import InputError
from fourview.recon.carving import CarveConfig, SilhouetteBound, missed_silhouettes
from fourview.recon.config import ReconConfig, recon_preset
from fourview.recon.model import Reconstructor
from fourview.recon.saved_field import load_field, save_field
from fourview.recon.visual_hull import carve_visual_hull
from fourview.views import PosedViews
from tests.recon.posed_sphere import RADIUS


def grid_points(resolution: int) -> torch.Tensor:
    """[R^3, 3] points of `carve_visual_hull`'s grid, in its ``[ix, iy, iz]`` order."""
    lin = torch.linspace(-1.0, 1.0, resolution)
    return torch.stack(torch.meshgrid(lin, lin, lin, indexing="ij"), dim=-1).reshape(-1, 3)


def test_the_zero_set_is_the_visual_hull(rig: PosedViews):
    bound = SilhouetteBound.from_views(rig)
    res = 33
    occupancy = carve_visual_hull(
        torch.from_numpy(rig.images[..., 3]), torch.as_tensor(rig.c2w), torch.as_tensor(rig.fov_deg), res
    ).reshape(-1)
    value = bound(grid_points(res))
    # Away from the silhouettes' edges (a pixel is ~0.06 units here) both agree on every point.
    clear = value.abs() > 0.08
    assert clear.sum() > 0.8 * len(value)
    np.testing.assert_array_equal((value[clear] < 0).numpy(), occupancy[clear.numpy()])


def test_values_are_object_frame_distances_near_the_hull(rig: PosedViews):
    bound = SilhouetteBound.from_views(rig)
    # Along the vertical axis above the sphere, the side views' silhouettes end near the sphere's
    # top (seen at 20 degrees, a little above it): the value grows one unit per unit of height.
    ys = torch.linspace(RADIUS + 0.15, RADIUS + 0.35, 5)
    pts = torch.stack([torch.zeros(5), ys, torch.zeros(5)], dim=-1)
    slope = (bound(pts)[-1] - bound(pts)[0]) / (ys[-1] - ys[0])
    assert 0.7 < float(slope) < 1.3
    assert float(bound(torch.zeros(1, 3))) < -0.8 * RADIUS  # the centre is deep inside
    assert float(bound(torch.tensor([[5.0, 0.0, 0.0]]))) > 0  # off every image: outside


def tiny_field(rig: PosedViews, carve: CarveConfig) -> tuple[Reconstructor, torch.Tensor]:
    torch.manual_seed(0)
    model = Reconstructor(replace(recon_preset("tiny", "volume"), carve=carve)).eval()
    return model, grid_points(9)


def test_reconstruct_keeps_the_field_inside_the_hull(rig: PosedViews):
    scale = 7.0
    model, pts = tiny_field(rig, CarveConfig(enabled=True, scale=scale))
    with torch.no_grad():
        carved = model.reconstruct(rig)
        free = model.field(model.predict(rig))
        bound = scale * SilhouetteBound.from_views(rig)(pts)
        torch.testing.assert_close(carved.sdf(pts), torch.maximum(free.sdf(pts), bound))
        assert (carved.sdf(pts) >= bound - 1e-6).all()
        torch.testing.assert_close(carved.color(pts), free.color(pts))
        # The density is that of the carved level function, as for the unbounded field.
        density, _ = carved.density_and_color(pts)
        level = math.log(model.config.decoder.density_iso) - torch.log(density)
        torch.testing.assert_close(level, carved.sdf(pts), atol=1e-4, rtol=1e-4)


def test_carving_is_off_unless_the_config_says_so(rig: PosedViews):
    model, pts = tiny_field(rig, CarveConfig())
    with torch.no_grad():
        assert model.reconstruct(rig).outer_bound is None


def test_a_saved_carved_field_loads_with_its_bound(rig: PosedViews, tmp_path):
    model, pts = tiny_field(rig, CarveConfig(enabled=True, scale=3.0))
    with torch.no_grad():
        field = model.reconstruct(rig)
        save_field(tmp_path / "f", field, model.config)
        loaded = load_field(tmp_path / "f")
        assert loaded.bound_scale == 3.0
        torch.testing.assert_close(loaded.sdf(pts), field.sdf(pts))


def test_configs_without_the_carve_key_load_uncarved():
    data = recon_preset("tiny", "volume").to_dict()
    del data["carve"]
    assert ReconConfig.from_dict(data).carve == CarveConfig()
    carve = {"enabled": True, "scale": 2.0, "threshold": 0.5}
    assert ReconConfig.from_json(json.dumps({**data, "carve": carve})).carve == CarveConfig(enabled=True, scale=2.0)


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"scale": 0.0}, "scale must be > 0"), ({"threshold": 0}, "threshold must be in")]
)
def test_bad_carve_settings_are_refused(kwargs, message):
    with pytest.raises(InputError, match=message):
        CarveConfig(**kwargs)


def test_a_bound_with_mismatched_tensors_is_refused(rig: PosedViews):
    tensors = SilhouetteBound.from_views(rig).tensors()
    with pytest.raises(InputError, match="shapes disagree"):
        SilhouetteBound.from_tensors({**tensors, "fov_deg": torch.ones(3)})
    with pytest.raises(InputError, match="lacks tensor 'c2w'"):
        SilhouetteBound.from_tensors({"distance": tensors["distance"], "fov_deg": tensors["fov_deg"]})


def test_the_union_distance_is_negative_where_one_view_sees_the_silhouette(rig: PosedViews):
    bound = SilhouetteBound.from_views(rig)
    pts = grid_points(9)
    assert (bound.union_distance(pts) <= bound(pts)).all()  # the union of the cones holds their intersection
    # In front of the object on the front camera's axis: inside the front view's silhouette, outside the side views'.
    front = torch.from_numpy(rig.c2w[0][:3, 3]).float()
    point = (0.55 * front)[None]
    assert float(bound(point)) > 0 > float(bound.union_distance(point))


def test_missed_silhouettes_are_the_pixels_the_surface_leaves_out(rig: PosedViews):
    inside = rig.images[..., 3] >= 0.5
    assert not missed_silhouettes(rig, inside).any()
    # Outlines never agree to the pixel: a surface one pixel short of the silhouettes misses nothing.
    from scipy import ndimage

    eroded = np.stack([ndimage.binary_erosion(m) for m in inside])
    assert not missed_silhouettes(rig, eroded).any()
    hole = inside.copy()
    hole[1, 10:20, 10:20] = False  # a part the surface leaves out, in view 1 alone
    missed = missed_silhouettes(rig, hole)
    assert missed[[0, 2, 3]].sum() == 0
    assert missed[1, 12:18, 12:18].all()  # the hole, less about a pixel all round
    assert not (missed[1] & hole[1]).any() and missed[1].sum() > 50  # nothing that the surface covers
    with pytest.raises(InputError, match="does not match the views"):
        missed_silhouettes(rig, hole[:, :8])


def test_restoring_every_silhouette_pixel_gives_the_visual_hull(rig: PosedViews):
    scale = 7.0
    model, pts = tiny_field(rig, CarveConfig(enabled=True, scale=scale))
    bound = SilhouetteBound.from_views(rig)
    with torch.no_grad():
        carved = model.reconstruct(rig)
        everything = carved.restored(SilhouetteBound.from_masks(rig.images[..., 3] >= 0.5, rig))
        torch.testing.assert_close(everything.sdf(pts), scale * bound(pts))
        density, _ = everything.density_and_color(pts)  # the density of the same level function
        level = math.log(model.config.decoder.density_iso) - torch.log(density)
        torch.testing.assert_close(level, everything.sdf(pts), atol=1e-4, rtol=1e-4)
        nothing = carved.restored(SilhouetteBound.from_masks(np.zeros(rig.images.shape[:3], bool), rig))
        torch.testing.assert_close(nothing.sdf(pts), carved.sdf(pts))
        torch.testing.assert_close(everything.color(pts), carved.color(pts))


def test_a_restored_field_needs_its_bound_and_saves_with_it(rig: PosedViews, tmp_path):
    model, pts = tiny_field(rig, CarveConfig(enabled=True, scale=3.0))
    hole = np.zeros(rig.images.shape[:3], bool)
    hole[2, 8:24, 8:24] = True
    missed = SilhouetteBound.from_masks(hole, rig)
    with torch.no_grad():
        free = model.field(model.predict(rig))
        with pytest.raises(InputError, match="give outer_bound too"):
            free.restored(missed)
        field = model.reconstruct(rig).restored(missed)
        save_field(tmp_path / "f", field, model.config)
        loaded = load_field(tmp_path / "f")
        assert loaded.restore is not None
        torch.testing.assert_close(loaded.sdf(pts), field.sdf(pts))
    with pytest.raises(InputError, match="do not match the views"):
        SilhouetteBound.from_masks(hole[:3], rig)

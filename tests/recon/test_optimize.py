"""The per-object fit (`fourview.recon.optimize`): fitting a sphere's views, the start shape, input errors."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import trimesh

from fourview.cameras import Camera, orthogonal_rig, pixel_rays
from fourview.errors import InputError
from fourview.mesh import MeshAsset, MeshPart
from fourview.recon.optimize import (
    OptimizeConfig,
    _flat_bottom,
    _thick_parts,
    _visual_hull,
    check_view_set,
    optimize_field,
)
from fourview.recon.optimize_losses import resize_views
from fourview.recon.saved_field import load_field, load_field_metadata, save_field
from fourview.recon.visual_hull import grid_lookup
from fourview.render.mesh_renderer import Lighting, MeshRenderer
from fourview.views import PosedViews
from tests.recon.posed_sphere import RADIUS

TINY = OptimizeConfig(
    steps=80, resolution=32, plane_resolution=16, plane_channels=4, texture_resolution=16, texture_channels=4,
    hidden_channels=16, rays_per_step=768, samples_per_ray=24, init_steps=40,
)  # fmt: skip


def silhouette(sdf_fn, cam: Camera, res: int = 32) -> np.ndarray:
    """[res, res] bool: pixels whose ray meets ``sdf < 0`` (dense samples through the unit cube)."""
    o, d = pixel_rays(cam, res)
    t = np.linspace(2.6, 5.4, 96)
    pts = torch.from_numpy((o[..., None, :] + t[:, None] * d[..., None, :]).reshape(-1, 3)).float()
    with torch.no_grad():
        s = sdf_fn(pts.clamp(-1, 1)).reshape(res, res, len(t))
    return (s < 0).any(-1).numpy()


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_fit_sphere_matches_novel_silhouettes_and_loss_falls(rig):
    result = optimize_field(rig, TINY)
    sil = [h["silhouette"] for h in result.history if "silhouette" in h]
    assert sil[-1] < 0.5 * sil[0]
    truth = lambda x: x.norm(dim=-1) - RADIUS  # noqa: E731
    # Between the input views (no view looks from 45 degrees, or from the top) as well as at them.
    for cam, bound in ((Camera(45.0, 0.0), 0.9), (Camera(225.0, 40.0), 0.9), (Camera(0.0, 89.0), 0.8)):
        assert iou(silhouette(result.field.sdf, cam), silhouette(truth, cam)) > bound, cam
    # The colour field learned the views' colours (not the grey it starts from) on the surface.
    pts = torch.nn.functional.normalize(torch.randn(256, 3), dim=-1) * RADIUS
    expected = 0.5 + 0.4 * torch.sin(3.0 * pts)
    with torch.no_grad():
        err = (result.field.color(pts) - expected).abs().mean()
    assert err < 0.6 * (0.5 - expected).abs().mean()


def test_fit_from_a_sphere_start_and_config_roundtrip(rig, tmp_path):
    result = optimize_field(rig, replace(TINY, init="sphere", steps=40, photo_consistency=True))
    assert np.isfinite(result.final_loss)
    save_field(tmp_path / "rec", result.field, result.config, {"method": "optimize", "recon": None})
    assert load_field_metadata(tmp_path / "rec") == {"method": "optimize", "recon": None}
    loaded = load_field(tmp_path / "rec")
    x = torch.rand(100, 3) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded.sdf(x), result.field.sdf(x))
        torch.testing.assert_close(loaded.color(x), result.field.color(x))


def test_fit_restores_thread_count(rig):
    torch.set_num_threads(2)  # the autouse fixture of conftest.py restores its own setting after
    optimize_field(rig, replace(TINY, steps=2, init_steps=2, num_threads=1))
    assert torch.get_num_threads() == 2


def test_fit_is_seeded_and_leaves_the_global_generator_alone(rig):
    """The same seed gives the same fit, another seed another one; torch's global generator is not drawn from."""
    quick = replace(TINY, steps=6, init_steps=3, texture_steps=2, stereo_resolution=32)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = optimize_field(rig, quick).history
    assert torch.equal(torch.get_rng_state(), state)
    assert optimize_field(rig, quick).history == first
    assert optimize_field(rig, replace(quick, seed=1)).history != first


def test_fit_on_two_threads_is_the_fit_on_one(rig):
    """The searches along rays run in chunks on a pool of threads: the same numbers as on one."""
    quick = replace(TINY, steps=6, init_steps=3, texture_steps=2, stereo_resolution=32, hull_margin=0.1)
    one = optimize_field(rig, replace(quick, num_threads=1))
    two = optimize_field(rig, replace(quick, num_threads=2))
    assert one.history == two.history
    assert torch.equal(one.field.planes, two.field.planes)


def test_fit_with_the_stereo_term_keeps_the_silhouettes(rig):
    result = optimize_field(rig, replace(TINY, stereo_weight=1.0, stereo_start_fraction=0.4, stereo_resolution=32))
    stereo = [h["stereo"] for h in result.history if "stereo" in h]
    assert stereo[0] == 0.0 and max(stereo) > 0.0  # off in the coarse stage, on after it
    truth = lambda x: x.norm(dim=-1) - RADIUS  # noqa: E731
    for cam in (Camera(45.0, 0.0), Camera(225.0, 40.0)):
        assert iou(silhouette(result.field.sdf, cam), silhouette(truth, cam)) > 0.9, cam


def test_thick_parts_keep_the_body_and_drop_thin_parts():
    """The smoothness term's mask: a block's surface is in it, a thin plate and a thin rod beside it
    are not (a table top's rim, a mug's handle keep what their silhouettes give them)."""
    lin = np.linspace(-1.0, 1.0, 64)
    x, y, z = np.meshgrid(lin, lin, lin, indexing="ij")
    block = (np.abs(x + 0.4) < 0.3) & (np.abs(y) < 0.3) & (np.abs(z) < 0.3)
    plate = (x > 0.2) & (x < 0.9) & (np.abs(y - 0.5) < 0.02) & (np.abs(z) < 0.4)  # ~1 voxel thick
    rod = (np.abs(x - 0.5) < 0.03) & (np.abs(z) < 0.03) & (y < 0.45) & (y > -0.8)
    mask = _thick_parts(block | plate | rod, radius=0.06)
    pts = torch.tensor([
        [-0.4, 0.3, 0.0], [-0.1, 0.0, 0.1], [-0.4, 0.0, -0.3],  # on the block's faces
        [0.7, 0.5, 0.0], [0.6, 0.52, 0.3],  # on the plate, away from the block
        [0.5, -0.5, 0.0], [0.53, -0.2, 0.0],  # on the rod
    ])  # fmt: skip
    inside = grid_lookup(mask, pts) > 0.5
    assert inside.tolist() == [True] * 3 + [False] * 4
    # A ball that fits nowhere leaves nothing to smooth; a small one covers the whole block.
    assert not _thick_parts(plate | rod, radius=0.06).any()
    assert bool(_thick_parts(block, radius=0.03)[torch.from_numpy(block)].all())


def test_flat_bottom_cuts_the_keel_below_what_the_views_see():
    """Views from above leave a keel under a standing box; the cut takes it off at the box's bottom,
    keeps the box, and leaves the hull alone when a camera looks from below."""
    box = trimesh.creation.box(extents=(0.8, 0.6, 0.7))
    box.apply_translation((0.0, -0.1, 0.0))  # bottom at y = -0.4
    asset = MeshAsset("box", (MeshPart(box.vertices.astype(np.float32), box.faces.astype(np.int64)),))
    renderer = MeshRenderer(asset)

    def hulls(elevation: float) -> tuple[np.ndarray, np.ndarray]:
        cams = orthogonal_rig(elevation)
        images = np.stack([renderer.render(c, 64, Lighting(albedo=True)).rgba for c in cams])
        views = PosedViews.from_rig(images, elevation)
        alpha, _ = resize_views(views.images, 64)
        occ = _visual_hull(views, alpha)
        return occ, _flat_bottom(views, alpha, occ)

    lin = np.linspace(-1.0, 1.0, 64)
    voxel = lin[1] - lin[0]
    x, y, z = np.meshgrid(lin, lin, lin, indexing="ij")
    inside = (np.abs(x) < 0.4 - voxel) & (np.abs(y + 0.1) < 0.3 - voxel) & (np.abs(z) < 0.35 - voxel)
    occ, cut = hulls(20.0)
    assert lin[occ.any(axis=(0, 2))].min() < -0.4 - 3 * voxel  # the keel
    assert abs(lin[cut.any(axis=(0, 2))].min() - -0.4) <= 1.5 * voxel  # cut at the bottom
    assert cut[inside].all() and not (cut & ~occ).any()  # the box stays; nothing is added
    occ, cut = hulls(-20.0)  # from below the bottom is seen: nothing to cut
    assert np.array_equal(occ, cut)


# ------------------------------------------------------------------------------ input errors


def test_fully_opaque_or_transparent_views_are_rejected(rig):
    opaque = rig.images.copy()
    opaque[2, ..., 3] = 1.0
    with pytest.raises(InputError, match="fully opaque"):
        check_view_set(PosedViews.from_rig(opaque))
    empty = rig.images.copy()
    empty[1, ..., 3] = 0.0
    with pytest.raises(InputError, match="fully transparent"):
        check_view_set(PosedViews.from_rig(empty))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"steps": 0}, "optimize steps must be >= 1"),
        ({"plane_resolution": 7}, "plane resolution must be even"),
        ({"init": "cube"}, "init must be 'hull' or 'sphere'"),
        ({"stereo_weight": -1.0}, "stereo weight must be >= 0"),
        ({"stereo_start_fraction": 1.0}, "stereo start fraction"),
        ({"stereo_blur_end_px": 0.0}, "stereo blur widths must be positive"),
        ({"smooth_scale": 0.0}, "smooth scale must be positive"),
        ({"smooth_hull_radius": -0.1}, "smooth hull radius must be >= 0"),
        ({"hull_margin": -0.1}, "hull margin must be >= 0"),
    ],
)
def test_bad_config_is_an_input_error(bad, message):
    with pytest.raises(InputError, match=message):
        OptimizeConfig(**bad)

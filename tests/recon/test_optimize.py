"""Per-object optimisation: fitting a field to posed views, refinement, the visual hull, input errors."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from fourview.cameras import Camera, orthogonal_rig
from fourview.errors import InputError
from fourview.images import write_png
from fourview.recon.optimize import (
    OptimizeConfig,
    RefineConfig,
    ViewSet,
    camera_view_set,
    optimize_field,
    refine_reconstruction,
    rig_view_set,
)
from fourview.recon.visual_hull import HullField, carve_visual_hull, project

RADIUS = 0.6
TINY = OptimizeConfig(
    steps=80, resolution=32, plane_resolution=16, plane_channels=4, texture_resolution=16, texture_channels=4,
    hidden_channels=16, rays_per_step=768, samples_per_ray=24, init_steps=40,
)  # fmt: skip


def sphere_views(cams: list[Camera], res: int = 32) -> np.ndarray:
    """[V, res, res, 4] albedo renders of a coloured sphere of radius ``RADIUS`` (anti-aliased)."""
    import trimesh

    from fourview.mesh import MeshAsset, MeshPart
    from fourview.render.mesh_renderer import Lighting, MeshRenderer

    m = trimesh.creation.icosphere(subdivisions=4, radius=RADIUS)
    verts = m.vertices.astype(np.float32)
    colors = (0.5 + 0.4 * np.sin(3.0 * verts)).astype(np.float32)
    asset = MeshAsset("sphere", (MeshPart(verts, m.faces.astype(np.int64), vertex_colors=colors),))
    r = MeshRenderer(asset)
    return np.stack([r.render(c, res, Lighting(albedo=True), supersample=2).rgba for c in cams])


@pytest.fixture(scope="module")
def rig() -> ViewSet:
    return rig_view_set(sphere_views(orthogonal_rig(20.0)), 20.0)


def silhouette(sdf_fn, cam: Camera, res: int = 32) -> np.ndarray:
    """[res, res] bool: pixels whose ray meets ``sdf < 0`` (dense samples through the unit cube)."""
    from fourview.cameras import pixel_rays

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
    from fourview.recon.saved_field import load_field, load_field_metadata, save_field

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
    before = torch.get_num_threads()
    optimize_field(rig, replace(TINY, steps=2, init_steps=2, num_threads=1))
    assert torch.get_num_threads() == before


def test_visual_hull_contains_the_sphere_and_projection_matches_cameras(rig):
    cams = orthogonal_rig(20.0)
    pts = torch.tensor([[0.3, 0.2, -0.1], [0.0, 0.0, 0.0]])
    g = project(pts, torch.from_numpy(rig.c2w).float(), torch.from_numpy(rig.fov_deg).float())
    from fourview.cameras import project_points

    for v, cam in enumerate(cams):
        ref = project_points(pts.numpy(), cam, 32)  # (col, row, depth)
        np.testing.assert_allclose((g[v, :, 0].numpy() + 1) / 2 * 32, ref[:, 0], atol=1e-3)
        np.testing.assert_allclose((g[v, :, 1].numpy() + 1) / 2 * 32, ref[:, 1], atol=1e-3)
    alpha = torch.from_numpy(rig.images[..., 3])
    occ = carve_visual_hull(alpha, torch.from_numpy(rig.c2w), torch.from_numpy(rig.fov_deg), 33)
    lin = np.linspace(-1, 1, 33)
    x, y, z = np.meshgrid(lin, lin, lin, indexing="ij")
    dist = np.sqrt(x**2 + y**2 + z**2)
    assert occ[dist < RADIUS - 0.1].all()  # the hull holds the object...
    assert not occ[dist > 3**0.5 * RADIUS + 0.1].any()  # ...inside the box of its silhouettes
    field = HullField.from_views(rig.images, rig.c2w, rig.fov_deg, resolution=33)
    assert float(field.sdf(torch.zeros(1, 3))) < 0 < float(field.sdf(torch.tensor([[0.95, 0.95, 0.95]])))


class _Ball:
    """A sphere SDF of learnable radius, with the `_Field` methods the stereo term calls."""

    def __init__(self, radius: float) -> None:
        self.radius = torch.tensor(radius, requires_grad=True)

    def sdf(self, xyz: torch.Tensor) -> torch.Tensor:
        return xyz.norm(dim=-1) - self.radius

    def gradient(self, xyz: torch.Tensor, h: float) -> torch.Tensor:
        return torch.nn.functional.normalize(xyz, dim=-1)


def _stereo_terms(views: ViewSet, radius: float) -> tuple[float, float]:
    """The stereo loss of a ball of ``radius`` on rays of view 0 that hit it, and d loss / d radius."""
    from fourview.recon.model import camera_rays
    from fourview.recon.optimize import _stereo_loss, _StereoViews

    cfg = replace(TINY, stereo_weight=1.0, stereo_resolution=64, stereo_blur_start_px=1.0, stereo_blur_end_px=1.0)
    sv = _StereoViews(views, cfg)
    o, d = camera_rays(torch.from_numpy(views.c2w[:1]).float(), float(views.fov_deg[0]), 64)
    o, d = o[0], d[0]
    b = (o * d).sum(-1)
    disc = b.square() - (o.square().sum(-1) - radius**2)
    hit = disc > 0.05  # rays well inside the ball's outline
    t = -b[hit] - disc[hit].sqrt()
    pts = o[hit] + t[:, None] * d[hit]
    ball = _Ball(radius)
    loss = _stereo_loss(ball, sv, pts, d[hit], torch.zeros(len(pts), dtype=torch.long), 0, 0.01, 64)
    loss.backward()
    return float(loss.detach()), float(ball.radius.grad)


def test_stereo_term_prefers_the_true_surface():
    """Two views agree on the colours of the true sphere's surface; a larger or smaller sphere puts
    each view's colours in the wrong place for the other, and the gradient points back."""
    views = rig_view_set(sphere_views(orthogonal_rig(20.0), 64), 20.0)
    at_truth, _ = _stereo_terms(views, RADIUS)
    too_big, grad_big = _stereo_terms(views, 1.08 * RADIUS)
    too_small, grad_small = _stereo_terms(views, 0.92 * RADIUS)
    assert at_truth < 0.3 * min(too_big, too_small)
    assert grad_big > 0 > grad_small  # descent moves the radius towards the truth


def test_stereo_views_project_as_the_cameras():
    from fourview.cameras import project_points
    from fourview.recon.optimize import _StereoViews

    views = rig_view_set(sphere_views(orthogonal_rig(20.0), 32), 20.0)
    sv = _StereoViews(views, replace(TINY, stereo_resolution=32))
    pts = torch.tensor([[0.3, 0.2, -0.1], [0.0, 0.0, 0.0]])
    g = sv.project(pts)
    for v, cam in enumerate(orthogonal_rig(20.0)):
        ref = project_points(pts.numpy(), cam, 32)  # (col, row, depth)
        np.testing.assert_allclose((g[v, :, :2].numpy() + 1) / 2 * 32, ref[:, :2], atol=1e-3)
    # pick reads point s in view[s]: the blurred colour level of view 2 at the image centre.
    centre = sv.pick(sv.levels[0], torch.zeros(4, 1, 2), torch.tensor([2]))
    torch.testing.assert_close(centre[0], sv.levels[0][2, :, 15:17, 15:17].mean((1, 2)), atol=1e-4, rtol=0)


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
    from fourview.recon.optimize import _thick_parts
    from fourview.recon.visual_hull import grid_lookup

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
    import trimesh

    from fourview.mesh import MeshAsset, MeshPart
    from fourview.recon.optimize import _flat_bottom, _resize_views, _visual_hull
    from fourview.render.mesh_renderer import Lighting, MeshRenderer

    box = trimesh.creation.box(extents=(0.8, 0.6, 0.7))
    box.apply_translation((0.0, -0.1, 0.0))  # bottom at y = -0.4
    asset = MeshAsset("box", (MeshPart(box.vertices.astype(np.float32), box.faces.astype(np.int64)),))
    renderer = MeshRenderer(asset)

    def hulls(elevation: float) -> tuple[np.ndarray, np.ndarray]:
        cams = orthogonal_rig(elevation)
        views = rig_view_set(np.stack([renderer.render(c, 64, Lighting(albedo=True)).rgba for c in cams]), elevation)
        alpha, _ = _resize_views(views.images, 64)
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


def test_refine_lowers_the_loss_and_keeps_the_model(rig):
    from fourview.recon.config import recon_preset
    from fourview.recon.model import Reconstructor

    model = Reconstructor(recon_preset("tiny")).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = RefineConfig(steps=25, rays_per_view=256, lr=0.05, prior_weight=0.0)
    result = refine_reconstruction(model, rig, 20.0, cfg)
    assert (
        result.history[-1]["rgb"] + result.history[-1]["opacity"]
        < result.history[0]["rgb"] + result.history[0]["opacity"]
    )
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert result.config == model.config


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("stage", ["volume", "dmtet"])
def test_refine_runs_on_cuda_in_both_stages(rig, stage):
    """Refinement on a CUDA model (the render jitter's generator lives there); stage B volume-renders."""
    from fourview.recon.config import recon_preset
    from fourview.recon.model import Reconstructor

    model = Reconstructor(recon_preset("tiny", stage)).eval().cuda()
    result = refine_reconstruction(model, rig, 20.0, RefineConfig(steps=3, rays_per_view=64))
    assert result.field.planes.is_cuda and all(np.isfinite(h["loss"]) for h in result.history)


# ------------------------------------------------------------------------------ input errors


def test_fully_opaque_or_transparent_views_are_rejected(rig):
    opaque = rig.images.copy()
    opaque[2, ..., 3] = 1.0
    with pytest.raises(InputError, match="fully opaque"):
        rig_view_set(opaque)
    empty = rig.images.copy()
    empty[1, ..., 3] = 0.0
    with pytest.raises(InputError, match="fully transparent"):
        rig_view_set(empty)
    with pytest.raises(InputError, match="four RGBA"):
        rig_view_set(rig.images[:3])


def _write_posed(tmp_path, res: int = 32) -> tuple[list, object]:
    cams = [Camera(0.0, 20.0), Camera(120.0, -10.0), Camera(240.0, 50.0)]
    imgs = sphere_views(cams, res)
    frames = []
    for i, (cam, img) in enumerate(zip(cams, imgs)):
        write_png(tmp_path / f"{i}.png", img)
        frames.append({"image": f"{i}.png", "kind": "random", **cam.to_json(res)})
    (tmp_path / "cameras.json").write_text(json.dumps({"frames": frames}))
    return [tmp_path / f"{i}.png" for i in range(len(cams))], tmp_path / "cameras.json"


def test_camera_view_set_reads_frames(tmp_path):
    paths, cams_json = _write_posed(tmp_path)
    vs = camera_view_set(paths, cams_json)
    assert vs.images.shape == (3, 32, 32, 4)
    np.testing.assert_allclose(vs.c2w[1], Camera(120.0, -10.0).c2w())


def test_camera_view_set_errors(tmp_path):
    paths, cams_json = _write_posed(tmp_path)
    meta = json.loads(cams_json.read_text())
    meta["frames"][1]["resolution"] = [64, 64]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(meta))
    with pytest.raises(InputError, match="do not match"):
        camera_view_set(paths, bad)
    with pytest.raises(InputError, match="no frame"):
        camera_view_set([tmp_path / "bad.json"], cams_json)
    write_png(tmp_path / "2.png", np.zeros((16, 16, 4), np.float32) + 0.5)
    with pytest.raises(InputError):
        camera_view_set(paths, cams_json)
    with pytest.raises(InputError, match="not found"):
        camera_view_set(paths, tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(InputError, match="cannot read"):
        camera_view_set(paths, tmp_path / "broken.json")


def test_views_of_different_sizes_are_rejected(tmp_path):
    paths, cams_json = _write_posed(tmp_path)
    meta = json.loads(cams_json.read_text())
    imgs = sphere_views([Camera(240.0, 50.0)], 24)
    write_png(tmp_path / "2.png", imgs[0])
    meta["frames"][2]["resolution"] = [24, 24]
    cams_json.write_text(json.dumps(meta))
    with pytest.raises(InputError, match="same size"):
        camera_view_set(paths, cams_json)


def test_bad_config_is_an_input_error():
    with pytest.raises(InputError):
        OptimizeConfig(steps=0)
    with pytest.raises(InputError):
        OptimizeConfig(plane_resolution=7)
    for bad in ({"stereo_weight": -1.0}, {"stereo_start_fraction": 1.0}, {"stereo_blur_end_px": 0.0},
                {"smooth_scale": 0.0}, {"smooth_hull_radius": -0.1}):  # fmt: skip
        with pytest.raises(InputError):
            OptimizeConfig(**bad)
    with pytest.raises(InputError):
        RefineConfig(rays_per_view=0)

"""RenderedObjects over the dataset renderer's output: shapes, pixels, cameras, determinism, splits, order."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from fourview.cameras import Camera
from fourview.errors import InputError
from fourview.images import composite_on_white, read_rgba
from fourview.recon.dataset import (
    ObjectBatch,
    ObjectBatchSampler,
    RenderedObjects,
    collate_objects,
    find_objects,
)


def test_sample_shapes_ranges_and_pixels(rendered):
    ds = RenderedObjects(rendered, views_per_sample=4)
    assert len(ds) == 2 and ds.names == sorted(ds.names)
    s = ds[0]
    assert s.views.shape == (4, 3, 32, 32) and s.views.dtype == torch.float32
    assert s.target_rgb.shape == (4, 32, 32, 3) and s.target_alpha.shape == (4, 32, 32)
    assert s.c2w.shape == (4, 4, 4) and s.fov_deg.shape == (4,)
    for t in (s.views, s.target_rgb, s.target_alpha):
        assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0
    assert s.elevation_deg == pytest.approx(20.0)
    # The rig views are the rig PNGs on white, in rig order.
    for k, az in enumerate(("000", "090", "180", "270")):
        png = composite_on_white(read_rgba(rendered / s.name / "rig" / f"{az}.png"))
        np.testing.assert_allclose(s.views[k].permute(1, 2, 0).numpy(), png, atol=1e-6)
    # The targets are the drawn random frames, with their own cameras.
    meta = json.loads((rendered / s.name / "cameras.json").read_text())
    random_frames = [f for f in meta["frames"] if f["kind"] == "random"]
    for k, i in enumerate(ds.frame_indices(0, 0)):
        frame = random_frames[i]
        rgba = read_rgba(rendered / s.name / frame["image"])
        np.testing.assert_allclose(s.target_rgb[k].numpy(), composite_on_white(rgba), atol=1e-6)
        np.testing.assert_allclose(s.target_alpha[k].numpy(), rgba[..., 3], atol=1e-6)
        cam = Camera(frame["azimuth_deg"], frame["elevation_deg"], frame["radius"], frame["fov_deg"])
        np.testing.assert_allclose(s.c2w[k].numpy(), cam.c2w(), atol=1e-5)
    assert (s.target_alpha > 0.5).any() and (s.target_alpha < 0.5).any()  # an object on a background


def test_resizing_to_the_model_resolutions(rendered):
    ds = RenderedObjects(rendered, views_per_sample=2, view_resolution=16, target_resolution=16)
    s = ds[1]
    assert (
        s.views.shape == (4, 3, 16, 16)
        and s.target_rgb.shape == (2, 16, 16, 3)
        and s.target_alpha.shape == (2, 16, 16)
    )
    # Premultiplied resizing: where nothing is covered the colour is the white background.
    empty = s.target_alpha == 0
    assert empty.any()
    assert torch.allclose(s.target_rgb[empty], torch.ones(3))
    full = RenderedObjects(rendered, views_per_sample=2)[1]
    # Mean coverage is preserved by the area-like resize (to a few percent).
    assert abs(float(s.target_alpha.mean()) - float(full.target_alpha.mean())) < 0.03


def test_draws_are_deterministic_and_vary(rendered):
    a = RenderedObjects(rendered, views_per_sample=4, seed=3)
    b = RenderedObjects(rendered, views_per_sample=4, seed=3)
    torch.testing.assert_close(a[(1, 7)].target_rgb, b[(1, 7)].target_rgb)
    assert a.frame_indices(1, 7) == b.frame_indices(1, 7)
    draws = {tuple(a.frame_indices(0, d)) for d in range(10)}
    assert len(draws) > 1  # different draws pick different frames
    assert all(len(set(d)) == 4 for d in draws)  # without replacement
    assert a[0].name == a[(0, 0)].name
    torch.testing.assert_close(a[0].c2w, a[(0, 0)].c2w)


def test_held_out_split_by_names_and_errors(rendered, tmp_path):
    names = RenderedObjects(rendered).names
    train = RenderedObjects(rendered, exclude=[names[0]])
    held = RenderedObjects(rendered, objects=[names[0]])
    assert train.names == [names[1]] and held.names == [names[0]]
    with pytest.raises(InputError, match="not found"):
        RenderedObjects(rendered, objects=["no_such_object"])
    with pytest.raises(InputError, match="not found"):
        RenderedObjects(tmp_path / "missing")
    with pytest.raises(InputError, match="no rendered objects"):
        RenderedObjects(tmp_path)
    with pytest.raises(InputError, match="fewer than 9 random frames"):
        RenderedObjects(rendered, views_per_sample=9)
    # A broken cameras.json is named in the error.
    broken = tmp_path / "broken"
    shutil.copytree(rendered / names[0], broken / names[0])
    (broken / names[0] / "cameras.json").write_text("{not json")
    with pytest.raises(InputError, match="cameras.json"):
        find_objects(broken)


def test_batch_sampler_order_epochs_resume_and_shards():
    full = ObjectBatchSampler(5, 2, seed=1)
    it = iter(full)
    batches = [next(it) for _ in range(10)]  # 20 keys = 4 epochs of 5 objects
    indices = [i for b in batches for i, _ in b]
    for e in range(4):
        assert sorted(indices[5 * e : 5 * e + 5]) == list(range(5))  # each epoch a permutation
    assert [d for b in batches for _, d in b] == [g for g in range(10) for _ in range(2)]  # draw = global batch
    resumed = iter(ObjectBatchSampler(5, 2, seed=1, start_batch=4))
    assert [next(resumed) for _ in range(6)] == batches[4:]
    r0, r1 = (
        iter(ObjectBatchSampler(5, 2, seed=1, rank=0, world_size=2)),
        iter(ObjectBatchSampler(5, 2, seed=1, rank=1, world_size=2)),
    )
    assert [next(r0) for _ in range(5)] == batches[0::2]
    assert [next(r1) for _ in range(5)] == batches[1::2]
    with pytest.raises(InputError, match="need >= 1 object and batch size >= 1, got 0 and 2"):
        ObjectBatchSampler(0, 2)


def test_dataloader_collates_object_batches(rendered):
    ds = RenderedObjects(rendered, views_per_sample=3, view_resolution=16, target_resolution=16)
    loader = DataLoader(ds, batch_sampler=ObjectBatchSampler(len(ds), 2), collate_fn=collate_objects)
    batch = next(iter(loader))
    assert isinstance(batch, ObjectBatch)
    assert batch.views.shape == (2, 4, 3, 16, 16) and batch.target_rgb.shape == (2, 3, 16, 16, 3)
    assert batch.c2w.shape == (2, 3, 4, 4) and batch.fov_deg.shape == (2, 3) and batch.elevation_deg.shape == (2,)
    assert sorted(batch.names) == ds.names
    moved = batch.to("cpu")
    torch.testing.assert_close(moved.views, batch.views)


def test_frames_line_up_with_the_reconstructors_rays(tmp_path):
    """A known shape rendered by the dataset renderer and by volume rendering along `camera_rays`
    from the frames' cameras gives the same silhouettes (an asymmetric shape, so a mirrored or
    transposed convention fails)."""
    import trimesh

    from fourview.data.dataset_renderer import RenderSettings, render_dataset, resolve_inputs
    from fourview.recon.model import camera_rays
    from fourview.recon.render_volume import VolumeRendererConfig, render_volume
    from fourview.render.mesh_renderer import Lighting

    spheres = [((0.0, 0.0, 0.0), 0.6), ((0.5, 0.35, 0.3), 0.3)]
    mesh = trimesh.util.concatenate([trimesh.creation.icosphere(3, r).apply_translation(c) for c, r in spheres])
    mesh.export(tmp_path / "blob.ply")
    settings = RenderSettings(
        resolution=32,
        num_random=6,
        lighting=Lighting(albedo=True),
        supersample=1,
        write_depth=False,
        write_normal=False,
    )
    render_dataset(resolve_inputs([str(tmp_path / "blob.ply")]), tmp_path / "render", settings, progress=False)
    # The loader's normalisation: bounding-box centre to the origin, farthest vertex at distance 1.
    v = np.asarray(mesh.vertices)
    centre = (v.min(0) + v.max(0)) / 2
    scale = 1.0 / np.linalg.norm(v - centre, axis=1).max()
    centres = torch.tensor(np.array([(np.array(c) - centre) * scale for c, _ in spheres]), dtype=torch.float32)
    radii = torch.tensor([r * scale for _, r in spheres], dtype=torch.float32)

    def field(xyz):
        inside = ((xyz[:, None, :] - centres).norm(dim=-1) < radii).any(-1)
        return inside.float() * 300.0, torch.full_like(xyz, 0.5)

    _, alpha, c2w, fov = RenderedObjects(tmp_path / "render", views_per_sample=6).frames(0, range(6))
    origins, dirs = camera_rays(c2w, fov, 32)
    cfg = VolumeRendererConfig(samples=128, importance_samples=64)
    opacity = render_volume(field, origins.reshape(-1, 3), dirs.reshape(-1, 3), cfg).opacity.reshape(6, 32, 32)
    assert float((opacity - alpha).abs().mean()) < 0.01
    iou = ((opacity > 0.5) & (alpha > 0.5)).sum() / ((opacity > 0.5) | (alpha > 0.5)).sum()
    assert float(iou) > 0.97

"""Reconstructor: rays, forward and renders for both renderers, batching, save/load round trips, init mapping."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from fourview.atomic import current_umask
from fourview.cameras import Camera, orthogonal_rig, pixel_rays, random_cameras
from fourview.errors import InputError
from fourview.recon.config import recon_preset
from fourview.recon.loading import init_config, load_init_weights
from fourview.recon.model import (
    ReconOutput,
    Reconstructor,
    VolumeRenderer,
    camera_rays,
    make_renderer,
)


def _views(b: int, res: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 4, 3, res, res, generator=g)  # [B, 4, 3, H, W]


def _model(renderer: str = "volume", seed: int = 0) -> Reconstructor:
    torch.manual_seed(seed)
    return Reconstructor(recon_preset("tiny", renderer)).eval()


def _cams(b: int, v: int, seed: int = 0) -> list[list[Camera]]:
    return [random_cameras(v, seed=seed + i, elevation_range_deg=(-60.0, 60.0)) for i in range(b)]


def test_camera_rays_match_pixel_rays():
    cams = [Camera(30.0, 20.0), Camera(200.0, -45.0, 3.0, 40.0), Camera(10.0, 90.0)]
    c2w = torch.tensor(np.stack([c.c2w() for c in cams]))  # float64
    fov = torch.tensor([c.fov_deg for c in cams], dtype=torch.float64)
    o, d = camera_rays(c2w, fov, (6, 8))
    for i, cam in enumerate(cams):
        ro, rd = pixel_rays(cam, (6, 8))
        np.testing.assert_allclose(o[i].numpy(), ro.reshape(-1, 3), atol=1e-12)
        np.testing.assert_allclose(d[i].numpy(), rd.reshape(-1, 3), atol=1e-12)
    pix = torch.tensor([[0, 7, 47], [5, 5, 40], [1, 2, 3]])
    os_, ds_ = camera_rays(c2w, fov, (6, 8), pix)
    torch.testing.assert_close(ds_, d.gather(1, pix[..., None].expand(-1, -1, 3)))
    assert os_.shape == (3, 3, 3)


def test_forward_shapes_for_both_stages():
    out = _model("volume")(_views(2), 20.0)
    assert out.planes.shape == (2, 3, 4, 16, 16) and out.texture_planes is None
    out = _model("dmtet")(_views(2), torch.tensor([20.0, 10.0]))
    assert out.planes.shape == (2, 3, 4, 8, 8) and out.texture_planes.shape == (2, 3, 4, 16, 16)
    assert isinstance(make_renderer(recon_preset("tiny", "dmtet")), type(_model("dmtet").renderer))


def test_volume_render_shapes_ranges_and_gradients():
    model = _model("volume").train()
    out = model(_views(2), 20.0)
    r = model.render(out, _cams(2, 3), 12)
    assert r.rgb.shape == (2, 3, 12, 12, 3) and r.opacity.shape == (2, 3, 12, 12) and r.rgba.shape == (2, 3, 12, 12, 4)
    rgb, opacity = r.rgb.detach(), r.opacity.detach()
    assert float(rgb.min()) >= 0 and float(rgb.max()) <= 1 + 1e-6
    assert float(opacity.min()) >= 0 and float(opacity.max()) <= 1 + 1e-6
    r.rgb.mean().backward()
    grads = [p.grad for p in model.unet.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is not None for p in model.decoder.parameters())


@torch.no_grad()
def test_pixel_subsets_batches_and_camera_forms_agree():
    model = _model("volume")
    out = model(_views(2), 20.0)
    cams = _cams(2, 2)
    full = model.render(out, cams, 10)
    # c2w tensors give the same renders as Camera objects.
    c2w = torch.tensor(np.array([[c.c2w() for c in row] for row in cams]), dtype=torch.float32)
    torch.testing.assert_close(model.render(out, c2w, 10, fov_deg=30.0).rgb, full.rgb)
    # A pixel subset is the full image at those pixels (deterministic sampling).
    pix = torch.tensor([[[0, 13, 99], [5, 50, 77]], [[1, 2, 3], [98, 0, 45]]])
    sub = model.render(out, cams, 10, pixels=pix)
    assert sub.rgb.shape == (2, 2, 3, 3)
    expected = full.rgb.reshape(2, 2, 100, 3).gather(2, pix[..., None].expand(-1, -1, -1, 3))
    torch.testing.assert_close(sub.rgb, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sub.opacity, full.opacity.reshape(2, 2, 100).gather(2, pix), atol=1e-5, rtol=1e-5)
    # Objects rendered together = each rendered alone (rays stacked object-major).
    alone = model.render(out.select(1), [cams[1]], 10)
    torch.testing.assert_close(alone.rgb[0], full.rgb[1], atol=1e-5, rtol=1e-5)
    # Chunked evaluation gives the same image.
    model.renderer.chunk = 7
    torch.testing.assert_close(model.render(out, cams, 10).rgb, full.rgb, atol=1e-5, rtol=1e-5)


def test_render_input_errors():
    model = _model("volume")
    out = model(_views(1), 20.0)
    with pytest.raises(InputError, match="cameras are for 2 objects but the planes for 1"):
        model.render(out, _cams(2, 1), 8)
    with pytest.raises(InputError, match=re.escape("pixel indices must be in [0, 64) for a 8x8 image")):
        model.render(out, _cams(1, 1), 8, pixels=torch.tensor([[[64]]]))
    with pytest.raises(InputError, match="fov_deg is only for c2w matrices"):
        model.render(out, _cams(1, 1), 8, fov_deg=40.0)
    with pytest.raises(InputError, match="object index 3 out of range for a batch of 1"):
        model.field(out, 3)


def test_dmtet_render_shapes_and_gradients():
    model = _model("dmtet").train()
    out = model(_views(1), 20.0)
    r = model.render(out, [orthogonal_rig()[:2]], 16)
    assert r.rgb.shape == (1, 2, 16, 16, 3) and r.opacity.shape == (1, 2, 16, 16)
    assert float(r.opacity.detach().min()) >= 0 and float(r.opacity.detach().max()) <= 1 + 1e-6
    verts, faces = model.renderer.mesh(model.decoder, out, 0)
    assert faces.shape[0] > 0 and float(verts.detach().abs().max()) <= 1.0 + 1e-5  # random weights cut the grid
    (r.rgb.mean() + r.opacity.mean()).backward()
    assert float(model.unet.head.conv.weight.grad.abs().sum()) > 0  # texture planes' head
    assert float(model.unet.geometry_head.conv.weight.grad.abs().sum()) > 0  # geometry planes' head
    deform_rows = model.decoder.geometry_mlp[-1].weight.grad[1:]  # the deformation head's output rows
    assert deform_rows.shape[0] == 3 and float(deform_rows.abs().sum()) > 0
    # A pixel subset is gathered from the full render.
    with torch.no_grad():
        full = model.render(out, [orthogonal_rig()[:1]], 16)
        sub = model.render(out, [orthogonal_rig()[:1]], 16, pixels=torch.tensor([[[0, 100, 255]]]))
    torch.testing.assert_close(sub.rgb[0, 0], full.rgb[0, 0].reshape(-1, 3)[[0, 100, 255]])


@pytest.mark.parametrize("renderer", ["volume", "dmtet"])
def test_save_pretrained_from_pretrained_round_trip(tmp_path, renderer):
    model = _model(renderer, seed=1)
    views = _views(1, seed=2)
    with torch.no_grad():
        ref = model(views, 20.0)
        ref_img = model.render(ref, [orthogonal_rig()[:1]], 8)
    folder = model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    for p in folder.iterdir():  # the user's umask, not safetensors' 0600
        assert p.stat().st_mode & 0o777 == 0o666 & ~current_umask(), p.name
    loaded = Reconstructor.from_pretrained(folder)
    assert loaded.config == model.config and not loaded.training
    with torch.no_grad():
        out = loaded(views, 20.0)
        img = loaded.render(out, [orthogonal_rig()[:1]], 8)
    torch.testing.assert_close(out.planes, ref.planes, rtol=0, atol=0)
    torch.testing.assert_close(img.rgb, ref_img.rgb, rtol=0, atol=0)
    again = Reconstructor.from_pretrained(str(folder))
    torch.testing.assert_close(again(views, 20.0).planes, ref.planes, rtol=0, atol=0)


def test_from_pretrained_errors(tmp_path):
    folder = _model().save_pretrained(tmp_path / "m")
    with pytest.raises(InputError, match="reconstructor weights not found: .*nowhere is neither a folder"):
        Reconstructor.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(InputError) as offline:
        Reconstructor.from_pretrained("fourview-test/no-such-model")  # offline in tests (HF_HUB_OFFLINE=1)
    assert str(offline.value) == (
        "cannot get reconstructor weights 'fourview-test/no-such-model' from the hub: "
        "offline (HF_HUB_OFFLINE) and no cached copy found"
    )
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="reconstructor weights must be a folder with config.json: .*empty"):
        Reconstructor.from_pretrained(tmp_path / "empty")
    cfg = (folder / "config.json").read_text()
    (folder / "config.json").write_text(cfg.replace('"renderer"', '"rendererr"'))
    with pytest.raises(InputError, match="unknown key") as err:
        Reconstructor.from_pretrained(folder)
    assert "\n" not in str(err.value)
    (folder / "config.json").write_text("{")
    with pytest.raises(InputError, match="not valid JSON"):
        Reconstructor.from_pretrained(folder)
    (folder / "config.json").write_text(recon_preset("tiny", "dmtet").to_json())  # other shapes
    with pytest.raises(InputError, match="does not fit"):
        Reconstructor.from_pretrained(folder)
    (folder / "config.json").write_text(cfg)
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(InputError, match="cannot read reconstructor weights .*model.safetensors"):
        Reconstructor.from_pretrained(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(InputError, match="model.safetensors"):
        Reconstructor.from_pretrained(folder)


def test_stage_b_init_from_stage_a_maps_the_decoder(tmp_path):
    a = _model("volume", seed=4)
    folder = a.save_pretrained(tmp_path / "a")
    b = _model("dmtet", seed=5)
    report = load_init_weights(b, folder)
    assert report.copied and report.mapped and report.skipped
    assert any(k.startswith("unet.geometry_head") for k in report.skipped)  # a new head at another resolution
    torch.testing.assert_close(b.unet.head.conv.weight, a.unet.head.conv.weight)  # texture head <- the single head
    # Same features into both decoders: B's colour = A's colour, B's SDF = log(iso) - A's raw density.
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(50, 3, 4, generator=g)
    with torch.no_grad():
        da, db = a.decoder(feats), b.decoder(feats, feats)
    torch.testing.assert_close(db.rgb, da.rgb)
    iso = a.config.decoder.density_iso
    torch.testing.assert_close(db.sdf, math.log(iso) - torch.log(da.density), atol=1e-5, rtol=1e-5)
    # Mapped out: the SDF is negative exactly where the density is above the iso level.
    assert torch.equal(db.sdf < 0, da.density > iso)
    # The deformation head starts at zero: stage B's first mesh lies on the regular grid.
    assert db.deform.shape == (50, 3) and torch.equal(db.deform, torch.zeros(50, 3))


def test_stage_b_with_top_level_geometry_starts_from_stage_a(tmp_path):
    """``geometry_downsample=0`` (the demo preset): both heads are stage A's, so is the whole surface."""
    import dataclasses

    cfg_a = recon_preset("tiny", "volume")
    torch.manual_seed(4)
    a = Reconstructor(dataclasses.replace(cfg_a, decoder=dataclasses.replace(cfg_a.decoder, density_iso=4.0))).eval()
    with torch.no_grad():  # a non-trivial last layer (the fresh one is zero-initialised or nearly)
        a.unet.head.conv.weight.normal_(0.0, 0.1)
    folder = a.save_pretrained(tmp_path / "a")
    cfg = recon_preset("tiny", "dmtet")
    cfg = init_config(dataclasses.replace(cfg, unet=dataclasses.replace(cfg.unet, geometry_downsample=0)), folder)
    assert cfg.decoder.density_iso == 4.0  # the level its SDF is zero at
    assert init_config(recon_preset("tiny", "volume"), folder) == recon_preset("tiny", "volume")
    torch.manual_seed(5)
    b = Reconstructor(cfg).eval()
    report = load_init_weights(b, folder)
    assert report.skipped == []
    assert {k for k in report.mapped if k.startswith("unet.")} == {f"unet.geometry_head.{k}" for k in
                                                                   a.unet.head.state_dict()}  # fmt: skip
    views = _views(1)
    with torch.no_grad():
        out_a, out_b = a(views, 20.0), b(views, 20.0)
        xyz = torch.rand(200, 3) * 2 - 1
        fa, fb = a.field(out_a), b.field(out_b)
        torch.testing.assert_close(fb.sdf(xyz), fa.sdf(xyz), atol=1e-5, rtol=1e-5)  # log(iso) - log(density)
        torch.testing.assert_close(fb.color(xyz), fa.color(xyz), atol=1e-6, rtol=1e-6)
        # ... so the volume renderer draws stage B at its start as it drew stage A (refinement's renders)
        cams = _cams(1, 2)
        ra, rb = a.render(out_a, cams, 12), b.render(out_b, cams, 12, renderer=VolumeRenderer(b.config))
    torch.testing.assert_close(rb.rgb, ra.rgb, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rb.opacity, ra.opacity, atol=1e-5, rtol=1e-5)


def test_exported_dmtet_surface_is_the_trained_mesh():
    """Extraction of a stage-B field at its tet grid applies the deformation: DMTetRenderer's mesh exactly."""
    from fourview.export.extract import extract_mesh

    model = _model("dmtet", seed=6)
    cfg = model.config
    c = cfg.unet.plane_channels
    r = cfg.unet.geometry_resolution
    u = (torch.arange(r) + 0.5) / r * 2 - 1
    planes = torch.zeros(1, 3, c, r, r)
    planes[:, :, 0] = u[None, :] ** 2 + u[:, None] ** 2  # summed over the planes: 2 |xyz|^2
    out = ReconOutput(planes, model(_views(1), 20.0).texture_planes)
    first, last = model.decoder.geometry_mlp[0], model.decoder.geometry_mlp[-1]
    with torch.no_grad():  # hidden 0 = 2 |xyz|^2; sdf = hidden 0 - 0.5 (a sphere of radius 0.5)
        first.weight.zero_(), first.bias.zero_(), last.weight[0].zero_()
        first.weight[0, [0, c, 2 * c]] = 1.0
        first.bias[0] = 3.0  # SiLU(x + 3) - SiLU(3): monotonic in x, so still a sphere
        last.weight[0, 0] = 1.0
        last.bias[0] = -float(torch.nn.functional.silu(torch.tensor(3.5)))
        last.weight[1:, 0] = torch.tensor([0.7, -0.4, 0.2])  # deformation varies with the radius
        verts, faces = model.renderer.mesh(model.decoder, out, 0)
        field = model.field(out)
        deform = field.deform(model.renderer.grid(verts.device).verts)
        got = extract_mesh(field, cfg.tet_grid_resolution, method="dmtet")
        # the same surface with a (tiny) level shift: the deformation still applies
        flat = extract_mesh(field, cfg.tet_grid_resolution, method="dmtet", level=1e-7)
    assert len(faces) > 0 and float(deform.std(0).min()) > 0  # a surface, and a grid that is deformed
    np.testing.assert_allclose(got.verts, verts.numpy(), atol=1e-6)
    np.testing.assert_array_equal(got.faces, faces.numpy())
    np.testing.assert_allclose(flat.verts, verts.numpy(), atol=1e-4)
    assert _model("volume").field(_model("volume")(_views(1), 20.0)).deform(torch.zeros(2, 3)) is None


def test_dmtet_mesh_moves_with_the_deformation_head():
    model = _model("dmtet", seed=6)
    out = model(_views(1), 20.0)
    with torch.no_grad():
        random_deform, _ = model.renderer.mesh(model.decoder, out, 0)
        last = model.decoder.geometry_mlp[-1]
        last.weight[1:], last.bias[1:] = 0.0, 0.0
        flat, faces_flat = model.renderer.mesh(model.decoder, out, 0)  # zero deformation: the regular grid
        last.bias[1:] = torch.tensor([10.0, 0.0, 0.0])  # tanh -> 1: every grid vertex moves +x by half a cell
        moved, faces_moved = model.renderer.mesh(model.decoder, out, 0)
    assert not torch.allclose(random_deform, flat)  # the random head did deform the grid
    half_cell = 0.5 * model.renderer.grid(flat.device).cell_size
    assert torch.equal(faces_moved, faces_flat)  # same SDF at the vertices: same topology
    inside = flat[:, 0] < 1.0 - half_cell  # vertices at the +x face of the cube stay in it
    assert int(inside.sum()) > 0
    torch.testing.assert_close(
        moved[inside] - flat[inside],
        torch.tensor([half_cell, 0.0, 0.0]).expand(int(inside.sum()), 3),
        atol=1e-5,
        rtol=0,
    )
    assert float(moved.abs().max()) <= 1.0


def test_field_is_a_surface_field():
    from fourview.recon.fields import SurfaceField

    model = _model("volume")
    out = model(_views(2), 20.0)
    field = model.field(out, 1)
    assert isinstance(field, SurfaceField)
    xyz = torch.rand(20, 3) * 2 - 1
    assert field.sdf(xyz).shape == (20,) and field.color(xyz).shape == (20, 3)
    assert isinstance(out.select(1), ReconOutput) and out.select(1).batch_size == 1

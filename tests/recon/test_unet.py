"""TriplaneUNet: size, shapes, conditioning, gradients, the view-to-plane mapping; ReconConfig."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from fourview.cameras import FOV_DEG, RADIUS, orthogonal_rig, project_points
from fourview.errors import InputError
from fourview.recon.config import DecoderConfig, ReconConfig, recon_preset
from fourview.recon.unet import (
    VIEW_HALF_EXTENT,
    TriplaneUNet,
    UNetConfig,
    demo_config,
    full_config,
    tiny_config,
    views_to_plane_inputs,
)


def _views(b: int, res: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 4, 3, res, res, generator=g)  # [B, 4, 3, H, W]


# ---------------------------------------------------------------- size


def test_full_config_has_about_300m_parameters_counted_on_meta():
    with torch.device("meta"):
        model = TriplaneUNet(full_config())
    params = list(model.parameters())
    assert all(p.is_meta for p in params)  # nothing was allocated
    n = sum(p.numel() for p in params)
    print(f"full TriplaneUNet parameters: {n:,}")
    assert 250e6 <= n <= 350e6


def test_full_config_wiring_on_meta_gives_512_planes_and_split_256_512():
    with torch.device("meta"):
        model = TriplaneUNet(full_config(split_planes=True))
        out = model(torch.empty(1, 4, 3, 512, 512), 20.0)
    assert out.planes.shape == (1, 3, 32, 256, 256)
    assert out.texture_planes.shape == (1, 3, 32, 512, 512)


def test_demo_model_is_under_10_mb_in_safetensors(tmp_path):
    model = TriplaneUNet(demo_config())
    n = sum(p.numel() for p in model.parameters())
    print(f"demo TriplaneUNet parameters: {n:,}")
    path = tmp_path / "unet.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    size = path.stat().st_size
    assert size < 10 * 2**20, size
    assert size >= 4 * n  # really float32, really all of it


def test_tiny_config_is_small():
    n = sum(p.numel() for p in TriplaneUNet(tiny_config()).parameters())
    assert 1_000 <= n <= 20_000, n


# ---------------------------------------------------------------- forward


@pytest.mark.parametrize("split", [False, True])
def test_tiny_forward_shapes(split):
    cfg = tiny_config(split_planes=split)
    out = TriplaneUNet(cfg)(_views(2, cfg.view_resolution), 20.0)
    if split:
        assert out.planes.shape == (2, 3, cfg.plane_channels, 8, 8)
        assert out.texture_planes.shape == (2, 3, cfg.texture_channels, 16, 16)
    else:
        assert out.planes.shape == (2, 3, cfg.plane_channels, 16, 16)
        assert out.texture_planes is None
    assert torch.isfinite(out.planes).all()


def test_elevation_changes_the_output_and_batches_per_sample():
    cfg = tiny_config()
    model = TriplaneUNet(cfg).eval()
    views = _views(2, cfg.view_resolution)
    with torch.no_grad():
        at0 = model(views, 0.0).planes
        at20 = model(views, 20.0).planes
        mixed = model(views, torch.tensor([0.0, 20.0])).planes
    assert (at0 - at20).abs().max() > 1e-4
    torch.testing.assert_close(mixed[0], at0[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mixed[1], at20[1], rtol=1e-5, atol=1e-6)


def test_batch_items_are_independent():
    cfg = tiny_config()
    model = TriplaneUNet(cfg).eval()
    views = _views(2, cfg.view_resolution)
    with torch.no_grad():
        both = model(views, 20.0).planes
        first = model(views[:1], 20.0).planes
    torch.testing.assert_close(both[:1], first, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("split", [False, True])
def test_gradient_reaches_every_parameter(split):
    cfg = tiny_config(split_planes=split)
    model = TriplaneUNet(cfg)
    out = model(_views(2, cfg.view_resolution), torch.tensor([10.0, 30.0]))
    loss = out.planes.square().mean() + (0 if out.texture_planes is None else out.texture_planes.square().mean())
    loss.backward()
    dead = [name for name, p in model.named_parameters() if p.grad is None or p.grad.abs().max() == 0]
    assert not dead


def test_gradient_checkpointing_gives_the_same_gradients():
    cfg = tiny_config()
    views = _views(2, cfg.view_resolution)
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        model = TriplaneUNet(dataclasses.replace(cfg, gradient_checkpointing=ckpt))
        model(views, 20.0).planes.sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)


def test_plane_id_embedding_tells_identical_inputs_apart():
    # White views give XY and ZY the same input; only the plane embedding can separate them.
    cfg = tiny_config()
    model = TriplaneUNet(cfg).eval()
    white = torch.ones(1, 4, 3, cfg.view_resolution, cfg.view_resolution)
    inputs = model.plane_inputs(white)
    torch.testing.assert_close(inputs[:, 0], inputs[:, 1])
    with torch.no_grad():
        planes = model(white, 20.0).planes
    assert (planes[:, 0] - planes[:, 1]).abs().max() > 1e-4


@pytest.mark.parametrize("joint", [True, False])
def test_xz_plane_sees_the_views_only_through_cross_plane_attention(joint):
    cfg = dataclasses.replace(tiny_config(), cross_plane_attention=joint)
    model = TriplaneUNet(cfg).eval()
    with torch.no_grad():
        a = model(_views(1, cfg.view_resolution, seed=1), 20.0).planes
        b = model(_views(1, cfg.view_resolution, seed=2), 20.0).planes
    xz_change = (a[:, 2] - b[:, 2]).abs().max().item()
    assert (a[:, 0] - b[:, 0]).abs().max() > 1e-4
    if joint:
        assert xz_change > 1e-4
    else:
        assert xz_change == 0.0


def test_xz_input_is_the_learned_embedding_not_a_view():
    cfg = tiny_config()
    model = TriplaneUNet(cfg)
    in1 = model.plane_inputs(_views(2, cfg.view_resolution, seed=1))  # [B, 3, 6, R, R]
    in2 = model.plane_inputs(_views(2, cfg.view_resolution, seed=2))
    assert in1.shape == (2, 3, 6, cfg.resolution, cfg.resolution)
    torch.testing.assert_close(in1[:, 2], in2[:, 2])  # independent of the views
    assert (in1[:, 0] - in2[:, 0]).abs().max() > 0.1 and (in1[:, 1] - in2[:, 1]).abs().max() > 0.1
    assert (in1[:, 2] - in1[:, 0]).abs().mean() > 0.1 and (in1[:, 2] - in1[:, 1]).abs().mean() > 0.1
    assert in1[:, 2].requires_grad  # learned


# ---------------------------------------------------------------- view -> plane mapping


def test_mapping_without_crop_is_exact_flips():
    v = _views(2, 16)  # [B, 4, 3, H, W], rig order az 0, 90, 180, 270
    got = views_to_plane_inputs(v, 16, view_half_extent=1.0)  # [B, 2, 6, R, R]
    rows, both = [-2], [-2, -1]
    xy = torch.cat([v[:, 0].flip(rows), v[:, 2].flip(both)], dim=1)
    zy = torch.cat([v[:, 1].flip(both), v[:, 3].flip(rows)], dim=1)
    torch.testing.assert_close(got, torch.stack([xy, zy], dim=1), rtol=0, atol=1e-6)


# (view index in rig order, plane, channel slot, points in the plane through the origin facing that view)
_MAPPING_CASES = [
    (0, 0, 0, [(0.55, 0.30, 0.0), (-0.70, -0.45, 0.0), (0.10, 0.85, 0.0)]),  # az 0 -> XY
    (2, 0, 1, [(0.55, 0.30, 0.0), (-0.70, -0.45, 0.0), (0.10, 0.85, 0.0)]),  # az 180 -> XY, mirrored
    (1, 1, 0, [(0.0, 0.30, 0.55), (0.0, -0.60, -0.20), (0.0, 0.75, -0.80)]),  # az 90 -> ZY, mirrored
    (3, 1, 1, [(0.0, 0.30, 0.55), (0.0, -0.60, -0.20), (0.0, 0.75, -0.80)]),  # az 270 -> ZY
]


@pytest.mark.parametrize("view,plane,slot,points", _MAPPING_CASES)
def test_projected_point_lands_on_its_own_texel(view, plane, slot, points):
    """A dark pixel where a rig camera (elevation 0) sees a point maps to the plane texel of the point."""
    res = 64
    camera = orthogonal_rig(elevation_deg=0.0)[view]
    axes = (0, 1) if plane == 0 else (2, 1)  # (width, height) coordinates: XY -> (x, y), ZY -> (z, y)
    for p in points:
        col, row, _ = project_points(np.array([p]), camera, res)[0]
        views = torch.ones(1, 4, 3, res, res)
        views[0, view, :, int(row), int(col)] = 0.0
        inputs = views_to_plane_inputs(views, res)  # [1, 2, 6, R, R]
        mapped = inputs[0, plane, 3 * slot]  # [R, R]
        r, c = divmod(int(mapped.argmin()), res)
        want_c = math.floor((p[axes[0]] + 1) / 2 * res)
        want_r = math.floor((p[axes[1]] + 1) / 2 * res)  # plane row 0 is coordinate -1
        assert abs(c - want_c) <= 1 and abs(r - want_r) <= 1, (p, (r, c), (want_r, want_c))
        assert mapped.min() < 0.75  # bilinear weight >= 1/4 on the nearest texel
        # the other three view slots stay white
        others = [inputs[0, q, 3 * s : 3 * s + 3] for q in range(2) for s in range(2) if (q, s) != (plane, slot)]
        assert all(torch.all(o > 1.0 - 1e-5) for o in others)


def test_view_half_extent_matches_the_rig_camera():
    assert VIEW_HALF_EXTENT == pytest.approx(RADIUS * math.tan(math.radians(FOV_DEG) / 2))
    # a point at the crop edge, in the plane z = 0, projects to the image edge
    camera = orthogonal_rig(elevation_deg=0.0)[0]
    col, _, _ = project_points(np.array([[VIEW_HALF_EXTENT, 0.0, 0.0]]), camera, 100)[0]
    assert col == pytest.approx(100.0)


# ---------------------------------------------------------------- input errors


def test_bad_inputs_raise_input_error():
    cfg = tiny_config()
    model = TriplaneUNet(cfg)
    with pytest.raises(InputError, match="views must be"):
        model(torch.rand(2, 3, 3, cfg.view_resolution, cfg.view_resolution), 20.0)
    with pytest.raises(InputError, match="views must be"):
        model(torch.rand(2, 4, 3, 8, 8), 20.0)
    with pytest.raises(InputError, match="elevation_deg"):
        model(_views(2, cfg.view_resolution), torch.zeros(3))


def test_bad_configs_raise():
    with pytest.raises(InputError, match="divisible"):
        UNetConfig(resolution=100)
    with pytest.raises(InputError, match="attention_resolutions"):
        UNetConfig(attention_resolutions=(48,))
    with pytest.raises(InputError, match="geometry_downsample"):
        dataclasses.replace(tiny_config(), split_planes=True, geometry_downsample=2)
    with pytest.raises(NotImplementedError, match="image_encoder"):
        TriplaneUNet(dataclasses.replace(tiny_config(), image_encoder="dinov2_vits14_reg"))


# ---------------------------------------------------------------- ReconConfig


@pytest.mark.parametrize("name", ["full", "demo", "tiny"])
@pytest.mark.parametrize("renderer", ["volume", "dmtet"])
def test_recon_config_json_round_trip(name, renderer):
    cfg = recon_preset(name, renderer)
    back = ReconConfig.from_json(cfg.to_json())
    assert back == cfg
    assert isinstance(back.unet.channels, tuple) and isinstance(back.unet, UNetConfig)
    assert cfg.unet.split_planes == (renderer == "dmtet")


def test_recon_config_rejects_unknown_missing_and_mistyped_keys():
    data = recon_preset("tiny").to_dict()
    with pytest.raises(InputError, match="unknown key.*'sampels_per_ray'"):
        ReconConfig.from_dict({**data, "sampels_per_ray": 4})
    with pytest.raises(InputError, match=r"ReconConfig\.unet: unknown key"):
        ReconConfig.from_dict({**data, "unet": {**data["unet"], "chanels": [4, 8]}})
    missing = dict(data)
    del missing["renderer"]
    with pytest.raises(InputError, match="missing key"):
        ReconConfig.from_dict(missing)
    # A key added after weights were shipped may be missing from their config: it takes its default.
    old_decoder = {k: v for k, v in data["decoder"].items() if k != "deformation"}
    assert ReconConfig.from_dict({**data, "decoder": old_decoder}).decoder.deformation is False
    with pytest.raises(InputError, match=r"decoder: missing key\(s\) \['hidden_layers'\]"):
        ReconConfig.from_dict({**data, "decoder": {k: v for k, v in old_decoder.items() if k != "hidden_layers"}})
    with pytest.raises(InputError, match=r"unet\.resolution must be int"):
        ReconConfig.from_dict({**data, "unet": {**data["unet"], "resolution": "16"}})
    with pytest.raises(InputError, match="renderer"):
        ReconConfig.from_dict({**data, "renderer": "nerf"})
    with pytest.raises(InputError, match="not valid JSON"):
        ReconConfig.from_json("{")


def test_recon_config_pairs_renderer_and_geometry():
    with pytest.raises(InputError, match="dmtet.*sdf"):
        ReconConfig(renderer="dmtet", decoder=DecoderConfig(geometry="density"))
    with pytest.raises(InputError, match="unknown reconstructor preset"):
        recon_preset("huge")

"""Volumetric renderer against analytic cases: empty space, slabs, constant media, thin shells."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from fourview.cameras import Camera, pixel_rays
from fourview.errors import InputError
from fourview.recon.render_volume import (
    VolumeRendererConfig,
    VolumeRenderOutput,
    intersect_box,
    render_views,
    render_volume,
)


def _constant(sigma: float, rgb=(0.2, 0.4, 0.6)):
    def field_fn(xyz):
        color = torch.tensor(rgb, dtype=xyz.dtype).expand(len(xyz), 3)
        return torch.full(xyz.shape[:1], sigma, dtype=xyz.dtype), color

    return field_fn


def _slab(sigma: float, thickness: float, center: float = 0.0):
    """Density sigma for |z - center| < thickness / 2, else 0; grey."""

    def field_fn(xyz):
        inside = (xyz[:, 2] - center).abs() < thickness / 2
        return torch.where(inside, sigma, 0.0).to(xyz.dtype), torch.full_like(xyz, 0.5)

    return field_fn


def _shell(radius: float = 0.6, half_width: float = 0.05, sigma: float = 50.0):
    def field_fn(xyz):
        inside = (xyz.norm(dim=-1) - radius).abs() < half_width
        return torch.where(inside, sigma, 0.0).to(xyz.dtype), torch.full_like(xyz, 0.5)

    return field_fn


def _rays(camera: Camera, res: int) -> tuple[torch.Tensor, torch.Tensor]:
    o, d = pixel_rays(camera, res)
    return torch.from_numpy(o.reshape(-1, 3)).float(), torch.from_numpy(d.reshape(-1, 3)).float()


def test_intersect_box_known_rays():
    origins = torch.tensor([[0.0, 0.0, 4.0], [0.0, 0.0, 0.0], [0.0, 3.0, 4.0], [0.5, 0.5, 4.0]])
    dirs = torch.tensor([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 0.0, 1.0]])
    near, far = intersect_box(origins, dirs)
    torch.testing.assert_close(near[:2], torch.tensor([3.0, 0.0]))
    torch.testing.assert_close(far[:2], torch.tensor([5.0, 1.0]))
    assert torch.all(near[2:] == far[2:]) and torch.all(near >= 0)  # misses: empty interval


@pytest.mark.parametrize("background", [(1.0, 1.0, 1.0), (0.0, 0.25, 1.0)])
def test_empty_field_gives_background(background):
    cfg = VolumeRendererConfig(samples=16, importance_samples=16, background=background)
    origins, dirs = _rays(Camera(30.0, 20.0), 8)
    out = render_volume(_constant(0.0), origins, dirs, cfg)
    assert isinstance(out, VolumeRenderOutput)
    assert out.rgb.shape == (64, 3) and out.weights.shape == out.t.shape == (64, 32)
    torch.testing.assert_close(out.rgb, torch.tensor(background).expand(64, 3))
    assert torch.all(out.opacity == 0) and torch.all(out.weights == 0) and torch.all(out.depth == 0)


def test_rays_missing_the_cube_see_background_even_in_dense_medium():
    origins = torch.tensor([[0.0, 3.0, 4.0], [0.0, 0.0, 4.0]])
    dirs = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, 1.0]])  # passes above / points away
    out = render_volume(_constant(100.0), origins, dirs, VolumeRendererConfig(samples=8, importance_samples=8))
    torch.testing.assert_close(out.rgb, torch.ones(2, 3))
    assert torch.all(out.opacity == 0)


@pytest.mark.parametrize("jitter", [False, True])
def test_slab_transmittance_is_beer_lambert(jitter):
    sigma, thickness = 2.0, 0.5
    # Jittered samples leave gaps up to two bins wide, so the slab's edges need a fine first pass.
    cfg = VolumeRendererConfig(samples=4096, importance_samples=256)
    # Rays along -z (perpendicular to the slab) at several positions, slab off-centre.
    origins = torch.tensor([[0.0, 0.0, 4.0], [0.3, -0.2, 4.0], [-0.7, 0.6, 4.0], [0.9, 0.9, 3.0]])
    dirs = torch.tensor([0.0, 0.0, -1.0]).expand(4, 3)
    gen = torch.Generator().manual_seed(1) if jitter else None
    out = render_volume(_slab(sigma, thickness, center=0.137), origins, dirs, cfg, gen)
    transmittance = 1.0 - out.opacity
    assert torch.all((transmittance - math.exp(-sigma * thickness)).abs() < 1e-3), transmittance
    # Colour: grey medium over white background, rgb = 0.5 * opacity + 1 * (1 - opacity).
    torch.testing.assert_close(out.rgb, (0.5 * out.opacity + transmittance)[:, None].expand(4, 3))


def test_constant_medium_filling_the_ray_is_exact():
    """The midpoint intervals tile [near, far] exactly, so a constant density integrates exactly."""
    origins, dirs = _rays(Camera(10.0, 35.0), 6)
    near, far = intersect_box(origins, dirs)
    out = render_volume(_constant(1.3), origins, dirs, VolumeRendererConfig(samples=7, importance_samples=5))
    torch.testing.assert_close(out.opacity, 1.0 - torch.exp(-1.3 * (far - near)), atol=1e-6, rtol=0)
    expected = 0.4 * out.opacity + (1.0 - out.opacity)  # green channel of the medium is 0.4
    torch.testing.assert_close(out.rgb[:, 1], expected, atol=1e-6, rtol=0)


def test_weights_are_a_sub_probability_and_depth_is_in_range():
    def field_fn(xyz):
        density = 40.0 * (torch.sin(9.0 * xyz).sum(-1) > 0.5).to(xyz.dtype) + 0.3
        return density, torch.sigmoid(xyz * 3.0)

    origins, dirs = _rays(Camera(47.0, -12.0), 12)
    gen = torch.Generator().manual_seed(0)
    out = render_volume(field_fn, origins, dirs, VolumeRendererConfig(samples=24, importance_samples=24), gen)
    assert torch.all(out.weights >= 0)
    assert torch.all(out.weights.sum(-1) <= 1.0 + 1e-6)
    assert out.opacity.mean() > 0.8  # the medium is dense: most rays are stopped
    assert torch.all(out.t.diff(dim=-1) >= 0)  # sorted
    assert torch.all(out.rgb >= 0) and torch.all(out.rgb <= 1)
    near, far = intersect_box(origins, dirs)
    hit = out.opacity > 1e-3
    surface = out.depth[hit] / out.opacity[hit]
    assert torch.all(surface >= near[hit] - 1e-5) and torch.all(surface <= far[hit] + 1e-5)


@pytest.mark.parametrize("jitter", [False, True])
def test_importance_samples_concentrate_on_a_thin_shell(jitter):
    origins, dirs = _rays(Camera(0.0, 20.0), 16)
    # First intersection with the sphere of radius 0.6; keep rays that clearly hit it.
    b = (origins * dirs).sum(-1)
    disc = b**2 - ((origins**2).sum(-1) - 0.36)
    hit = disc > 0.05
    t_hit = (-b - disc.clamp(min=0).sqrt())[hit]
    origins, dirs = origins[hit], dirs[hit]
    field_fn = _shell()

    def near_shell(cfg, seed):
        gen = torch.Generator().manual_seed(seed) if jitter else None
        out = render_volume(field_fn, origins, dirs, cfg, gen)
        return ((out.t - t_hit[:, None]).abs() < 0.1).float().mean().item(), out

    coarse, _ = near_shell(VolumeRendererConfig(samples=64, importance_samples=0), 0)
    both, out = near_shell(VolumeRendererConfig(samples=64, importance_samples=64), 0)
    # Uniform samples: ~0.2 / 2.3 of the ray is within 0.1 of the shell; with importance samples
    # about half of all samples (nearly all the new ones) are.
    assert coarse < 0.12
    assert both > 0.45
    assert torch.all(out.opacity > 0.99)


def test_sampling_is_deterministic_without_generator_and_reproducible_with_one():
    field_fn = _shell()
    origins, dirs = _rays(Camera(20.0, 10.0), 6)
    cfg = VolumeRendererConfig(samples=16, importance_samples=16)
    a = render_volume(field_fn, origins, dirs, cfg)
    b = render_volume(field_fn, origins, dirs, cfg)
    assert torch.equal(a.t, b.t) and torch.equal(a.rgb, b.rgb)
    c = render_volume(field_fn, origins, dirs, cfg, torch.Generator().manual_seed(3))
    d = render_volume(field_fn, origins, dirs, cfg, torch.Generator().manual_seed(3))
    e = render_volume(field_fn, origins, dirs, cfg, torch.Generator().manual_seed(4))
    assert torch.equal(c.t, d.t)
    assert not torch.equal(c.t, e.t) and not torch.equal(a.t, c.t)


def test_gradients_reach_the_field():
    raw = torch.tensor([0.5, 0.2, -0.1, 0.7], requires_grad=True)  # log density, r, g, b

    def field_fn(xyz):
        inside = (xyz.norm(dim=-1) < 0.6).to(xyz.dtype)
        density = inside * torch.exp(raw[0]) * 5.0
        return density, torch.sigmoid(raw[1:]).expand(len(xyz), 3)

    origins, dirs = _rays(Camera(0.0, 0.0), 8)
    out = render_volume(field_fn, origins, dirs, VolumeRendererConfig(samples=32, importance_samples=16))
    out.rgb.sum().backward()
    assert raw.grad is not None and torch.all(raw.grad != 0)


def test_render_views_layout_orientation_and_chunking():
    # Opaque red block in the upper half (y > 0.2) of the object: must appear in the top rows.
    def field_fn(xyz):
        upper = (xyz[:, 1] > 0.2) & (xyz[:, [0, 2]].abs() < 0.4).all(-1) & (xyz[:, 1] < 0.6)
        return 30.0 * upper.to(xyz.dtype), torch.tensor([1.0, 0.0, 0.0]).expand(len(xyz), 3)

    cameras = [Camera(0.0, 0.0), Camera(90.0, 0.0)]
    cfg = VolumeRendererConfig(samples=32, importance_samples=16, chunk=100)
    with torch.no_grad():
        img = render_views(field_fn, cameras, (20, 16), cfg, with_alpha=True)
        img_one_chunk = render_views(field_fn, cameras, (20, 16), VolumeRendererConfig(32, 16, chunk=10**6))
    assert img.shape == (2, 20, 16, 4) and img_one_chunk.shape == (2, 20, 16, 3)
    torch.testing.assert_close(img[..., :3], img_one_chunk)
    alpha = img[..., 3]
    rows = torch.nonzero(alpha > 0.5)[:, 1]
    assert len(rows) > 0 and rows.max() < 10  # top half only (row 0 at the top)
    assert torch.all(alpha[:, 12:] < 1e-6)
    # Covered pixels are red on white: green falls with opacity.
    torch.testing.assert_close(img[..., 1], 1.0 - alpha, atol=1e-5, rtol=0)


def test_render_views_silhouette_of_a_dense_ball_matches_projection():
    radius, res = 0.6, 48

    def ball(xyz):
        return 1e3 * (xyz.norm(dim=-1) < radius).to(xyz.dtype), torch.full_like(xyz, 0.5)

    cam = Camera(0.0, 20.0)
    with torch.no_grad():
        alpha = render_views(ball, [cam], res, VolumeRendererConfig(64, 32), with_alpha=True)[0, ..., 3]
    r_px = cam.focal_px(res) * radius / math.sqrt(cam.radius**2 - radius**2)
    assert abs(alpha.sum().item() / (math.pi * r_px**2) - 1.0) < 0.05
    # Centred: the alpha-weighted centroid is the image centre.
    ys, xs = np.mgrid[0:res, 0:res] + 0.5
    a = alpha.numpy()
    assert abs((a * xs).sum() / a.sum() - res / 2) < 0.1 and abs((a * ys).sum() / a.sum() - res / 2) < 0.1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"samples": 0}, "samples must be >= 1, got 0"),
        ({"importance_samples": -1}, "importance_samples must be >= 0, got -1"),
        ({"chunk": 0}, "chunk must be >= 1, got 0"),
        ({"background": (1.0, 1.0)}, re.escape("background must be 3 values (RGB), got (1.0, 1.0)")),
        ({"bound": 0.0}, "bound must be > 0, got 0.0"),
    ],
)
def test_config_rejects_bad_settings(kwargs, message):
    with pytest.raises(InputError, match=message):
        VolumeRendererConfig(**kwargs)


def test_render_views_rejects_bad_inputs():
    with pytest.raises(InputError, match="render_views needs at least one camera"):
        render_views(_constant(0.0), [], 8)
    with pytest.raises(InputError, match="render resolution must be >= 1 pixel, got 0"):
        render_views(_constant(0.0), [Camera(0.0, 0.0)], 0)

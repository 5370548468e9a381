"""The loss terms of the per-object fit (`fourview.recon.optimize_losses`) on a sphere's SDF."""

from __future__ import annotations

import numpy as np
import torch

from fourview.cameras import orthogonal_rig, project_points
from fourview.recon.model import camera_rays
from fourview.recon.optimize_losses import StereoViews, first_hits, hull_bounds, ray_min_sdf, stereo_loss
from fourview.recon.render_volume import intersect_box
from fourview.views import PosedViews
from tests.recon.posed_sphere import RADIUS, sphere_views


class _Ball:
    """A sphere SDF of learnable radius (`SDFField`)."""

    def __init__(self, radius: float) -> None:
        self.radius = torch.tensor(radius, requires_grad=True)

    def sdf(self, xyz: torch.Tensor) -> torch.Tensor:
        return xyz.norm(dim=-1) - self.radius

    def gradient(self, xyz: torch.Tensor, h: float) -> torch.Tensor:
        return torch.nn.functional.normalize(xyz, dim=-1)


def _stereo_terms(views: PosedViews, radius: float) -> tuple[float, float]:
    """The stereo loss of a ball of ``radius`` on rays of view 0 that hit it, and d loss / d radius."""
    sv = StereoViews(views, 64, blur_start_px=1.0, blur_end_px=1.0)
    o, d = camera_rays(torch.from_numpy(views.c2w[:1]).float(), float(views.fov_deg[0]), 64)
    o, d = o[0], d[0]
    b = (o * d).sum(-1)
    disc = b.square() - (o.square().sum(-1) - radius**2)
    hit = disc > 0.05  # rays well inside the ball's outline
    t = -b[hit] - disc[hit].sqrt()
    pts = o[hit] + t[:, None] * d[hit]
    ball = _Ball(radius)
    loss = stereo_loss(ball, sv, pts, d[hit], torch.zeros(len(pts), dtype=torch.long), 0, 0.01, 64)
    loss.backward()
    return float(loss.detach()), float(ball.radius.grad)


def test_stereo_term_prefers_the_true_surface():
    """Two views agree on the colours of the true sphere's surface; a larger or smaller sphere puts
    each view's colours in the wrong place for the other, and the gradient points back."""
    views = PosedViews.from_rig(sphere_views(orthogonal_rig(20.0), 64), 20.0)
    at_truth, _ = _stereo_terms(views, RADIUS)
    too_big, grad_big = _stereo_terms(views, 1.08 * RADIUS)
    too_small, grad_small = _stereo_terms(views, 0.92 * RADIUS)
    assert at_truth < 0.3 * min(too_big, too_small)
    assert grad_big > 0 > grad_small  # descent moves the radius towards the truth


def test_stereo_views_project_as_the_cameras():
    views = PosedViews.from_rig(sphere_views(orthogonal_rig(20.0), 32), 20.0)
    sv = StereoViews(views, 32, blur_start_px=4.0, blur_end_px=1.0)
    pts = torch.tensor([[0.3, 0.2, -0.1], [0.0, 0.0, 0.0]])
    g = sv.project(pts)
    for v, cam in enumerate(orthogonal_rig(20.0)):
        ref = project_points(pts.numpy(), cam, 32)  # (col, row, depth)
        np.testing.assert_allclose((g[v, :, :2].numpy() + 1) / 2 * 32, ref[:, :2], atol=1e-3)
    # pick reads point s in view[s]: the blurred colour level of view 2 at the image centre.
    centre = sv.pick(sv.levels[0], torch.zeros(4, 1, 2), torch.tensor([2]))
    torch.testing.assert_close(centre[0], sv.levels[0][2, :, 15:17, 15:17].mean((1, 2)), atol=1e-4, rtol=0)


def _rays_at_the_ball(n: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unit rays from distance 3 towards points near the ball of radius ``RADIUS``, and each ray's
    closest approach to the centre [n]."""
    g = torch.Generator().manual_seed(0)
    o = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1) * 3.0
    aim = (torch.rand(n, 3, generator=g) * 2.0 - 1.0) * 0.9
    d = torch.nn.functional.normalize(aim - o, dim=-1)
    closest = (o - (o * d).sum(-1, keepdim=True) * d).norm(dim=-1)
    return o, d, closest


def test_first_hits_are_the_ball_s_surface():
    o, d, closest = _rays_at_the_ball()
    t = first_hits(_Ball(RADIUS).sdf, o, d, 32)
    hit = closest < RADIUS - 1e-3
    assert hit.any() and (~hit).any()
    b = (o * d).sum(-1)
    t_true = -b - (b.square() - (o.square().sum(-1) - RADIUS**2)).clamp(min=0).sqrt()
    # Samples 0.1 apart; the crossing interpolated between them and refined by two steps along the ray.
    assert float((t - t_true)[hit].abs().max()) < 0.01
    assert torch.isnan(t[~hit]).all()


def test_ray_min_sdf_is_the_ray_s_distance_from_the_surface():
    """For a true SDF the least value along a ray is how far the ray passes from the surface (what
    the silhouette term reads), and its gradient reaches the field."""
    o, d, closest = _rays_at_the_ball()
    ball = _Ball(RADIUS)
    dmin, t_min, t_hit = ray_min_sdf(ball, o, d, 48, torch.Generator().manual_seed(1))
    miss = closest > RADIUS + 1e-3
    in_cube = closest < 0.95  # the closest point lies inside the cube the rays are clipped to
    assert (miss & in_cube).any()
    torch.testing.assert_close(dmin[miss & in_cube], closest[miss & in_cube] - RADIUS, atol=2e-3, rtol=0)
    assert (dmin[~miss] <= 1e-3).all() and torch.isnan(t_hit[miss]).all() and torch.isfinite(t_hit[~miss]).all()
    dmin.sum().backward()
    assert float(ball.radius.grad) == -len(dmin)  # d(|x| - r)/dr at every minimum


def _ball_grid(res: int = 64) -> torch.Tensor:
    """The ball's signed distance on the [res]^3 grid of `fourview.recon.visual_hull.grid_lookup`."""
    lin = torch.linspace(-1.0, 1.0, res)
    x, y, z = torch.meshgrid(lin, lin, lin, indexing="ij")
    return (x.square() + y.square() + z.square()).sqrt() - RADIUS


def test_hull_bounds_hold_every_point_near_the_hull_and_keep_the_chord_elsewhere():
    o, d, closest = _rays_at_the_ball(256)
    margin = 0.1
    lo, hi, meets = hull_bounds(_ball_grid(), o, d, margin)
    near, far = intersect_box(o, d, 1.0)
    assert (lo >= near).all() and (hi <= far).all() and (lo <= hi).all()
    # Points of a ray closer than the margin to the ball lie between the bounds.
    t = near[:, None] + (far - near)[:, None] * torch.linspace(0.0, 1.0, 512)
    close = (o[:, None] + t[..., None] * d[:, None]).norm(dim=-1) - RADIUS < margin - 0.02  # grid slack
    assert close.any(-1).sum() > 100
    assert ((t >= lo[:, None]) & (t <= hi[:, None]))[close].all()
    # ... and the bounds are tight: 0.1 + lookup spacing and grid slack beyond the ball's shell.
    at_lo, at_hi = (o + lo[:, None] * d).norm(dim=-1), (o + hi[:, None] * d).norm(dim=-1)
    passing = closest < RADIUS + margin - 0.05
    assert (at_lo[passing] < RADIUS + margin + 0.05).all() and (at_hi[passing] < RADIUS + margin + 0.05).all()
    # Rays that pass far from it keep their whole chord.
    far_rays = closest > RADIUS + margin + 0.05
    assert far_rays.any() and torch.equal(lo[far_rays], near[far_rays]) and torch.equal(hi[far_rays], far[far_rays])
    assert meets[passing].all() and not meets[far_rays].any()


def test_searches_between_bounds_match_the_whole_chord():
    """Between `hull_bounds`, half the samples find the same least distance and first hits as the
    whole chord does."""
    o, d, closest = _rays_at_the_ball()
    ball = _Ball(RADIUS)
    bounds = hull_bounds(_ball_grid(), o, d, 0.1)[:2]
    g = torch.Generator().manual_seed(1)
    dmin, _, t_hit = ray_min_sdf(ball, o, d, 24, g, bounds)
    ref, _, t_ref = ray_min_sdf(ball, o, d, 48, torch.Generator().manual_seed(1))
    torch.testing.assert_close(dmin, ref, atol=2e-3, rtol=0)
    assert torch.equal(torch.isnan(t_hit), torch.isnan(t_ref))
    b = (o * d).sum(-1)
    t_true = -b - (b.square() - (o.square().sum(-1) - RADIUS**2)).clamp(min=0).sqrt()
    hit = torch.isfinite(t_ref)
    # The crossing interpolated between samples: as close to the surface with half the samples.
    assert (t_hit - t_true)[hit].abs().max() <= max(0.005, float((t_ref - t_true)[hit].abs().max()))
    hits = first_hits(ball.sdf, o, d, 16, bounds=bounds)
    assert torch.equal(torch.isnan(hits), torch.isnan(t_ref))
    assert float((hits - t_true)[hit].abs().max()) < 0.01  # as `first_hits` with 32 over the chord

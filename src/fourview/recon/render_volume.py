"""Volumetric rendering of a density/colour field (stage A of the reconstructor), pure torch.

Rays are clipped to the object frame's cube ``[-bound, bound]^3`` (see `fourview.cameras`).
Along each ray, ``samples`` stratified samples (one per equal bin; the bin centre in deterministic
mode, a uniform draw from a `torch.Generator` in training) are followed by ``importance_samples``
drawn from the piecewise-constant distribution of the first pass's weights (NeRF's hierarchical
sampling; the same field serves both passes, so the first pass's evaluations are reused).

Quadrature: the samples of a ray, sorted by distance ``t``, split ``[near, far]`` at the midpoints
between neighbours, so sample ``i`` stands for an interval of length ``delta_i`` and the deltas sum
to ``far - near``. With density ``sigma_i >= 0`` (the field's, already activated, e.g. ``exp``):

    alpha_i = 1 - exp(-sigma_i delta_i),   T_i = exp(-sum_{j<i} sigma_j delta_j),   w_i = T_i alpha_i
    rgb     = sum_i w_i c_i + (1 - sum_i w_i) * background          opacity = sum_i w_i <= 1

A constant density over the whole ray is integrated exactly; a density step costs at most half a
sample spacing of optical depth.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fourview.cameras import Camera, pixel_rays
from fourview.errors import InputError

FieldFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""``field_fn(xyz [N, 3]) -> (density [N] >= 0, rgb [N, 3] in [0, 1])``, object frame."""


@dataclass(frozen=True)
class VolumeRendererConfig:
    """Settings of `render_volume` and `render_views`."""

    samples: int = 64
    """Stratified samples per ray (the first, "coarse" pass)."""
    importance_samples: int = 64
    """Extra samples per ray drawn from the first pass's weights; 0 disables hierarchical sampling."""
    chunk: int = 8192
    """Rays per `render_volume` call in `render_views` (bounds memory)."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """RGB behind the object, in [0, 1] (white: the models see renders composited on white)."""
    bound: float = 1.0
    """Half side of the cube ``[-bound, bound]^3`` that holds the field, object-frame units."""

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise InputError(f"volume renderer samples must be >= 1, got {self.samples}")
        if self.importance_samples < 0:
            raise InputError(f"volume renderer importance_samples must be >= 0, got {self.importance_samples}")
        if self.chunk < 1:
            raise InputError(f"volume renderer chunk must be >= 1, got {self.chunk}")
        if len(self.background) != 3:
            raise InputError(f"volume renderer background must be 3 values (RGB), got {self.background}")
        if not self.bound > 0:
            raise InputError(f"volume renderer bound must be > 0, got {self.bound}")


@dataclass
class VolumeRenderOutput:
    """Per-ray results of `render_volume` (R rays, S = samples + importance_samples).

    Attributes:
        rgb: [R, 3] colour composited on the background.
        opacity: [R] accumulated weight ``sum_i w_i`` in [0, 1].
        depth: [R] expected distance along the (unit) ray, ``sum_i w_i t_i``; not divided by the
            opacity, so 0 where the ray meets nothing (divide by ``opacity`` for a surface distance).
        weights: [R, S] compositing weights ``w_i`` of the samples, in ``t`` order.
        t: [R, S] sorted sample distances along each ray from its origin.
    """

    rgb: torch.Tensor
    opacity: torch.Tensor
    depth: torch.Tensor
    weights: torch.Tensor
    t: torch.Tensor


def intersect_box(origins: torch.Tensor, dirs: torch.Tensor, bound: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray interval inside the cube ``[-bound, bound]^3`` (slab method).

    Args:
        origins: [R, 3] ray origins, object frame.
        dirs: [R, 3] ray directions (unit length for distances in object-frame units).

    Returns:
        near [R], far [R]: distances along each ray, ``0 <= near <= far``; ``near == far`` for rays
        that miss the cube (or point away from it).
    """
    safe = torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12) * torch.where(dirs < 0, -1.0, 1.0), dirs)
    inv = 1.0 / safe  # [R, 3]
    t0, t1 = (-bound - origins) * inv, (bound - origins) * inv  # [R, 3]
    near = torch.minimum(t0, t1).amax(-1).clamp(min=0.0)  # [R]
    far = torch.maximum(t0, t1).amin(-1)  # [R]
    return near, torch.maximum(far, near)


def render_volume(
    field_fn: FieldFn,
    origins: torch.Tensor,
    dirs: torch.Tensor,
    cfg: VolumeRendererConfig = VolumeRendererConfig(),
    generator: torch.Generator | None = None,
) -> VolumeRenderOutput:
    """Render rays through a density/colour field by alpha compositing (see the module docstring).

    Args:
        field_fn: ``xyz [N, 3] -> (density [N] >= 0, rgb [N, 3])`` in the object frame.
        origins: [R, 3] ray origins, object frame.
        dirs: [R, 3] unit ray directions.
        cfg: renderer settings (sample counts, background, bounding cube).
        generator: None for deterministic sampling (bin centres, evenly spaced quantiles: for
            evaluation); a `torch.Generator` on the rays' device for stratified jitter (training).

    Returns:
        `VolumeRenderOutput`; differentiable w.r.t. the field's outputs (sample positions are not).
    """
    if origins.ndim != 2 or origins.shape[1] != 3 or dirs.shape != origins.shape:
        raise ValueError(f"origins and dirs must both be [R, 3], got {tuple(origins.shape)} and {tuple(dirs.shape)}")
    n_rays, dev, dtype = origins.shape[0], origins.device, origins.dtype
    near, far = intersect_box(origins, dirs, cfg.bound)  # [R], [R]

    # Pass 1: stratified samples, one per equal bin of [near, far].
    n_c = cfg.samples
    if generator is None:
        jitter = torch.full((n_rays, n_c), 0.5, device=dev, dtype=dtype)
    else:
        jitter = torch.rand((n_rays, n_c), generator=generator, device=dev, dtype=dtype)
    u = (torch.arange(n_c, device=dev, dtype=dtype) + jitter) / n_c  # [R, Nc] in (0, 1), increasing
    t = near[:, None] + (far - near)[:, None] * u  # [R, Nc]
    density, rgb = _query(field_fn, origins, dirs, t)  # [R, Nc], [R, Nc, 3]

    # Pass 2: importance samples from the first pass's weights (sample positions carry no gradient).
    if cfg.importance_samples > 0:
        with torch.no_grad():
            edges = _interval_edges(t, near, far)  # [R, Nc + 1]
            weights = _composite_weights(density.detach(), edges.diff(dim=-1))  # [R, Nc]
            t_fine = _sample_pdf(edges, weights, cfg.importance_samples, generator)  # [R, Nf]
        density_f, rgb_f = _query(field_fn, origins, dirs, t_fine)
        t, order = torch.cat([t, t_fine], dim=-1).sort(dim=-1)  # [R, S]
        density = torch.cat([density, density_f], dim=-1).gather(-1, order)  # [R, S]
        rgb = torch.cat([rgb, rgb_f], dim=-2).gather(-2, order[..., None].expand(-1, -1, 3))  # [R, S, 3]

    weights = _composite_weights(density, _interval_edges(t, near, far).diff(dim=-1))  # [R, S]
    opacity = weights.sum(-1)  # [R]
    background = torch.tensor(cfg.background, device=dev, dtype=rgb.dtype)
    color = (weights[..., None] * rgb).sum(-2) + (1.0 - opacity)[:, None] * background  # [R, 3]
    depth = (weights * t).sum(-1)  # [R]
    return VolumeRenderOutput(rgb=color, opacity=opacity, depth=depth, weights=weights, t=t)


def render_views(
    field_fn: FieldFn,
    cameras: Sequence[Camera],
    resolution: int | tuple[int, int],
    cfg: VolumeRendererConfig = VolumeRendererConfig(),
    generator: torch.Generator | None = None,
    with_alpha: bool = False,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Render whole images of a field from `fourview.cameras` cameras, ``cfg.chunk`` rays at a time.

    Gradients flow as in `render_volume` (wrap the call in ``torch.no_grad()`` for evaluation).

    Args:
        field_fn: ``xyz [N, 3] -> (density [N], rgb [N, 3])``, object frame.
        cameras: V cameras.
        resolution: ``H`` or ``(H, W)`` in pixels.
        cfg: renderer settings.
        generator: None for deterministic sampling, or a generator for stratified jitter.
        with_alpha: append the opacity as a fourth channel.
        device: where rays are built and the field is queried.

    Returns:
        [V, H, W, 3] RGB composited on ``cfg.background`` (float32, row 0 at the top), or
        [V, H, W, 4] with the opacity as channel 3 -- the colour channels stay composited, as
        the losses compare them (not straight alpha: divide ``rgb - (1 - a) * background`` by ``a``
        for that).
    """
    h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
    if h < 1 or w < 1:
        raise InputError(f"render resolution must be >= 1 pixel, got {resolution}")
    if len(cameras) == 0:
        raise InputError("render_views needs at least one camera")
    rays = [pixel_rays(cam, (h, w)) for cam in cameras]
    origins = torch.from_numpy(np.stack([o for o, _ in rays]).reshape(-1, 3)).to(device, torch.float32)  # [V*H*W, 3]
    dirs = torch.from_numpy(np.stack([d for _, d in rays]).reshape(-1, 3)).to(device, torch.float32)
    out = []
    for i in range(0, origins.shape[0], cfg.chunk):
        res = render_volume(field_fn, origins[i : i + cfg.chunk], dirs[i : i + cfg.chunk], cfg, generator)
        out.append(torch.cat([res.rgb, res.opacity[:, None]], dim=-1) if with_alpha else res.rgb)
    return torch.cat(out).view(len(cameras), h, w, 4 if with_alpha else 3)


def _query(
    field_fn: FieldFn, origins: torch.Tensor, dirs: torch.Tensor, t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Evaluate the field at ``origins + t * dirs``: t [R, N] -> density [R, N], rgb [R, N, 3]."""
    n_rays, n = t.shape
    xyz = origins[:, None, :] + t[..., None] * dirs[:, None, :]  # [R, N, 3]
    density, rgb = field_fn(xyz.reshape(-1, 3))
    if density.shape not in ((n_rays * n,), (n_rays * n, 1)) or rgb.shape != (n_rays * n, 3):
        raise ValueError(
            f"field_fn must return density [N] and rgb [N, 3] for N = {n_rays * n} points, "
            f"got {tuple(density.shape)} and {tuple(rgb.shape)}"
        )
    return density.reshape(n_rays, n), rgb.reshape(n_rays, n, 3)


def _interval_edges(t: torch.Tensor, near: torch.Tensor, far: torch.Tensor) -> torch.Tensor:
    """Sorted samples t [R, N] -> edges [R, N + 1] of the intervals they stand for (midpoint split)."""
    mids = 0.5 * (t[:, 1:] + t[:, :-1])  # [R, N - 1]
    return torch.cat([near[:, None], mids, far[:, None]], dim=-1)


def _composite_weights(density: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """density, delta [R, N] -> weights [R, N] = T_i (1 - exp(-sigma_i delta_i))."""
    tau = density * delta  # [R, N] optical depth per interval
    # Transmittance from cumulative sums in log space: stable where a product of (1 - alpha) underflows.
    trans = torch.exp(-torch.cumsum(torch.cat([torch.zeros_like(tau[:, :1]), tau[:, :-1]], dim=-1), dim=-1))
    return trans * -torch.expm1(-tau)


def _sample_pdf(edges: torch.Tensor, weights: torch.Tensor, n: int, generator: torch.Generator | None) -> torch.Tensor:
    """Draw n distances per ray from the piecewise-constant density given by weights over edges.

    Args:
        edges: [R, N + 1] interval edges, increasing.
        weights: [R, N] non-negative interval weights (a small floor keeps empty rays uniform).
        n: samples per ray.
        generator: None for evenly spaced quantiles ``(k + 0.5) / n``, else stratified uniform draws.

    Returns:
        [R, n] distances, increasing along each ray.
    """
    n_rays, n_bins = weights.shape
    w = weights + 1e-5 * weights.sum(-1, keepdim=True).clamp(min=1e-3) / n_bins
    cdf = torch.cumsum(w / w.sum(-1, keepdim=True), dim=-1)  # [R, N]
    cdf = torch.cat([torch.zeros_like(cdf[:, :1]), cdf], dim=-1).contiguous()  # [R, N + 1]
    if generator is None:
        jitter = torch.full((n_rays, n), 0.5, device=edges.device, dtype=edges.dtype)
    else:
        jitter = torch.rand((n_rays, n), generator=generator, device=edges.device, dtype=edges.dtype)
    u = (torch.arange(n, device=edges.device, dtype=edges.dtype) + jitter) / n  # [R, n]
    idx = torch.searchsorted(cdf, u.contiguous(), right=True)  # [R, n] in 1..N+1
    below = (idx - 1).clamp(0, n_bins - 1)
    c_lo, c_hi = cdf.gather(-1, below), cdf.gather(-1, below + 1)
    e_lo, e_hi = edges.gather(-1, below), edges.gather(-1, below + 1)
    frac = ((u - c_lo) / (c_hi - c_lo).clamp(min=1e-12)).clamp(0.0, 1.0)
    return e_lo + frac * (e_hi - e_lo)

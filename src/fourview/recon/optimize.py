"""Fitting a triplane field to posed views from nothing: the job of ``fourview reconstruct --optimize``.

`optimize_field` fits a triplane SDF + colour field (split planes: geometry planes decoded to a
signed distance, texture planes decoded to sRGB; the decoder of `fourview.recon.decoder`) to RGBA
views with known cameras (`fourview.views.PosedViews`: the four rig views, or images described by a
``cameras.json`` of the dataset renderer), from nothing but the views:

1. start: the field is regressed onto a start shape, the views' visual hull with its signed
   distance blurred (``init="hull"``, `fourview.recon.visual_hull`) or a sphere (``"sphere"``).
   Where every view looks down on the object, the hull is cut below the lowest surface point the
   views see (``flat_bottom``): views from above cannot carve the keel it hangs under an object's
   bottom rim;
2. fit, coarse to fine (geometry planes at half resolution for the first ``coarse_fraction`` of the
   steps, then upsampled; the silhouette's edge width shrinks from ``edge_start_px`` to
   ``edge_end_px`` pixels) with Adam on random rays of the views each step (half of them near the
   silhouettes' outlines), sampled where they pass near the visual hull (``hull_margin``). The
   terms (`fourview.recon.optimize_losses`): silhouette (the least SDF along a ray as an
   anti-aliased coverage), colour at the first zero crossing of rays inside the
   silhouette (the surface point carries no gradient: colour never bends the shape), eikonal,
   smoothness (a curvature penalty, only near the hull's thick parts, ``smooth_hull_radius``: thin
   handles, rims and legs keep their silhouettes' shape), and after the first
   ``stereo_start_fraction`` of the steps the two-view stereo term, which pins the shape between
   two views where the object has texture (a box's faces stay flat instead of the pillow the
   smoothness prior alone makes);
3. texture: geometry frozen, the texture planes are fitted to every input pixel's colour at its
   ray's first surface hit (views at up to 256 px), weighted by the cosine to the 4th between the
   ray and the normal, so the view that faces a point sets its colour.

`fourview.recon.refine` fine-tunes a trained reconstructor's prediction on the views instead; both
return an `OptimizeResult`. Cameras follow `fourview.cameras` (OpenGL axes, row 0 at the top).
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from tqdm import tqdm

from fourview.errors import InputError
from fourview.recon.config import ReconConfig
from fourview.recon.decoder import DecoderConfig, TriplaneDecoder, TriplaneField
from fourview.recon.optimize_losses import (
    StereoViews,
    eikonal_and_smoothness,
    first_hits,
    follow_surface,
    hull_bounds,
    ray_min_sdf,
    resize_views,
    silhouette_loss,
    stereo_loss,
    view_rays,
)
from fourview.recon.triplane import sample_triplane
from fourview.recon.unet import UNetConfig
from fourview.recon.visual_hull import HullField, carve_visual_hull, grid_lookup, hull_sdf
from fourview.views import PosedViews

__all__ = ["OptimizeConfig", "OptimizeResult", "check_view_set", "optimize_field"]


def check_view_set(views: PosedViews) -> None:
    """Reject views that cannot be fitted: views without a silhouette.

    Raises:
        InputError: a view that is fully transparent (no object) or fully opaque (no background,
            so no silhouette: give RGBA with a transparent background).
    """
    views.check_objects()
    for name, img in zip(views.names, views.images):
        if float(img[..., 3].min()) >= 1.0:
            raise InputError(
                f"view {name} is fully opaque: optimisation needs a silhouette (RGBA with a transparent background)"
            )


@dataclass(frozen=True)
class OptimizeConfig:
    """Settings of `optimize_field` (the defaults' measurements: docs/benchmarks.md)."""

    steps: int = 480
    """Optimisation steps after the start (each: ``rays_per_step`` rays of the views)."""
    resolution: int = 128
    """Side of the images the losses see, pixels (views are resized to it, area filter)."""
    plane_resolution: int = 64
    """Side of the geometry planes at the end (half of it during the coarse stage)."""
    plane_channels: int = 8
    """Channels of the geometry planes."""
    texture_resolution: int = 256
    """Side of the texture (colour) planes."""
    texture_channels: int = 8
    """Channels of the texture planes."""
    hidden_channels: int = 32
    """Width of the decoder's hidden layers."""
    hidden_layers: int = 2
    """Hidden layers of each decoder MLP."""
    rays_per_step: int = 4096
    """Rays per step, over all views; half of them near the silhouettes' outlines."""
    samples_per_ray: int = 20
    """Samples per ray for the least SDF along it and its first surface hit (then 8 more around the
    smallest), between the bounds ``hull_margin`` sets; rays that pass farther from the hull take a
    third as many (at least 8) over their chord through the cube."""
    hull_margin: float | None = 0.1
    """Where the samples along a ray go: between the first and the last point of the ray within
    this distance of the views' visual hull (object units; a fitted surface lies inside the hull),
    so that they are dense where the surface can be, while the rays that pass farther keep their
    whole chord (they keep stray surface away). None: every ray's whole chord, ``samples_per_ray``
    samples each."""
    texture_steps: int = 120
    """Steps of the final texture stage: geometry frozen, the texture planes fitted to the colours
    of every input pixel (at up to ``texture_view_resolution``) at its ray's first surface hit."""
    texture_view_resolution: int = 256
    """Largest side of the views in the texture stage, pixels."""
    init: Literal["hull", "sphere"] = "hull"
    """Start shape: the views' blurred visual hull, or a sphere of radius 0.5."""
    flat_bottom: bool = True
    """Where every view looks down on the object (elevation >= 5 degrees), the start shape ends at
    the lowest surface point any view sees: views from above cannot carve below an object's bottom
    rim, so the visual hull hangs a keel there, which the fit would keep. Objects that stand on a
    flat bottom lose the keel; a round bottom loses the cap below its lowest visible point."""
    init_steps: int = 150
    """Steps regressing the field onto the start shape."""
    coarse_fraction: float = 0.4
    """Fraction of the steps with the geometry planes at half resolution."""
    lr: float = 0.01
    """Adam learning rate of the planes (the decoder's is a fifth of it)."""
    silhouette_weight: float = 1.0
    color_weight: float = 0.5
    eikonal_weight: float = 0.05
    smooth_weight: float = 0.3
    """Weight of the normal-consistency (curvature) penalty: the prior on the shape between the
    views (much less leaves the visual hull's boxes)."""
    smooth_scale: float = 0.02
    """Spread of the point pairs whose normals the smoothness term compares, object units (wider
    rounds a ball better but erases a table's legs)."""
    smooth_hull_radius: float = 0.12
    """The smoothness term acts only near the visual hull's thick parts: those that hold a ball of
    this radius, object units (a morphological opening of the 64^3 hull). Thin parts (a mug's
    handle, a pan's rim, legs) keep the shape their silhouettes give them (0: everywhere). At 0.12
    a table top's keel (the wedge the views from above leave under a thin top) is thin too, and
    the prior does not eat notches into the top's rim."""
    photo_consistency: bool = False
    """In the fine stage, let the colour loss move the surface (its hit points follow the SDF
    along their rays, IDR's implicit differentiation): the views' colours then pin down the shape
    where two views see it. Off by default: the stereo term does this better."""
    stereo_weight: float = 1.0
    """Weight of the two-view photo-consistency (stereo) term: a surface point that one view sees
    and another also sees (facing it, unoccluded, inside its silhouette) must have the same colour
    in both images; the point moves along the first view's ray (implicit differentiation, IDR), so
    texture seen by two views pins the shape between them (0 turns it off)."""
    stereo_rays: int = 1024
    """Surface points of the stereo term per step."""
    stereo_resolution: int = 256
    """Side of the images the stereo term samples, pixels."""
    stereo_blur_start_px: float = 4.0
    """Gaussian blur (sigma, pixels at ``stereo_resolution``) of those images at the start: a wide
    basin for shapes that are far off ..."""
    stereo_blur_end_px: float = 1.0
    """... and at the end."""
    stereo_start_fraction: float = 0.25
    """Fraction of the steps before the stereo term starts. From the first step, where the shape
    is still the visual hull, periodic texture (a mug's stripes) locked onto wrong depths."""
    edge_start_px: float = 2.0
    """Width of the modelled silhouette edge at the start, pixels (sigmoid scale)."""
    edge_end_px: float = 0.25
    """... and at the end (1/4: the slope of a box-filtered, anti-aliased edge)."""
    seed: int = 0
    """Seeds the start planes, the decoder's initial weights and every random draw of the fit."""
    num_threads: int = 0
    """Threads of the fit: its searches along rays (the SDF without autograd, most of its work) run
    on this many, in chunks of points; torch's own ops on one (they are small: more threads only
    wait on each other on a shared CPU), restored after. 0: as many as torch's setting."""

    def __post_init__(self) -> None:
        positive = (
            "steps", "resolution", "plane_resolution", "plane_channels", "texture_resolution", "texture_channels",
            "hidden_channels", "hidden_layers", "rays_per_step", "samples_per_ray",
        )  # fmt: skip
        for name in positive:
            if getattr(self, name) < 1:
                raise InputError(f"optimize {name.replace('_', ' ')} must be >= 1, got {getattr(self, name)}")
        if self.resolution < 16:
            raise InputError(f"optimize resolution must be >= 16 pixels, got {self.resolution}")
        if self.plane_resolution % 2 or self.plane_resolution < 4:
            raise InputError(f"plane resolution must be even and >= 4, got {self.plane_resolution}")
        if self.num_threads < 0 or self.texture_steps < 0 or self.init_steps < 0:
            raise InputError("num_threads, texture_steps and init_steps must be >= 0")
        if self.init not in ("hull", "sphere"):
            raise InputError(f"init must be 'hull' or 'sphere', got {self.init!r}")
        if not 0.0 <= self.coarse_fraction < 1.0:
            raise InputError(f"coarse fraction must be in [0, 1), got {self.coarse_fraction}")
        if self.stereo_weight < 0 or self.stereo_rays < 1 or self.stereo_resolution < 16:
            raise InputError("stereo weight must be >= 0, stereo rays >= 1 and stereo resolution >= 16")
        if not (self.stereo_blur_start_px > 0 and self.stereo_blur_end_px > 0):
            raise InputError("stereo blur widths must be positive")
        if self.smooth_hull_radius < 0:
            raise InputError(f"smooth hull radius must be >= 0, got {self.smooth_hull_radius}")
        if self.hull_margin is not None and self.hull_margin < 0:
            raise InputError(f"hull margin must be >= 0 (or None), got {self.hull_margin}")
        if not self.smooth_scale > 0:
            raise InputError(f"smooth scale must be positive, got {self.smooth_scale}")
        if not 0.0 <= self.stereo_start_fraction < 1.0:
            raise InputError(f"stereo start fraction must be in [0, 1), got {self.stereo_start_fraction}")
        if not (self.edge_start_px > 0 and self.edge_end_px > 0 and self.lr > 0):
            raise InputError("edge widths and the learning rate must be positive")


@dataclass
class OptimizeResult:
    """A fitted (or refined) field.

    Attributes:
        field: the field (`TriplaneField`), ready for export.
        config: the `ReconConfig` that `fourview.recon.saved_field.save_field` stores with it (for an
            optimised field its U-Net part only sizes the planes; no U-Net made them).
        history: ``{"step", "loss", <terms>}`` every 10 steps.
        time_s: wall-clock seconds of the job.
    """

    field: TriplaneField
    config: ReconConfig
    history: list[dict] = field(default_factory=list)
    time_s: float = 0.0

    @property
    def final_loss(self) -> float:
        return self.history[-1]["loss"] if self.history else float("nan")


_SEARCH_CHUNK = 8192
"""Points per call of the field's SDF without autograd: the decoder's activations of one chunk stay
in the CPU's cache (one call on a whole step's samples is memory-bound)."""


class _Field:
    """The triplane SDF + colour field being fitted (split planes, concat merge)."""

    def __init__(
        self,
        cfg: OptimizeConfig,
        planes: torch.Tensor,
        generator: torch.Generator,
        pool: ThreadPoolExecutor | None = None,
    ) -> None:
        self.cfg = cfg
        self.pool = pool
        # The decoder's weights come from a stream of their own, seeded as the fit is.
        decoder_gen = torch.Generator().manual_seed(cfg.seed)
        self.decoder = TriplaneDecoder(self.decoder_config(cfg), cfg.plane_channels, cfg.texture_channels, decoder_gen)
        self.planes = planes.requires_grad_(True)  # [1, 3, C, R, R]
        tex = 0.05 * torch.randn(1, 3, cfg.texture_channels, cfg.texture_resolution, cfg.texture_resolution,
                                 generator=generator)  # fmt: skip
        self.texture_planes = tex.requires_grad_(True)

    @staticmethod
    def decoder_config(cfg: OptimizeConfig) -> DecoderConfig:
        return DecoderConfig(hidden_channels=cfg.hidden_channels, hidden_layers=cfg.hidden_layers, geometry="sdf")

    def sdf(self, xyz: torch.Tensor) -> torch.Tensor:
        """[N, 3] -> [N] signed distance.

        Without autograd (the searches along rays, most of the fit's work), in chunks of
        `_SEARCH_CHUNK` points, on the pool's threads when there is one: the same numbers.
        """
        if torch.is_grad_enabled() or len(xyz) <= _SEARCH_CHUNK:
            return self._sdf(xyz)
        chunks = xyz.split(_SEARCH_CHUNK)
        if self.pool is None:
            return torch.cat([self._sdf(c) for c in chunks])
        return torch.cat(list(self.pool.map(self._sdf_no_grad, chunks)))

    def _sdf(self, xyz: torch.Tensor) -> torch.Tensor:
        feats = sample_triplane(self.planes, xyz[None])[0]  # [N, 3, C]
        return self.decoder.geometry_mlp(feats.flatten(-2))[..., 0]

    @torch.no_grad()  # autograd's mode is per thread
    def _sdf_no_grad(self, xyz: torch.Tensor) -> torch.Tensor:
        return self._sdf(xyz)

    def color(self, xyz: torch.Tensor) -> torch.Tensor:
        """[N, 3] -> [N, 3] sRGB."""
        feats = sample_triplane(self.texture_planes, xyz[None])[0]  # [N, 3, Ct]
        return torch.sigmoid(self.decoder.texture_mlp(feats.flatten(-2)))

    def gradient(self, xyz: torch.Tensor, h: float) -> torch.Tensor:
        """[N, 3] -> [N, 3] SDF gradient by central differences (differentiable w.r.t. the field)."""
        eye = torch.eye(3, dtype=xyz.dtype) * h
        pts = torch.cat([xyz[:, None] + eye, xyz[:, None] - eye], dim=1).reshape(-1, 3)  # [N * 6, 3]
        v = self.sdf(pts).reshape(-1, 2, 3)
        return (v[:, 0] - v[:, 1]) / (2.0 * h)

    def parameters(self) -> list[dict]:
        return [
            {"params": [self.planes], "lr": self.cfg.lr},
            {"params": [self.texture_planes], "lr": 2.0 * self.cfg.lr},
            {"params": list(self.decoder.parameters()), "lr": self.cfg.lr / 5.0},
        ]

    def upsample(self, resolution: int) -> None:
        """Geometry planes to ``resolution`` (bilinear; the field stays about the same)."""
        p = self.planes.detach()[0]  # [3, C, r, r]
        up = F.interpolate(p, size=(resolution, resolution), mode="bilinear", align_corners=False)
        self.planes = up[None].contiguous().requires_grad_(True)

    def recon_config(self, view_resolution: int) -> ReconConfig:
        cfg = self.cfg
        tex_r, geo_r = cfg.texture_resolution, self.planes.shape[-1]
        down = max(0, int(round(math.log2(tex_r / geo_r)))) if tex_r >= geo_r and tex_r % geo_r == 0 else 0
        unet = UNetConfig(
            view_resolution=view_resolution, resolution=tex_r, channels=(cfg.texture_channels,) * (down + 1),
            attention_resolutions=(), plane_channels=cfg.plane_channels, split_planes=True,
            texture_channels=cfg.texture_channels, geometry_downsample=down,
        )  # fmt: skip
        return ReconConfig(unet=unet, decoder=self.decoder_config(cfg), renderer="dmtet",
                           render_resolution=cfg.resolution, tet_grid_resolution=geo_r)  # fmt: skip

    def triplane_field(self) -> TriplaneField:
        self.decoder.eval()
        return TriplaneField(self.decoder, self.planes.detach()[0], self.texture_planes.detach()[0])


def _visual_hull(views: PosedViews, alpha: torch.Tensor) -> np.ndarray:
    """The views' visual hull on the 64^3 grid of `visual_hull.carve_visual_hull`: [64, 64, 64] bool."""
    occ = carve_visual_hull(alpha, torch.from_numpy(views.c2w), torch.from_numpy(views.fov_deg), 64)
    if not occ.any():
        raise InputError("the views' silhouettes have no common volume: do the cameras match the images?")
    return occ


def _flat_bottom(views: PosedViews, alpha: torch.Tensor, occ: np.ndarray) -> np.ndarray:
    """The hull ``occ`` [R, R, R] without what lies below the lowest surface point any view sees
    (see `OptimizeConfig.flat_bottom`); unchanged unless every camera looks down on the object.

    The seen points are where the rays of the silhouettes' pixels (``alpha`` [V, H, W] > 0.5)
    first enter the hull. The cut lies below all of them, so every silhouette ray keeps the point
    where it enters: the silhouettes stay what they were. (From below, a view sees the bottom and
    its silhouette carves it; there is no keel to cut.)
    """
    cam = views.c2w[:, :3, 3]  # [V, 3] camera centres, object frame (+Y up)
    if not (cam[:, 1] > np.linalg.norm(cam, axis=1) * math.sin(math.radians(5.0))).all():
        return occ
    hull = HullField(torch.from_numpy(hull_sdf(occ)))
    o, d = view_rays(views, alpha.shape[1:])
    keep = alpha.reshape(-1) > 0.5
    o, d = o[keep], d[keep]
    t = first_hits(hull.sdf, o, d, 2 * occ.shape[0])
    ok = torch.isfinite(t)
    if not ok.any():
        return occ
    res = occ.shape[0]
    lowest = float((o[ok, 1] + t[ok] * d[ok, 1]).min()) - 1.0 / (res - 1)  # half a voxel of slack
    out = occ.copy()
    out[:, np.linspace(-1.0, 1.0, res) < lowest, :] = False  # [ix, iy, iz]
    return out


def _thick_parts(occ: np.ndarray, radius: float) -> torch.Tensor:
    """Where the hull ``occ`` [R, R, R] holds a ball of ``radius`` (object units), widened by two
    voxels so that it covers the surface band: [R, R, R] float 0/1 for `visual_hull.grid_lookup`."""
    r = max(1, round(radius * (occ.shape[0] - 1) / 2.0))
    z, y, x = np.mgrid[-r : r + 1, -r : r + 1, -r : r + 1]
    opened = ndimage.binary_opening(occ, structure=z**2 + y**2 + x**2 <= r * r)
    return torch.from_numpy(ndimage.binary_dilation(opened, iterations=2).astype(np.float32))


def _start_target(cfg: OptimizeConfig, occ: np.ndarray | None):
    """The start shape's SDF as a function of [N, 3] points, and points near its surface [M, 3]."""
    if cfg.init == "sphere":
        return (lambda x: x.norm(dim=-1) - 0.5), None
    res = occ.shape[0]
    grid = torch.from_numpy(hull_sdf(occ, smooth_voxels=1.0))
    lin = torch.linspace(-1.0, 1.0, res)
    near = grid.abs() < 2.5 * 2.0 / (res - 1)
    idx = near.nonzero()
    surface = lin[idx]  # [M, 3]
    return (lambda x: grid_lookup(grid, x)), surface


def _search_rays(
    fld: _Field,
    o: torch.Tensor,
    d: torch.Tensor,
    bounds: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
    n: int,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`ray_min_sdf` of a step's rays [R, 3]. With ``bounds`` (lo, hi, meets [R] of `hull_bounds`),
    the rays that pass near the hull take ``n`` samples between lo and hi, the others a third as many
    over their chord: they only keep stray surface away, far from where the fit's surface is."""
    if bounds is None:
        return ray_min_sdf(fld, o, d, n, gen)
    lo, hi, meets = bounds
    near_hull, away = meets.nonzero()[:, 0], (~meets).nonzero()[:, 0]
    parts = []
    if len(near_hull):
        parts.append(ray_min_sdf(fld, o[near_hull], d[near_hull], n, gen, (lo[near_hull], hi[near_hull])))
    if len(away):
        parts.append(ray_min_sdf(fld, o[away], d[away], max(8, n // 3), gen))
    inverse = torch.empty_like(meets, dtype=torch.long)
    inverse[torch.cat([near_hull, away])] = torch.arange(len(meets))
    return tuple(torch.cat(group)[inverse] for group in zip(*parts))


def _fit_texture(
    fld: _Field, views: PosedViews, cfg: OptimizeConfig, gen: torch.Generator, bar, hull: torch.Tensor | None
) -> list[dict]:
    """Texture stage: fit the texture planes to the views' pixels at their first hits (geometry frozen).

    Each pixel's colour is a target at its ray's first surface point, weighted by how squarely the
    view sees that point (cosine to the 4th, as `fourview.recon.visual_hull.ProjectedColors`) so that
    grazing views, whose pixels land imprecisely, give way to the view facing the surface.
    """
    res = min(cfg.texture_view_resolution, views.resolution[0])
    alpha, rgb = resize_views(views.images, res)
    v, h, w = alpha.shape
    o, d = view_rays(views, (h, w))
    keep = alpha.reshape(-1) > 0.99
    o, d, target = o[keep], d[keep], rgb.reshape(-1, 3)[keep]
    bounds = None if hull is None else hull_bounds(hull, o, d, cfg.hull_margin)[:2]
    t = first_hits(fld.sdf, o, d, cfg.samples_per_ray, bounds=bounds)
    ok = torch.isfinite(t)
    pts, target, d = (o + t[:, None] * d)[ok], target[ok], d[ok]
    if len(pts) == 0:
        return []
    with torch.no_grad():
        normals = torch.cat(
            [F.normalize(fld.gradient(c, 1.0 / cfg.plane_resolution), dim=-1) for c in pts.split(8192)]
        )
    weight = (-(normals * d).sum(-1)).clamp(min=0.0) ** 4 + 1e-3  # [N]
    groups = [
        {"params": [fld.texture_planes], "lr": 2.0 * cfg.lr},
        {"params": list(fld.decoder.texture_mlp.parameters()), "lr": cfg.lr / 5.0},
    ]
    opt = torch.optim.Adam(groups, fused=True)
    history = []
    for step in range(cfg.texture_steps):
        decay = 0.1 ** (step / max(1, cfg.texture_steps))
        for g, base in zip(opt.param_groups, (2.0 * cfg.lr, cfg.lr / 5.0)):
            g["lr"] = base * decay
        ids = torch.randint(len(pts), (cfg.rays_per_step * 2,), generator=gen)
        err = (fld.color(pts[ids]) - target[ids]).square().sum(-1)
        loss = (weight[ids] * err).sum() / weight[ids].sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.update()
        if step % 10 == 0 or step == cfg.texture_steps - 1:
            history.append(
                {"step": cfg.steps + step + 1, "loss": float(loss.detach()), "texture": float(loss.detach())}
            )
            bar.set_postfix(texture=f"{float(loss.detach()):.4f}")
    return history


def optimize_field(
    views: PosedViews, config: OptimizeConfig = OptimizeConfig(), progress: bool = False
) -> OptimizeResult:
    """Fit a triplane SDF + colour field to posed views (see the module docstring).

    Args:
        views: the views and their cameras (`fourview.views.PosedViews`).
        config: schedule, sizes and loss weights.
        progress: show a progress bar with the loss (tqdm, on stderr).

    Returns:
        `OptimizeResult` with the field (SDF decoder, object frame, zero level = surface).

    Raises:
        InputError: views `check_view_set` rejects, or silhouettes with no common volume.
    """
    check_view_set(views)
    threads = torch.get_num_threads()
    workers = config.num_threads or threads
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(workers) if workers > 1 else nullcontext() as pool:
            return _optimize_field(views, config, progress, pool)
    finally:
        torch.set_num_threads(threads)


def _optimize_field(
    views: PosedViews, cfg: OptimizeConfig, progress: bool, pool: ThreadPoolExecutor | None
) -> OptimizeResult:
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(cfg.seed)
    alpha, rgb = resize_views(views.images, cfg.resolution)  # [V, H, W], [V, H, W, 3]
    v, h, w = alpha.shape
    origins, dirs = view_rays(views, (h, w))  # [V*H*W, 3]
    alpha_f, rgb_f = alpha.reshape(-1), rgb.reshape(-1, 3)
    px_angle = 2.0 * torch.tan(torch.deg2rad(torch.from_numpy(views.fov_deg).float()) / 2.0) / h  # [V]
    px_angle = px_angle.repeat_interleave(h * w)  # [V*H*W] pixel footprint per unit depth
    # Pixels near an outline (alpha varies within 2 pixels): half the rays of each step.
    a4 = alpha[:, None]
    band = (F.max_pool2d(a4, 5, 1, 2) - (-F.max_pool2d(-a4, 5, 1, 2)))[:, 0] > 0.02  # [V, H, W]
    band_idx = band.reshape(-1).nonzero()[:, 0]
    n_pix = alpha_f.numel()

    coarse_r = cfg.plane_resolution // 2 if cfg.coarse_fraction > 0 else cfg.plane_resolution
    planes = 0.05 * torch.randn(1, 3, cfg.plane_channels, coarse_r, coarse_r, generator=gen)
    fld = _Field(cfg, planes, gen, pool)

    # 1. Start shape.
    need_hull = cfg.init == "hull" or cfg.smooth_hull_radius > 0 or cfg.hull_margin is not None
    occ = _visual_hull(views, alpha) if need_hull else None
    # The whole hull (before the flat bottom's cut: the fit may grow below it) bounds the samples.
    hull_grid = torch.from_numpy(hull_sdf(occ)) if cfg.hull_margin is not None else None
    bounds_all = None if hull_grid is None else hull_bounds(hull_grid, origins, dirs, cfg.hull_margin)  # [V*H*W] each
    if occ is not None and cfg.flat_bottom:
        occ = _flat_bottom(views, alpha, occ)
    target_fn, surface = _start_target(cfg, occ)
    thick = _thick_parts(occ, cfg.smooth_hull_radius) if cfg.smooth_hull_radius > 0 else None
    opt = torch.optim.Adam(fld.parameters(), fused=True)
    history: list[dict] = []
    bar = tqdm(
        total=cfg.init_steps + cfg.steps + cfg.texture_steps,
        desc="optimize",
        unit="step",
        disable=not progress,
        leave=False,
    )
    for _ in range(cfg.init_steps):
        pts = torch.rand(4096, 3, generator=gen) * 2.0 - 1.0
        if surface is not None and len(surface):
            pick = surface[torch.randint(len(surface), (4096,), generator=gen)]
            pts = torch.cat([pts, pick + 0.03 * torch.randn(pick.shape, generator=gen)])
        else:
            pts = torch.cat([pts, F.normalize(torch.randn(4096, 3, generator=gen), dim=-1) * 0.5])
        pts = pts.clamp(-1.0, 1.0)
        loss = (fld.sdf(pts) - target_fn(pts)).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.update()
    history.append({"step": 0, "loss": float(loss.detach()), "init_l1": float(loss.detach())})

    # 2. Fit to the views.
    coarse_steps = int(round(cfg.coarse_fraction * cfg.steps))
    h_fd = 1.0 / cfg.plane_resolution
    n_band = min(cfg.rays_per_step // 2, len(band_idx))
    stereo = (
        StereoViews(views, cfg.stereo_resolution, cfg.stereo_blur_start_px, cfg.stereo_blur_end_px)
        if cfg.stereo_weight > 0 and views.num_views > 1
        else None
    )
    ray_view = torch.arange(v).repeat_interleave(h * w)  # [V*H*W] view of each ray
    stereo_start = int(round(cfg.stereo_start_fraction * cfg.steps))
    for step in range(cfg.steps):
        if step == coarse_steps and coarse_r != cfg.plane_resolution:
            fld.upsample(cfg.plane_resolution)
            opt = torch.optim.Adam(fld.parameters(), fused=True)
        frac = step / max(1, cfg.steps - 1)
        edge = cfg.edge_start_px * (cfg.edge_end_px / cfg.edge_start_px) ** frac
        decay = 1.0 if frac < 0.7 else 0.1 ** ((frac - 0.7) / 0.3)
        for g, base in zip(opt.param_groups, (cfg.lr, 2.0 * cfg.lr, cfg.lr / 5.0)):
            g["lr"] = base * decay

        ids = torch.cat([
            band_idx[torch.randint(len(band_idx), (n_band,), generator=gen)],
            torch.randint(n_pix, (cfg.rays_per_step - n_band,), generator=gen),
        ])  # fmt: skip
        o, d = origins[ids], dirs[ids]
        bounds = None if bounds_all is None else tuple(b[ids] for b in bounds_all)
        dmin, t_min, t_hit = _search_rays(fld, o, d, bounds, cfg.samples_per_ray, gen)
        l_sil = silhouette_loss(dmin, t_min, px_angle[ids], edge, alpha_f[ids])

        hit = (alpha_f[ids] > 0.99) & torch.isfinite(t_hit)
        surf = (o[hit] + t_hit[hit, None] * d[hit]).detach()  # [M, 3]
        col_pts = surf
        if cfg.photo_consistency and step >= coarse_steps and len(surf):
            # The hit point as a function of the SDF (implicit differentiation, IDR): moving the
            # surface moves the point along its ray, so colours the views disagree on bend the shape.
            with torch.no_grad():
                n0 = fld.gradient(surf, h_fd)
                cos = (n0 * d[hit]).sum(-1)
                cos = torch.where(cos < 0, cos.clamp(max=-0.2), cos.clamp(min=0.2))
            col_pts = follow_surface(fld, surf, d[hit], cos)
        l_col = (fld.color(col_pts) - rgb_f[ids][hit]).square().mean() if len(surf) else torch.zeros(())

        l_eik, l_smooth = eikonal_and_smoothness(fld, surf, h_fd, cfg.smooth_scale, gen, thick)
        l_stereo = torch.zeros(())
        if stereo is not None and len(surf) and step >= stereo_start:
            pick = torch.randperm(len(surf), generator=gen)[: cfg.stereo_rays]
            sfrac = (step - stereo_start) / max(1, cfg.steps - stereo_start)
            level = min(len(stereo.levels) - 1, int(sfrac * len(stereo.levels)))
            l_stereo = stereo_loss(fld, stereo, surf[pick], d[hit][pick], ray_view[ids][hit][pick], level, h_fd,
                                   cfg.samples_per_ray)  # fmt: skip
        loss = (cfg.silhouette_weight * l_sil + cfg.color_weight * l_col + cfg.eikonal_weight * l_eik
                + cfg.smooth_weight * l_smooth + cfg.stereo_weight * l_stereo)  # fmt: skip
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.update()
        if step % 10 == 0 or step == cfg.steps - 1:
            rec = {"step": step + 1, **{k: float(t.detach()) for k, t in (("loss", loss), ("silhouette", l_sil),
                   ("color", l_col), ("eikonal", l_eik), ("smooth", l_smooth), ("stereo", l_stereo))}}  # fmt: skip
            history.append(rec)
            bar.set_postfix(loss=f"{rec['loss']:.4f}", sil=f"{rec['silhouette']:.4f}")
    if cfg.texture_steps > 0:
        history += _fit_texture(fld, views, cfg, gen, bar, hull_grid)
    bar.close()
    return OptimizeResult(fld.triplane_field(), fld.recon_config(h), history, time.perf_counter() - start)

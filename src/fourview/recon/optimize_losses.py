"""The loss terms of the per-object fit (`fourview.recon.optimize`), and the views as they see them.

The fitted field is an SDF (`SDFField`: ``sdf`` and a finite-difference ``gradient``); every term
reads it along rays of the views (`view_rays`, pixel centres of `fourview.views.PosedViews`):

- silhouette (`ray_min_sdf`, `silhouette_loss`): a ray's coverage is ``sigmoid(-d / (e * p))``
  where ``d`` is the least signed distance along the ray (stratified samples where the ray passes
  near the visual hull, `hull_bounds`, refined around the smallest by 8 more), ``p`` the pixel's
  footprint at that depth and ``e`` the edge width in pixels. For a true SDF, ``d`` is how far the
  ray passes from the surface, so with ``e = 1/4`` this is the coverage of an anti-aliased
  (box-filtered) outline: the inputs' soft edges are matched, not thresholded;
- eikonal and smoothness (`eikonal_and_smoothness`): ``(|grad sdf| - 1)^2`` near the surface and
  in the cube, so that the SDF stays a distance (which the silhouette model needs); and
  ``|n(x) - n(x + eps)|^2`` between normals of nearby points near the surface, a curvature penalty
  that rounds what no silhouette pins down while the silhouettes hold the outline;
- stereo (`StereoViews`, `stereo_loss`): a surface point seen by its ray's view and by a second
  view (facing it, unoccluded, inside its silhouette) should have one colour in both images
  (blurred, coarse to fine). The point moves along its ray with the surface (`follow_surface`,
  IDR's implicit differentiation), so texture seen by two views sets the depth between them.

Gradients of the SDF come from central differences, because the fast triplane sampler has no
double backward (`fourview.recon.triplane`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from fourview.recon.losses import gaussian_window
from fourview.recon.model import camera_rays
from fourview.recon.render_volume import intersect_box
from fourview.recon.visual_hull import grid_lookup, project, sample_images
from fourview.views import PosedViews

__all__ = [
    "SDFField",
    "StereoViews",
    "eikonal_and_smoothness",
    "first_hits",
    "follow_surface",
    "gaussian_blur",
    "hull_bounds",
    "ray_min_sdf",
    "resize_views",
    "silhouette_loss",
    "stereo_loss",
    "view_rays",
]


class SDFField(Protocol):
    """What the loss terms read of the fitted field."""

    def sdf(self, xyz: torch.Tensor) -> torch.Tensor:
        """[N, 3] -> [N] signed distance, negative inside."""
        ...

    def gradient(self, xyz: torch.Tensor, h: float) -> torch.Tensor:
        """[N, 3] -> [N, 3] SDF gradient by central differences of step ``h``."""
        ...


# ---------------------------------------------------------------------------------------------
# The views as the losses see them


def resize_views(images: np.ndarray, res: int) -> tuple[torch.Tensor, torch.Tensor]:
    """RGBA [V, H, W, 4] -> (alpha [V, r, r], straight rgb [V, r, r, 3]) at ``res`` rows, area filter."""
    t = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).permute(0, 3, 1, 2)  # [V, 4, H, W]
    h, w = t.shape[-2:]
    size = (res, max(1, round(res * w / h)))
    premult = torch.cat([t[:, :3] * t[:, 3:4], t[:, 3:4]], dim=1)
    if (h, w) != size:
        mode = "area" if h > res else "bilinear"
        premult = F.interpolate(premult, size=size, mode=mode, **({} if mode == "area" else {"align_corners": False}))
    alpha = premult[:, 3].clamp(0.0, 1.0)
    rgb = (premult[:, :3] / premult[:, 3:4].clamp(min=1e-6)).clamp(0.0, 1.0).permute(0, 2, 3, 1)
    return alpha, rgb


def view_rays(views: PosedViews, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Origins and unit directions [V * H * W, 3] of every pixel centre of every view at ``size`` (H, W)."""
    c2w = torch.from_numpy(views.c2w).float()
    o, d = camera_rays(c2w, torch.from_numpy(views.fov_deg).float(), size)  # [V, P, 3]
    return o.reshape(-1, 3), d.reshape(-1, 3)


# ---------------------------------------------------------------------------------------------
# Along rays


def ray_min_sdf(
    fld: SDFField,
    o: torch.Tensor,
    d: torch.Tensor,
    n: int,
    gen: torch.Generator,
    bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Least SDF along rays (with gradients at the refined minimum) and the first surface hit.

    Args:
        o, d: [R, 3] ray origins and unit directions.
        n: stratified samples per ray (jittered with ``gen``) between the bounds.
        bounds: ([R], [R]) where along each ray to look (`hull_bounds`); None: inside the cube.

    Returns:
        dmin [R] (differentiable), t_min [R] distance of the minimum, t_hit [R] first zero
        crossing (nan where none), all along unit directions.
    """
    near, far = intersect_box(o, d, 1.0) if bounds is None else bounds
    r = o.shape[0]
    u = (torch.arange(n, dtype=o.dtype) + torch.rand(r, n, generator=gen)) / n  # [R, n]
    t = near[:, None] + (far - near)[:, None] * u
    with torch.no_grad():
        s = fld.sdf((o[:, None] + t[..., None] * d[:, None]).reshape(-1, 3)).reshape(r, n)  # [R, n]
        k = s.argmin(-1)
        t0 = t.gather(1, k[:, None])[:, 0]
        spacing = (far - near) / n
        inside = s < 0
        first = torch.where(inside.any(-1), inside.float().argmax(-1), torch.full_like(k, -1))
        j = first.clamp(min=1)
        s1, s0 = s.gather(1, j[:, None])[:, 0], s.gather(1, (j - 1)[:, None])[:, 0]
        ta, tb = t.gather(1, (j - 1)[:, None])[:, 0], t.gather(1, j[:, None])[:, 0]
        t_hit = ta + (tb - ta) * (s0 / (s0 - s1).clamp(min=1e-9))
        t_hit = torch.where(first >= 1, t_hit, torch.full_like(t_hit, float("nan")))
    fine = t0[:, None] + spacing[:, None] * torch.linspace(-1.0, 1.0, 8, dtype=o.dtype)  # [R, 8]
    fine = torch.minimum(torch.maximum(fine, near[:, None]), far[:, None])
    with torch.no_grad():
        kk = fld.sdf((o[:, None] + fine[..., None] * d[:, None]).reshape(-1, 3)).reshape(r, 8).argmin(-1)
    t_min = fine.gather(1, kk[:, None])[:, 0]
    # Only the least sample carries a gradient: it alone goes through autograd (the backward of the
    # other seven would be zeros).
    dmin = fld.sdf(o + t_min[:, None] * d)
    return dmin, t_min, t_hit


@torch.no_grad()
def hull_bounds(
    hull: torch.Tensor, o: torch.Tensor, d: torch.Tensor, margin: float, n: int = 128, chunk: int = 8192
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where rays pass within ``margin`` of a visual hull: the part of each ray worth sampling.

    A fitted surface lies inside the views' visual hull, so the samples of `ray_min_sdf` and
    `first_hits` go between the first and the last point of a ray within ``margin`` of it (found
    by ``n`` lookups of the hull's signed distance, widened by one lookup's spacing); rays that pass
    farther keep their whole chord through the cube (they still catch stray surface there).

    Args:
        hull: [R, R, R] signed distance of the hull (`fourview.recon.visual_hull.hull_sdf`), grid
            of `fourview.recon.visual_hull.grid_lookup`.
        o, d: [N, 3] ray origins and unit directions.
        margin: object units.

    Returns:
        lo [N], hi [N]: distances along the rays, within the cube's chord; meets [N] bool: whether
        the ray passes within ``margin`` of the hull (else lo, hi is the chord).
    """
    near, far = intersect_box(o, d, 1.0)
    lo, hi = near.clone(), far.clone()
    meets = torch.zeros(len(o), dtype=torch.bool)
    u = (torch.arange(n, dtype=o.dtype) + 0.5) / n  # [n]
    for i in range(0, len(o), chunk):
        sl = slice(i, i + chunk)
        step = far[sl] - near[sl]  # [r]
        t = near[sl, None] + step[:, None] * u  # [r, n]
        close = grid_lookup(hull, (o[sl, None] + t[..., None] * d[sl, None]).reshape(-1, 3)).reshape(t.shape) < margin
        first = close.float().argmax(-1)
        last = n - 1 - close.flip(-1).float().argmax(-1)
        hit = close.any(-1)
        step = step / n
        t_first = t.gather(1, first[:, None])[:, 0] - step
        t_last = t.gather(1, last[:, None])[:, 0] + step
        lo[sl] = torch.where(hit, torch.maximum(t_first, near[sl]), near[sl])
        hi[sl] = torch.where(hit, torch.minimum(t_last, far[sl]), far[sl])
        meets[sl] = hit
    return lo, hi, meets


def silhouette_loss(
    dmin: torch.Tensor, t_min: torch.Tensor, px_angle: torch.Tensor, edge_px: float, alpha: torch.Tensor
) -> torch.Tensor:
    """Mean squared error of the modelled coverage ``sigmoid(-dmin / (edge_px * footprint))`` against ``alpha``.

    Args:
        dmin, t_min: [R] the least SDF along each ray and its distance (`ray_min_sdf`).
        px_angle: [R] each ray's pixel footprint per unit depth.
        edge_px: width of the modelled edge, pixels (1/4: a box-filtered, anti-aliased edge).
        alpha: [R] the views' coverage of the rays' pixels.
    """
    footprint = px_angle * t_min.detach()
    pred_alpha = torch.sigmoid(-dmin / (edge_px * footprint))
    return (pred_alpha - alpha).square().mean()


@torch.no_grad()
def first_hits(
    sdf: Callable[[torch.Tensor], torch.Tensor],
    o: torch.Tensor,
    d: torch.Tensor,
    n: int,
    chunk: int = 8192,
    bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Distance [R] to the first zero crossing of ``sdf`` ([N, 3] -> [N]) along unit rays (nan where none),
    from ``n`` samples between ``bounds`` ([R], [R]; None: inside the cube) and two secant steps."""
    out = []
    for i in range(0, len(o), chunk):
        oc, dc = o[i : i + chunk], d[i : i + chunk]
        near, far = (
            intersect_box(oc, dc, 1.0) if bounds is None else (bounds[0][i : i + chunk], bounds[1][i : i + chunk])
        )
        t = near[:, None] + (far - near)[:, None] * (torch.arange(n, dtype=o.dtype) + 0.5) / n  # [r, n]
        s = sdf((oc[:, None] + t[..., None] * dc[:, None]).reshape(-1, 3)).reshape(t.shape)
        inside = s < 0
        first = inside.float().argmax(-1)
        j = first.clamp(min=1)
        s1, s0 = s.gather(1, j[:, None])[:, 0], s.gather(1, (j - 1)[:, None])[:, 0]
        ta, tb = t.gather(1, (j - 1)[:, None])[:, 0], t.gather(1, j[:, None])[:, 0]
        th = ta + (tb - ta) * (s0 / (s0 - s1).clamp(min=1e-9))
        for _ in range(2):  # secant steps towards the crossing
            sh = sdf(oc + th[:, None] * dc)
            th = th - sh
        ok = inside.any(-1) & (first >= 1)
        out.append(torch.where(ok, th, torch.full_like(th, float("nan"))))
    return torch.cat(out)


def follow_surface(fld: SDFField, pts: torch.Tensor, dirs: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """Surface points [S, 3] as functions of the SDF: moving the surface moves them along their rays.

    Implicit differentiation (IDR): ``pts - dirs * sdf(pts) / cos``, with ``pts`` [S, 3] on the
    surface (detached), ``dirs`` [S, 3] the rays' unit directions and ``cos`` [S] the cosine between
    ray and normal, kept away from 0.
    """
    return pts - dirs * (fld.sdf(pts) / cos)[:, None]


# ---------------------------------------------------------------------------------------------
# Regularisers


def eikonal_and_smoothness(
    fld: SDFField,
    surf: torch.Tensor,
    h_fd: float,
    smooth_scale: float,
    gen: torch.Generator,
    thick: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The eikonal term and the normal-consistency (curvature) term, scalars.

    Args:
        surf: [M, 3] surface points of this step's rays (detached); up to 1024 of them, jittered
            by 0.02, plus 512 uniform points of the cube are where the eikonal term looks.
        h_fd: step of the finite differences.
        smooth_scale: spread of the point pairs whose normals are compared, object units.
        gen: draws the jitter, the uniform points and the pairs.
        thick: [R, R, R] 0/1 grid (`fourview.recon.visual_hull.grid_lookup`): smoothness only
            where it is 1; None: everywhere.
    """
    near_pts = surf[:1024] + 0.02 * torch.randn(surf[:1024].shape, generator=gen)
    uni = torch.rand(512, 3, generator=gen) * 2.0 - 1.0
    eik_pts = torch.cat([near_pts, uni]).clamp(-1.0, 1.0)
    grads = fld.gradient(eik_pts, h_fd)
    l_eik = (grads.norm(dim=-1) - 1.0).square().mean()
    if not len(near_pts):
        return l_eik, torch.zeros(())
    n1 = F.normalize(grads[: len(near_pts)], dim=-1)
    pairs = near_pts + smooth_scale * torch.randn(near_pts.shape, generator=gen)
    n2 = F.normalize(fld.gradient(pairs.clamp(-1, 1), h_fd), dim=-1)
    per_pair = (n1 - n2).square().sum(-1)
    if thick is not None:
        per_pair = per_pair * (grid_lookup(thick, near_pts) > 0.5)
    return l_eik, per_pair.mean()


# ---------------------------------------------------------------------------------------------
# Stereo: two-view photo-consistency


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """[N, C, H, W] blurred by a Gaussian of ``sigma`` pixels (separable, edges replicated)."""
    r = max(1, int(math.ceil(3.0 * sigma)))
    g = gaussian_window(2 * r + 1, sigma, images.dtype, images.device)
    c = images.shape[1]
    out = F.conv2d(F.pad(images, (r, r, 0, 0), mode="replicate"), g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(out, (0, 0, r, r), mode="replicate"), g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


class StereoViews:
    """The views as the stereo term samples them: cameras, alpha, and colour blurred at a few widths.

    Args:
        views: the posed views.
        resolution: side of the images the term samples, pixels.
        blur_start_px, blur_end_px: Gaussian blur (sigma, pixels at ``resolution``) of the widest
            and the narrowest of five levels (geometric steps between them).
    """

    def __init__(self, views: PosedViews, resolution: int, blur_start_px: float, blur_end_px: float) -> None:
        alpha, rgb = resize_views(views.images, resolution)  # [V, H, W], [V, H, W, 3]
        self.aspect = alpha.shape[2] / alpha.shape[1]
        self.c2w = torch.from_numpy(views.c2w).float()  # [V, 4, 4]
        self.fov_deg = torch.from_numpy(views.fov_deg).float()  # [V]
        self.alpha = alpha[:, None]  # [V, 1, H, W]
        premult = rgb.permute(0, 3, 1, 2) * self.alpha
        n = 5
        sigmas = [blur_start_px * (blur_end_px / blur_start_px) ** (i / (n - 1)) for i in range(n)]
        # Blurred colour of the object's pixels only (normalised by the blurred alpha): the
        # background does not bleed into the outline.
        self.levels = [
            gaussian_blur(premult, s) / gaussian_blur(self.alpha, s).clamp(min=1e-3) for s in sigmas
        ]  # [V, 3, H, W] each

    def project(self, xyz: torch.Tensor) -> torch.Tensor:
        """[S, 3] object-frame points -> [V, S, 3] ``(gx, gy, depth)`` in every view (`visual_hull.project`)."""
        return project(xyz, self.c2w, self.fov_deg, self.aspect)

    @staticmethod
    def pick(images: torch.Tensor, g: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        """Images [V, C, H, W] at grid points g [V, S, 2] -> [S, C]: point s read in view ``view[s]``."""
        return sample_images(images, g)[view, torch.arange(len(view))]


def stereo_loss(
    fld: SDFField, sv: StereoViews, pts: torch.Tensor, dirs: torch.Tensor, view_a: torch.Tensor,
    level: int, h_fd: float, n_samples: int,
) -> torch.Tensor:  # fmt: skip
    """Two-view photo-consistency of surface points.

    Args:
        pts: [S, 3] surface hits (detached) of rays of views ``view_a`` [S] with unit directions
            ``dirs`` [S, 3].
        level: which blur level of ``sv`` to compare.
        h_fd: step of the finite differences of the normals.
        n_samples: samples per ray of the occlusion test (`first_hits`).

    Returns:
        scalar: squared colour difference between the two views, weighted by how squarely the
        second view sees the point.
    """
    with torch.no_grad():
        for _ in range(2):  # secant steps from the sampled crossing onto the surface
            pts = pts - dirs * fld.sdf(pts)[:, None]
        normal = F.normalize(fld.gradient(pts, h_fd), dim=-1)  # [S, 3]
        to_cam = sv.c2w[:, :3, 3][None] - pts[:, None]  # [S, V, 3]
        dist = to_cam.norm(dim=-1)  # [S, V]
        facing = (normal[:, None] * to_cam).sum(-1) / dist  # [S, V] cosine to each camera
        g = sv.project(pts)  # [V, S, 3]
        inside = (g[..., :2].abs() < 1.0).all(-1) & (g[..., 2] > 0)  # [V, S]
        in_silhouette = sample_images(sv.alpha, g[..., :2])[..., 0] > 0.99  # [V, S]
        ok = (inside & in_silhouette).T & (facing > 0.3)  # [S, V]
        ok[torch.arange(len(pts)), view_a] = False
        view_b = torch.where(ok, facing, torch.full_like(facing, -2.0)).argmax(-1)  # [S] the second view
        w = facing.gather(1, view_b[:, None])[:, 0]
        # Unoccluded in the second view: its ray towards the point first meets the surface there.
        ob = sv.c2w[view_b, :3, 3]
        dir_b, dist_b = F.normalize(pts - ob, dim=-1), (pts - ob).norm(dim=-1)
        # Only up to just past the point: a first hit farther away fails the test anyway.
        near, far = intersect_box(ob, dir_b, 1.0)
        t_b = first_hits(fld.sdf, ob, dir_b, n_samples, bounds=(near, torch.minimum(far, dist_b + 0.05)))
        seen = ok.any(-1) & torch.isfinite(t_b) & ((t_b - dist_b).abs() < 0.02)
        pts, dirs, view_a, view_b, normal, w = (t[seen] for t in (pts, dirs, view_a, view_b, normal, w))
        g = g[:, seen]
        if len(pts) == 0:
            return torch.zeros(())
        colour_a = sv.pick(sv.levels[level], g[..., :2], view_a)
        cos = (normal * dirs).sum(-1).clamp(max=-0.2)
    x = follow_surface(fld, pts, dirs, cos)  # moves along view a's ray with the surface
    g_x = sv.project(x)[..., :2]
    err = (sv.pick(sv.levels[level], g_x, view_b) - colour_a).square().sum(-1)
    return (w * err).sum() / w.sum()

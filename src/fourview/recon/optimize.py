"""Per-object optimisation of a triplane field to posed views: no trained weights, or refinement.

Two jobs behind ``fourview reconstruct --optimize``:

* `optimize_field` fits a triplane SDF + colour field (split planes: geometry planes decoded to a
  signed distance, texture planes decoded to sRGB; the decoder of `fourview.recon.decoder`) to
  RGBA views with known cameras, from nothing but the views:

  1. start: the field is regressed onto a start shape, the views' visual hull with its signed
     distance blurred (``init="hull"``, `fourview.recon.visual_hull`) or a sphere (``"sphere"``).
     Where every view looks down on the object, the hull is cut below the lowest surface point
     the views see (``flat_bottom``): views from above cannot carve the keel it hangs under an
     object's bottom rim;
  2. fit, coarse to fine (geometry planes at half resolution for the first ``coarse_fraction`` of
     the steps, then upsampled; the silhouette's edge width shrinks from ``edge_start_px`` to
     ``edge_end_px`` pixels) with Adam on random rays of the views each step (half of them near
     the silhouettes' outlines):

     - silhouette: a ray's coverage is ``sigmoid(-d / (e * p))`` where ``d`` is the least signed
       distance along the ray (48 samples, refined around the smallest by 8 more), ``p`` the
       pixel's footprint at that depth and ``e`` the edge width in pixels. For a true SDF, ``d``
       is how far the ray passes from the surface, so with ``e = 1/4`` this is the coverage of an
       anti-aliased (box-filtered) outline: the inputs' soft edges are matched, not thresholded.
       Mean squared error against the views' alpha;
     - colour: at the first zero crossing of rays inside the silhouette (alpha > 0.99), the
       texture decoder's colour against the pixel's (the surface point carries no gradient: colour
       never bends the shape);
     - eikonal: ``(|grad sdf| - 1)^2`` near the surface and in the cube, so that the SDF stays a
       distance (which the silhouette model needs);
     - smoothness: ``|n(x) - n(x + eps)|^2`` between normals of nearby points near the surface: a
       curvature penalty that rounds what no silhouette pins down (the box corners of the visual
       hull between the views) while the silhouettes hold the outline. Only near the hull's thick
       parts (``smooth_hull_radius``): thin handles, rims and legs keep their silhouettes' shape;
     - stereo (after the first ``stereo_start_fraction`` of the steps): a surface point seen by its
       ray's view and by a second view (facing it, unoccluded, inside its silhouette) should have
       one colour in both images (blurred, coarse to fine). The point moves along its ray with the
       surface (implicit differentiation), so texture seen by two views sets the depth between
       them: a box's faces stay flat instead of the pillow the smoothness prior alone makes.

  3. texture: geometry frozen, the texture planes are fitted to every input pixel's colour at its
     ray's first surface hit (views at up to 256 px), weighted by the cosine to the 4th between
     the ray and the normal, so the view that faces a point sets its colour.

  Gradients of the SDF come from central differences, because the fast triplane sampler has no
  double backward (`fourview.recon.triplane`).

* `refine_reconstruction` fine-tunes a trained reconstructor's prediction (its planes, and its
  decoder at a lower rate) on the same views with the reconstructor's own renderer (volume
  rendering of the density), colour and opacity losses, and an L2 pull back towards the
  predicted planes so that what the views do not see keeps the learned prior.

Views come as a `ViewSet`: RGBA images with their cameras (`rig_view_set` for the four rig
views, `camera_view_set` for images described by a ``cameras.json`` of the dataset renderer).
Cameras follow `fourview.cameras` (OpenGL axes, row 0 at the top).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F

from fourview.cameras import DEFAULT_ELEVATION_DEG, orthogonal_rig
from fourview.errors import InputError
from fourview.recon.config import ReconConfig
from fourview.recon.decoder import DecoderConfig, TriplaneDecoder, TriplaneField
from fourview.recon.triplane import sample_triplane

if TYPE_CHECKING:
    from fourview.export.projection import ViewImages

__all__ = [
    "OptimizeConfig",
    "OptimizeResult",
    "RefineConfig",
    "ViewSet",
    "camera_view_set",
    "check_view_set",
    "optimize_field",
    "refine_reconstruction",
    "rig_view_set",
]


# ---------------------------------------------------------------------------------------------
# Views with cameras


@dataclass(frozen=True)
class ViewSet:
    """Posed RGBA views of one object.

    Attributes:
        images: [V, H, W, 4] float32 RGBA in [0, 1] (straight alpha), row 0 at the top.
        c2w: [V, 4, 4] float64 camera-to-world matrices (OpenGL camera axes), object frame.
        fov_deg: [V] float64 vertical fields of view, degrees.
        names: a name per view, for messages (file names or azimuths).
    """

    images: np.ndarray
    c2w: np.ndarray
    fov_deg: np.ndarray
    names: tuple[str, ...]

    @property
    def num_views(self) -> int:
        return self.images.shape[0]

    @property
    def resolution(self) -> tuple[int, int]:
        """(H, W) of the images."""
        return int(self.images.shape[1]), int(self.images.shape[2])

    def for_projection(self) -> ViewImages:
        """The same posed views as the texture projection takes them (`fourview.export.projection`)."""
        from fourview.export.projection import ViewImages

        return ViewImages(self.images, self.c2w, self.fov_deg)


def check_view_set(views: ViewSet) -> None:
    """Reject views that cannot be fitted: shapes that disagree, and views without a silhouette.

    Raises:
        InputError: mismatched shapes; a view that is fully transparent (no object) or fully
            opaque (no background, so no silhouette: give RGBA with a transparent background).
    """
    imgs = views.images
    if imgs.ndim != 4 or imgs.shape[-1] != 4:
        raise InputError(f"views must be RGBA images [V, H, W, 4], got shape {tuple(imgs.shape)}")
    n = imgs.shape[0]
    if n < 1 or views.c2w.shape != (n, 4, 4) or views.fov_deg.shape != (n,) or len(views.names) != n:
        raise InputError(
            f"{n} views need {n} cameras, got {views.c2w.shape[0]} (c2w) and {views.fov_deg.shape[0]} (fov)"
        )
    if not np.isfinite(imgs).all() or not np.isfinite(views.c2w).all():
        raise InputError("views or cameras hold non-finite values")
    for name, img in zip(views.names, imgs):
        a = img[..., 3]
        if float(a.max()) <= 0.0:
            raise InputError(f"view {name} is fully transparent: no object to reconstruct")
        if float(a.min()) >= 1.0:
            raise InputError(
                f"view {name} is fully opaque: optimisation needs a silhouette (RGBA with a transparent background)"
            )


def rig_view_set(views: np.ndarray, elevation_deg: float = DEFAULT_ELEVATION_DEG) -> ViewSet:
    """The four rig views (azimuths 0, 90, 180, 270 at ``elevation_deg``) as a `ViewSet`.

    Args:
        views: [4, H, W, 4] RGBA float in [0, 1], rig order (`fourview.views.load_views`).
        elevation_deg: the rig's elevation, degrees.

    Raises:
        InputError: not four RGBA views, or views `check_view_set` rejects.
    """
    views = np.asarray(views, dtype=np.float32)
    if views.ndim != 4 or views.shape[0] != 4 or views.shape[-1] != 4:
        raise InputError(f"expected four RGBA rig views [4, H, W, 4], got shape {tuple(views.shape)}")
    if not -90.0 <= elevation_deg <= 90.0:
        raise InputError(f"elevation must be in [-90, 90] degrees, got {elevation_deg}")
    cams = orthogonal_rig(elevation_deg)
    out = ViewSet(
        images=views,
        c2w=np.stack([c.c2w() for c in cams]),
        fov_deg=np.array([c.fov_deg for c in cams]),
        names=tuple(f"az {int(c.azimuth_deg)}" for c in cams),
    )
    check_view_set(out)
    return out


def camera_view_set(images: list[str | Path], cameras_json: str | Path) -> ViewSet:
    """Images with their cameras from a ``cameras.json`` written by the dataset renderer.

    Each image must be one of the file's frames: its path, resolved, equals the frame's
    ``image`` resolved against the JSON file's folder. The frame's ``c2w`` and ``fov_deg`` are its
    camera; its ``resolution`` must be the image's size.

    Raises:
        InputError: an unreadable file, an image without a frame, a size that does not match its
            frame, images of different sizes, or views `check_view_set` rejects.
    """
    from fourview.images import read_rgba

    path = Path(cameras_json)
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        frames = meta["frames"]
        by_path = {(path.parent / f["image"]).resolve(): f for f in frames}
    except FileNotFoundError:
        raise InputError(f"cameras file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise InputError(f"cannot read cameras from {path}: {' '.join(str(e).split()) or type(e).__name__}") from None
    if not images:
        raise InputError("no images given for the cameras in " + str(path))
    imgs, c2w, fov, names = [], [], [], []
    for p in images:
        frame = by_path.get(Path(p).resolve())
        if frame is None:
            raise InputError(f"{p} has no frame in {path} (frames name images relative to that file's folder)")
        img = read_rgba(p)
        try:
            h, w = (int(v) for v in frame["resolution"])
            m = np.asarray(frame["c2w"], dtype=np.float64)
            f = float(frame["fov_deg"])
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"frame of {p} in {path} is incomplete: {' '.join(str(e).split())}") from None
        if img.shape[:2] != (h, w):
            raise InputError(
                f"{p} is {img.shape[1]}x{img.shape[0]} but its frame in {path} says {w}x{h}: "
                "cameras do not match the images"
            )
        if m.shape != (4, 4) or not 0.0 < f < 180.0:
            raise InputError(f"frame of {p} in {path} needs a 4x4 c2w and a fov in (0, 180) degrees")
        imgs.append(img), c2w.append(m), fov.append(f), names.append(Path(p).name)
    sizes = {i.shape[:2] for i in imgs}
    if len(sizes) != 1:
        listing = ", ".join(f"{n} {i.shape[1]}x{i.shape[0]}" for n, i in zip(names, imgs))
        raise InputError(f"the views must have the same size, got {listing}")
    out = ViewSet(np.stack(imgs), np.stack(c2w), np.array(fov), tuple(names))
    check_view_set(out)
    return out


# ---------------------------------------------------------------------------------------------
# Fitting a field from nothing


@dataclass(frozen=True)
class OptimizeConfig:
    """Settings of `optimize_field` (defaults: about 2 minutes on one core of this CPU)."""

    steps: int = 600
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
    samples_per_ray: int = 48
    """Samples per ray for the least SDF along it (then 8 more around the smallest)."""
    texture_steps: int = 200
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
    flat bottom lose the keel; a round bottom loses the cap below its lowest visible point (issue
    6's objects: mean SSIM 0.840 -> 0.844 at 128 px; keenan_bob +0.023, the soccer ball -0.022)."""
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
    views (0.01 leaves the visual hull's boxes: 22.6 dB on keenan_spot; 0.3: 24.7 dB)."""
    smooth_scale: float = 0.02
    """Spread of the point pairs whose normals the smoothness term compares, object units (0.05
    rounded the soccer ball better but erased the table's legs, docs/benchmarks.md)."""
    smooth_hull_radius: float = 0.12
    """The smoothness term acts only near the visual hull's thick parts: those that hold a ball of
    this radius, object units (a morphological opening of the 64^3 hull). Thin parts (a mug's
    handle, a pan's rim, legs) keep the shape their silhouettes give them (0: everywhere; on
    issue 6's objects 0.06 took the mug from 0.803 to 0.834 SSIM and the mean from 0.836 to 0.839).
    At 0.12 a table top's keel (the wedge the views from above leave under a thin top) is thin
    too, and the prior no longer eats notches into the top's rim: the table went from 0.796 to
    0.859 SSIM, the mean from 0.844 to 0.851 (docs/benchmarks.md)."""
    photo_consistency: bool = False
    """In the fine stage, let the colour loss move the surface (its hit points follow the SDF
    along their rays, IDR's implicit differentiation): the views' colours then pin down the shape
    where two views see it. Off by default: +0.1 dB on keenan_spot, no help on the cracker box."""
    stereo_weight: float = 1.0
    """Weight of the two-view photo-consistency (stereo) term: a surface point that one view sees
    and another also sees (facing it, unoccluded, inside its silhouette) must have the same colour
    in both images; the point moves along the first view's ray (implicit differentiation, IDR), so
    texture seen by two views pins the shape between them (0 turns it off; on the 9 real objects
    of issue 6 it took the mean SSIM at 128 px from 0.808 to 0.836, docs/benchmarks.md)."""
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
    is still the visual hull, periodic texture (a mug's stripes) locked onto wrong depths; 0.25
    scored 0.836 SSIM on issue 6's objects, 0.4 (the end of the coarse stage) 0.830."""
    edge_start_px: float = 2.0
    """Width of the modelled silhouette edge at the start, pixels (sigmoid scale)."""
    edge_end_px: float = 0.25
    """... and at the end (1/4: the slope of a box-filtered, anti-aliased edge)."""
    seed: int = 0
    num_threads: int = 1
    """torch threads during the fit, restored after (its ops are small: one thread is fastest on a
    shared CPU; 0 leaves torch's setting)."""

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


def _resize_views(images: np.ndarray, res: int) -> tuple[torch.Tensor, torch.Tensor]:
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


def _all_rays(views: ViewSet, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Origins and unit directions [V * H * W, 3] of every pixel centre of every view."""
    from fourview.recon.model import camera_rays

    c2w = torch.from_numpy(views.c2w).float()
    o, d = camera_rays(c2w, torch.from_numpy(views.fov_deg).float(), size)  # [V, P, 3]
    return o.reshape(-1, 3), d.reshape(-1, 3)


class _Field:
    """The triplane SDF + colour field being fitted (split planes, concat merge)."""

    def __init__(self, cfg: OptimizeConfig, planes: torch.Tensor, generator: torch.Generator) -> None:
        self.cfg = cfg
        self.decoder = TriplaneDecoder(self.decoder_config(cfg), cfg.plane_channels, cfg.texture_channels)
        self.planes = planes.requires_grad_(True)  # [1, 3, C, R, R]
        tex = 0.05 * torch.randn(1, 3, cfg.texture_channels, cfg.texture_resolution, cfg.texture_resolution,
                                 generator=generator)  # fmt: skip
        self.texture_planes = tex.requires_grad_(True)

    @staticmethod
    def decoder_config(cfg: OptimizeConfig) -> DecoderConfig:
        return DecoderConfig(hidden_channels=cfg.hidden_channels, hidden_layers=cfg.hidden_layers, geometry="sdf")

    def sdf(self, xyz: torch.Tensor) -> torch.Tensor:
        """[N, 3] -> [N] signed distance."""
        feats = sample_triplane(self.planes, xyz[None])[0]  # [N, 3, C]
        return self.decoder.geometry_mlp(feats.flatten(-2))[..., 0]

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
        from fourview.recon.unet import UNetConfig

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


def _visual_hull(views: ViewSet, alpha: torch.Tensor) -> np.ndarray:
    """The views' visual hull on the 64^3 grid of `visual_hull.carve_visual_hull`: [64, 64, 64] bool."""
    from fourview.recon.visual_hull import carve_visual_hull

    occ = carve_visual_hull(alpha, torch.from_numpy(views.c2w), torch.from_numpy(views.fov_deg), 64)
    if not occ.any():
        raise InputError("the views' silhouettes have no common volume: do the cameras match the images?")
    return occ


def _flat_bottom(views: ViewSet, alpha: torch.Tensor, occ: np.ndarray) -> np.ndarray:
    """The hull ``occ`` [R, R, R] without what lies below the lowest surface point any view sees
    (see `OptimizeConfig.flat_bottom`); unchanged unless every camera looks down on the object.

    The seen points are where the rays of the silhouettes' pixels (``alpha`` [V, H, W] > 0.5)
    first enter the hull. The cut lies below all of them, so every silhouette ray keeps the point
    where it enters: the silhouettes stay what they were. (From below, a view sees the bottom and
    its silhouette carves it; there is no keel to cut.)
    """
    from fourview.recon.visual_hull import HullField, hull_sdf

    cam = views.c2w[:, :3, 3]  # [V, 3] camera centres, object frame (+Y up)
    if not (cam[:, 1] > np.linalg.norm(cam, axis=1) * math.sin(math.radians(5.0))).all():
        return occ
    hull = HullField(torch.from_numpy(hull_sdf(occ)))
    o, d = _all_rays(views, alpha.shape[1:])
    keep = alpha.reshape(-1) > 0.5
    o, d = o[keep], d[keep]
    t = _first_hits(hull.sdf, o, d, 2 * occ.shape[0])
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
    from scipy import ndimage

    r = max(1, round(radius * (occ.shape[0] - 1) / 2.0))
    z, y, x = np.mgrid[-r : r + 1, -r : r + 1, -r : r + 1]
    opened = ndimage.binary_opening(occ, structure=z**2 + y**2 + x**2 <= r * r)
    return torch.from_numpy(ndimage.binary_dilation(opened, iterations=2).astype(np.float32))


def _start_target(cfg: OptimizeConfig, occ: np.ndarray | None):
    """The start shape's SDF as a function of [N, 3] points, and points near its surface [M, 3]."""
    if cfg.init == "sphere":
        return (lambda x: x.norm(dim=-1) - 0.5), None
    from fourview.recon.visual_hull import grid_lookup, hull_sdf

    res = occ.shape[0]
    grid = torch.from_numpy(hull_sdf(occ, smooth_voxels=1.0))
    lin = torch.linspace(-1.0, 1.0, res)
    near = grid.abs() < 2.5 * 2.0 / (res - 1)
    idx = near.nonzero()
    surface = lin[idx]  # [M, 3]
    return (lambda x: grid_lookup(grid, x)), surface


def _ray_min_sdf(fld: _Field, o: torch.Tensor, d: torch.Tensor, n: int, gen: torch.Generator):
    """Least SDF along rays (with gradients at the refined minimum) and the first surface hit.

    Returns:
        dmin [R] (differentiable), t_min [R] distance of the minimum, t_hit [R] first zero
        crossing (nan where none), all along unit directions.
    """
    from fourview.recon.render_volume import intersect_box

    near, far = intersect_box(o, d, 1.0)
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
    sf = fld.sdf((o[:, None] + fine[..., None] * d[:, None]).reshape(-1, 3)).reshape(r, 8)
    dmin, kk = sf.min(-1)
    return dmin, fine.gather(1, kk[:, None])[:, 0], t_hit


def _gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """[N, C, H, W] blurred by a Gaussian of ``sigma`` pixels (separable, edges replicated)."""
    from fourview.recon.losses import gaussian_window

    r = max(1, int(math.ceil(3.0 * sigma)))
    g = gaussian_window(2 * r + 1, sigma, images.dtype, images.device)
    c = images.shape[1]
    out = F.conv2d(F.pad(images, (r, r, 0, 0), mode="replicate"), g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(out, (0, 0, r, r), mode="replicate"), g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


class _StereoViews:
    """The views as the stereo term samples them: cameras, alpha, and colour blurred at a few widths."""

    def __init__(self, views: ViewSet, cfg: OptimizeConfig) -> None:
        alpha, rgb = _resize_views(views.images, cfg.stereo_resolution)  # [V, H, W], [V, H, W, 3]
        self.aspect = alpha.shape[2] / alpha.shape[1]
        self.c2w = torch.from_numpy(views.c2w).float()  # [V, 4, 4]
        self.fov_deg = torch.from_numpy(views.fov_deg).float()  # [V]
        self.alpha = alpha[:, None]  # [V, 1, H, W]
        premult = rgb.permute(0, 3, 1, 2) * self.alpha
        n = 5
        sigmas = [cfg.stereo_blur_start_px * (cfg.stereo_blur_end_px / cfg.stereo_blur_start_px) ** (i / (n - 1))
                  for i in range(n)]  # fmt: skip
        # Blurred colour of the object's pixels only (normalised by the blurred alpha): the
        # background does not bleed into the outline.
        self.levels = [
            _gaussian_blur(premult, s) / _gaussian_blur(self.alpha, s).clamp(min=1e-3) for s in sigmas
        ]  # [V, 3, H, W] each

    def project(self, xyz: torch.Tensor) -> torch.Tensor:
        """[S, 3] object-frame points -> [V, S, 3] ``(gx, gy, depth)`` in every view (`visual_hull.project`)."""
        from fourview.recon.visual_hull import project

        return project(xyz, self.c2w, self.fov_deg, self.aspect)

    @staticmethod
    def pick(images: torch.Tensor, g: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        """Images [V, C, H, W] at grid points g [V, S, 2] -> [S, C]: point s read in view ``view[s]``."""
        from fourview.recon.visual_hull import sample_images

        return sample_images(images, g)[view, torch.arange(len(view))]


def _stereo_loss(
    fld: _Field, sv: _StereoViews, pts: torch.Tensor, dirs: torch.Tensor, view_a: torch.Tensor,
    level: int, h_fd: float, n_samples: int,
) -> torch.Tensor:  # fmt: skip
    """Two-view photo-consistency of surface points (see `OptimizeConfig.stereo_weight`).

    Args:
        pts: [S, 3] surface hits (detached) of rays of views ``view_a`` [S] with unit directions
            ``dirs`` [S, 3].
        level: which blur level of ``sv`` to compare.

    Returns:
        scalar: squared colour difference between the two views, weighted by how squarely the
        second view sees the point.
    """
    from fourview.recon.visual_hull import sample_images

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
        t_b = _first_hits(fld.sdf, ob, F.normalize(pts - ob, dim=-1), n_samples)
        seen = ok.any(-1) & torch.isfinite(t_b) & ((t_b - (pts - ob).norm(dim=-1)).abs() < 0.02)
        pts, dirs, view_a, view_b, normal, w = (t[seen] for t in (pts, dirs, view_a, view_b, normal, w))
        g = g[:, seen]
        if len(pts) == 0:
            return torch.zeros(())
        colour_a = sv.pick(sv.levels[level], g[..., :2], view_a)
        cos = (normal * dirs).sum(-1).clamp(max=-0.2)
    x = pts - dirs * (fld.sdf(pts) / cos)[:, None]  # moves along view a's ray with the surface
    g_x = sv.project(x)[..., :2]
    err = (sv.pick(sv.levels[level], g_x, view_b) - colour_a).square().sum(-1)
    return (w * err).sum() / w.sum()


@torch.no_grad()
def _first_hits(
    sdf: Callable[[torch.Tensor], torch.Tensor], o: torch.Tensor, d: torch.Tensor, n: int, chunk: int = 8192
) -> torch.Tensor:
    """Distance [R] to the first zero crossing of ``sdf`` ([N, 3] -> [N]) along unit rays (nan where none)."""
    from fourview.recon.render_volume import intersect_box

    out = []
    for i in range(0, len(o), chunk):
        oc, dc = o[i : i + chunk], d[i : i + chunk]
        near, far = intersect_box(oc, dc, 1.0)
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


def _fit_texture(fld: _Field, views: ViewSet, cfg: OptimizeConfig, gen: torch.Generator, bar) -> list[dict]:
    """Texture stage: fit the texture planes to the views' pixels at their first hits (geometry frozen).

    Each pixel's colour is a target at its ray's first surface point, weighted by how squarely the
    view sees that point (cosine to the 4th, as `fourview.recon.visual_hull.ProjectedColors`) so that
    grazing views, whose pixels land imprecisely, give way to the view facing the surface.
    """
    res = min(cfg.texture_view_resolution, views.resolution[0])
    alpha, rgb = _resize_views(views.images, res)
    v, h, w = alpha.shape
    o, d = _all_rays(views, (h, w))
    keep = alpha.reshape(-1) > 0.99
    o, d, target = o[keep], d[keep], rgb.reshape(-1, 3)[keep]
    t = _first_hits(fld.sdf, o, d, cfg.samples_per_ray)
    ok = torch.isfinite(t)
    pts, target, d = (o + t[:, None] * d)[ok], target[ok], d[ok]
    if len(pts) == 0:
        return []
    with torch.no_grad():
        normals = torch.cat(
            [F.normalize(fld.gradient(c, 1.0 / cfg.plane_resolution), dim=-1) for c in pts.split(8192)]
        )
    weight = (-(normals * d).sum(-1)).clamp(min=0.0) ** 4 + 1e-3  # [N]
    opt = torch.optim.Adam([{"params": [fld.texture_planes], "lr": 2.0 * cfg.lr},
                            {"params": list(fld.decoder.texture_mlp.parameters()), "lr": cfg.lr / 5.0}])  # fmt: skip
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
    views: ViewSet, config: OptimizeConfig = OptimizeConfig(), progress: bool = False
) -> OptimizeResult:
    """Fit a triplane SDF + colour field to posed views (see the module docstring).

    Args:
        views: the views and their cameras (`rig_view_set`, `camera_view_set`).
        config: schedule, sizes and loss weights.
        progress: show a progress bar with the loss (tqdm, on stderr).

    Returns:
        `OptimizeResult` with the field (SDF decoder, object frame, zero level = surface).

    Raises:
        InputError: views `check_view_set` rejects, or silhouettes with no common volume.
    """
    check_view_set(views)
    threads = torch.get_num_threads()
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    try:
        return _optimize_field(views, config, progress)
    finally:
        torch.set_num_threads(threads)


def _optimize_field(views: ViewSet, cfg: OptimizeConfig, progress: bool) -> OptimizeResult:
    from tqdm import tqdm

    from fourview.recon.visual_hull import grid_lookup

    start = time.perf_counter()
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    alpha, rgb = _resize_views(views.images, cfg.resolution)  # [V, H, W], [V, H, W, 3]
    v, h, w = alpha.shape
    origins, dirs = _all_rays(views, (h, w))  # [V*H*W, 3]
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
    fld = _Field(cfg, planes, gen)

    # 1. Start shape.
    occ = _visual_hull(views, alpha) if cfg.init == "hull" or cfg.smooth_hull_radius > 0 else None
    if occ is not None and cfg.flat_bottom:
        occ = _flat_bottom(views, alpha, occ)
    target_fn, surface = _start_target(cfg, occ)
    thick = _thick_parts(occ, cfg.smooth_hull_radius) if cfg.smooth_hull_radius > 0 else None
    opt = torch.optim.Adam(fld.parameters())
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
    stereo = _StereoViews(views, cfg) if cfg.stereo_weight > 0 and views.num_views > 1 else None
    ray_view = torch.arange(v).repeat_interleave(h * w)  # [V*H*W] view of each ray
    stereo_start = int(round(cfg.stereo_start_fraction * cfg.steps))
    for step in range(cfg.steps):
        if step == coarse_steps and coarse_r != cfg.plane_resolution:
            fld.upsample(cfg.plane_resolution)
            opt = torch.optim.Adam(fld.parameters())
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
        dmin, t_min, t_hit = _ray_min_sdf(fld, o, d, cfg.samples_per_ray, gen)
        footprint = px_angle[ids] * t_min.detach()
        pred_alpha = torch.sigmoid(-dmin / (edge * footprint))
        l_sil = (pred_alpha - alpha_f[ids]).square().mean()

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
            col_pts = surf - d[hit] * (fld.sdf(surf) / cos)[:, None]
        l_col = (fld.color(col_pts) - rgb_f[ids][hit]).square().mean() if len(surf) else torch.zeros(())

        near_pts = surf[:1024] + 0.02 * torch.randn(surf[:1024].shape, generator=gen)
        uni = torch.rand(512, 3, generator=gen) * 2.0 - 1.0
        eik_pts = torch.cat([near_pts, uni]).clamp(-1.0, 1.0)
        grads = fld.gradient(eik_pts, h_fd)
        l_eik = (grads.norm(dim=-1) - 1.0).square().mean()
        if len(near_pts):
            n1 = F.normalize(grads[: len(near_pts)], dim=-1)
            pairs = near_pts + cfg.smooth_scale * torch.randn(near_pts.shape, generator=gen)
            n2 = F.normalize(fld.gradient(pairs.clamp(-1, 1), h_fd), dim=-1)
            per_pair = (n1 - n2).square().sum(-1)
            if thick is not None:
                per_pair = per_pair * (grid_lookup(thick, near_pts) > 0.5)
            l_smooth = per_pair.mean()
        else:
            l_smooth = torch.zeros(())
        l_stereo = torch.zeros(())
        if stereo is not None and len(surf) and step >= stereo_start:
            pick = torch.randperm(len(surf), generator=gen)[: cfg.stereo_rays]
            sfrac = (step - stereo_start) / max(1, cfg.steps - stereo_start)
            level = min(len(stereo.levels) - 1, int(sfrac * len(stereo.levels)))
            l_stereo = _stereo_loss(fld, stereo, surf[pick], d[hit][pick], ray_view[ids][hit][pick], level, h_fd,
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
        history += _fit_texture(fld, views, cfg, gen, bar)
    bar.close()
    return OptimizeResult(fld.triplane_field(), fld.recon_config(h), history, time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------
# Refining a trained reconstructor's prediction


@dataclass(frozen=True)
class RefineConfig:
    """Settings of `refine_reconstruction`."""

    steps: int = 150
    """Adam steps on the input views."""
    rays_per_view: int = 512
    """Random pixels rendered per view and step."""
    lr: float = 0.005
    """Learning rate of the planes (the decoder's is a tenth of it; 0 freezes it)."""
    decoder_lr_scale: float = 0.1
    opacity_weight: float = 1.0
    prior_weight: float = 1.0
    """Weight of the mean squared change of the planes from the prediction."""
    resolution: int | None = None
    """Side of the images the losses see (None: the views' own)."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 0 or self.rays_per_view < 1 or not self.lr > 0:
            raise InputError("refine steps must be >= 0, rays per view >= 1 and the learning rate > 0")
        if self.resolution is not None and self.resolution < 8:
            raise InputError(f"refine resolution must be >= 8 pixels, got {self.resolution}")


def refine_reconstruction(
    model,
    views: ViewSet,
    elevation_deg: float = DEFAULT_ELEVATION_DEG,
    config: RefineConfig = RefineConfig(),
    progress: bool = False,
) -> OptimizeResult:
    """Fine-tune a reconstructor's prediction for the four rig views on those views.

    Args:
        model: a `fourview.recon.model.Reconstructor` (its weights are not changed: the decoder is
            copied). Either stage: the losses see volume renders (a stage-B SDF read as a
            log-density, `fourview.recon.decoder.volume_density`).
        views: the four rig views (`rig_view_set`), rig order.
        elevation_deg: the rig's elevation, degrees.
        config: schedule and weights.
        progress: progress bar with the loss.

    Returns:
        `OptimizeResult` with the refined field (the model's decoder kind) and the model's config.

    Raises:
        InputError: not four rig views, or views `check_view_set` rejects.
    """
    import copy

    from tqdm import tqdm

    from fourview.recon.model import ReconOutput, VolumeRenderer
    from fourview.views import views_to_model_input

    check_view_set(views)
    if views.num_views != 4:
        raise InputError(
            f"refinement starts from the reconstructor's prediction for 4 rig views, got {views.num_views}"
        )
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(config.seed)
    dev = next(model.parameters()).device
    # The renderer's sample jitter is drawn on the model's device (a CPU generator fails on CUDA).
    render_gen = gen if dev.type == "cpu" else torch.Generator(device=dev).manual_seed(config.seed)
    with torch.no_grad():
        x = views_to_model_input(views.images, model.config.unet.view_resolution).to(dev)
        pred = model(x, elevation_deg)
    planes0 = pred.planes.detach().clone()
    tex0 = None if pred.texture_planes is None else pred.texture_planes.detach().clone()
    planes = planes0.clone().requires_grad_(True)
    tex = None if tex0 is None else tex0.clone().requires_grad_(True)
    refined = copy.deepcopy(model)
    refined.requires_grad_(False)
    params = [{"params": [p for p in (planes, tex) if p is not None], "lr": config.lr}]
    if config.decoder_lr_scale > 0:
        refined.decoder.requires_grad_(True)
        params.append({"params": list(refined.decoder.parameters()), "lr": config.lr * config.decoder_lr_scale})
    opt = torch.optim.Adam(params)
    # Stage B too: DMTet's silhouettes give weak gradients (`fourview.recon.render_mesh`), so its
    # SDF is refined as the log-density it started from (`fourview.recon.decoder.volume_density`).
    volume = VolumeRenderer(model.config)

    res = config.resolution or views.resolution[0]
    alpha, rgb = _resize_views(views.images, res)  # [V, H, W], [V, H, W, 3]
    v, h, w = alpha.shape
    target_rgb = (rgb * alpha[..., None] + (1.0 - alpha[..., None])).reshape(v, -1, 3)  # on white
    target_a = alpha.reshape(v, -1)
    c2w = torch.from_numpy(views.c2w).float()[None].to(dev)
    fov = torch.from_numpy(views.fov_deg).float()[None].to(dev)
    history: list[dict] = []
    bar = tqdm(total=config.steps, desc="refine", unit="step", disable=not progress, leave=False)
    for step in range(config.steps):
        pix = torch.stack([torch.randperm(h * w, generator=gen)[: config.rays_per_view] for _ in range(v)])  # [V, P]
        out = refined.render(ReconOutput(planes, tex), c2w, (h, w), pixels=pix[None].to(dev), generator=render_gen,
                             fov_deg=fov, renderer=volume)  # fmt: skip
        t_rgb = target_rgb.gather(1, pix[..., None].expand(-1, -1, 3)).to(dev)
        t_a = target_a.gather(1, pix).to(dev)
        l_rgb = (out.rgb[0] - t_rgb).square().mean()
        l_a = (out.opacity[0] - t_a).square().mean()
        l_prior = (planes - planes0).square().mean()
        if tex is not None:
            l_prior = l_prior + (tex - tex0).square().mean()
        loss = l_rgb + config.opacity_weight * l_a + config.prior_weight * l_prior
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.update()
        if step % 10 == 0 or step == config.steps - 1:
            rec = {"step": step + 1, **{k: float(t.detach()) for k, t in (("loss", loss), ("rgb", l_rgb),
                   ("opacity", l_a), ("prior", l_prior))}}  # fmt: skip
            history.append(rec)
            bar.set_postfix(loss=f"{rec['loss']:.4f}")
    bar.close()
    refined.eval()
    result = ReconOutput(planes.detach(), None if tex is None else tex.detach())
    return OptimizeResult(refined.field(result, 0), model.config, history, time.perf_counter() - start)

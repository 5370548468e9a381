"""The views' silhouettes as an outer bound of a reconstructed field ("carving").

The rig sees the whole object, so no surface point may project outside any view's silhouette:
the visual hull of the views contains the object. A learned field can bulge past it (a box
predicted with wavy sides, a thin part drawn as a blob); the silhouettes say exactly where it
must not be. `SilhouetteBound` is that constraint as a field: at a point, the largest over the
views of the silhouette's 2D signed distance at the point's projection, in pixels, times the
pixel's size at the point's depth (object-frame units). Its zero level set is the visual hull
itself (a point is outside the hull if and only if it is outside some silhouette); away from it
the value is the usual silhouette approximation of the hull's distance, which only matters near
zero. It costs four bilinear lookups per point, no 3D grid.

`TriplaneField` reads its geometry under a bound as ``max(sdf, scale * bound)``: the intersection
of the two solids. Inside the hull the learned field is unchanged, so what silhouettes cannot
show (concavities, the underside) stays the prior's; outside it, the silhouettes win. ``scale``
converts object-frame distances into the field's units: 1 for an SDF decoder, the field's
gradient near its surface for a density decoder's log-density (`CarveConfig.scale`).

The opposite failure, a learned field that leaves out a part the silhouettes show (a thin handle,
a small loose piece), is restored from the same hull: `missed_silhouettes` finds the silhouette
pixels the field's surface does not cover, and a field restored with them
(`fourview.recon.decoder.TriplaneField.restored`) adds the part of the hull that projects into
them in some view (`SilhouetteBound.union_distance` of the missed pixels): the hull is the
reconstruction there, as no learned surface is.

Projection follows `fourview.cameras` (OpenGL camera axes, vertical field of view, row 0 at the
top), as `fourview.recon.visual_hull.project`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from fourview.errors import InputError
from fourview.recon.visual_hull import project
from fourview.views import PosedViews

__all__ = ["CarveConfig", "SilhouetteBound", "missed_silhouettes"]


@dataclass(frozen=True)
class CarveConfig:
    """Whether and how a reconstructor's field is kept inside its views' visual hull.

    Attributes:
        enabled: carve the field of `fourview.recon.model.Reconstructor.reconstruct`.
        scale: the field's geometry units per object-frame unit near its surface (1 for an SDF).
        threshold: alpha at or above which a pixel is inside a silhouette.
    """

    enabled: bool = False
    scale: float = 1.0
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise InputError(f"CarveConfig.scale must be > 0, got {self.scale}")
        if not 0.0 < self.threshold <= 1.0:
            raise InputError(f"CarveConfig.threshold must be in (0, 1], got {self.threshold}")


@dataclass(frozen=True)
class SilhouetteBound:
    """The visual hull of posed silhouettes as a signed distance (see the module docstring).

    Attributes:
        distance: [V, H, W] signed distance to each silhouette's edge, pixels (negative inside).
        c2w: [V, 4, 4] camera-to-world matrices.
        fov_deg: [V] vertical fields of view, degrees.
    """

    distance: torch.Tensor
    c2w: torch.Tensor
    fov_deg: torch.Tensor

    @classmethod
    def from_views(cls, views: PosedViews, threshold: float = 0.5) -> SilhouetteBound:
        """The bound of ``views``' alpha (``>= threshold`` is inside)."""
        return cls.from_masks(views.images[..., 3] >= threshold, views)

    @classmethod
    def from_masks(cls, masks: np.ndarray, views: PosedViews) -> SilhouetteBound:
        """The bound of [V, H, W] bool masks seen by ``views``' cameras (True is inside)."""
        if masks.shape != views.images.shape[:3]:
            raise InputError(f"masks {masks.shape} do not match the views' {views.images.shape[:3]}")
        return cls(
            torch.from_numpy(np.stack([_signed_distance_2d(m) for m in masks])),
            torch.as_tensor(views.c2w, dtype=torch.float32),
            torch.as_tensor(views.fov_deg, dtype=torch.float32),
        )

    def __call__(self, xyz: torch.Tensor) -> torch.Tensor:
        """[N, 3] object-frame points -> [N] signed distance to the hull (negative inside), object units.

        The hull is the intersection of the silhouettes' viewing cones: the largest cone distance.
        """
        return self._cone_distances(xyz).amax(0).to(device=xyz.device, dtype=xyz.dtype)

    def union_distance(self, xyz: torch.Tensor) -> torch.Tensor:
        """[N, 3] object-frame points -> [N] signed distance to the union of the silhouettes' viewing
        cones (negative where a point projects inside the silhouette of at least one view), object units."""
        return self._cone_distances(xyz).amin(0).to(device=xyz.device, dtype=xyz.dtype)

    def _cone_distances(self, xyz: torch.Tensor) -> torch.Tensor:
        """[N, 3] points -> [V, N] each view's silhouette signed distance at their projections, object units."""
        pts = xyz.detach().to(device=self.distance.device, dtype=torch.float32)
        height, width = self.distance.shape[1:]
        g = project(pts, self.c2w, self.fov_deg, width / height)  # [V, N, 3]
        grid = g[:, :, None, :2]  # [V, N, 1, 2]
        pixels = F.grid_sample(self.distance[:, None], grid, padding_mode="border", align_corners=False)[:, 0, :, 0]
        # Off the image (or behind the camera) is outside the silhouette whatever the border reads.
        off_image = (g[..., :2].abs() > 1.0).any(-1) | (g[..., 2] <= 0)  # [V, N]
        pixels = torch.where(off_image, pixels.clamp_min(1.0), pixels)
        pixel_size = g[..., 2].clamp_min(1e-6) * 2.0 * torch.tan(torch.deg2rad(self.fov_deg) / 2.0)[:, None] / height
        return pixels * pixel_size

    def tensors(self) -> dict[str, torch.Tensor]:
        """The bound as named tensors (`fourview.recon.saved_field`)."""
        return {"distance": self.distance, "c2w": self.c2w, "fov_deg": self.fov_deg}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> SilhouetteBound:
        """Inverse of `tensors`.

        Raises:
            InputError: a tensor is missing or the shapes disagree.
        """
        try:
            distance, c2w, fov = tensors["distance"], tensors["c2w"], tensors["fov_deg"]
        except KeyError as e:
            raise InputError(f"silhouette bound lacks tensor {e.args[0]!r}") from None
        v = distance.shape[0]
        if distance.ndim != 3 or tuple(c2w.shape) != (v, 4, 4) or tuple(fov.shape) != (v,):
            raise InputError(
                f"silhouette bound shapes disagree: distance {tuple(distance.shape)}, c2w {tuple(c2w.shape)}, "
                f"fov_deg {tuple(fov.shape)}"
            )
        return cls(distance.float(), c2w.float(), fov.float())


def missed_silhouettes(views: PosedViews, coverage: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """[V, H, W] bool: the pixels of ``views``' silhouettes that a reconstruction's surface leaves out.

    Args:
        views: the input views (alpha ``>= threshold`` is the silhouette).
        coverage: [V, H, W] bool, the pixels the reconstruction's surface covers seen from each
            view's camera (e.g. where its depth map is finite).
        threshold: the silhouettes' alpha threshold.

    A pixel counts when it is more than one pixel from the covered ones, and pieces one pixel wide
    are dropped (an opening): the outlines of a surface and a silhouette never agree to the pixel.
    """
    if coverage.shape != views.images.shape[:3]:
        raise InputError(f"coverage {coverage.shape} does not match the views' {views.images.shape[:3]}")
    inside = views.images[..., 3] >= threshold
    return np.stack([ndimage.binary_opening(s & ~ndimage.binary_dilation(c)) for s, c in zip(inside, coverage)])


def _signed_distance_2d(inside: np.ndarray) -> np.ndarray:
    """[H, W] bool -> [H, W] float32 distance to the mask's edge, pixels, negative inside (zero half way)."""
    if not inside.any():
        return np.full(inside.shape, float(max(inside.shape)), np.float32)
    outside = ndimage.distance_transform_edt(~inside)
    within = ndimage.distance_transform_edt(inside)
    return np.where(inside, -(within - 0.5), outside - 0.5).astype(np.float32)

"""Colours projected from the input views onto a reconstructed surface.

A reconstructor's colour field is a learned, low-resolution guess; where an input view sees the
surface, that view's pixel is the better colour (texture projection, as multi-view texturing
pipelines do). For each surface point and each view:

1. visibility: the point projects into the view and its distance along the viewing axis is
   within ``depth_tolerance`` of the mesh's depth map rendered from that camera (so occluded
   points, e.g. the inside of a mug's handle seen through its body, take nothing);
2. the view's pixel is sampled bilinearly; pixels near the view's silhouette (alpha below
   ``alpha_threshold`` anywhere within ``erode_px``) are skipped, so no background bleeds in;
3. weight ``cos(theta) ** power`` with ``theta`` the angle between the surface normal and the
   direction to the camera, zero below ``min_cos`` (grazing views smear).

The projected colour is the weighted mean over views; it replaces the fallback colour in
proportion ``min(1, total weight / full_weight)``, so the transition is smooth. The fallback on
surfaces no view sees well (the bottom, at the rig's positive elevation) is, with ``unseen =
"propagate"``, the seen colours carried over the mesh: a harmonic fill of the per-vertex projected
colours (`propagate_colours`), since a small model's learned guess for hidden colours is mostly
worse than its neighbours' colour; with ``unseen = "field"``, the field's own colour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from fourview.errors import InputError
from fourview.render.raster import interpolate, rasterize
from fourview.views import PosedViews


@dataclass(frozen=True)
class ProjectionConfig:
    """Settings of the projection (see the module docstring).

    Attributes:
        min_cos: views that see the surface at a cosine below this contribute nothing.
        power: exponent of the cosine weight.
        depth_tolerance: visibility slack along the viewing axis, object units (the object fits
            in the unit sphere; a 64-pixel rig view's pixel is about 0.034 at the object).
        alpha_threshold: pixels with alpha below this (within ``erode_px``) are not used.
        erode_px: pixels of the silhouette's edge skipped.
        full_weight: total weight at and above which projected colours replace the fallback.
        unseen: the fallback colour: ``propagate`` (seen colours carried over the mesh) or
            ``field`` (the field's colour).
    """

    min_cos: float = 0.2
    power: float = 2.0
    depth_tolerance: float = 0.05
    alpha_threshold: float = 0.99
    erode_px: int = 1
    full_weight: float = 0.25
    unseen: Literal["propagate", "field"] = "propagate"

    def __post_init__(self) -> None:
        if self.unseen not in ("propagate", "field"):
            raise InputError(f"unseen colours come from 'propagate' or 'field', got {self.unseen!r}")


@dataclass(frozen=True)
class ProjectedColours:
    """Colours of points from the views.

    Attributes:
        color: [N, 3] float32 sRGB, the weighted mean over the views that see each point (0 where none).
        weight: [N] float32, total weight (0 where no view sees the point).
    """

    color: np.ndarray
    weight: np.ndarray

    def blend_over(self, base: np.ndarray, full_weight: float) -> np.ndarray:
        """[N, 3]: ``base`` colours replaced by the projected ones in proportion to their weight."""
        mix = np.clip(self.weight / full_weight, 0.0, 1.0)[:, None]
        return (mix * self.color + (1.0 - mix) * base).astype(np.float32)


def face_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """[F, 3] unit normals of counter-clockwise triangles (zero for degenerate ones)."""
    v = np.asarray(verts, dtype=np.float64)
    n = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])
    length = np.linalg.norm(n, axis=1, keepdims=True)
    return (n / np.maximum(length, 1e-20)).astype(np.float32)


@torch.no_grad()
def depth_map(verts: np.ndarray, faces: np.ndarray, mvp: np.ndarray, w2c: np.ndarray, resolution: int) -> np.ndarray:
    """[H, W] distance along the viewing axis to the mesh at each pixel centre (inf where empty).

    Args:
        verts: [V, 3] object frame; faces: [F, 3].
        mvp: [4, 4] object frame to clip space; w2c: [4, 4] object frame to camera (OpenGL axes).
    """
    v_h = F.pad(torch.from_numpy(np.asarray(verts, dtype=np.float32)), (0, 1), value=1.0)  # [V, 4]
    pos = (v_h @ torch.from_numpy(mvp).float().T)[None]  # [1, V, 4] clip space
    tri = torch.from_numpy(np.asarray(faces)).to(torch.int32)
    rast, _ = rasterize(pos, tri, (resolution, resolution))  # [1, H, W, 4], row 0 = bottom
    depth_v = -(v_h @ torch.from_numpy(w2c).float().T)[:, 2:3]  # [V, 1]
    depth, _ = interpolate(depth_v[None], rast, tri)  # [1, H, W, 1]
    out = depth[0, ..., 0].numpy().astype(np.float32)
    out[rast[0, ..., 3].numpy() <= 0] = np.inf
    return np.ascontiguousarray(out[::-1])  # row 0 at the top


def view_depth_maps(verts: np.ndarray, faces: np.ndarray, views: PosedViews) -> np.ndarray:
    """[V, H, W] the mesh's `depth_map` from each view's camera at the views' (square) size.

    Args:
        verts: [V, 3] object frame; faces: [F, 3].
        views: the cameras and image sizes.

    Raises:
        InputError: views that are not square.
    """
    h, w = views.images.shape[1:3]
    if h != w:
        raise InputError(f"projected views must be square, got {h}x{w}")
    depths = [depth_map(verts, faces, views.mvp(i), np.linalg.inv(views.c2w[i]), h) for i in range(len(views.images))]
    return np.stack(depths) if depths else np.zeros((0, h, w), np.float32)


def surface_coverage(verts: np.ndarray, faces: np.ndarray, views: PosedViews) -> np.ndarray:
    """[V, H, W] bool: the pixels of each view (row 0 at the top) whose centre the mesh covers."""
    return np.isfinite(view_depth_maps(verts, faces, views))


@dataclass(frozen=True)
class SurfaceProjector:
    """The views prepared for projection onto one mesh: built once, queried for many points.

    Attributes:
        views: the images and their cameras.
        config: settings.
        depth: [V, H, W] the mesh's depth map from each view (`depth_map`), row 0 at the top.
        usable: [V, H, W] bool, pixels whose colour may be used (alpha over the threshold, eroded).
    """

    views: PosedViews
    config: ProjectionConfig
    depth: np.ndarray
    usable: np.ndarray

    @classmethod
    def build(
        cls, verts: np.ndarray, faces: np.ndarray, views: PosedViews, config: ProjectionConfig = ProjectionConfig()
    ) -> SurfaceProjector:
        """Render the mesh's depth from every view and mark the usable pixels.

        Args:
            verts: [V, 3] mesh positions (object frame).
            faces: [F, 3] vertex indices, counter-clockwise seen from outside.
            views: the images and their cameras.
            config: settings.

        Raises:
            InputError: views that are not square.
        """
        from scipy.ndimage import minimum_filter

        depth = view_depth_maps(verts, faces, views)
        usable = []
        for image in views.images:
            ok = image[..., 3] >= config.alpha_threshold
            if config.erode_px > 0:
                ok = minimum_filter(ok, size=2 * config.erode_px + 1, mode="constant", cval=False)
            usable.append(ok)
        return cls(views, config, depth, np.stack(usable) if usable else np.zeros(depth.shape, bool))

    def colours(self, points: np.ndarray, normals: np.ndarray) -> ProjectedColours:
        """Colours of surface points seen by the views.

        Args:
            points: [N, 3] points on (or within a texel of) the surface, object frame.
            normals: [N, 3] unit outward normals at the points.
        """
        config, views = self.config, self.views
        points = np.asarray(points, dtype=np.float64)
        points_h = np.concatenate([points, np.ones((len(points), 1))], axis=1)  # [N, 4]
        normals = np.asarray(normals, dtype=np.float64)
        total = np.zeros(len(points), dtype=np.float64)
        acc = np.zeros((len(points), 3), dtype=np.float64)
        for i, image in enumerate(views.images):
            h, w = image.shape[:2]
            mvp, w2c = views.mvp(i), np.linalg.inv(views.c2w[i])
            to_cam = views.c2w[i][None, :3, 3] - points  # [N, 3]
            cos = (normals * to_cam).sum(1) / np.maximum(np.linalg.norm(to_cam, axis=1), 1e-12)  # [N]
            clip = points_h @ mvp.T  # [N, 4]
            ndc = clip[:, :3] / clip[:, 3:4]
            col, row = (ndc[:, 0] + 1.0) * 0.5 * w, (1.0 - ndc[:, 1]) * 0.5 * h  # continuous pixel coordinates
            ahead = -(points_h @ w2c.T)[:, 2]  # [N] distance along the viewing axis
            ci, ri = np.floor(col).astype(np.int64), np.floor(row).astype(np.int64)
            inside = (ci >= 0) & (ci < w) & (ri >= 0) & (ri < h) & (cos >= config.min_cos)
            ci, ri = np.clip(ci, 0, w - 1), np.clip(ri, 0, h - 1)
            # Visible when no surface lies in front of the point along its pixel's ray.
            seen = inside & (ahead <= self.depth[i][ri, ci] + config.depth_tolerance) & self.usable[i][ri, ci]
            if not seen.any():
                continue
            color = _bilinear(image[..., :3], col[seen] - 0.5, row[seen] - 0.5)  # [M, 3]
            wgt = cos[seen] ** config.power
            acc[seen] += wgt[:, None] * color
            total[seen] += wgt
        color = np.where(total[:, None] > 0, acc / np.maximum(total, 1e-12)[:, None], 0.0)
        return ProjectedColours(color=color.astype(np.float32), weight=total.astype(np.float32))


def project_colours(
    verts: np.ndarray,
    faces: np.ndarray,
    points: np.ndarray,
    normals: np.ndarray,
    views: PosedViews,
    config: ProjectionConfig = ProjectionConfig(),
) -> ProjectedColours:
    """Colours of surface points seen by the views (one query; `SurfaceProjector` for several).

    Args:
        verts: [V, 3] mesh positions (object frame), for the visibility depth maps.
        faces: [F, 3] vertex indices, counter-clockwise seen from outside.
        points: [N, 3] points on (or within a texel of) the surface, object frame.
        normals: [N, 3] unit outward normals at the points.
        views: the images and their cameras.
        config: settings.
    """
    return SurfaceProjector.build(verts, faces, views, config).colours(points, normals)


def vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """[V, 3] unit area-weighted vertex normals (zero for isolated vertices)."""
    v = np.asarray(verts, dtype=np.float64)
    n = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])  # [F, 3], |n| = 2 area
    out = np.zeros_like(v)
    for k in range(3):
        np.add.at(out, faces[:, k], n)
    return (out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-20)).astype(np.float32)


def propagate_colours(
    verts: np.ndarray, faces: np.ndarray, color: np.ndarray, known: np.ndarray, default: np.ndarray
) -> np.ndarray:
    """Carry known vertex colours over the mesh to the unknown vertices (harmonic fill).

    Vertices at the same position (UV seams split them) are joined first. Unknown vertices solve
    ``(L + eps I) x = eps * default`` with the known ones fixed (``L`` the uniform graph Laplacian),
    so each gets a smooth blend of the known colours around it, and a connected component with no
    known vertex keeps ``default``.

    Args:
        verts: [V, 3]; faces: [F, 3].
        color: [V, 3] colours, used where ``known``.
        known: [V] bool.
        default: [V, 3] colours for components with nothing known.

    Returns:
        [V, 3] float32.
    """
    from scipy.sparse import coo_matrix, identity
    from scipy.sparse.linalg import spsolve

    _, node = np.unique(np.round(np.asarray(verts, np.float64), 6), axis=0, return_inverse=True)
    node = node.reshape(-1)
    n = int(node.max()) + 1
    # One colour per node: the mean over its known vertices (or its default).
    cnt = np.bincount(node, weights=known.astype(np.float64), minlength=n)
    acc = np.stack([np.bincount(node, weights=color[:, c] * known, minlength=n) for c in range(3)], 1)
    dflt = np.stack([np.bincount(node, weights=default[:, c], minlength=n) for c in range(3)], 1)
    dflt /= np.maximum(np.bincount(node, minlength=n), 1)[:, None]
    node_known = cnt > 0
    x = np.where(node_known[:, None], acc / np.maximum(cnt, 1)[:, None], dflt)  # [n, 3]
    if node_known.all() or not node_known.any():
        return x[node].astype(np.float32)
    f = node[np.asarray(faces)]  # [F, 3]
    i = np.concatenate([f[:, 0], f[:, 1], f[:, 2], f[:, 1], f[:, 2], f[:, 0]])
    j = np.concatenate([f[:, 1], f[:, 2], f[:, 0], f[:, 0], f[:, 1], f[:, 2]])
    adj = coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n)).tocsr()
    adj.data[:] = 1.0  # duplicates (edges of two faces) count once
    lap = (coo_matrix((np.asarray(adj.sum(1)).ravel(), (np.arange(n), np.arange(n))), shape=(n, n)) - adj).tocsr()
    u, k = np.nonzero(~node_known)[0], np.nonzero(node_known)[0]
    eps = 1e-4
    a = lap[u][:, u] + eps * identity(len(u), format="csr")
    b = -(lap[u][:, k] @ x[k]) + eps * dflt[u]  # [U, 3]
    x[u] = np.stack([spsolve(a.tocsc(), b[:, c]) for c in range(3)], 1)
    return np.clip(x[node], 0.0, 1.0).astype(np.float32)


def barycentric(points: np.ndarray, verts: np.ndarray, faces: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """[N, 3] barycentric coordinates of ``points`` [N, 3] in the planes of triangles ``tris`` [N]."""
    a, b, c = (np.asarray(verts, np.float64)[faces[tris, k]] for k in range(3))
    v0, v1, v2 = b - a, c - a, np.asarray(points, np.float64) - a
    d00, d01, d11 = (v0 * v0).sum(1), (v0 * v1).sum(1), (v1 * v1).sum(1)
    d20, d21 = (v2 * v0).sum(1), (v2 * v1).sum(1)
    den = np.where(np.abs(d00 * d11 - d01 * d01) > 1e-30, d00 * d11 - d01 * d01, 1.0)
    w1 = (d11 * d20 - d01 * d21) / den
    w2 = (d00 * d21 - d01 * d20) / den
    return np.stack([1.0 - w1 - w2, w1, w2], axis=1)


def _bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """[M, C]: ``image`` [H, W, C] at continuous pixel-centre coordinates (x = col, y = row), clamped."""
    h, w = image.shape[:2]
    x, y = np.clip(x, 0, w - 1), np.clip(y, 0, h - 1)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
    bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
    return top * (1 - fy) + bottom * fy

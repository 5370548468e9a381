"""Differentiable rendering of a DMTet mesh (stage B of the reconstructor) through the rasteriser.

The mesh ``(verts, faces)`` (object frame, e.g. from `fourview.recon.dmtet.dmtet_mesh`) is
projected with each camera's ``Camera.mvp()`` and rasterised by `fourview.render.raster`
(nvdiffrast's ops; nvdiffrast itself on CUDA when installed). Colour comes either from per-vertex
colours or from a colour field evaluated at the interpolated surface point of every covered
pixel, so texture is the field's, not the mesh's. Silhouettes go through the rasteriser's
`antialias`, which is what gives gradients w.r.t. vertex positions at the object's outline; with
the field colour, gradients also reach positions through the interpolated surface points.

Known limit (nvdiffrast's algorithm, not this port): `antialias` only sees a silhouette edge of the
triangle that covers the pixel, so on smooth, finely tessellated meshes -- whose outline runs
along thin, foreshortened triangles -- it finds part of the outline, and the silhouette gradient
is a fraction of the true one, smaller for finer grids (docs/benchmarks.md).

Images come out in fourview's layout (row 0 at the top; the rasteriser's row 0 is the bottom).
No lighting: the colour is the field's or the vertices' sRGB value, like the reconstructor's
volumetric renders (`fourview.recon.render_volume`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fourview.cameras import Camera
from fourview.errors import InputError
from fourview.render.raster import antialias, interpolate, rasterize


@dataclass
class MeshRenderOutput:
    """Rendered views (B cameras), row 0 at the top of each image.

    Attributes:
        rgba: [B, H, W, 4]: channels 0-2 are the colour composited on the background (what the
            losses compare), channel 3 the antialiased coverage in [0, 1].
        depth: [B, H, W] distance along each camera's viewing axis, object-frame units; 0 where
            empty (not antialiased).
    """

    rgba: torch.Tensor
    depth: torch.Tensor


def render_mesh(
    verts: torch.Tensor,
    faces: torch.Tensor,
    cameras: Sequence[Camera],
    resolution: int | tuple[int, int],
    vertex_colors: torch.Tensor | None = None,
    color_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> MeshRenderOutput:
    """Render a triangle mesh from `fourview.cameras` cameras, differentiably.

    Give exactly one colour source: ``vertex_colors`` or ``color_fn`` (e.g. ``field.color`` of a
    `fourview.recon.fields.SurfaceField`).

    Args:
        verts: [V, 3] float positions, object frame (differentiable).
        faces: [F, 3] int vertex indices.
        cameras: B cameras.
        resolution: ``H`` or ``(H, W)`` pixels.
        vertex_colors: [V, 3] sRGB in [0, 1], interpolated over the faces.
        color_fn: ``xyz [N, 3] -> rgb [N, 3]``, called once on the surface points of all covered
            pixels of all views.
        background: RGB behind the mesh, in [0, 1].

    Returns:
        `MeshRenderOutput`, on ``verts``' device, in ``verts``' dtype; a mesh with no faces renders
        as the background with zero coverage.

    Raises:
        InputError: on a bad resolution, no cameras, or not exactly one colour source.
    """
    h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
    if h < 1 or w < 1:
        raise InputError(f"render resolution must be >= 1 pixel, got {resolution}")
    if len(cameras) == 0:
        raise InputError("render_mesh needs at least one camera")
    if (vertex_colors is None) == (color_fn is None):
        raise InputError("render_mesh needs exactly one colour source: vertex_colors or color_fn")
    if verts.ndim != 2 or verts.shape[1] != 3:
        raise ValueError(f"verts must be [V, 3], got {tuple(verts.shape)}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must be [F, 3], got {tuple(faces.shape)}")
    if vertex_colors is not None and vertex_colors.shape != verts.shape:
        raise ValueError(f"vertex_colors must be [V, 3] = {tuple(verts.shape)}, got {tuple(vertex_colors.shape)}")
    n_views, dev, dtype = len(cameras), verts.device, verts.dtype
    bg = torch.tensor(background, device=dev, dtype=dtype)
    if faces.shape[0] == 0:
        rgba = torch.cat([bg.expand(n_views, h, w, 3), torch.zeros(n_views, h, w, 1, device=dev, dtype=dtype)], -1)
        rgba = rgba + 0.0 * verts.sum()  # stays in verts' graph (zero gradient), so backward() still runs
        return MeshRenderOutput(rgba=rgba, depth=torch.zeros(n_views, h, w, device=dev, dtype=dtype))

    tri = faces.to(device=dev, dtype=torch.int32).contiguous()
    mvp = torch.from_numpy(np.stack([cam.mvp(w / h) for cam in cameras])).to(dev, dtype)  # [B, 4, 4]
    pos = torch.einsum("vi,bji->bvj", F.pad(verts, (0, 1), value=1.0), mvp)  # [B, V, 4] clip space
    rast, _ = rasterize(pos, tri, (h, w))  # [B, H, W, 4], row 0 = bottom
    covered = rast[..., 3:4] > 0  # [B, H, W, 1]
    mask = covered.to(dtype)

    if vertex_colors is not None:
        color, _ = interpolate(vertex_colors.to(dtype)[None], rast, tri)  # [B, H, W, 3]
    else:
        xyz, _ = interpolate(verts[None], rast, tri)  # [B, H, W, 3] surface points
        flat = xyz.reshape(-1, 3)
        ids = covered.reshape(-1).nonzero().squeeze(1)  # [N] covered pixels
        values = color_fn(flat[ids]).to(dtype)  # [N, 3]
        if values.shape != (ids.shape[0], 3):
            raise ValueError(f"color_fn must map [N, 3] points to [N, 3] colours, got {tuple(values.shape)}")
        color = torch.zeros_like(flat).index_copy(0, ids, values).view(n_views, h, w, 3)
    # Antialias premultiplied colour and coverage together, so the blended alpha matches the colour.
    premult = torch.cat([color * mask, mask], dim=-1)  # [B, H, W, 4]
    aa = antialias(premult, rast, pos, tri)  # [B, H, W, 4]
    alpha = aa[..., 3:4]
    rgba = torch.cat([aa[..., :3] + (1.0 - alpha) * bg, alpha], dim=-1)
    depth, _ = interpolate(pos[..., 3:4].contiguous(), rast, tri)  # clip w = distance along the viewing axis
    depth = depth[..., 0] * mask[..., 0]
    return MeshRenderOutput(rgba=torch.flip(rgba, dims=[1]), depth=torch.flip(depth, dims=[1]))

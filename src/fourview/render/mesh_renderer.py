"""Render a textured `MeshAsset` from `fourview.cameras` cameras: RGBA, depth and normal images.

Built on the rasteriser ops of `fourview.render.raster` (nvdiffrast semantics), so the same code
runs on CPU and, with nvdiffrast installed, on CUDA. Anti-aliasing is by supersampling: each
output pixel averages ``supersample**2`` samples, and its alpha is their coverage.

Shading happens in linear RGB and is written back as sRGB (docs/conventions.md):

    albedo   = srgb_to_linear(texture) * srgb_to_linear(vertex colour) * base_color
    diffuse  = albedo * (1 - metallic) * (ambient + directional * max(n.l, 0)
                                          + environment * hemisphere(n))
    specular = directional * specular * (1 - roughness)^2 * F0 * max(n.h, 0)^shininess
               with F0 = lerp(0.04, albedo, metallic), shininess = 2 / max(roughness, 0.05)^4 - 2

``Lighting(albedo=True)`` skips shading: colour = albedo. Surfaces are lit from whichever side
faces the camera (thin sheets render from both sides).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fourview.cameras import Camera
from fourview.mesh import MeshAsset, srgb_to_linear
from fourview.render.raster import interpolate, rasterize, texture

SKY_COLOR = (1.0, 1.0, 1.0)
"""Linear colour of the environment light from above (+Y)."""
GROUND_COLOR = (0.35, 0.33, 0.3)
"""Linear colour of the environment light from below (-Y)."""


@dataclass(frozen=True)
class Lighting:
    """Lighting and shading settings of a render (intensities are linear multipliers).

    Attributes:
        albedo: unlit: the colour is the surface albedo (base colour), nothing else.
        ambient: uniform light from all directions.
        directional: intensity of one distant light.
        direction: object-frame direction towards the directional light (normalised on use).
        environment: intensity of a sky/ground hemisphere light (SKY_COLOR above, GROUND_COLOR below).
        specular: weight of the specular highlight of the directional light.
    """

    albedo: bool = False
    ambient: float = 0.35
    directional: float = 0.75
    direction: tuple[float, float, float] = (0.4, 1.0, 0.7)
    environment: float = 0.0
    specular: float = 0.25

    def __post_init__(self) -> None:
        for name in ("ambient", "directional", "environment", "specular"):
            if getattr(self, name) < 0:
                raise ValueError(f"lighting {name} must be >= 0, got {getattr(self, name)}")
        if float(np.linalg.norm(self.direction)) == 0.0:
            raise ValueError("light direction must be non-zero")


@dataclass(frozen=True)
class RenderOutput:
    """One rendered view.

    Attributes:
        rgba: [H, W, 4] float32, straight alpha; RGB sRGB-encoded in [0, 1]; alpha = coverage.
        depth: [H, W] float32 distance along the camera's viewing axis; 0 where empty.
        normal: [H, W, 3] float32 unit object-frame normals facing the camera; 0 where empty.
    """

    rgba: np.ndarray
    depth: np.ndarray
    normal: np.ndarray


def crease_normals(verts: np.ndarray, faces: np.ndarray, crease_deg: float = 45.0) -> np.ndarray:
    """Per-corner normals, smooth across edges flatter than ``crease_deg`` and sharp across others.

    Vertices are welded by position first, so seams in UV or colour do not show as shading seams.

    Args:
        verts: [V, 3] positions.
        faces: [F, 3] vertex indices.
        crease_deg: faces meeting at a wider angle keep separate normals.

    Returns:
        [F, 3, 3] unit normals, one per face corner.
    """
    tri = verts[faces].astype(np.float64)  # [F, 3, 3]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # [F, 3], length = 2 * area
    unit = fn / np.maximum(np.linalg.norm(fn, axis=1, keepdims=True), 1e-20)
    scale = max(float(np.abs(verts).max()), 1e-12)
    _, weld = np.unique(np.round(verts / scale * 1e6).astype(np.int64), axis=0, return_inverse=True)
    corner_vertex = weld.reshape(-1)[faces.reshape(-1)]  # [3F] welded id of each corner
    order = np.argsort(corner_vertex, kind="stable")
    sorted_v = corner_vertex[order]
    starts = np.flatnonzero(np.r_[True, sorted_v[1:] != sorted_v[:-1]])
    counts = np.diff(np.r_[starts, len(sorted_v)])
    # All ordered pairs of corners sharing a welded vertex: (a, b) for a, b in the same group.
    group_of = np.repeat(np.arange(len(starts)), counts)  # [3F] group index of each sorted corner
    pair_count = counts[group_of]  # each corner pairs with every corner of its group
    a = np.repeat(order, pair_count)
    offsets = np.arange(len(a)) - np.repeat(np.cumsum(pair_count) - pair_count, pair_count)
    b = order[np.repeat(starts[group_of], pair_count) + offsets]
    fa, fb = a // 3, b // 3
    keep = np.einsum("ij,ij->i", unit[fa], unit[fb]) >= math.cos(math.radians(crease_deg))
    out = np.zeros((len(faces) * 3, 3))
    np.add.at(out, a[keep], fn[fb[keep]])
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-20)
    return out.reshape(-1, 3, 3).astype(np.float32)


class MeshRenderer:
    """Renders one asset from any camera. Construction prepares tensors; nothing is read from disk.

    Args:
        asset: the object, in the object frame.
        device: torch device for the rasteriser (``cuda`` uses nvdiffrast when installed).
        crease_deg: crease angle for shading normals (see `crease_normals`).
    """

    def __init__(self, asset: MeshAsset, device: str | torch.device = "cpu", crease_deg: float = 45.0):
        if asset.num_faces == 0:
            raise ValueError(f"asset {asset.name!r} has no faces")
        self.device = torch.device(device)
        dev = self.device
        verts, faces, corner_uv, corner_col, corner_nrm, face_part = [], [], [], [], [], []
        offset = 0
        for i, part in enumerate(asset.parts):
            f = part.faces.astype(np.int64)
            verts.append(part.verts.astype(np.float32))
            faces.append(f + offset)
            offset += len(part.verts)
            uv = part.uv if part.uv is not None else np.zeros((len(part.verts), 2), np.float32)
            # OBJ-convention v (0 at the image bottom) -> texel rows counted from the top, as stored.
            corner_uv.append(np.stack([uv[:, 0], 1.0 - uv[:, 1]], axis=1)[f])  # [F, 3, 2]
            col = part.vertex_colors if part.vertex_colors is not None else np.ones((len(part.verts), 3), np.float32)
            corner_col.append(srgb_to_linear(col)[f])  # [F, 3, 3] linear
            corner_nrm.append(crease_normals(part.verts, f, crease_deg))  # [F, 3, 3]
            face_part.append(np.full(len(f), i, dtype=np.int64))
        self.verts = torch.from_numpy(np.concatenate(verts)).to(dev)  # [V, 3]
        self.faces = torch.from_numpy(np.concatenate(faces)).to(dev, torch.int32)  # [F, 3]
        n_faces = len(self.faces)
        # Attributes are stored per face corner, indexed by `corner_tri`, so seams stay sharp.
        self.corner_tri = torch.arange(3 * n_faces, device=dev, dtype=torch.int32).view(n_faces, 3)
        self.corner_attr = torch.from_numpy(
            np.concatenate(
                [np.concatenate(x).reshape(-1, w) for x, w in ((corner_uv, 2), (corner_col, 3), (corner_nrm, 3))],
                axis=1,
            )
        ).to(dev)  # [3F, 8]: uv (2), linear vertex colour (3), normal (3)
        self.face_part = torch.from_numpy(np.concatenate(face_part)).to(dev)  # [F]
        mats = [p.material for p in asset.parts]
        self.base_color = torch.tensor([m.base_color[:3] for m in mats], dtype=torch.float32, device=dev)  # [P, 3]
        self.metallic = torch.tensor([m.metallic for m in mats], dtype=torch.float32, device=dev)  # [P]
        self.roughness = torch.tensor([m.roughness for m in mats], dtype=torch.float32, device=dev)  # [P]
        self.textures = [
            None if m.texture is None else torch.from_numpy(srgb_to_linear(m.texture[..., :3]))[None].to(dev)
            for m in mats
        ]  # each [1, Ht, Wt, 3] linear

    @torch.no_grad()
    def render(
        self,
        camera: Camera,
        resolution: int,
        lighting: Lighting = Lighting(),
        supersample: int = 2,
    ) -> RenderOutput:
        """Render one view.

        Args:
            camera: the camera (object frame).
            resolution: output side in pixels (square images).
            lighting: shading settings; ``Lighting(albedo=True)`` for unlit albedo.
            supersample: samples per pixel along each axis (1 = no anti-aliasing).

        Returns:
            `RenderOutput` with row 0 at the top of the image.
        """
        if resolution < 1 or supersample < 1:
            raise ValueError(f"resolution and supersample must be >= 1, got {resolution}, {supersample}")
        dev, ss = self.device, supersample
        res = resolution * ss
        mvp = torch.from_numpy(camera.mvp()).float().to(dev)
        w2c = torch.from_numpy(camera.w2c()).float().to(dev)
        verts_h = F.pad(self.verts, (0, 1), value=1.0)  # [V, 4]
        pos = (verts_h @ mvp.T)[None]  # [1, V, 4] clip space
        rast, _ = rasterize(pos, self.faces, (res, res))  # [1, res, res, 4], row 0 = bottom (nvdiffrast)
        tri_id = rast[0, ..., 3].long() - 1  # [res, res], -1 where empty
        covered = tri_id >= 0
        depth_v = -(verts_h @ w2c.T)[:, 2:3]  # [V, 1] distance along the viewing axis
        # Per-vertex attributes interpolated together: depth (1) and position (3) on `faces`.
        geo, _ = interpolate(torch.cat([depth_v, self.verts], dim=1)[None], rast, self.faces)  # [1, res, res, 4]
        attr, _ = interpolate(self.corner_attr[None], rast, self.corner_tri)  # [1, res, res, 8]
        # Shade only covered samples: [M, ...] instead of whole images.
        idx = covered.view(-1).nonzero()[:, 0]  # [M] flat indices of covered samples
        geo, attr = geo.view(-1, 4)[idx], attr.view(-1, 8)[idx]
        part = self.face_part[tri_id.view(-1)[idx]]  # [M]

        cam_pos = torch.from_numpy(camera.position).float().to(dev)
        view_dir = F.normalize(cam_pos - geo[:, 1:4], dim=-1)  # [M, 3] towards the camera
        normal = F.normalize(attr[:, 5:8], dim=-1)
        normal = torch.where((normal * view_dir).sum(-1, keepdim=True) < 0, -normal, normal)

        albedo = attr[:, 2:5] * self.base_color[part]  # [M, 3] linear
        for p, tex in enumerate(self.textures):
            sel = part == p
            if tex is None or not bool(sel.any()):
                continue
            uv = attr[sel, 0:2][None, None]  # [1, 1, m, 2]
            albedo[sel] = albedo[sel] * texture(tex, uv, filter_mode="linear", boundary_mode="wrap")[0, 0]

        color = albedo if lighting.albedo else self._shade(albedo, normal, view_dir, part, lighting)
        color = _linear_to_srgb(color.clamp(0.0, 1.0))
        # Scatter back into images (premultiplied RGBA, for averaging the supersamples).
        rgba = torch.zeros(res * res, 4, device=dev)
        rgba[idx] = torch.cat([color, torch.ones_like(color[:, :1])], dim=-1)
        normal_img = torch.zeros(res * res, 3, device=dev)
        normal_img[idx] = normal
        depth_img = torch.zeros(res * res, device=dev)
        depth_img[idx] = geo[:, 0]
        rgba, normal, depth = rgba.view(res, res, 4), normal_img.view(res, res, 3), depth_img.view(res, res)
        mask = rgba[..., 3:4]

        # Back to row 0 = top, then average the supersamples.
        rgba, normal, depth = (torch.flip(t, dims=[0]) for t in (rgba, normal, depth))
        rgba = _box_downsample(rgba, ss)
        cover = _box_downsample(mask.flip(0), ss)  # [H, W, 1]
        normal = F.normalize(_box_downsample(normal, ss), dim=-1)
        depth = _box_downsample(depth[..., None], ss)[..., 0] / cover[..., 0].clamp(min=1e-8)
        rgb = rgba[..., :3] / rgba[..., 3:4].clamp(min=1e-8)  # un-premultiply
        rgba = torch.cat([rgb * (rgba[..., 3:4] > 0), rgba[..., 3:4]], dim=-1)
        return RenderOutput(
            rgba=rgba.cpu().numpy().astype(np.float32),
            depth=depth.cpu().numpy().astype(np.float32),
            normal=normal.cpu().numpy().astype(np.float32),
        )

    def _shade(self, albedo, normal, view_dir, part, lighting: Lighting) -> torch.Tensor:
        light = F.normalize(torch.tensor(lighting.direction, dtype=torch.float32, device=albedo.device), dim=0)
        metallic, rough = self.metallic[part][..., None], self.roughness[part][..., None]
        n_dot_l = (normal * light).sum(-1, keepdim=True).clamp(min=0.0)
        irradiance = lighting.ambient + lighting.directional * n_dot_l
        if lighting.environment > 0:
            up = 0.5 * (1.0 + normal[..., 1:2])
            sky = torch.tensor(SKY_COLOR, device=albedo.device)
            ground = torch.tensor(GROUND_COLOR, device=albedo.device)
            irradiance = irradiance + lighting.environment * (up * sky + (1.0 - up) * ground)
        diffuse = albedo * (1.0 - metallic) * irradiance
        half = F.normalize(light + view_dir, dim=-1)
        shininess = 2.0 / rough.clamp(min=0.05) ** 4 - 2.0
        f0 = 0.04 * (1.0 - metallic) + albedo * metallic
        n_dot_h = (normal * half).sum(-1, keepdim=True).clamp(min=0.0)
        spec = lighting.directional * lighting.specular * (1.0 - rough) ** 2 * f0 * n_dot_h**shininess
        return diffuse + spec * (n_dot_l > 0)


def _linear_to_srgb(c: torch.Tensor) -> torch.Tensor:
    return torch.where(c <= 0.0031308, c * 12.92, 1.055 * c.clamp(min=0.0031308) ** (1.0 / 2.4) - 0.055)


def _box_downsample(img: torch.Tensor, factor: int) -> torch.Tensor:
    """[H*f, W*f, C] -> [H, W, C] mean over f x f blocks."""
    if factor == 1:
        return img
    h, w, c = img.shape
    return img.view(h // factor, factor, w // factor, factor, c).mean(dim=(1, 3))

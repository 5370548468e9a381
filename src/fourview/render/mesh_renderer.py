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

On the CPU, everything after rasterisation (interpolation, texture lookups, shading, the
supersample average) runs in one single-threaded numba kernel (`_shade_image`, compiled on first
use and cached on disk) over the covered samples; it follows the torch code of
`MeshRenderer.render_torch` (used for CUDA tensors) operation by operation in float32, and agrees
with it to a few float32 ulps (transcendental functions round differently).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from numba import njit

from fourview.cameras import Camera
from fourview.errors import InputError
from fourview.mesh import MeshAsset, srgb_to_linear
from fourview.render.raster import interpolate, rasterize, texture

SKY_COLOR = (1.0, 1.0, 1.0)
"""Linear colour of the environment light from above (+Y)."""
GROUND_COLOR = (0.35, 0.33, 0.3)
"""Linear colour of the environment light from below (-Y)."""


@dataclass(frozen=True)
class Lighting:
    """Lighting and shading settings of a render (intensities are linear multipliers)."""

    albedo: bool = False
    """Unlit: the colour is the surface albedo (base colour), nothing else."""
    ambient: float = 0.35
    """Uniform light from all directions."""
    directional: float = 0.75
    """Intensity of one distant light."""
    direction: tuple[float, float, float] = (0.4, 1.0, 0.7)
    """Object-frame direction towards the directional light (normalised on use)."""
    environment: float = 0.0
    """Intensity of a sky/ground hemisphere light (SKY_COLOR above, GROUND_COLOR below)."""
    specular: float = 0.25
    """Weight of the specular highlight of the directional light."""

    def __post_init__(self) -> None:
        for name in ("ambient", "directional", "environment", "specular"):
            if getattr(self, name) < 0:
                raise InputError(f"lighting {name} must be >= 0, got {getattr(self, name)}")
        if float(np.linalg.norm(self.direction)) == 0.0:
            raise InputError("light direction must be non-zero")


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
        # The CPU kernel's view of the same data (shares memory with the tensors above on the CPU).
        if self.device.type == "cpu":
            self._verts_h = F.pad(self.verts, (0, 1), value=1.0)  # [V, 4] homogeneous positions
            self._np_verts = self.verts.numpy()  # [V, 3]
            self._np_faces = self.faces.numpy()  # [F, 3] int32
            self._np_corner_attr = self.corner_attr.numpy()  # [3F, 8]
            self._np_face_part = self.face_part.numpy()  # [F]
            self._np_base_color, self._np_metallic = self.base_color.numpy(), self.metallic.numpy()
            self._np_roughness = self.roughness.numpy()
            texels = [np.zeros(0, np.float32)] + [t[0].numpy().reshape(-1) for t in self.textures if t is not None]
            self._np_texels = np.ascontiguousarray(np.concatenate(texels))  # all textures, flat
            info, offset = np.zeros((len(mats), 3), dtype=np.int64), 0  # [P, 3] (offset, Ht, Wt); Ht 0: none
            for p, t in enumerate(self.textures):
                if t is not None:
                    info[p] = (offset, t.shape[1], t.shape[2])
                    offset += t[0].numel()
            self._np_tex_info = info

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
        if self.device.type != "cpu":
            return self.render_torch(camera, resolution, lighting, supersample)
        ss = supersample
        res = resolution * ss
        mvp = torch.from_numpy(camera.mvp()).float()
        w2c = torch.from_numpy(camera.w2c()).float()
        # The same torch products as `render_torch`, so that rasterisation sees the same positions.
        pos = (self._verts_h @ mvp.T)[None]  # [1, V, 4] clip space
        rast, _ = rasterize(pos, self.faces, (res, res))  # [1, res, res, 4], row 0 = bottom (nvdiffrast)
        depth_v = -(self._verts_h @ w2c.T)[:, 2:3].numpy()  # [V, 1] distance along the viewing axis
        geo_v = np.concatenate([depth_v, self._np_verts], axis=1)  # [V, 4] depth (1), position (3)
        light = F.normalize(torch.tensor(lighting.direction, dtype=torch.float32), dim=0).numpy()  # [3]
        scalars = np.array(
            [lighting.ambient, lighting.directional, lighting.environment, lighting.directional * lighting.specular],
            dtype=np.float32,
        )  # as torch casts Python scalars to a float32 tensor's dtype
        rgba = np.zeros((resolution, resolution, 4), dtype=np.float32)
        depth = np.zeros((resolution, resolution), dtype=np.float32)
        normal = np.zeros((resolution, resolution, 3), dtype=np.float32)
        _shade_image(
            rast[0].numpy(), self._np_faces, geo_v, self._np_corner_attr, self._np_face_part,
            self._np_base_color, self._np_metallic, self._np_roughness, self._np_texels, self._np_tex_info,
            camera.position.astype(np.float32), light, scalars, np.array(SKY_COLOR, np.float32),
            np.array(GROUND_COLOR, np.float32), lighting.albedo, ss, rgba, depth, normal,
        )  # fmt: skip
        return RenderOutput(rgba=rgba, depth=depth, normal=normal)

    @torch.no_grad()
    def render_torch(
        self,
        camera: Camera,
        resolution: int,
        lighting: Lighting = Lighting(),
        supersample: int = 2,
    ) -> RenderOutput:
        """`render` in torch ops (any device; CUDA uses nvdiffrast when installed): the reference."""
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


# ---------------------------------------------------------------------------------------------
# The CPU kernel: `render_torch` after rasterisation, sample by sample, in float32.


@njit(cache=True, nogil=True)
def _normalize3(x: float, y: float, z: float):
    """F.normalize of one 3-vector (eps 1e-12), float32."""
    n = max(np.float32(np.sqrt(x * x + y * y + z * z)), np.float32(1e-12))
    return x / n, y / n, z / n


@njit(cache=True, nogil=True)
def _texel(texels: np.ndarray, offset: int, tex_w: int, row: int, col: int, ch: int) -> float:
    return texels[offset + (row * tex_w + col) * 3 + ch]


@njit(cache=True, nogil=True)
def _linear_to_srgb_1(c: float) -> float:
    if c <= np.float32(0.0031308):
        return c * np.float32(12.92)
    return np.float32(1.055) * c ** np.float32(1.0 / 2.4) - np.float32(0.055)


@njit(cache=True, nogil=True)
def _shade_image(
    rast, faces, geo_v, corner_attr, face_part, base_color, metallic, roughness, texels, tex_info,
    cam_pos, light, scalars, sky, ground, albedo_only, ss, rgba_out, depth_out, normal_out,
):  # fmt: skip
    """Shade the covered samples of ``rast`` and average them into output pixels.

    Args:
        rast: [R, R, 4] float32 rasteriser output (row 0 at the bottom), R = resolution * ss.
        faces: [F, 3] int32; geo_v: [V, 4] float32 per-vertex (depth, x, y, z).
        corner_attr: [3F, 8] float32 per face corner (uv, linear vertex colour, normal).
        face_part: [F] int64; base_color [P, 3], metallic [P], roughness [P] float32.
        texels: flat float32 linear RGB of every texture; tex_info: [P, 3] (offset, Ht, Wt), Ht 0: none.
        cam_pos, light, sky, ground: [3] float32; scalars: [4] float32 ambient, directional,
            environment, directional * specular.
        rgba_out: [H, W, 4], depth_out: [H, W], normal_out: [H, W, 3] float32 zeros, row 0 at the top.
    """
    f32 = np.float32
    one, zero = f32(1.0), f32(0.0)
    ambient, directional, environment, dir_spec = scalars[0], scalars[1], scalars[2], scalars[3]
    res = rast.shape[0]
    height, width = rgba_out.shape[0], rgba_out.shape[1]
    inv_n = 1.0 / (ss * ss)
    color = np.zeros(3, dtype=np.float32)
    g = np.zeros(4, dtype=np.float32)  # interpolated depth, position
    at = np.zeros(8, dtype=np.float32)  # interpolated uv, vertex colour, normal
    for oy in range(height):
        for ox in range(width):
            acc_r = acc_g = acc_b = acc_a = acc_d = 0.0  # float64 sums of the supersamples
            acc_nx = acc_ny = acc_nz = 0.0
            for sy in range(ss):
                row = res - 1 - (oy * ss + sy)  # rast row 0 is the bottom
                for sx in range(ss):
                    col = ox * ss + sx
                    tid = int(rast[row, col, 3])
                    if tid == 0:
                        continue
                    f = tid - 1
                    u = rast[row, col, 0]
                    v = rast[row, col, 1]
                    # Interpolation, as `fourview.render.raster.interpolate`.
                    i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
                    for k in range(4):
                        a2 = geo_v[i2, k]
                        g[k] = a2 + u * (geo_v[i0, k] - a2) + v * (geo_v[i1, k] - a2)
                    for k in range(8):
                        a2 = corner_attr[3 * f + 2, k]
                        at[k] = a2 + u * (corner_attr[3 * f, k] - a2) + v * (corner_attr[3 * f + 1, k] - a2)
                    p = face_part[f]
                    vx, vy, vz = _normalize3(cam_pos[0] - g[1], cam_pos[1] - g[2], cam_pos[2] - g[3])
                    nx, ny, nz = _normalize3(at[5], at[6], at[7])
                    if nx * vx + ny * vy + nz * vz < zero:
                        nx, ny, nz = -nx, -ny, -nz
                    for c in range(3):
                        color[c] = at[2 + c] * base_color[p, c]
                    tex_h = tex_info[p, 1]
                    if tex_h > 0:  # bilinear, wrap: `raster.texture(..., "linear", "wrap")`
                        off, tex_w = tex_info[p, 0], tex_info[p, 2]
                        tu = at[0] - np.floor(at[0])
                        tv = at[1] - np.floor(at[1])
                        x = tu * f32(tex_w) - f32(0.5)
                        y = tv * f32(tex_h) - f32(0.5)
                        x0f, y0f = np.floor(x), np.floor(y)
                        fx, fy = x - x0f, y - y0f
                        x0, y0 = int(x0f) % tex_w, int(y0f) % tex_h
                        x1, y1 = (int(x0f) + 1) % tex_w, (int(y0f) + 1) % tex_h
                        for c in range(3):
                            t00 = _texel(texels, off, tex_w, y0, x0, c)
                            t01 = _texel(texels, off, tex_w, y0, x1, c)
                            t10 = _texel(texels, off, tex_w, y1, x0, c)
                            t11 = _texel(texels, off, tex_w, y1, x1, c)
                            top = t00 + fx * (t01 - t00)
                            bottom = t10 + fx * (t11 - t10)
                            color[c] = color[c] * (top + fy * (bottom - top))
                    if not albedo_only:  # `MeshRenderer._shade`
                        met, rough = metallic[p], roughness[p]
                        n_dot_l = max(nx * light[0] + ny * light[1] + nz * light[2], zero)
                        irr = ambient + directional * n_dot_l
                        hx, hy, hz = _normalize3(light[0] + vx, light[1] + vy, light[2] + vz)
                        rc = max(rough, f32(0.05))
                        shininess = (one / rc**4) * f32(2.0) - f32(2.0)
                        n_dot_h = max(nx * hx + ny * hy + nz * hz, zero)
                        spec_scale = dir_spec * ((one - rough) * (one - rough))
                        highlight = n_dot_h**shininess
                        lit = one if n_dot_l > zero else zero
                        up = f32(0.5) * (one + ny)
                        for c in range(3):
                            irr_c = irr
                            if environment > zero:
                                irr_c = irr + environment * (up * sky[c] + (one - up) * ground[c])
                            diffuse = color[c] * (one - met) * irr_c
                            f0 = f32(0.04) * (one - met) + color[c] * met
                            color[c] = diffuse + spec_scale * f0 * highlight * lit
                    for c in range(3):
                        color[c] = _linear_to_srgb_1(min(max(color[c], zero), one))
                    acc_r += color[0]
                    acc_g += color[1]
                    acc_b += color[2]
                    acc_a += 1.0
                    acc_d += g[0]
                    acc_nx += nx
                    acc_ny += ny
                    acc_nz += nz
            if acc_a == 0.0:
                continue
            alpha = f32(acc_a * inv_n)
            rgba_out[oy, ox, 0] = f32(acc_r * inv_n) / alpha
            rgba_out[oy, ox, 1] = f32(acc_g * inv_n) / alpha
            rgba_out[oy, ox, 2] = f32(acc_b * inv_n) / alpha
            rgba_out[oy, ox, 3] = alpha
            depth_out[oy, ox] = f32(acc_d * inv_n) / alpha
            mx, my, mz = _normalize3(f32(acc_nx * inv_n), f32(acc_ny * inv_n), f32(acc_nz * inv_n))
            normal_out[oy, ox, 0] = mx
            normal_out[oy, ox, 1] = my
            normal_out[oy, ox, 2] = mz

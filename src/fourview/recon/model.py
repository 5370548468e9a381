"""The reconstructor of stage 2: four rig views -> triplanes -> renders, for training and inference.

`Reconstructor` puts together the `fourview.recon.unet.TriplaneUNet` (views -> planes), the
`fourview.recon.decoder.TriplaneDecoder` (plane features -> geometry, colour) and the training
renderer chosen by ``ReconConfig.renderer`` through one explicit factory, `make_renderer`:

* ``"volume"`` (stage A): rays through pixel centres (`camera_rays`, the convention of
  `fourview.cameras.pixel_rays`), clipped to [-1, 1]^3, ``samples_per_ray`` samples per ray split
  evenly between a stratified pass and an importance pass (`fourview.recon.render_volume`). All
  objects of a batch are rendered in one call (their rays are stacked object-major, and the field
  function reads the points back per object), so a training step is one batched triplane lookup.
  Rays can be a subset of pixels (``pixels``), which is how stage A stays cheap.
* ``"dmtet"`` (stage B): the decoder's SDF at the vertices of a regular tetrahedral grid of
  ``tet_grid_resolution`` cells per side (`fourview.recon.dmtet.make_tet_grid`), marching
  tetrahedra, then `fourview.recon.render_mesh.render_mesh` with the field's colour at the surface
  points. With ``DecoderConfig.deformation`` (the stage-B presets) the decoder's deformation at
  each grid vertex moves it by up to half a cell (`fourview.recon.dmtet.deform_vertices`) before
  the surface is extracted; without it the grid stays regular. The mesh renderer
  takes look-at cameras, so c2w matrices given to this renderer must be look-at-the-origin
  cameras (those of the dataset renderer are), else `InputError`.

Renders are RGB composited on white (the background of the training images) plus the opacity.

Weights: `Reconstructor.save_pretrained` writes ``config.json`` (`ReconConfig.to_json`) and
``model.safetensors``; `Reconstructor.from_pretrained` reads them back, or downloads them from a hub
id, through `fourview.recon.loading`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from fourview.atomic import atomic_path, write_text_atomic
from fourview.cameras import FOV_DEG, Camera
from fourview.errors import InputError
from fourview.recon.carving import SilhouetteBound
from fourview.recon.config import ReconConfig
from fourview.recon.decoder import TriplaneDecoder, TriplaneField, decode_triplane, volume_density
from fourview.recon.dmtet import dmtet_mesh, make_tet_grid
from fourview.recon.loading import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    check_weights_fit,
    read_config,
    read_weights,
    resolve_pretrained,
)
from fourview.recon.render_mesh import render_mesh
from fourview.recon.render_volume import VolumeRendererConfig, render_volume
from fourview.recon.unet import TriplaneUNet
from fourview.views import PosedViews

__all__ = [
    "DMTetRenderer",
    "ReconOutput",
    "ReconRender",
    "Reconstructor",
    "VolumeRenderer",
    "camera_rays",
    "make_renderer",
]

CameraInput = Sequence[Sequence[Camera]] | torch.Tensor
"""Cameras of a render: ``cameras[b][v]`` (B objects, V views each) or c2w matrices [B, V, 4, 4]."""


@dataclass
class ReconOutput:
    """The triplanes of a batch of objects.

    Attributes:
        planes: [B, 3, C, R, R] planes XY, ZY, XZ (geometry planes when split); layout in
            `fourview.recon.unet`.
        texture_planes: [B, 3, Ct, Rt, Rt] texture planes for split planes (stage B), else None.
    """

    planes: torch.Tensor
    texture_planes: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.planes.shape[0]

    def select(self, index: int) -> ReconOutput:
        """The planes of object ``index`` only, as a batch of one."""
        tex = None if self.texture_planes is None else self.texture_planes[index : index + 1]
        return ReconOutput(planes=self.planes[index : index + 1], texture_planes=tex)


@dataclass
class ReconRender:
    """Renders of B objects from V cameras each.

    Attributes:
        rgb: [B, V, H, W, 3] colour composited on white, sRGB in [0, 1], row 0 at the top; or
            [B, V, P, 3] when a pixel subset was rendered.
        opacity: [B, V, H, W] (or [B, V, P]) accumulated opacity (volume) or antialiased coverage
            (DMTet), in [0, 1].
    """

    rgb: torch.Tensor
    opacity: torch.Tensor

    @property
    def rgba(self) -> torch.Tensor:
        """[..., 4]: ``rgb`` (still composited on white) with the opacity as channel 3."""
        return torch.cat([self.rgb, self.opacity[..., None]], dim=-1)


def camera_rays(
    c2w: torch.Tensor,
    fov_deg: torch.Tensor | float,
    resolution: int | tuple[int, int],
    pixels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through pixel centres of cameras given as matrices (`fourview.cameras.pixel_rays`, batched).

    Args:
        c2w: [N, 4, 4] camera-to-world matrices, OpenGL camera axes (camera looks down -Z).
        fov_deg: vertical field of view, degrees: a number or [N].
        resolution: ``H`` or ``(H, W)`` pixels of the full image.
        pixels: [N, P] int64 flat pixel indices ``row * W + col`` (row 0 at the top), or None for
            every pixel in row-major order.

    Returns:
        origins [N, P, 3] and unit directions [N, P, 3] (P = H * W without ``pixels``), object
        frame, in ``c2w``'s dtype and device.
    """
    h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
    if c2w.ndim != 3 or c2w.shape[1:] != (4, 4):
        raise InputError(f"c2w must be [N, 4, 4], got shape {tuple(c2w.shape)}")
    n, dev, dtype = c2w.shape[0], c2w.device, c2w.dtype
    if pixels is None:
        pixels = torch.arange(h * w, device=dev).expand(n, h * w)
    if pixels.ndim != 2 or pixels.shape[0] != n:
        raise InputError(f"pixels must be [N={n}, P] flat indices, got shape {tuple(pixels.shape)}")
    fov = torch.as_tensor(fov_deg, dtype=dtype, device=dev).expand(n)  # [N]
    t = torch.tan(torch.deg2rad(fov) / 2.0)[:, None]  # [N, 1]
    row = torch.div(pixels, w, rounding_mode="floor").to(dtype)  # [N, P]
    col = (pixels % w).to(dtype)
    x = ((col + 0.5) / w * 2.0 - 1.0) * t * (w / h)
    y = (1.0 - (row + 0.5) / h * 2.0) * t
    d_cam = torch.stack([x, y, -torch.ones_like(x)], dim=-1)  # [N, P, 3], camera looks down -Z
    dirs = d_cam @ c2w[:, :3, :3].transpose(1, 2)  # [N, P, 3]
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    origins = c2w[:, None, :3, 3].expand_as(dirs)  # [N, P, 3]
    return origins, dirs


def _cameras_to_c2w(cameras: CameraInput, fov_deg: torch.Tensor | float | None, device, dtype):
    """Normalise camera inputs to c2w [B, V, 4, 4] and fov [B, V] tensors."""
    if isinstance(cameras, torch.Tensor):
        if cameras.ndim != 4 or cameras.shape[2:] != (4, 4):
            raise InputError(f"c2w cameras must be [B, V, 4, 4], got shape {tuple(cameras.shape)}")
        c2w = cameras.to(device=device, dtype=dtype)
        fov = torch.as_tensor(FOV_DEG if fov_deg is None else fov_deg, device=device, dtype=dtype)
        return c2w, fov.expand(c2w.shape[:2])
    if len(cameras) == 0 or any(len(row) != len(cameras[0]) or len(row) == 0 for row in cameras):
        raise InputError("cameras must be B non-empty lists of V cameras each (one list per object)")
    if fov_deg is not None:
        raise InputError("fov_deg is only for c2w matrices; Camera objects carry their own field of view")
    c2w = torch.tensor(np.array([[cam.c2w() for cam in row] for row in cameras]), device=device, dtype=dtype)
    fov = torch.tensor([[cam.fov_deg for cam in row] for row in cameras], device=device, dtype=dtype)
    return c2w, fov  # [B, V, 4, 4], [B, V]


class VolumeRenderer:
    """Stage A: volume rendering of the triplanes' density and colour (see the module docstring).

    Args:
        config: the reconstructor's config (``samples_per_ray``).
        chunk: rays per object per `render_volume` call without gradients (evaluation memory).
    """

    def __init__(self, config: ReconConfig, chunk: int = 4096) -> None:
        coarse = (config.samples_per_ray + 1) // 2
        self.volume_config = VolumeRendererConfig(samples=coarse, importance_samples=config.samples_per_ray - coarse)
        self.chunk = chunk

    def __call__(
        self,
        decoder: TriplaneDecoder,
        out: ReconOutput,
        c2w: torch.Tensor,
        fov_deg: torch.Tensor,
        resolution: tuple[int, int],
        pixels: torch.Tensor | None,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, v = c2w.shape[:2]
        h, w = resolution
        flat_pixels = None if pixels is None else pixels.reshape(b * v, -1)
        origins, dirs = camera_rays(c2w.reshape(b * v, 4, 4), fov_deg.reshape(b * v), (h, w), flat_pixels)
        n = origins.shape[1]  # rays per view
        origins = origins.reshape(b, v * n, 3)  # [B, V * P, 3], object-major
        dirs = dirs.reshape(b, v * n, 3)
        planes, tex = out.planes, out.texture_planes

        def field_fn(xyz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            # xyz [B * R * S, 3] ray-major, rays object-major: the first R * S points are object 0's
            dec = decode_triplane(decoder, planes, xyz.reshape(b, -1, 3), tex)
            return volume_density(decoder.config, dec).reshape(-1), dec.rgb.reshape(-1, 3)

        # With gradients everything goes in one call; without, in chunks of rays per object.
        step = v * n if torch.is_grad_enabled() else self.chunk
        rgb, opacity = [], []
        for i in range(0, v * n, step):
            o, d = origins[:, i : i + step], dirs[:, i : i + step]
            res = render_volume(field_fn, o.reshape(-1, 3), d.reshape(-1, 3), self.volume_config, generator)
            rgb.append(res.rgb.reshape(b, -1, 3))
            opacity.append(res.opacity.reshape(b, -1))
        rgb = torch.cat(rgb, dim=1).reshape(b, v, n, 3)  # [B, V, P, 3]
        opacity = torch.cat(opacity, dim=1).reshape(b, v, n)  # [B, V, P]
        if pixels is None:
            return rgb.reshape(b, v, h, w, 3), opacity.reshape(b, v, h, w)
        return rgb, opacity


class DMTetRenderer:
    """Stage B: DMTet surface of the SDF on a regular tet grid, rasterised (see the module docstring).

    The grid is built on first use (and rebuilt when the device changes), not in the constructor.

    Args:
        config: the reconstructor's config (``tet_grid_resolution``).
    """

    def __init__(self, config: ReconConfig) -> None:
        self.resolution = config.tet_grid_resolution
        self._grid = None

    def grid(self, device: torch.device):
        """The tetrahedral grid on ``device`` (`fourview.recon.dmtet.TetGrid`)."""
        if self._grid is None or self._grid.verts.device != device:
            self._grid = make_tet_grid(self.resolution, device)
        return self._grid

    def mesh(self, decoder: TriplaneDecoder, out: ReconOutput, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Surface of object ``index``: verts [M, 3] (differentiable), faces [F, 3] int64."""
        field = _field(decoder, out, index)
        grid = self.grid(out.planes.device)
        at_verts = field.query(grid.verts.to(out.planes.dtype))
        if at_verts.sdf is None:
            raise InputError("the DMTet renderer needs an SDF decoder (DecoderConfig.geometry='sdf')")
        return dmtet_mesh(grid, at_verts.sdf, deform=at_verts.deform)  # sdf [V], deform [V, 3] or None

    def __call__(
        self,
        decoder: TriplaneDecoder,
        out: ReconOutput,
        c2w: torch.Tensor,
        fov_deg: torch.Tensor,
        resolution: tuple[int, int],
        pixels: torch.Tensor | None,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, v = c2w.shape[:2]
        h, w = resolution
        c2w_np, fov_np = c2w.detach().cpu().double().numpy(), fov_deg.detach().cpu().double().numpy()
        rgb, opacity = [], []
        for i in range(b):
            cams = [Camera.from_c2w(c2w_np[i, j], float(fov_np[i, j])) for j in range(v)]
            verts, faces = self.mesh(decoder, out, i)
            field = _field(decoder, out, i)
            res = render_mesh(verts, faces, cams, (h, w), color_fn=field.color)  # rgba [V, H, W, 4]
            rgb.append(res.rgba[..., :3])
            opacity.append(res.rgba[..., 3])
        rgb_t, opacity_t = torch.stack(rgb), torch.stack(opacity)  # [B, V, H, W, 3], [B, V, H, W]
        if pixels is None:
            return rgb_t, opacity_t
        idx = pixels.reshape(b, v, -1)  # [B, V, P]
        rgb_t = rgb_t.reshape(b, v, h * w, 3).gather(2, idx[..., None].expand(-1, -1, -1, 3))
        return rgb_t, opacity_t.reshape(b, v, h * w).gather(2, idx)


def make_renderer(config: ReconConfig) -> VolumeRenderer | DMTetRenderer:
    """The training renderer named by ``config.renderer``.

    Raises:
        InputError: an unknown renderer name.
    """
    if config.renderer == "volume":
        return VolumeRenderer(config)
    elif config.renderer == "dmtet":
        return DMTetRenderer(config)
    else:
        raise InputError(f"unknown renderer {config.renderer!r}; use 'volume' or 'dmtet'")


def _field(decoder: TriplaneDecoder, out: ReconOutput, index: int) -> TriplaneField:
    tex = None if out.texture_planes is None else out.texture_planes[index]
    return TriplaneField(decoder, out.planes[index], tex)


class Reconstructor(nn.Module):
    """Four rig views -> triplanes -> field and renders (see the module docstring).

    Builds random weights from ``config``; load trained ones with `from_pretrained`. No I/O in the
    constructor.

    Args:
        config: sizes of the U-Net and decoder, and the training renderer.
    """

    def __init__(self, config: ReconConfig) -> None:
        super().__init__()
        self.config = config
        self.unet = TriplaneUNet(config.unet)
        self.decoder = TriplaneDecoder.for_unet(config.decoder, config.unet)
        self.renderer = make_renderer(config)

    def forward(self, views: torch.Tensor, elevation_deg: float | torch.Tensor) -> ReconOutput:
        """Triplanes of the objects in the views.

        Args:
            views: [B, 4, 3, H, W] RGB in [0, 1] composited on white, rig order (az 0, 90, 180, 270),
                row 0 at the top, ``H = W = config.unet.view_resolution``.
            elevation_deg: the rig's elevation, degrees: a number or [B].

        Returns:
            `ReconOutput` with the planes (and texture planes when split).
        """
        out = self.unet(views, elevation_deg)
        return ReconOutput(planes=out.planes, texture_planes=out.texture_planes)

    @torch.no_grad()
    def predict(self, views: PosedViews) -> ReconOutput:
        """The triplanes of one object from its four rig views (any one elevation).

        Raises:
            InputError: the views are not the four rig views, or one shows no object.
        """
        elevation = views.rig_elevation_deg()
        views.check_objects()
        device = next(self.parameters()).device
        return self(views.model_input(self.config.unet.view_resolution).to(device), elevation)

    def reconstruct(self, views: PosedViews) -> TriplaneField:
        """The field (`fourview.recon.fields.SurfaceField`) of one object from its four rig views.

        With ``config.carve.enabled`` the field is kept inside the views' visual hull (`carve`).
        """
        return self.carve(self.field(self.predict(views), 0), views)

    def carve(self, field: TriplaneField, views: PosedViews) -> TriplaneField:
        """``field`` kept inside ``views``' visual hull as ``config.carve`` says (unchanged when disabled)."""
        carve = self.config.carve
        if not carve.enabled:
            return field
        return field.carved(SilhouetteBound.from_views(views, carve.threshold), carve.scale)

    def field(self, out: ReconOutput, index: int = 0) -> TriplaneField:
        """Object ``index``'s field (`fourview.recon.fields.SurfaceField`) for export and queries."""
        if not 0 <= index < out.batch_size:
            raise InputError(f"object index {index} out of range for a batch of {out.batch_size}")
        return _field(self.decoder, out, index)

    def render(
        self,
        out: ReconOutput,
        cameras: CameraInput,
        resolution: int | tuple[int, int] | None = None,
        pixels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        fov_deg: torch.Tensor | float | None = None,
        renderer: VolumeRenderer | DMTetRenderer | None = None,
    ) -> ReconRender:
        """Render every object of ``out`` from its cameras with the configured renderer (or ``renderer``).

        Args:
            out: triplanes of B objects.
            cameras: ``cameras[b]`` = V `fourview.cameras.Camera` of object b, or c2w [B, V, 4, 4]
                (OpenGL camera axes; look-at cameras for DMTet).
            resolution: ``H`` or ``(H, W)`` of the full images; default ``config.render_resolution``.
            pixels: [B, V, P] int64 flat pixel indices ``row * W + col`` to render only those
                pixels (volume: only those rays are marched; DMTet: full images, then gathered).
            generator: None for deterministic sample positions (evaluation), or a generator for
                stratified jitter (training; volume renderer only).
            fov_deg: vertical field of view of c2w cameras, degrees: a number or [B, V] (default 30).
            renderer: another renderer than ``config.renderer``'s, e.g. a `VolumeRenderer` for a
                stage-B model (its SDF read as a log-density, `fourview.recon.decoder.volume_density`).

        Returns:
            `ReconRender`: [B, V, H, W, 3] RGB on white and [B, V, H, W] opacity, or [B, V, P, ...].
        """
        res = self.config.render_resolution if resolution is None else resolution
        h, w = (res, res) if isinstance(res, int) else res
        if h < 1 or w < 1:
            raise InputError(f"render resolution must be >= 1 pixel, got {res}")
        dtype = out.planes.dtype if out.planes.dtype in (torch.float32, torch.float64) else torch.float32
        c2w, fov = _cameras_to_c2w(cameras, fov_deg, out.planes.device, dtype)
        if c2w.shape[0] != out.batch_size:
            raise InputError(f"cameras are for {c2w.shape[0]} objects but the planes for {out.batch_size}")
        if pixels is not None:
            if pixels.ndim != 3 or pixels.shape[:2] != c2w.shape[:2]:
                raise InputError(f"pixels must be [B, V, P] = {tuple(c2w.shape[:2])} + [P], got {tuple(pixels.shape)}")
            if pixels.numel() and (int(pixels.min()) < 0 or int(pixels.max()) >= h * w):
                raise InputError(f"pixel indices must be in [0, {h * w}) for a {h}x{w} image")
            pixels = pixels.to(out.planes.device, torch.int64)
        planes = ReconOutput(
            planes=out.planes.to(dtype),
            texture_planes=None if out.texture_planes is None else out.texture_planes.to(dtype),
        )
        rgb, opacity = (renderer or self.renderer)(self.decoder, planes, c2w, fov, (h, w), pixels, generator)
        return ReconRender(rgb=rgb, opacity=opacity)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (created if missing), each atomically.

        Returns:
            The directory.
        """
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        with atomic_path(out / WEIGHTS_NAME) as tmp:  # safetensors alone writes 0600 files
            save_file(state, str(tmp), metadata={"format": "pt", "library": "fourview"})
        write_text_atomic(out / CONFIG_NAME, self.config.to_json() + "\n")
        return out

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        revision: str | None = None,
    ) -> Reconstructor:
        """Load a reconstructor from a folder or a hub id, in eval mode.

        Args:
            name_or_path: folder with ``config.json`` and ``model.safetensors``, or a hub id
                ``owner/name`` (`fourview.recon.loading.resolve_pretrained`).
            device: where the model goes.
            dtype: cast the weights (default: as stored).
            revision: hub revision for a hub id.

        Raises:
            InputError: a missing or unreadable folder, config or weights file; a config with unknown
                or missing keys; weights that do not fit the config.
        """
        folder = resolve_pretrained(name_or_path, revision)
        config = read_config(folder)
        state = read_weights(folder)
        model = cls(config)
        check_weights_fit(model.state_dict(), state, folder)
        model.load_state_dict(state)
        model.to(device=device, dtype=dtype)
        model.eval()
        return model

"""The triplane U-Net of stage 2: four orthogonal views in, three feature planes out.

Read top to bottom: the config and its presets, the view-to-plane mapping, the blocks, the model.

Plane layout (the same as `fourview.recon.triplane`; see docs/conventions.md). ``planes
[B, 3, C, R, R]`` holds the planes XY, ZY, XZ of the object frame's cube [-1, 1]^3. Plane ``p`` is
a feature grid indexed like ``F.grid_sample`` with ``align_corners=False``: its width W (columns)
runs along the first coordinate, its height H (rows) along the second, both from -1 at index 0 to
+1 at the last index:

============  ============  ============  =====================================================
plane          W (columns)   H (rows)      input channels (6)
============  ============  ============  =====================================================
0: XY          x             y             view az 0 (front), view az 180 (back), each 3 RGB
1: ZY          z             y             view az 90 (from +X), view az 270 (from -X)
2: XZ          x             z             no view: a learned positional embedding
============  ============  ============  =====================================================

Planes are grids, not pictures: row 0 of XY is y = -1, the bottom of the object. The views are
pictures (row 0 at the top, +y), so every view is flipped vertically on its way to a plane. With
`fourview.cameras` (OpenGL camera axes, right = cross(world up, towards the camera)):

* az 0, camera on +Z: image right is +x. XY input = the view flipped vertically.
* az 180, camera on -Z: image right is -x. XY input = the view flipped vertically and horizontally
  (mirrored), so that its pixel of a point lands on the same texel as the front view's.
* az 90, camera on +X: image right is -z (object +z is on the image's left). ZY input = the view
  flipped vertically and horizontally.
* az 270, camera on -X: image right is +z. ZY input = the view flipped vertically.

Perspective scale: a rig camera (distance 4, vertical field of view 30 degrees) sees the half
extent ``4 * tan(15 deg) = 1.0718`` object units at the depth of the origin, while a plane spans
[-1, 1]. `views_to_plane_inputs` therefore resamples each view (bilinear, one ``grid_sample`` that
also does the flips) so that plane texel ``(u, v)`` reads the view at normalised device
coordinates ``(+-u / 1.0718, v / 1.0718)``: a point in the plane through the origin parallel to the
image (z = 0 for the XY views, x = 0 for the ZY views) seen at elevation 0 lands exactly on the
texel of its own coordinates. Points off that plane move by perspective parallax, and elevation
(default 20 degrees) tilts the views; the network learns the rest. ``view_half_extent = 1`` with
views at the plane resolution turns the resampling into exact flips. The crop keeps the central
1 / 1.0718 = 93.3 % of each view's width and height; the silhouette of a unit sphere (the largest
normalised object) reaches 96.4 % of the half-width, so only a thin rim of such an object is cut.

Network (the seed's, at ``full_config()``): the three planes are a batch of three 6-channel images
(``[B * 3, 6, R, R]``) through one shared U-Net; diffusers' UNet2DModel layout (two ResNet blocks
per resolution going down, three coming up with skip connections, a middle block), GroupNorm +
SiLU + 3x3 conv, self-attention at the resolutions in ``attention_resolutions``. There is no
diffusion time step; a conditioning vector (sinusoidal embedding of the camera elevation -> MLP,
plus a learned embedding of the plane's id) scales and shifts the features in every ResNet block
(FiLM). With ``cross_plane_attention`` every attention block attends over the tokens of all three
planes of an object jointly, which is how the XZ plane (no view of its own) learns the object.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from fourview.cameras import FOV_DEG, RADIUS
from fourview.errors import InputError

__all__ = [
    "VIEW_HALF_EXTENT",
    "TriplaneUNet",
    "TriplaneUNetOutput",
    "UNetConfig",
    "demo_config",
    "full_config",
    "tiny_config",
    "views_to_plane_inputs",
]

VIEW_HALF_EXTENT: float = RADIUS * math.tan(math.radians(FOV_DEG) / 2.0)
"""Half extent (object units) that a rig camera sees at the depth of the origin: 4 tan 15 deg = 1.0718."""

# Per view in rig order (az 0, 90, 180, 270): (plane it feeds, channel slot, horizontal sign).
# The sign multiplies the plane's width coordinate to give the view's NDC x (see module docstring).
_VIEW_TO_PLANE: tuple[tuple[int, int, float], ...] = ((0, 0, 1.0), (1, 0, -1.0), (0, 1, -1.0), (1, 1, 1.0))


@dataclass(frozen=True)
class UNetConfig:
    """Size and wiring of `TriplaneUNet`. Presets: `full_config`, `demo_config`, `tiny_config`."""

    view_resolution: int = 512
    """Side of the four input views, pixels."""
    resolution: int = 512
    """Side of the U-Net's input and of the output planes (texture planes when split), texels."""
    channels: tuple[int, ...] = (128, 256, 256, 512, 512, 1024)
    """Feature channels per level, from ``resolution`` down, halving the resolution at each step."""
    layers_per_block: int = 2
    """ResNet blocks per level on the way down (one more on the way up, for the extra skip)."""
    attention_resolutions: tuple[int, ...] = (64, 32, 16)
    """Level resolutions whose blocks are followed by attention (the middle block always has it)."""
    attention_head_dim: int = 64
    """Channels per attention head (fewer heads if the width is not a multiple)."""
    cross_plane_attention: bool = True
    """Attend over the tokens of all three planes of an object jointly (else each plane alone)."""
    norm_groups: int = 32
    """GroupNorm groups (the greatest common divisor with the width is used)."""
    cond_dim: int = 256
    """Width of the conditioning vector (elevation and plane id)."""
    elevation_frequencies: int = 8
    """Sinusoidal frequencies 2^0 .. 2^(n-1) applied to the elevation in radians."""
    plane_channels: int = 32
    """Channels of the output planes (the geometry planes when ``split_planes``)."""
    split_planes: bool = False
    """Emit geometry and texture planes from separate heads (stage B, DMTet)."""
    texture_channels: int = 32
    """Channels of the texture planes when ``split_planes``."""
    geometry_downsample: int = 1
    """When split, geometry planes come from the up path at ``resolution / 2**geometry_downsample``."""
    xz_embedding_resolution: int = 64
    """Side of the learned XZ-plane input (bilinearly resized to ``resolution``)."""
    view_half_extent: float = VIEW_HALF_EXTENT
    """Object units seen from the image centre to its edge at the origin's depth (1 = no crop)."""
    gradient_checkpointing: bool = False
    """Recompute block activations in backward (training memory for the full size)."""
    image_encoder: str | None = None
    """Name of a pretrained image-feature encoder for the views; not implemented (must be None)."""

    def __post_init__(self) -> None:
        n = len(self.channels)
        if n < 1 or any(c < 1 for c in self.channels):
            raise InputError(f"UNetConfig.channels must be a non-empty list of positive ints, got {self.channels}")
        if self.resolution < 1 or self.resolution % 2 ** (n - 1):
            raise InputError(f"UNetConfig.resolution {self.resolution} must be divisible by 2**{n - 1} for {n} levels")
        levels = self.level_resolutions
        if any(r not in levels for r in self.attention_resolutions):
            raise InputError(
                f"UNetConfig.attention_resolutions {self.attention_resolutions} must be among the levels {levels}"
            )
        positive = {
            "view_resolution": self.view_resolution,
            "layers_per_block": self.layers_per_block,
            "attention_head_dim": self.attention_head_dim,
            "norm_groups": self.norm_groups,
            "cond_dim": self.cond_dim,
            "elevation_frequencies": self.elevation_frequencies,
            "plane_channels": self.plane_channels,
            "texture_channels": self.texture_channels,
            "xz_embedding_resolution": self.xz_embedding_resolution,
        }
        for name, value in positive.items():
            if value < 1:
                raise InputError(f"UNetConfig.{name} must be >= 1, got {value}")
        if self.split_planes and not 0 <= self.geometry_downsample < n:
            raise InputError(f"UNetConfig.geometry_downsample must be in [0, {n - 1}], got {self.geometry_downsample}")
        if not self.view_half_extent > 0:
            raise InputError(f"UNetConfig.view_half_extent must be > 0, got {self.view_half_extent}")

    @property
    def level_resolutions(self) -> tuple[int, ...]:
        """Resolution of each level, from ``resolution`` down."""
        return tuple(self.resolution // 2**i for i in range(len(self.channels)))

    @property
    def geometry_resolution(self) -> int:
        """Side of the geometry planes (of the only planes when not split)."""
        return self.resolution // 2**self.geometry_downsample if self.split_planes else self.resolution


def full_config(split_planes: bool = False) -> UNetConfig:
    """The seed's network: 512 views and planes, about 300 M parameters.

    Args:
        split_planes: stage B layout, geometry planes at 256 and texture planes at 512.
    """
    return UNetConfig(split_planes=split_planes)


def demo_config(split_planes: bool = False) -> UNetConfig:
    """64-pixel views and planes, 2.1 M parameters (8.4 MB in float32): trained here, runs on a laptop CPU.

    One ResNet block per level going down (two coming up) keeps CPU training affordable. Split
    (stage B), the geometry planes keep the full 64 texels (``geometry_downsample=0``): 32 would be
    coarser than the 48-cell tet grid, and at the same level the geometry head has the shape of
    stage A's single head, so stage B starts from stage A's surface (`load_init_weights`).
    """
    return UNetConfig(
        view_resolution=64,
        resolution=64,
        channels=(32, 48, 64, 96),
        layers_per_block=1,
        attention_resolutions=(16, 8),
        attention_head_dim=32,
        norm_groups=16,
        cond_dim=64,
        plane_channels=16,
        split_planes=split_planes,
        texture_channels=16,
        geometry_downsample=0,
        xz_embedding_resolution=32,
    )


def tiny_config(split_planes: bool = False) -> UNetConfig:
    """32-pixel views, 16-texel planes, a few thousand parameters: tests with random weights."""
    return UNetConfig(
        view_resolution=32,
        resolution=16,
        channels=(4, 8),
        layers_per_block=1,
        attention_resolutions=(8,),
        attention_head_dim=4,
        norm_groups=4,
        cond_dim=8,
        elevation_frequencies=4,
        plane_channels=4,
        split_planes=split_planes,
        texture_channels=4,
        xz_embedding_resolution=8,
    )


@dataclass
class TriplaneUNetOutput:
    """What `TriplaneUNet` returns.

    Attributes:
        planes: [B, 3, C, Rg, Rg] planes XY, ZY, XZ (layout in the module docstring): the geometry
            planes when split, else the only planes (geometry and colour).
        texture_planes: [B, 3, Ct, R, R] texture planes when ``split_planes``, else None.
    """

    planes: torch.Tensor
    texture_planes: torch.Tensor | None = None


def views_to_plane_inputs(
    views: torch.Tensor, resolution: int, view_half_extent: float = VIEW_HALF_EXTENT
) -> torch.Tensor:
    """Map the four rig views onto the XY and ZY planes (flips and perspective crop, one resampling).

    Args:
        views: [B, 4, 3, H, W] RGB in [0, 1] on white, rig order (az 0, 90, 180, 270), row 0 at the top.
        resolution: side R of the plane inputs, texels.
        view_half_extent: object units from the image centre to its edge at the origin's depth.

    Returns:
        [B, 2, 6, R, R] in [0, 1]: index 0 is the XY plane (channels: az 0 RGB, then az 180 RGB),
        index 1 the ZY plane (az 90 RGB, then az 270 RGB). Texel ``(row, col)`` of plane XY is at
        ``x = (2 col + 1) / R - 1``, ``y = (2 row + 1) / R - 1`` (ZY: z for x).
    """
    if views.ndim != 5 or views.shape[1] != 4 or views.shape[2] != 3:
        raise InputError(f"views must be [B, 4, 3, H, W] (four RGB rig views), got shape {tuple(views.shape)}")
    b, _, _, h, w = views.shape
    t = (torch.arange(resolution, dtype=views.dtype, device=views.device) * 2 + 1) / resolution - 1  # [R] centres
    v, u = torch.meshgrid(t, t, indexing="ij")  # [R, R] plane height / width coordinates
    grids = []
    for _, _, sign in _VIEW_TO_PLANE:
        # grid_sample's grid x runs right along the image, grid y runs down: image up (+y) is -grid y.
        grids.append(torch.stack([sign * u, -v], dim=-1) / view_half_extent)  # [R, R, 2]
    grid = torch.stack(grids).expand(b, 4, resolution, resolution, 2)  # [B, 4, R, R, 2]
    sampled = F.grid_sample(
        views.reshape(b * 4, 3, h, w),
        grid.reshape(b * 4, resolution, resolution, 2),
        mode="bilinear",
        padding_mode="border",
        align_corners=False,
    ).reshape(b, 4, 3, resolution, resolution)  # [B, 4, 3, R, R]
    slots: list[list[torch.Tensor | None]] = [[None, None], [None, None]]
    for view, (plane, slot, _) in enumerate(_VIEW_TO_PLANE):
        slots[plane][slot] = sampled[:, view]
    return torch.stack([torch.cat(pair, dim=1) for pair in slots], dim=1)  # [B, 2, 6, R, R]


def _groups(channels: int, groups: int) -> int:
    return math.gcd(channels, groups)


class _ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, FiLM by the conditioning vector, GroupNorm-SiLU-conv, plus a skip."""

    def __init__(self, in_ch: int, out_ch: int, cond_dim: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(in_ch, groups), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.film = nn.Linear(cond_dim, 2 * out_ch)
        self.norm2 = nn.GroupNorm(_groups(out_ch, groups), out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        # x [N, Cin, H, W], cond [N, D] -> [N, Cout, H, W]
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(F.silu(cond))[:, :, None, None].chunk(2, dim=1)  # [N, Cout, 1, 1] each
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return self.skip(x) + h


class _Attention(nn.Module):
    """Multi-head self-attention over the texels of one plane, or of all three planes jointly."""

    def __init__(self, channels: int, head_dim: int, groups: int, joint: bool) -> None:
        super().__init__()
        heads = max(1, channels // head_dim)
        while channels % heads:
            heads -= 1
        self.heads, self.joint = heads, joint
        self.norm = nn.GroupNorm(_groups(channels, groups), channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x [B * 3, C, H, W], the three planes of an object consecutive
        n, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # [B * 3, H * W, C]
        if self.joint:
            tokens = tokens.reshape(n // 3, 3 * h * w, c)  # [B, 3 * H * W, C]
        q, k, v = self.qkv(tokens).unflatten(-1, (3, self.heads, c // self.heads)).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # [N', heads, T, C / heads]
        out = self.proj(out.transpose(1, 2).flatten(2))  # [N', T, C]
        return x + out.reshape(n, h * w, c).transpose(1, 2).reshape(n, c, h, w)


class _Head(nn.Module):
    """GroupNorm-SiLU-conv to the output plane channels."""

    def __init__(self, in_ch: int, out_ch: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(_groups(in_ch, groups), in_ch)
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.silu(self.norm(x)))


class TriplaneUNet(nn.Module):
    """Four orthogonal views and their elevation -> triplanes (see the module docstring).

    Args:
        config: sizes; ``config.image_encoder`` must be None.

    Raises:
        NotImplementedError: if ``config.image_encoder`` is set.
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        if config.image_encoder is not None:
            raise NotImplementedError(
                f"UNetConfig.image_encoder={config.image_encoder!r}: image-feature encoders are not implemented; "
                "leave it None (the U-Net reads RGB)"
            )
        self.config = cfg = config
        ch, g, d = cfg.channels, cfg.norm_groups, cfg.cond_dim
        levels = cfg.level_resolutions
        e = cfg.xz_embedding_resolution
        self.xz_embedding = nn.Parameter(0.5 * torch.randn(6, e, e))  # [6, E, E] input of the XZ plane
        self.plane_embedding = nn.Embedding(3, d)
        self.elevation_mlp = nn.Sequential(nn.Linear(2 * cfg.elevation_frequencies, d), nn.SiLU(), nn.Linear(d, d))
        self.conv_in = nn.Conv2d(6, ch[0], 3, padding=1)

        def attention(c: int) -> _Attention:
            return _Attention(c, cfg.attention_head_dim, g, cfg.cross_plane_attention)

        # Down path; skip widths recorded in the order they are pushed.
        self.down_blocks, self.down_attn, self.downsamplers = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        skip_ch = [ch[0]]
        prev = ch[0]
        for i, c in enumerate(ch):
            use_attn = levels[i] in cfg.attention_resolutions
            blocks, attns = nn.ModuleList(), nn.ModuleList()
            for _ in range(cfg.layers_per_block):
                blocks.append(_ResBlock(prev, c, d, g))
                attns.append(attention(c) if use_attn else nn.Identity())
                prev = c
                skip_ch.append(c)
            self.down_blocks.append(blocks)
            self.down_attn.append(attns)
            if i < len(ch) - 1:
                self.downsamplers.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skip_ch.append(c)

        self.mid_block1 = _ResBlock(prev, prev, d, g)
        self.mid_attn = attention(prev)
        self.mid_block2 = _ResBlock(prev, prev, d, g)

        # Up path, from the lowest resolution; each level consumes layers_per_block + 1 skips.
        self.up_blocks, self.up_attn, self.upsamplers = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(len(ch))):
            c = ch[i]
            use_attn = levels[i] in cfg.attention_resolutions
            blocks, attns = nn.ModuleList(), nn.ModuleList()
            for _ in range(cfg.layers_per_block + 1):
                blocks.append(_ResBlock(prev + skip_ch.pop(), c, d, g))
                attns.append(attention(c) if use_attn else nn.Identity())
                prev = c
            self.up_blocks.append(blocks)
            self.up_attn.append(attns)
            if i > 0:
                self.upsamplers.append(nn.Conv2d(c, c, 3, padding=1))
        assert not skip_ch

        self.head = _Head(ch[0], cfg.texture_channels if cfg.split_planes else cfg.plane_channels, g)
        self.geometry_head = _Head(ch[cfg.geometry_downsample], cfg.plane_channels, g) if cfg.split_planes else None

    def plane_inputs(self, views: torch.Tensor) -> torch.Tensor:
        """The U-Net's input per plane.

        Args:
            views: [B, 4, 3, H, W] RGB in [0, 1] on white, rig order, ``H = W = view_resolution``.

        Returns:
            [B, 3, 6, R, R]: XY and ZY from `views_to_plane_inputs` mapped to [-1, 1]; XZ the learned
            embedding resized to R.
        """
        cfg = self.config
        if views.ndim != 5 or views.shape[1:3] != (4, 3) or views.shape[3:] != (cfg.view_resolution,) * 2:
            raise InputError(
                f"views must be [B, 4, 3, {cfg.view_resolution}, {cfg.view_resolution}] (four RGB rig views), "
                f"got shape {tuple(views.shape)}"
            )
        r = cfg.resolution
        xy_zy = views_to_plane_inputs(views, r, cfg.view_half_extent) * 2 - 1  # [B, 2, 6, R, R]
        xz = self.xz_embedding
        if xz.shape[-1] != r:
            xz = F.interpolate(xz[None], size=(r, r), mode="bilinear", align_corners=False)[0]  # [6, R, R]
        xz = xz.to(xy_zy.dtype).expand(views.shape[0], 1, 6, r, r)
        return torch.cat([xy_zy, xz], dim=1)  # [B, 3, 6, R, R]

    def condition(self, elevation_deg: float | torch.Tensor, batch: int) -> torch.Tensor:
        """Conditioning vectors: elevation MLP + plane-id embedding, [B * 3, cond_dim] (planes fastest).

        Args:
            elevation_deg: camera elevation of the rig, degrees; a number or a [B] tensor.
            batch: B.
        """
        device, dtype = self.plane_embedding.weight.device, self.plane_embedding.weight.dtype
        el = torch.as_tensor(elevation_deg, dtype=dtype, device=device)
        if el.ndim == 0:
            el = el.expand(batch)
        if el.shape != (batch,):
            raise InputError(f"elevation_deg must be a number or a [{batch}] tensor, got shape {tuple(el.shape)}")
        freqs = 2.0 ** torch.arange(self.config.elevation_frequencies, dtype=dtype, device=device)  # [F]
        angles = torch.deg2rad(el)[:, None] * freqs  # [B, F]
        emb = self.elevation_mlp(torch.cat([angles.sin(), angles.cos()], dim=-1))  # [B, D]
        cond = emb[:, None, :] + self.plane_embedding.weight[None]  # [B, 3, D]
        return cond.reshape(batch * 3, -1)  # [B * 3, D]

    def _run(self, module: nn.Module, *args: torch.Tensor) -> torch.Tensor:
        if self.config.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(module, *args, use_reentrant=False)
        return module(*args)

    def forward(self, views: torch.Tensor, elevation_deg: float | torch.Tensor) -> TriplaneUNetOutput:
        """Predict the triplanes of the object seen in the four views.

        Args:
            views: [B, 4, 3, H, W] RGB in [0, 1] composited on white, rig order (az 0, 90, 180, 270)
                at one elevation, row 0 at the top, ``H = W = config.view_resolution``.
            elevation_deg: the rig's camera elevation, degrees; a number or a [B] tensor.

        Returns:
            `TriplaneUNetOutput`; planes in the order XY, ZY, XZ, laid out as in the module docstring.

        Raises:
            InputError: on a bad shape of ``views`` or ``elevation_deg``.
        """
        cfg = self.config
        b, r = views.shape[0], cfg.resolution
        x = self.plane_inputs(views).reshape(b * 3, 6, r, r)  # [B * 3, 6, R, R]
        cond = self.condition(elevation_deg, b)  # [B * 3, D]

        h = self.conv_in(x)  # [B * 3, ch0, R, R]
        skips = [h]
        for i, (blocks, attns) in enumerate(zip(self.down_blocks, self.down_attn)):
            for block, attn in zip(blocks, attns):
                h = self._run(attn, self._run(block, h, cond))
                skips.append(h)
            if i < len(self.downsamplers):
                h = self.downsamplers[i](h)  # [B * 3, c, R / 2^(i+1), ...]
                skips.append(h)

        h = self._run(self.mid_block1, h, cond)
        h = self._run(self.mid_attn, h)
        h = self._run(self.mid_block2, h, cond)

        geometry = None
        n_levels = len(cfg.channels)
        for j, (blocks, attns) in enumerate(zip(self.up_blocks, self.up_attn)):
            level = n_levels - 1 - j
            for block, attn in zip(blocks, attns):
                h = self._run(attn, self._run(block, torch.cat([h, skips.pop()], dim=1), cond))
            if self.geometry_head is not None and level == cfg.geometry_downsample:
                geometry = self.geometry_head(h)  # [B * 3, Cg, Rg, Rg]
            if j < len(self.upsamplers):
                h = self.upsamplers[j](F.interpolate(h, scale_factor=2.0, mode="nearest"))

        out = self.head(h)  # [B * 3, C, R, R]
        out = out.reshape(b, 3, *out.shape[1:])  # [B, 3, C, R, R]
        if geometry is None:
            return TriplaneUNetOutput(planes=out)
        return TriplaneUNetOutput(planes=geometry.reshape(b, 3, *geometry.shape[1:]), texture_planes=out)

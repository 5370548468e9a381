"""From triplane features to geometry and colour: the MLP decoder and the triplane field.

`TriplaneDecoder` maps the features of a point read from the three planes (``[..., 3, C]``, planes
XY, ZY, XZ, as `fourview.recon.triplane.sample_triplane` returns them) to

* geometry: a density (volumetric stage A, the seed's exponential activation
  ``density = exp(clamp(raw, -c, c))``, per object-frame unit length) or a signed distance (DMTet
  stage B, negative inside, object-frame units), as ``DecoderConfig.geometry`` says;
* colour: sRGB in [0, 1] through a sigmoid;
* with ``DecoderConfig.deformation`` (SDF decoders, DMTet stage B): an unbounded 3-vector per point,
  the DMTet vertex offset before `fourview.recon.dmtet.deform_vertices` bounds it (the seed's
  "SDF plus deformation per vertex"). It comes from the geometry features, like the SDF.

With split planes (stage B) the geometry comes from the geometry planes and the colour from the
texture planes, through two separate MLPs; otherwise one trunk feeds both outputs.

`TriplaneField` wraps one object's planes and a decoder into a `fourview.recon.fields.SurfaceField`
for export, plus ``density_and_color`` for the volume renderer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from fourview.errors import InputError
from fourview.recon.carving import SilhouetteBound
from fourview.recon.triplane import sample_triplane
from fourview.recon.unet import UNetConfig

__all__ = ["DecoderConfig", "DecoderOutput", "TriplaneDecoder", "TriplaneField", "decode_triplane", "volume_density"]


@dataclass(frozen=True)
class DecoderConfig:
    """Size and output semantics of `TriplaneDecoder`."""

    hidden_channels: int = 64
    """Width of the hidden layers."""
    hidden_layers: int = 3
    """Hidden layers (Linear + SiLU) before the output layer, per MLP."""
    merge: Literal["concat", "sum"] = "concat"
    """How the three planes' features of a point combine: ``[3, C] -> [3 C]`` or ``-> [C]`` (sum)."""
    geometry: Literal["density", "sdf"] = "density"
    """What the geometry output is: a volume density (renderer "volume") or an SDF (renderer "dmtet")."""
    density_log_clamp: float = 15.0
    """The raw density output is clamped to [-c, c] before ``exp`` (no overflow, no zero gradients below)."""
    density_iso: float = 10.0
    """Density of the surface, per unit length: ``TriplaneField.sdf`` of a density decoder is zero there
    (and an SDF decoder's zero level is this density when volume-rendered, `volume_density`)."""
    deformation: bool = False
    """Also predict DMTet's per-vertex deformation (geometry "sdf" only; the stage-B presets turn it on)."""

    def __post_init__(self) -> None:
        if self.hidden_channels < 1 or self.hidden_layers < 1:
            raise InputError(
                f"DecoderConfig needs hidden_channels >= 1 and hidden_layers >= 1, "
                f"got {self.hidden_channels} and {self.hidden_layers}"
            )
        if self.merge not in ("concat", "sum"):
            raise InputError(f"DecoderConfig.merge must be 'concat' or 'sum', got {self.merge!r}")
        if self.geometry not in ("density", "sdf"):
            raise InputError(f"DecoderConfig.geometry must be 'density' or 'sdf', got {self.geometry!r}")
        if not self.density_log_clamp > 0 or not self.density_iso > 0:
            raise InputError(
                f"DecoderConfig needs density_log_clamp > 0 and density_iso > 0, "
                f"got {self.density_log_clamp} and {self.density_iso}"
            )
        if self.deformation and self.geometry != "sdf":
            raise InputError("DecoderConfig.deformation needs geometry='sdf' (the DMTet stage)")


@dataclass
class DecoderOutput:
    """Decoded values at points; exactly one of ``density`` and ``sdf`` is set.

    Attributes:
        density: [...] volume density >= 0, per object-frame unit length (geometry "density").
        sdf: [...] signed distance, negative inside, object-frame units (geometry "sdf").
        rgb: [..., 3] sRGB colour in (0, 1).
        deform: [..., 3] unbounded DMTet vertex offset (``DecoderConfig.deformation``), else None.
    """

    rgb: torch.Tensor
    density: torch.Tensor | None = None
    sdf: torch.Tensor | None = None
    deform: torch.Tensor | None = None


def _linear(in_ch: int, out_ch: int, generator: torch.Generator | None) -> nn.Linear:
    """`nn.Linear` with its default initialisation, drawn from ``generator`` (None: torch's global one)."""
    if generator is None:
        return nn.Linear(in_ch, out_ch)
    # Built on the meta device, so that torch's global generator is not drawn from.
    layer = nn.Linear(in_ch, out_ch, device="meta").to_empty(device=generator.device)
    nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)  # as nn.Linear.reset_parameters
    bound = 1.0 / math.sqrt(in_ch)
    nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
    return layer


def _mlp(in_ch: int, hidden: int, layers: int, out_ch: int, generator: torch.Generator | None) -> nn.Sequential:
    mods: list[nn.Module] = []
    for i in range(layers):
        mods += [_linear(in_ch if i == 0 else hidden, hidden, generator), nn.SiLU()]
    mods.append(_linear(hidden, out_ch, generator))
    return nn.Sequential(*mods)


class TriplaneDecoder(nn.Module):
    """MLP from triplane features to (density or SDF, colour).

    Args:
        config: widths and output semantics.
        plane_channels: C of the (geometry) planes.
        texture_channels: Ct of the texture planes for split planes, else None (one trunk).
        generator: draws the initial weights (torch's default initialisation of `nn.Linear`);
            None: torch's global generator.
    """

    def __init__(
        self,
        config: DecoderConfig,
        plane_channels: int,
        texture_channels: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.plane_channels, self.texture_channels = plane_channels, texture_channels
        width = 3 if config.merge == "concat" else 1
        hid, n = config.hidden_channels, config.hidden_layers
        deform = 3 if config.deformation else 0
        if texture_channels is None:
            # geometry raw + 3 colour logits (+ 3 deformation)
            self.trunk = _mlp(width * plane_channels, hid, n, 4 + deform, generator)
            self.geometry_mlp = self.texture_mlp = None
        else:
            self.trunk = None
            self.geometry_mlp = _mlp(width * plane_channels, hid, n, 1 + deform, generator)  # raw (+ 3 deformation)
            self.texture_mlp = _mlp(width * texture_channels, hid, n, 3, generator)

    @classmethod
    def for_unet(cls, config: DecoderConfig, unet: UNetConfig) -> TriplaneDecoder:
        """The decoder for the planes that a `TriplaneUNet` with ``unet`` makes."""
        return cls(config, unet.plane_channels, unet.texture_channels if unet.split_planes else None)

    def _merge(self, features: torch.Tensor, channels: int, name: str) -> torch.Tensor:
        if features.ndim < 2 or features.shape[-2:] != (3, channels):
            raise InputError(f"{name} must be [..., 3, {channels}], got shape {tuple(features.shape)}")
        if self.config.merge == "concat":
            return features.flatten(-2)  # [..., 3 C]
        return features.sum(dim=-2)  # [..., C]

    def forward(self, features: torch.Tensor, texture_features: torch.Tensor | None = None) -> DecoderOutput:
        """Decode features sampled from the planes.

        Args:
            features: [..., 3, C] features of the (geometry) planes XY, ZY, XZ at each point.
            texture_features: [..., 3, Ct] features of the texture planes at the same points; required
                exactly when the decoder was built with ``texture_channels``.

        Returns:
            `DecoderOutput` with [...] geometry and [..., 3] colour.
        """
        cfg = self.config
        x = self._merge(features, self.plane_channels, "features")
        if self.trunk is not None:
            if texture_features is not None:
                raise InputError("this decoder reads one set of planes; texture_features must be None")
            out = self.trunk(x)  # [..., 4 (+ 3)]
            raw, rgb_logit, deform = out[..., 0], out[..., 1:4], out[..., 4:]
        else:
            if texture_features is None:
                raise InputError("this decoder reads split planes; texture_features are required")
            geo = self.geometry_mlp(x)  # [..., 1 (+ 3)]
            raw, deform = geo[..., 0], geo[..., 1:]
            rgb_logit = self.texture_mlp(self._merge(texture_features, self.texture_channels, "texture_features"))
        rgb = torch.sigmoid(rgb_logit)  # [..., 3]
        if cfg.geometry == "density":
            c = cfg.density_log_clamp
            return DecoderOutput(rgb=rgb, density=torch.exp(raw.clamp(-c, c)))
        return DecoderOutput(rgb=rgb, sdf=raw, deform=deform if cfg.deformation else None)


def volume_density(config: DecoderConfig, out: DecoderOutput) -> torch.Tensor:
    """[...] density per unit length for volume rendering, from either kind of decoder.

    A density decoder's own. An SDF decoder's ``sdf`` is read as the level function a density
    decoder's field has (`TriplaneField.sdf`): ``density = density_iso * exp(-sdf)``, clamped like
    the density activation. That is exact for stage B at its start (`fourview.recon.loading.
    load_init_weights` maps stage A's density this way) and is how a stage-B model is refined with
    the volume renderer (`fourview.recon.refine.refine_reconstruction`): DMTet's silhouettes give
    weak gradients (`fourview.recon.render_mesh`), the volume renderer's do not.
    """
    if out.density is not None:
        return out.density
    c = config.density_log_clamp
    return torch.exp((math.log(config.density_iso) - out.sdf).clamp(-c, c))


def decode_triplane(
    decoder: TriplaneDecoder,
    planes: torch.Tensor,
    xyz: torch.Tensor,
    texture_planes: torch.Tensor | None = None,
) -> DecoderOutput:
    """Sample the planes at points and decode them (batched; what the renderers call).

    Args:
        decoder: the decoder.
        planes: [B, 3, C, H, W] (geometry) planes XY, ZY, XZ.
        xyz: [B, N, 3] object-frame points in [-1, 1]; same dtype and device as ``planes``.
        texture_planes: [B, 3, Ct, Ht, Wt] texture planes for a split decoder, else None.

    Returns:
        `DecoderOutput` with [B, N] geometry and [B, N, 3] colour.
    """
    features = sample_triplane(planes, xyz)  # [B, N, 3, C]
    texture_features = None if texture_planes is None else sample_triplane(texture_planes, xyz)  # [B, N, 3, Ct]
    return decoder(features, texture_features)


class TriplaneField:
    """One object's triplanes and a decoder as a `fourview.recon.fields.SurfaceField`.

    Args:
        decoder: the decoder.
        planes: [3, C, H, W] or [1, 3, C, H, W] (geometry) planes XY, ZY, XZ.
        texture_planes: [3, Ct, Ht, Wt] or [1, 3, ...] texture planes for a split decoder, else None.
        chunk_size: points decoded at a time (bounds memory for dense grids).
        outer_bound: the views' visual hull the geometry is kept inside (`fourview.recon.carving`):
            `sdf` is ``max(sdf, bound_scale * outer_bound)`` and `density_and_color` the matching
            density; None for the decoder's geometry alone.
        bound_scale: the geometry's units per object-frame unit (`fourview.recon.carving.CarveConfig.scale`).
        restore: silhouette pixels the field's surface left out (`fourview.recon.carving.missed_silhouettes`,
            as a `SilhouetteBound` of those pixels): the part of ``outer_bound`` that projects into
            them in some view is added to the geometry (`restored`); needs ``outer_bound``.

    Queries take [N, 3] object-frame points in [-1, 1]^3 (any float dtype and device; they are
    moved to the planes'), and return results in the planes' dtype and device. Gradients flow if
    the caller enables them.
    """

    def __init__(
        self,
        decoder: TriplaneDecoder,
        planes: torch.Tensor,
        texture_planes: torch.Tensor | None = None,
        chunk_size: int = 1 << 18,
        outer_bound: SilhouetteBound | None = None,
        bound_scale: float = 1.0,
        restore: SilhouetteBound | None = None,
    ) -> None:
        if restore is not None and outer_bound is None:
            raise InputError("a field restores missed silhouettes from its outer bound: give outer_bound too")
        self.decoder = decoder
        self.outer_bound = outer_bound
        self.bound_scale = bound_scale
        self.restore = restore
        self.planes = self._batched(planes, "planes")  # [1, 3, C, H, W]
        self.texture_planes = None if texture_planes is None else self._batched(texture_planes, "texture_planes")
        if chunk_size < 1:
            raise InputError(f"chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size = chunk_size

    @staticmethod
    def _batched(planes: torch.Tensor, name: str) -> torch.Tensor:
        if planes.ndim == 4:
            planes = planes[None]
        if planes.ndim != 5 or planes.shape[:2] != (1, 3):
            raise InputError(f"{name} must be [3, C, H, W] or [1, 3, C, H, W], got shape {tuple(planes.shape)}")
        return planes

    def query(self, xyz: torch.Tensor) -> DecoderOutput:
        """Decode at [N, 3] points: [N] geometry and [N, 3] colour, in chunks of ``chunk_size``."""
        if xyz.ndim != 2 or xyz.shape[1] != 3:
            raise InputError(f"xyz must be [N, 3], got shape {tuple(xyz.shape)}")
        xyz = xyz.to(dtype=self.planes.dtype, device=self.planes.device)
        outs = [
            decode_triplane(self.decoder, self.planes, chunk[None], self.texture_planes)
            for chunk in xyz.split(self.chunk_size)
        ]
        if not outs:  # N = 0
            outs = [decode_triplane(self.decoder, self.planes, xyz[None], self.texture_planes)]

        def cat(name: str) -> torch.Tensor | None:
            parts = [getattr(o, name) for o in outs]
            return None if parts[0] is None else torch.cat(parts, dim=1)[0]

        return DecoderOutput(rgb=cat("rgb"), density=cat("density"), sdf=cat("sdf"), deform=cat("deform"))

    def sdf(self, xyz: torch.Tensor) -> torch.Tensor:
        """[N, 3] points -> [N] signed distance, negative inside.

        For a density decoder this is the level function ``log(density_iso) - log(density)``: zero
        on the iso-density surface, negative inside, but in log-density units, not a distance.
        """
        out = self.query(xyz)
        sdf = out.sdf if out.sdf is not None else math.log(self.decoder.config.density_iso) - torch.log(out.density)
        if self.outer_bound is None:
            return sdf
        hull = self.outer_bound(xyz).to(sdf)
        sdf = torch.maximum(sdf, self.bound_scale * hull)
        if self.restore is None:
            return sdf
        return torch.minimum(sdf, self.bound_scale * self._restored_part(xyz, hull))

    def color(self, xyz: torch.Tensor) -> torch.Tensor:
        """[N, 3] points -> [N, 3] sRGB colour in (0, 1)."""
        return self.query(xyz).rgb

    def deform(self, xyz: torch.Tensor) -> torch.Tensor | None:
        """[N, 3] tet-grid vertices -> [N, 3] unbounded DMTet offsets (`fourview.recon.dmtet.deform_vertices`).

        None when the decoder has no deformation head (stage A, or ``DecoderConfig.deformation`` off).
        """
        if not self.decoder.config.deformation:
            return None
        return self.query(xyz).deform

    def density_and_color(self, xyz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[N, 3] points -> ([N] density per unit length (`volume_density`), [N, 3] sRGB colour)."""
        out = self.query(xyz)
        density = volume_density(self.decoder.config, out)
        iso, c = self.decoder.config.density_iso, self.decoder.config.density_log_clamp
        if self.outer_bound is None:
            return density, out.rgb
        hull = self.outer_bound(xyz).to(density)
        # the density of max(sdf, bound): density_iso * exp(-bound) at most
        density = torch.minimum(density, iso * torch.exp(-(self.bound_scale * hull).clamp(-c, c)))
        if self.restore is not None:  # and of min(that, restored part): at least the part's
            part = self.bound_scale * self._restored_part(xyz, hull)
            density = torch.maximum(density, iso * torch.exp(-part.clamp(-c, c)))
        return density, out.rgb

    def _restored_part(self, xyz: torch.Tensor, hull: torch.Tensor) -> torch.Tensor:
        """[N] signed distance to the part of the hull (``hull``: `outer_bound` at ``xyz``) behind the
        missed silhouette pixels, object units."""
        return torch.maximum(hull, self.restore.union_distance(xyz).to(hull))

    def carved(self, bound: SilhouetteBound | None, scale: float) -> TriplaneField:
        """This field (same planes and decoder) kept inside ``bound`` (None: no bound), nothing restored."""
        return TriplaneField(self.decoder, self.planes, self.texture_planes, self.chunk_size, bound, scale)

    def restored(self, missed: SilhouetteBound) -> TriplaneField:
        """This carved field with the part of its hull behind the ``missed`` silhouette pixels added.

        Raises:
            InputError: the field is not carved (no outer bound to restore from).
        """
        return TriplaneField(
            self.decoder, self.planes, self.texture_planes, self.chunk_size, self.outer_bound, self.bound_scale, missed
        )

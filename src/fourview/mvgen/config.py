"""Sizes of the stage-1 multi-view generator: one SDXL architecture, three presets.

The generator draws a 2x2 grid of the four rig views (row major [az 0, az 90; az 180, az 270],
white background) with diffusers' ``StableDiffusionXLPipeline`` components: a UNet with SDXL's
block layout and "text_time" micro-conditioning, an ``AutoencoderKL`` VAE, a CLIP text encoder
(SDXL's ViT-L slot) and a CLIP text encoder with projection (SDXL's OpenCLIP bigG slot, whose
pooled output conditions the UNet). A preset only changes numbers (`mvgen_preset`):

- ``full``: SDXL-base-1.0 exactly (grid 1024, four 512 views); load its weights with
  ``from_pretrained`` rather than building it.
- ``demo``: grid 128 (four 64 views), trained from scratch on this CPU and shipped (< 15 MB).
- ``tiny``: grid 64, random weights for tests.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from fourview.errors import InputError

Preset = Literal["tiny", "demo", "full"]

CLIP_MAX_LENGTH: int = 77
"""Tokens per prompt, start and end included, that CLIP's and SDXL's text encoders take."""


@dataclass(frozen=True)
class VAEConfig:
    """``AutoencoderKL`` size. The latent is ``2 ** (len(block_out_channels) - 1)`` times smaller."""

    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    """Channels per resolution, finest first."""
    layers_per_block: int = 2
    """ResNet blocks per resolution (encoder; the decoder has one more)."""
    latent_channels: int = 4
    """Channels of the latent image."""
    norm_num_groups: int = 32
    """GroupNorm groups."""
    mid_block_attention: bool = True
    """Self-attention in the middle block (off in the demo: fully convolutional, cheaper)."""
    scaling_factor: float = 0.13025
    """Latents are multiplied by this before diffusion (SDXL: 0.13025; a trained VAE sets 1 / latent std)."""


@dataclass(frozen=True)
class UNetConfig:
    """``UNet2DConditionModel`` size in SDXL's layout (first level without attention)."""

    block_out_channels: tuple[int, ...] = (320, 640, 1280)
    """Channels per resolution, finest first."""
    transformer_depths: tuple[int, ...] = (0, 2, 10)
    """Transformer blocks per attention layer at each resolution (0: a plain ResNet level)."""
    attention_heads: tuple[int, ...] = (5, 10, 20)
    """Attention heads per resolution (diffusers' misnamed ``attention_head_dim``)."""
    layers_per_block: int = 2
    """ResNet (+ transformer) layers per resolution on the way down (one more on the way up)."""
    addition_time_embed_dim: int = 256
    """Fourier size of each of the six micro-conditioning numbers (add_time_ids)."""
    norm_num_groups: int = 32
    """GroupNorm groups."""


@dataclass(frozen=True)
class TextEncoderConfig:
    """A CLIP text transformer (``CLIPTextModel`` / ``CLIPTextModelWithProjection``); vocabulary 49408."""

    hidden_size: int = 768
    """Width of the token features (SDXL's cross-attention context is both encoders' widths concatenated)."""
    num_layers: int = 12
    """Transformer layers; SDXL reads the penultimate layer's output, so at least 2."""
    num_heads: int = 12
    """Attention heads."""
    intermediate_size: int = 3072
    """MLP width."""
    hidden_act: str = "quick_gelu"
    """MLP activation ("quick_gelu" in OpenAI CLIP, "gelu" in OpenCLIP bigG)."""
    projection_dim: int = 768
    """Size of the projected pooled embedding (the second encoder's conditions the UNet)."""


@dataclass(frozen=True)
class MVGenConfig:
    """The whole generator: grid size and the sizes of its four networks."""

    resolution: int = 1024
    """Side of the 2x2 grid, pixels (each view is half of it)."""
    vae: VAEConfig = VAEConfig()
    """The autoencoder."""
    unet: UNetConfig = UNetConfig()
    """The denoiser."""
    text_encoder: TextEncoderConfig = TextEncoderConfig()
    """SDXL's first text encoder (CLIP ViT-L/14 text tower in ``full``)."""
    text_encoder_2: TextEncoderConfig = TextEncoderConfig(
        hidden_size=1280, num_layers=32, num_heads=20, intermediate_size=5120, hidden_act="gelu", projection_dim=1280
    )
    """SDXL's second text encoder (OpenCLIP ViT-bigG/14 text tower in ``full``)."""
    max_length: int = CLIP_MAX_LENGTH
    """Tokens per prompt."""
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"
    """What the UNet predicts (SDXL-base: epsilon; the from-scratch demo: v_prediction)."""
    timestep_spacing: Literal["leading", "trailing", "linspace"] = "leading"
    """The sampler's step placement (SDXL: "leading"; "trailing" starts at the last training step)."""
    zero_terminal_snr: bool = False
    """Rescale the betas so the last training step is pure noise (Lin et al. 2024, "Common Diffusion
    Noise Schedules and Sample Steps are Flawed"). SDXL's schedule leaves sqrt(0.0047) = 7% of the
    signal at t = 999; on small latents the coarse layout survives in it, so a model trained on it
    takes the object's silhouette from the initial noise instead of the prompt. Needs v-prediction."""

    def __post_init__(self) -> None:
        if self.resolution % 16 or self.resolution <= 0:
            raise InputError(f"mvgen grid resolution must be a positive multiple of 16, got {self.resolution}")
        if self.zero_terminal_snr and self.prediction_type != "v_prediction":
            raise InputError(
                "mvgen zero_terminal_snr needs prediction_type 'v_prediction' (epsilon is undefined at SNR 0)"
            )
        factor = 2 ** (len(self.vae.block_out_channels) - 1)
        if (self.resolution // factor) % 2 ** (len(self.unet.block_out_channels) - 1):
            raise InputError(
                f"mvgen grid resolution {self.resolution} is not divisible by the VAE x UNet downsampling"
            )
        if (
            len({len(self.unet.block_out_channels), len(self.unet.transformer_depths), len(self.unet.attention_heads)})
            > 1
        ):
            raise InputError(
                "mvgen UNet config: block_out_channels, transformer_depths and attention_heads differ in length"
            )
        for name, enc in (("text_encoder", self.text_encoder), ("text_encoder_2", self.text_encoder_2)):
            if enc.num_layers < 2:
                raise InputError(f"mvgen {name} needs at least 2 layers (SDXL reads the penultimate one)")

    @property
    def latent_size(self) -> int:
        """Side of the latent grid: ``resolution`` over the VAE's downsampling."""
        return self.resolution // 2 ** (len(self.vae.block_out_channels) - 1)

    @property
    def cross_attention_dim(self) -> int:
        """Width of the UNet's text context: both encoders' hidden sizes, concatenated."""
        return self.text_encoder.hidden_size + self.text_encoder_2.hidden_size

    def to_dict(self) -> dict:
        """JSON-ready nested dict (tuples as lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, record: dict) -> MVGenConfig:
        """Inverse of `to_dict`."""
        tup = lambda d: {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}  # noqa: E731
        return cls(
            resolution=record["resolution"],
            vae=VAEConfig(**tup(record["vae"])),
            unet=UNetConfig(**tup(record["unet"])),
            text_encoder=TextEncoderConfig(**record["text_encoder"]),
            text_encoder_2=TextEncoderConfig(**record["text_encoder_2"]),
            max_length=record["max_length"],
            prediction_type=record["prediction_type"],
            timestep_spacing=record.get("timestep_spacing", "leading"),
            zero_terminal_snr=record.get("zero_terminal_snr", False),
        )


def mvgen_preset(size: Preset) -> MVGenConfig:
    """The generator of a size: "full" (SDXL-base-1.0), "demo" (shipped, grid 128) or "tiny" (tests).

    Raises:
        InputError: unknown size.
    """
    if size == "full":
        return MVGenConfig()
    if size == "demo":
        # Text widths stay small: each encoder embeds the whole 49408-token CLIP vocabulary.
        # 2 x 0.8 M text + 2.7 M UNet + 0.65 M VAE parameters: 10 MB in float16, + 3 MB of tokenizers.
        text = TextEncoderConfig(
            hidden_size=16, num_layers=3, num_heads=2, intermediate_size=64, hidden_act="gelu", projection_dim=16
        )
        return MVGenConfig(
            resolution=128,
            vae=VAEConfig(
                block_out_channels=(16, 32, 64),
                layers_per_block=1,
                # three channels carry the low-pass colours (`--vae-latent-colour-weight`), five the rest
                latent_channels=8,
                # 8+ channels per GroupNorm group: with 2, the per-image normalisation erases absolute colour
                norm_num_groups=2,
                mid_block_attention=False,
                scaling_factor=1.0,
            ),
            unet=UNetConfig(
                block_out_channels=(32, 64, 96),
                transformer_depths=(0, 1, 1),
                attention_heads=(1, 2, 3),
                layers_per_block=1,
                addition_time_embed_dim=16,
                norm_num_groups=8,
            ),
            text_encoder=text,
            text_encoder_2=text,
            prediction_type="v_prediction",
            timestep_spacing="trailing",
            # on 32x32 latents SDXL's t = 999 still shows the silhouette: without this the demo
            # drew the shape its seed's noise suggested, whatever the prompt (docs/training.md)
            zero_terminal_snr=True,
        )
    if size == "tiny":
        text = TextEncoderConfig(
            hidden_size=8, num_layers=2, num_heads=2, intermediate_size=16, hidden_act="gelu", projection_dim=8
        )
        return MVGenConfig(
            resolution=64,
            vae=VAEConfig(
                block_out_channels=(8, 16),
                layers_per_block=1,
                latent_channels=4,
                norm_num_groups=4,
                mid_block_attention=False,
                scaling_factor=1.0,
            ),
            unet=UNetConfig(
                block_out_channels=(16, 32),
                transformer_depths=(0, 1),
                attention_heads=(2, 2),
                layers_per_block=1,
                addition_time_embed_dim=8,
                norm_num_groups=8,
            ),
            text_encoder=text,
            text_encoder_2=text,
            prediction_type="v_prediction",
            timestep_spacing="trailing",
        )
    raise InputError(f"unknown mvgen size {size!r}; expected 'tiny', 'demo' or 'full'")

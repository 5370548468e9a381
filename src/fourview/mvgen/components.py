"""Randomly initialised ``StableDiffusionXLPipeline`` components built from an `MVGenConfig`.

``StableDiffusionXLPipeline(**build_components(mvgen_preset("tiny")))`` is a working SDXL pipeline
with random weights and no network access: the starting point of from-scratch training (the
shipped demo model) and of the tests. The full size is SDXL-base-1.0's architecture; its weights
come from ``StableDiffusionXLPipeline.from_pretrained``, so building it is refused except on the
meta device (shapes only, e.g. to count parameters).
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from fourview.errors import InputError
from fourview.mvgen.config import CLIP_MAX_LENGTH, MVGenConfig, TextEncoderConfig
from fourview.mvgen.tokenizer import VOCAB_SIZE, build_clip_tokenizer

MAX_RANDOM_PARAMETERS: int = 500_000_000
"""Largest generator `build_components` initialises with random weights on a real device."""


def build_unet(config: MVGenConfig) -> UNet2DConditionModel:
    """SDXL's UNet layout at the config's size: levels without attention where the depth is 0."""
    u = config.unet
    down = tuple("CrossAttnDownBlock2D" if d > 0 else "DownBlock2D" for d in u.transformer_depths)
    up = tuple("CrossAttnUpBlock2D" if d > 0 else "UpBlock2D" for d in reversed(u.transformer_depths))
    return UNet2DConditionModel(
        sample_size=config.latent_size,
        in_channels=config.vae.latent_channels,
        out_channels=config.vae.latent_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=tuple(u.block_out_channels),
        layers_per_block=u.layers_per_block,
        transformer_layers_per_block=tuple(max(d, 1) for d in u.transformer_depths),
        attention_head_dim=tuple(u.attention_heads),
        cross_attention_dim=config.cross_attention_dim,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=u.addition_time_embed_dim,
        projection_class_embeddings_input_dim=6 * u.addition_time_embed_dim + config.text_encoder_2.projection_dim,
        norm_num_groups=u.norm_num_groups,
    )


def build_vae(config: MVGenConfig) -> AutoencoderKL:
    """An ``AutoencoderKL`` at the config's size (RGB in [-1, 1] <-> ``latent_channels`` latents)."""
    v = config.vae
    n = len(v.block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(v.block_out_channels),
        layers_per_block=v.layers_per_block,
        latent_channels=v.latent_channels,
        norm_num_groups=v.norm_num_groups,
        sample_size=config.resolution,
        scaling_factor=v.scaling_factor,
        force_upcast=config.resolution >= 1024,
        mid_block_add_attention=v.mid_block_attention,
    )


def clip_text_config(enc: TextEncoderConfig, max_length: int = CLIP_MAX_LENGTH) -> CLIPTextConfig:
    """``transformers.CLIPTextConfig`` of a text encoder (CLIP's vocabulary and special ids)."""
    return CLIPTextConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=enc.hidden_size,
        intermediate_size=enc.intermediate_size,
        num_hidden_layers=enc.num_layers,
        num_attention_heads=enc.num_heads,
        max_position_embeddings=max_length,
        hidden_act=enc.hidden_act,
        projection_dim=enc.projection_dim,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=1,
    )


def build_scheduler(config: MVGenConfig) -> EulerDiscreteScheduler:
    """SDXL's sampler (Euler, scaled-linear betas 0.00085..0.012 over 1000 steps, optionally rescaled to
    zero terminal SNR)."""
    return EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type=config.prediction_type,
        timestep_spacing=config.timestep_spacing,
        steps_offset=1,
        interpolation_type="linear",
        use_karras_sigmas=False,
        rescale_betas_zero_snr=config.zero_terminal_snr,
    )


def build_components(config: MVGenConfig, seed: int = 0, device: str = "cpu") -> dict:
    """Every ``StableDiffusionXLPipeline`` component, randomly initialised (no network).

    Args:
        config: the generator's sizes (`fourview.mvgen.config.mvgen_preset`).
        seed: seed of the random initialisation (the global torch RNG is left untouched).
        device: "cpu", or "meta" for shapes without memory (any size, e.g. to count parameters).

    Returns:
        ``{"unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2",
        "scheduler"}``, the keyword arguments of ``StableDiffusionXLPipeline``.

    Raises:
        InputError: more than `MAX_RANDOM_PARAMETERS` parameters off the meta device (the full
            size: load SDXL's weights with ``StableDiffusionXLPipeline.from_pretrained``).
    """
    if device != "meta":
        with torch.device("meta"):
            shapes = _networks(config)
        count = sum(p.numel() for m in shapes.values() for p in m.parameters())
        if count > MAX_RANDOM_PARAMETERS:
            raise InputError(
                f"refusing to build a {count / 1e9:.1f} B-parameter generator with random weights; "
                "load trained SDXL weights with StableDiffusionXLPipeline.from_pretrained "
                "(e.g. stabilityai/stable-diffusion-xl-base-1.0) instead"
            )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with torch.device(device):
            nets = _networks(config)
    for m in nets.values():
        m.eval()
    return {
        **nets,
        "tokenizer": build_clip_tokenizer("<|endoftext|>", config.max_length),
        "tokenizer_2": build_clip_tokenizer("!", config.max_length),
        "scheduler": build_scheduler(config),
    }


def _networks(config: MVGenConfig) -> dict:
    """The four networks (on the current default device)."""
    return {
        "unet": build_unet(config),
        "vae": build_vae(config),
        "text_encoder": CLIPTextModel(clip_text_config(config.text_encoder, config.max_length)),
        "text_encoder_2": CLIPTextModelWithProjection(clip_text_config(config.text_encoder_2, config.max_length)),
    }

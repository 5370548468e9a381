"""Training of the multi-view generator (``fourview train mvgen``).

Three modes, one loop:

- ``init`` + ``lora_rank > 0``: a pretrained SDXL-layout pipeline (folder or hub id), frozen, with
  a peft LoRA on the UNet's attention projections (``to_q``, ``to_k``, ``to_v``, ``to_out.0``).
  Saved with ``StableDiffusionXLPipeline.save_lora_weights`` (diffusers' LoRA format) into
  ``OUT/lora``; load with ``pipe.load_lora_weights(OUT / "lora")``.
- ``init`` + ``lora_rank == 0``: full fine-tune of the UNet (and the text encoders with
  ``train_text_encoders``). Saved as a whole pipeline into ``OUT/final``.
- ``from_scratch`` ("tiny" / "demo"): components built from `mvgen_preset`; first the VAE alone
  (L1 + image-gradient L1 + a small KL, on random view-sized crops), its ``scaling_factor`` set to
  one over the latent standard deviation; then the UNet and both text encoders together on the
  diffusion loss. Saved as a whole pipeline into ``OUT/final``.

The diffusion loss is the MSE on the scheduler's prediction type (the demo uses v-prediction: at
high noise epsilon is almost the input itself, so little signal would reach the global layout -
the colour and silhouette we are judged on; v-prediction asks for the image there), weighted
by min-SNR-gamma (Hang et al. 2023). SDXL micro-conditioning is the grid's own size, crop (0, 0),
target size; the pooled text embedding is text_encoder_2's projection. Dropped captions
(``caption_dropout``) get all-zero text embeddings, which is what ``StableDiffusionXLPipeline``
feeds for the unconditional branch (``force_zeros_for_empty_prompt``). VAE latents (posterior mean
and std) are cached once in ``OUT/latents.safetensors``; each step samples from them.

The run's settings shared with the other trainers (schedule, EMA, checkpoints...) are
`fourview.training.run.RunConfig`'s.

Output folder: ``train_config.json``, ``vae/`` (from scratch), ``latents.safetensors``,
``log.jsonl`` (loss per logged step), ``checkpoints/step_NNNNNN`` (`fourview.training.checkpoints`;
with a LoRA only its weights, ``lora.safetensors``, not the frozen UNet; the run resumes from the
latest), ``val/step_NNNNNN/NN.png`` (validation samples, `fourview.mvgen.validation`;
``val/settings.json`` says how they were drawn) and ``val/step_NNNNNN.png`` (all of them in one
image), and the final weights (``final/`` or ``lora/``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from fourview.atomic import atomic_path, write_text_atomic
from fourview.errors import InputError
from fourview.mvgen.components import build_components
from fourview.mvgen.config import mvgen_preset
from fourview.mvgen.dataset import CaptionedImages, grid_dataset, pairs_2d
from fourview.mvgen.lora import add_lora
from fourview.mvgen.prompt_check import write_training_words
from fourview.mvgen.tokenizer import save_compact_tokenizer
from fourview.mvgen.validation import default_val_prompts, validation_images, write_validation
from fourview.training import (
    EMA,
    CheckpointLayout,
    Checkpoints,
    RunConfig,
    averaged,
    step_generator,
    training_process,
    warmup_cosine,
)

logger = logging.getLogger(__name__)

LORA_TARGETS: tuple[str, ...] = ("to_k", "to_q", "to_v", "to_out.0")
"""UNet module names that get the LoRA (``lora_rank > 0``): the attention projections."""

CHECKPOINT_LAYOUT = CheckpointLayout(digits=6, marker="state.json", lora_file="lora.safetensors")
"""Names in ``OUT/checkpoints`` (as earlier runs wrote them); with a LoRA, checkpoints hold only its weights."""


@dataclass(frozen=True, kw_only=True)
class MVGenTrainConfig(RunConfig):
    """Everything a generator training run needs (frozen; saved as ``OUT/train_config.json``).

    The run's output, schedule (of the diffusion stage), optimizer, EMA, checkpoint and seed fields
    are `RunConfig`'s; ``batch_size`` counts grids.
    """

    data: str
    """Folder of rendered objects: one folder each with grid.png and caption.txt."""
    init: str | None = None
    """Start from this SDXL-layout pipeline (folder or hub id, e.g. stabilityai/stable-diffusion-xl-base-1.0)."""
    from_scratch: Literal["tiny", "demo"] | None = None
    """Instead of ``init``: build this preset with random weights and train VAE, UNet and text encoders."""
    lora_rank: int = 0
    """With ``init``: rank of a LoRA on the UNet attention projections (0: full fine-tune)."""
    lora_alpha: float | None = None
    """LoRA scale numerator (default: the rank, i.e. scale 1)."""
    lora_init: Literal["default", "gaussian"] = "default"
    """Initial LoRA A: "default" (Kaiming-uniform) or "gaussian" (normal, std 1 / rank); B is 0 (a no-op at first)."""
    train_text_encoders: bool = False
    """With ``init`` and no LoRA: also fine-tune both text encoders (always on from scratch)."""
    resolution: int | None = None
    """Grid side, pixels (default: the preset's, or the init UNet's sample size times the VAE factor)."""
    prediction_type: Literal["auto", "epsilon", "v_prediction"] = "auto"
    """Diffusion target ("auto": the init scheduler's, or the preset's)."""
    zero_terminal_snr: bool | None = None
    """Rescale the noise schedule to zero SNR at the last step (see `MVGenConfig.zero_terminal_snr`;
    None: keep the init scheduler's or the preset's). Saved in the scheduler config, so sampling
    follows it."""
    snr_gamma: float = 5.0
    """Min-SNR-gamma loss weighting (0: plain MSE)."""
    caption_dropout: float = 0.1
    """Probability of training a sample unconditionally (for classifier-free guidance)."""
    mix_2d: str | None = None
    """Folder of plain 2D text-image pairs (NAME.png + NAME.txt) mixed into the batches."""
    mix_2d_ratio: float = 0.0
    """Expected fraction of each batch drawn from ``mix_2d``."""
    gradient_checkpointing: bool = False
    """Recompute UNet activations in the backward pass (less memory, slower)."""
    vae_steps: int = 1000
    """From scratch: VAE optimizer steps (skipped when ``OUT/vae`` exists)."""
    vae_batch_size: int = 16
    """From scratch: VAE crops per step."""
    vae_lr: float = 1e-3
    """From scratch: VAE peak learning rate (cosine decay to 10%)."""
    vae_kl_weight: float = 1e-6
    """From scratch: weight of the VAE's KL term (per latent element, against per-pixel L1)."""
    vae_edge_weight: float = 0.5
    """From scratch: weight of the L1 between image gradients (sharper silhouettes)."""
    vae_colour_weight: float = 1.0
    """From scratch: weight of the MSE and of the L1 between 4x4-average-pooled images (colour fidelity)."""
    vae_latent_colour_weight: float = 0.0
    """From scratch: weight of the L1 between the latent's first three channels (posterior mean) and
    the image average-pooled to the latent's size. Those channels become a low-pass copy of the
    colours, so colours the UNet must tell apart (grey and purple) lie apart in latent space; the
    colour terms above shape only the decoded image. Needs ``latent_channels >= 3``."""
    vae_init: str | None = None
    """From scratch: start the VAE from this AutoencoderKL folder (e.g. an earlier run's OUT/vae)."""
    stage: Literal["all", "vae_decoder"] = "all"
    """"vae_decoder": only fine-tune the decoder of OUT/vae (or ``vae_init``) for ``vae_steps`` into
    OUT/vae_decoder; the encoder is frozen, so cached latents and a UNet trained on them stay valid."""
    val_prompts: tuple[str, ...] = ()
    """Validation prompts (default: 8 held-out and 4 training combinations of the synthetic world)."""
    val_inference_steps: int = 20
    """Sampler steps of the validation samples."""
    val_guidance: float = 5.0
    """Classifier-free guidance scale of the validation samples."""
    save_dtype: Literal["float32", "float16"] = "float32"
    """Precision of the saved final pipeline (float16 halves it; load with torch_dtype=torch.float32)."""
    # this trainer's defaults of shared fields
    batch_size: int = 16
    weight_decay: float = 0.01
    log_every: int = 25


@dataclass(frozen=True)
class MVGenTrainResult:
    """What a training call did.

    Attributes:
        out_dir: the run's folder.
        steps: optimizer steps done in total (including resumed ones).
        time_s: wall time of this call, seconds.
        eval_loss_start: diffusion loss on a fixed batch (fixed noise and timesteps) before this
            call's first step.
        eval_loss_end: the same after its last step.
        weights: the saved final pipeline (``OUT/final``) or LoRA folder (``OUT/lora``); None when
            the call stopped early (``stop_after_steps``).
        val_dir: the last validation samples' folder, or None.
    """

    out_dir: Path
    steps: int
    time_s: float
    eval_loss_start: float
    eval_loss_end: float
    weights: Path | None
    val_dir: Path | None


def train(config: MVGenTrainConfig) -> MVGenTrainResult:
    """Train the generator (see the module docstring); resumable, multi-GPU under ``accelerate launch``.

    Raises:
        InputError: inconsistent options, missing data or weights.
    """

    _check(config)
    with training_process(config.num_threads):
        return _train_decoder(config) if config.stage == "vae_decoder" else _train(config)


def _train(config: MVGenTrainConfig) -> MVGenTrainResult:
    from accelerate import Accelerator

    t_start = time.time()
    out = Path(config.out)
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.grad_accumulation
    )
    main = accelerator.is_main_process
    if main:
        out.mkdir(parents=True, exist_ok=True)
        config.write_json(out / "train_config.json")

    comps, prediction_type = _initial_components(config)
    resolution = config.resolution or comps["unet"].config.sample_size * _vae_factor(comps["vae"])
    if resolution % 16:
        raise InputError(f"mvgen grid resolution must be a multiple of 16, got {resolution}")
    grids = grid_dataset(config.data, resolution)
    flat = pairs_2d(config.mix_2d, resolution) if config.mix_2d else None

    if config.from_scratch is not None:
        from diffusers import AutoencoderKL

        vae_dir = out / "vae"
        if not (vae_dir / "config.json").is_file() and main:
            if config.vae_init is not None:
                comps["vae"] = AutoencoderKL.from_pretrained(config.vae_init)
            if config.vae_latent_colour_weight > 0 and comps["vae"].config.latent_channels < 3:
                raise InputError(
                    f"--vae-latent-colour-weight needs a VAE with >= 3 latent channels, "
                    f"this one has {comps['vae'].config.latent_channels}"
                )
            _train_vae(comps["vae"], grids, config, accelerator.device)
            comps["vae"].save_pretrained(vae_dir)  # the scaling factor is set below, then saved again
        accelerator.wait_for_everyone()
        comps["vae"] = AutoencoderKL.from_pretrained(vae_dir)
    comps["vae"].to(accelerator.device)
    cache = _latent_cache(comps["vae"], grids, flat, out, accelerator, fit_scale=config.from_scratch is not None)
    if config.from_scratch is not None and main:
        comps["vae"].save_pretrained(out / "vae")
    accelerator.wait_for_everyone()

    unet, te1, te2 = comps["unet"], comps["text_encoder"], comps["text_encoder_2"]
    for m in (comps["vae"], unet, te1, te2):
        m.requires_grad_(False)
    trained = _trainable(config, unet, te1, te2)
    for m in trained:
        m.train()
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    named_params = [
        (f"{_name(m, unet, te1, te2)}.{n}", p) for m in trained for n, p in m.named_parameters() if p.requires_grad
    ]
    params = [p for _, p in named_params]

    from diffusers import DDPMScheduler

    noise_sched = DDPMScheduler.from_config(comps["scheduler"].config, prediction_type=prediction_type)
    ids1 = _tokenize(comps["tokenizer"], cache.captions)  # [N, 77]
    ids2 = _tokenize(comps["tokenizer_2"], cache.captions)  # [N, 77]

    for m in (unet, te1, te2):
        m.to(accelerator.device)
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    ema = EMA(named_params, config.ema_decay) if config.ema_decay > 0 else None
    if ema is not None:
        accelerator.register_for_checkpointing(ema)
    prepared = accelerator.prepare(*trained, opt)
    models, opt = prepared[:-1], prepared[-1]
    wrapped = dict(zip([_name(m, unet, te1, te2) for m in trained], models))
    unet_w = wrapped.get("unet", unet)
    te1_w, te2_w = wrapped.get("text_encoder", te1), wrapped.get("text_encoder_2", te2)

    checkpoints = Checkpoints(
        accelerator, out / "checkpoints", config.keep_checkpoints, CHECKPOINT_LAYOUT, lora_only=config.lora_rank > 0
    )
    step = 0
    latest = checkpoints.latest() if config.resume else None
    if latest is not None:
        step = checkpoints.load(latest)
        logger.info("resumed from %s (step %d)", latest, step)

    add_time = torch.tensor([resolution, resolution, 0, 0, resolution, resolution], dtype=torch.float32)

    def loss_on(idx_grid, idx_flat, noise_gen, drop_mask=None, timesteps=None, reduce=True):
        """Diffusion loss of a batch: grid rows ``idx_grid`` then 2D rows ``idx_flat``."""
        mean, std, i1, i2 = cache.rows(idx_grid, idx_flat, ids1, ids2)
        dev = accelerator.device
        z = (mean + std * torch.randn(mean.shape, generator=noise_gen)) * cache.scaling_factor  # [B, C, h, w]
        noise = torch.randn(z.shape, generator=noise_gen)
        b = z.shape[0]
        if timesteps is None:
            timesteps = torch.randint(0, noise_sched.config.num_train_timesteps, (b,), generator=noise_gen)
        z, noise, timesteps = z.to(dev), noise.to(dev), timesteps.to(dev)
        noisy = noise_sched.add_noise(z, noise, timesteps)
        target = (
            noise if noise_sched.config.prediction_type == "epsilon" else noise_sched.get_velocity(z, noise, timesteps)
        )
        ctx, pooled = _encode(te1_w, te2_w, i1.to(dev), i2.to(dev))  # [B, 77, D], [B, P]
        if drop_mask is not None:
            keep = (~drop_mask).to(dev, ctx.dtype)
            ctx, pooled = ctx * keep[:, None, None], pooled * keep[:, None]
        pred = unet_w(
            noisy, timesteps, ctx, added_cond_kwargs={"text_embeds": pooled, "time_ids": add_time.to(dev).repeat(b, 1)}
        ).sample
        per = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))  # [B]
        if config.snr_gamma > 0:
            snr = _snr(noise_sched, timesteps)
            # min(SNR, gamma) over the target's own weight: SNR (epsilon) or SNR + 1 (v)
            own = snr + 1 if noise_sched.config.prediction_type == "v_prediction" else snr
            per = per * torch.clamp(snr, max=config.snr_gamma) / own
        return per.mean() if reduce else per

    def eval_loss() -> float:
        g = torch.Generator().manual_seed(config.seed + 12345)
        n = min(8, len(cache.captions))
        idx = torch.arange(n).repeat(4)
        t = torch.linspace(50, noise_sched.config.num_train_timesteps - 50, 4).long().repeat_interleave(n)
        with torch.no_grad():
            return float(loss_on(idx, torch.zeros(0, dtype=torch.long), g, timesteps=t))

    loss_start = eval_loss()
    log_path = out / "log.jsonl"
    end = config.end_step(step)
    val_dir = None
    t_loop, step0 = time.time(), step
    running = []
    while step < end:
        for group in opt.param_groups:
            group["lr"] = config.lr_at(step)
        for micro in range(config.grad_accumulation):
            g = step_generator(config.seed, step, accelerator.process_index, micro)
            b = config.batch_size
            flat_mask = (
                (torch.rand(b, generator=g) < config.mix_2d_ratio)
                if flat is not None
                else torch.zeros(b, dtype=torch.bool)
            )
            n_flat = int(flat_mask.sum())
            idx_grid = torch.randint(0, cache.num_grids, (b - n_flat,), generator=g)
            idx_flat = torch.randint(0, max(cache.num_flat, 1), (n_flat,), generator=g)
            drop = torch.rand(b, generator=g) < config.caption_dropout
            with accelerator.accumulate(*models):
                loss = loss_on(idx_grid, idx_flat, g, drop_mask=drop)
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(params, config.max_grad_norm)
                opt.step()
                opt.zero_grad(set_to_none=True)
            running.append(float(loss.detach()))
        step += 1
        if ema is not None:
            ema.update()
        if main and (step % config.log_every == 0 or step == end):
            rate = (step - step0) / max(time.time() - t_loop, 1e-9)
            rec = {"step": step, "loss": float(np.mean(running)), "lr": opt.param_groups[0]["lr"], "steps_per_s": rate,
                   "time_s": time.time() - t_start}  # fmt: skip
            running = []
            with log_path.open("a") as f:
                f.write(json.dumps(rec) + "\n")
            logger.info(f"step {step}/{config.steps} loss {rec['loss']:.4f} lr {rec['lr']:.2e} {rate:.2f} it/s")
        if config.checkpoint_due(step, end):
            checkpoints.save(step)
        if main and config.validation_due(step):
            with averaged(ema):
                val_dir = _validate(config, comps, accelerator, resolution, step, out)
            for m in trained:
                m.train()
    loss_end = eval_loss()
    accelerator.wait_for_everyone()

    weights = None
    if step >= config.steps and main:
        with averaged(ema):
            weights = _save_final(config, comps, accelerator, out)
        if config.lora_rank == 0:  # a whole pipeline: what it learnt to draw (a LoRA adds to a base's words)
            write_training_words(weights, cache.captions)
    return MVGenTrainResult(out, step, time.time() - t_start, loss_start, loss_end, weights, val_dir)


# ---------------------------------------------------------------------------------------------
# set-up


def _check(c: MVGenTrainConfig) -> None:
    if (c.init is None) == (c.from_scratch is None):
        raise InputError("give exactly one of --init PATH_OR_ID and --from-scratch PRESET")
    if c.lora_rank < 0:
        raise InputError(f"--lora-rank must be >= 0, got {c.lora_rank}")
    if c.lora_rank > 0 and c.init is None:
        raise InputError("--lora-rank needs --init (a pretrained pipeline to adapt)")
    if not 0.0 <= c.mix_2d_ratio <= 1.0:
        raise InputError(f"--mix-2d-ratio must be in [0, 1], got {c.mix_2d_ratio}")
    if c.mix_2d_ratio > 0 and c.mix_2d is None:
        raise InputError("--mix-2d-ratio needs --mix-2d DIR")
    if not 0.0 <= c.caption_dropout < 1.0:
        raise InputError(f"--caption-dropout must be in [0, 1), got {c.caption_dropout}")
    for name in ("vae_batch_size", "val_inference_steps"):
        if getattr(c, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(c, name)}")
    if c.resolution is not None and (c.resolution <= 0 or c.resolution % 16):
        raise InputError(f"mvgen grid resolution must be a positive multiple of 16, got {c.resolution}")


def _initial_components(c: MVGenTrainConfig) -> tuple[dict, str]:
    """Pipeline components to train and the prediction type."""
    if c.from_scratch is not None:
        preset = mvgen_preset(c.from_scratch)
        if c.resolution is not None:
            preset = dataclasses.replace(preset, resolution=c.resolution)
        if c.prediction_type != "auto":
            preset = dataclasses.replace(preset, prediction_type=c.prediction_type)
        if c.zero_terminal_snr is not None:
            preset = dataclasses.replace(preset, zero_terminal_snr=c.zero_terminal_snr)
        comps = build_components(preset, seed=c.seed)
        return comps, preset.prediction_type
    from diffusers import StableDiffusionXLPipeline

    try:
        pipe = StableDiffusionXLPipeline.from_pretrained(c.init, torch_dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot load an SDXL pipeline from {c.init}: {str(e).splitlines()[0]}") from e
    comps = dict(pipe.components)
    pred = (
        comps["scheduler"].config.get("prediction_type", "epsilon")
        if c.prediction_type == "auto"
        else c.prediction_type
    )
    sched = comps["scheduler"]
    if c.zero_terminal_snr is not None or pred != sched.config.get("prediction_type"):
        zero_snr = (
            sched.config.get("rescale_betas_zero_snr", False) if c.zero_terminal_snr is None else c.zero_terminal_snr
        )
        if zero_snr and pred != "v_prediction":
            raise InputError("--zero-terminal-snr needs v-prediction (epsilon is undefined at SNR 0)")
        comps["scheduler"] = type(sched).from_config(
            sched.config, prediction_type=pred, rescale_betas_zero_snr=zero_snr
        )
    return comps, pred


def _vae_factor(vae) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


def _trainable(c: MVGenTrainConfig, unet, te1, te2) -> list:
    """The modules whose parameters train (LoRA: only the adapter inside the UNet)."""
    if c.from_scratch is not None:
        for m in (unet, te1, te2):
            m.requires_grad_(True)
        return [unet, te1, te2]
    if c.lora_rank > 0:
        add_lora(
            unet, rank=c.lora_rank, alpha=c.lora_alpha, target_modules=LORA_TARGETS, init=c.lora_init, seed=c.seed
        )
        return [unet]
    unet.requires_grad_(True)
    if c.train_text_encoders:
        te1.requires_grad_(True)
        te2.requires_grad_(True)
        return [unet, te1, te2]
    return [unet]


def _name(m, unet, te1, te2) -> str:
    return "unet" if m is unet else "text_encoder" if m is te1 else "text_encoder_2"


def _snr(noise_sched, timesteps: torch.Tensor) -> torch.Tensor:
    ac = noise_sched.alphas_cumprod.to(timesteps.device)[timesteps].float()
    return ac / (1 - ac)


# ---------------------------------------------------------------------------------------------
# the VAE (from scratch) and the latent cache


def _train_vae(vae, grids: CaptionedImages, c: MVGenTrainConfig, device) -> None:
    """Fit the autoencoder on random crops of the grids' size / 2 (one view's size), on one process."""
    crop = grids.resolution // 2
    images = torch.stack([grids.image(i) for i in range(len(grids))])  # [N, 3, R, R] in [-1, 1]
    vae.to(device)
    vae.requires_grad_(True)
    vae.train()
    opt = torch.optim.AdamW(vae.parameters(), lr=c.vae_lr, weight_decay=0.0)
    lr_at = partial(
        warmup_cosine, warmup_steps=min(50, c.vae_steps // 10 + 1), total_steps=c.vae_steps, min_lr_ratio=0.1
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    t0 = time.time()
    for step in range(c.vae_steps):
        g = step_generator(c.seed, 777, step)
        idx = torch.randint(0, len(images), (c.vae_batch_size,), generator=g)
        ys = torch.randint(0, grids.resolution - crop + 1, (c.vae_batch_size,), generator=g)
        xs = torch.randint(0, grids.resolution - crop + 1, (c.vae_batch_size,), generator=g)
        x = torch.stack([images[i, :, y : y + crop, x0 : x0 + crop] for i, y, x0 in zip(idx, ys, xs)])
        x = x.to(device)  # [B, 3, crop, crop]
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=g).to(device)
        reconstruction, l1, edge = _vae_loss(c, vae.decode(z).sample, x)
        kl = post.kl().mean() / z[0].numel()
        loss = reconstruction + c.vae_kl_weight * kl
        if c.vae_latent_colour_weight > 0:
            pooled = F.avg_pool2d(x, x.shape[-1] // post.mean.shape[-1])  # [B, 3, h, w], the latent's size
            loss = loss + c.vae_latent_colour_weight * (post.mean[:, :3] - pooled).abs().mean()
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if (step + 1) % max(1, c.log_every) == 0 or step + 1 == c.vae_steps:
            logger.info(f"vae step {step + 1}/{c.vae_steps} l1 {l1.item():.4f} edge {edge.item():.4f} "
                        f"kl {kl.item():.2f} {(step + 1) / (time.time() - t0):.2f} it/s")  # fmt: skip
    vae.requires_grad_(False)
    vae.eval()


def _vae_loss(
    c: MVGenTrainConfig, rec: torch.Tensor, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reconstruction loss of the VAE (no KL): (L1 + edge + colour terms, the L1 term, the edge term)."""
    l1, edge = (rec - x).abs().mean(), _grad_l1(rec, x)
    # L1 alone first learns luminance and the data's mean hue; squared and low-pass terms pull the colours in
    colour = ((rec - x) ** 2).mean() + (F.avg_pool2d(rec, 4) - F.avg_pool2d(x, 4)).abs().mean()
    return l1 + c.vae_edge_weight * edge + c.vae_colour_weight * colour, l1, edge


def _train_decoder(c: MVGenTrainConfig) -> MVGenTrainResult:
    """Fine-tune a trained VAE's decoder (encoder frozen) on view-sized crops; saves OUT/vae_decoder every 50 steps."""
    from diffusers import AutoencoderKL

    t0 = time.time()
    out = Path(c.out)
    src = Path(c.vae_init) if c.vae_init is not None else out / "vae"
    if not (src / "config.json").is_file():
        raise InputError(f"no trained VAE to fine-tune at {src}")
    vae = AutoencoderKL.from_pretrained(src)
    grids = grid_dataset(c.data, c.resolution or vae.config.sample_size)
    crop = grids.resolution // 2
    images = torch.stack([grids.image(i) for i in range(len(grids))])  # [N, 3, R, R]
    vae.requires_grad_(False)
    params = list(vae.decoder.parameters()) + (
        list(vae.post_quant_conv.parameters()) if vae.post_quant_conv is not None else []
    )
    for p in params:
        p.requires_grad_(True)
    vae.train()
    opt = torch.optim.AdamW(params, lr=c.vae_lr, weight_decay=0.0)
    lr_at = partial(
        warmup_cosine, warmup_steps=min(50, c.vae_steps // 10 + 1), total_steps=c.vae_steps, min_lr_ratio=0.1
    )
    dest = out / "vae_decoder"
    first = last = float("nan")
    for step in range(c.vae_steps):
        for group in opt.param_groups:
            group["lr"] = c.vae_lr * lr_at(step)
        g = step_generator(c.seed, 778, step)
        idx = torch.randint(0, len(images), (c.vae_batch_size,), generator=g)
        ys = torch.randint(0, grids.resolution - crop + 1, (c.vae_batch_size,), generator=g)
        xs = torch.randint(0, grids.resolution - crop + 1, (c.vae_batch_size,), generator=g)
        x = torch.stack([images[i, :, y : y + crop, x0 : x0 + crop] for i, y, x0 in zip(idx, ys, xs)])
        with torch.no_grad():
            post = vae.encode(x).latent_dist
            z = post.mean + post.std * torch.randn(post.mean.shape, generator=g)
        loss = _vae_loss(c, vae.decode(z).sample, x)[0]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        first = loss.item() if step == 0 else first
        last = loss.item()
        if (step + 1) % max(1, c.log_every) == 0 or step + 1 == c.vae_steps:
            logger.info(
                f"decoder step {step + 1}/{c.vae_steps} loss {last:.4f} {(step + 1) / (time.time() - t0):.2f} it/s"
            )
        if (step + 1) % 50 == 0 or step + 1 == c.vae_steps:
            vae.save_pretrained(dest)
    return MVGenTrainResult(out, c.vae_steps, time.time() - t0, first, last, dest, None)


def _grad_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L1 between the images' horizontal and vertical finite differences."""
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]  # noqa: E731
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]  # noqa: E731
    return 0.5 * ((dx(a) - dx(b)).abs().mean() + (dy(a) - dy(b)).abs().mean())


@dataclass(frozen=True)
class _LatentCache:
    """VAE posterior mean and std of every grid (then every 2D pair), and the captions."""

    mean: torch.Tensor  # [N, C, h, w]
    std: torch.Tensor  # [N, C, h, w]
    captions: tuple[str, ...]
    num_grids: int
    scaling_factor: float

    @property
    def num_flat(self) -> int:
        return self.mean.shape[0] - self.num_grids

    def rows(self, idx_grid, idx_flat, ids1, ids2):
        idx = torch.cat([idx_grid, idx_flat + self.num_grids])
        return self.mean[idx].float(), self.std[idx].float(), ids1[idx], ids2[idx]


def _latent_cache(vae, grids, flat, out: Path, accelerator, fit_scale: bool) -> _LatentCache:
    """Encode every image once (or load ``OUT/latents.safetensors`` when it matches the data)."""
    from safetensors.torch import load_file, save_file

    sets = [grids] + ([flat] if flat is not None else [])
    captions = tuple(c for s in sets for c in s.captions)
    paths = [str(p) for s in sets for p in s.paths]
    path, meta_path = out / "latents.safetensors", out / "latents.json"
    if path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta["paths"] == paths and meta["resolution"] == grids.resolution:
            t = load_file(path)
            if fit_scale:
                vae.register_to_config(scaling_factor=meta["scaling_factor"])
            return _LatentCache(t["mean"], t["std"], captions, len(grids), meta["scaling_factor"])
    vae.eval()
    means, stds = [], []
    with torch.no_grad():
        for s in sets:
            for i0 in range(0, len(s), 16):
                x = torch.stack([s.image(i) for i in range(i0, min(len(s), i0 + 16))]).to(accelerator.device)
                post = vae.encode(x.to(vae.dtype)).latent_dist
                means.append(post.mean.float().cpu())
                stds.append(post.std.float().cpu())
    mean, std = torch.cat(means), torch.cat(stds)
    if fit_scale:
        sample = mean[: len(grids)] + std[: len(grids)] * torch.randn(
            mean[: len(grids)].shape, generator=torch.Generator().manual_seed(0)
        )
        vae.register_to_config(scaling_factor=float(1.0 / sample.std()))
    scale = float(vae.config.scaling_factor)
    if accelerator.is_main_process:
        with atomic_path(path) as tmp:
            save_file({"mean": mean.contiguous(), "std": std.contiguous()}, str(tmp))
        write_text_atomic(
            meta_path, json.dumps({"paths": paths, "resolution": grids.resolution, "scaling_factor": scale})
        )
    return _LatentCache(mean, std, captions, len(grids), scale)


# ---------------------------------------------------------------------------------------------
# text


def _tokenize(tokenizer, captions) -> torch.Tensor:
    return tokenizer(
        list(captions),
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids


def _encode(te1, te2, ids1: torch.Tensor, ids2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SDXL's prompt embedding: penultimate layers of both encoders, concatenated, and te2's pooled projection.

    Returns:
        ``[B, 77, D1 + D2]`` token features and ``[B, P]`` pooled embedding.
    """
    o1 = te1(ids1, output_hidden_states=True)
    o2 = te2(ids2, output_hidden_states=True)
    return torch.cat([o1.hidden_states[-2], o2.hidden_states[-2]], dim=-1), o2.text_embeds


# ---------------------------------------------------------------------------------------------
# validation, checkpoints, saving


def _pipeline(comps: dict, accelerator):
    from diffusers import StableDiffusionXLPipeline

    parts = {k: (accelerator.unwrap_model(v) if isinstance(v, torch.nn.Module) else v) for k, v in comps.items()}
    return StableDiffusionXLPipeline(**parts)


def _validate(c: MVGenTrainConfig, comps, accelerator, resolution: int, step: int, out: Path) -> Path:
    prompts = c.val_prompts or default_val_prompts()
    pipe = _pipeline(comps, accelerator)
    pipe.set_progress_bar_config(disable=True)
    images = validation_images(pipe, prompts, resolution, c.val_inference_steps, c.val_guidance, c.seed)
    settings = {"prompts": list(prompts), "resolution": resolution, "steps": c.val_inference_steps,
                "guidance": c.val_guidance, "seed": c.seed}  # fmt: skip
    return write_validation(out, step, images, settings)


def _save_final(c: MVGenTrainConfig, comps: dict, accelerator, out: Path) -> Path:
    """Write ``OUT/lora`` (diffusers LoRA format) or ``OUT/final`` (a whole pipeline)."""
    from diffusers import StableDiffusionXLPipeline

    if c.lora_rank > 0:
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict

        unet = accelerator.unwrap_model(comps["unet"])
        layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
        folder = out / "lora"
        StableDiffusionXLPipeline.save_lora_weights(str(folder), unet_lora_layers=layers, safe_serialization=True)
        return folder
    pipe = _pipeline(comps, accelerator)
    folder = out / "final"
    if c.save_dtype == "float16":
        import copy

        pipe = StableDiffusionXLPipeline(**{k: copy.deepcopy(v) for k, v in pipe.components.items()})
        pipe.to(torch.float16)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    save_compact_tokenizer(pipe.tokenizer, folder / "tokenizer")
    save_compact_tokenizer(pipe.tokenizer_2, folder / "tokenizer_2")
    return folder

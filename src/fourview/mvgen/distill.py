"""The few-step student: latent consistency distillation into a LoRA (``fourview train mvgen-lcm``).

LCM-LoRA (Luo et al. 2023, "LCM-LoRA: a universal Stable-Diffusion acceleration module"; the
recipe of diffusers' ``examples/consistency_distillation/train_lcm_distill_lora_sdxl.py``):

- The teacher is a trained generator (the shipped demo, a folder or a hub id), frozen. The student
  is the same UNet with a LoRA on its attention, feed-forward, ResNet-convolution and
  time-embedding layers (`LCM_LORA_TARGETS`); the teacher is that UNet with the adapter disabled,
  so no second copy is kept.
- Each step draws a grid latent ``z0`` (VAE posterior, cached once), a point ``n`` of the skipping
  schedule ``t_n = (n + 1) * k - 1`` (``k = 1000 / num_ddim_timesteps``; the schedule
  ``LCMScheduler`` samples from), noise ``z_{t_n} = a_n z0 + s_n eps``, and a guidance scale ``g``
  uniform in ``[guidance_min, guidance_max]``.
- The teacher, with classifier-free guidance ``g`` (unconditional branch: all-zero text
  embeddings, as ``StableDiffusionXLPipeline`` feeds them), takes one DDIM step from ``t_n`` to
  ``t_n - k`` (`fourview.mvgen.lcm.ddim_step`): the augmented probability-flow ODE solved over
  the skipped steps.
- The consistency function ``f(z, t) = c_skip(t) z + c_out(t) x0(z, t)``
  (`fourview.mvgen.lcm.boundary_scalings`: ``c_skip = sd^2 / ((10 t)^2 + sd^2)``,
  ``c_out = 10 t / sqrt((10 t)^2 + sd^2)``, ``sd = 0.5``; ``x0`` from the UNet's prediction,
  `fourview.mvgen.lcm.predicted_x0`) of the student at ``(z_{t_n}, t_n)`` is pulled towards the
  same function of the same network (LoRA on, no gradient) at the teacher's
  ``(z_{t_n - k}, t_n - k)``, by a pseudo-Huber loss ``sqrt(d^2 + c^2) - c`` (or L2).

The maths are `fourview.mvgen.lcm`'s. The student samples with ``diffusers.LCMScheduler`` (same
betas and prediction type as the teacher, ``original_inference_steps = num_ddim_timesteps``,
``timestep_scaling`` as in training) in 1 to 8 steps at guidance about 1 (no classifier-free
guidance: one UNet pass per step; the teacher's guidance is distilled in). It is saved in
diffusers' LoRA format with ``StableDiffusionXLPipeline.save_lora_weights`` plus
``student.json`` (the sampler settings); `fourview.mvgen.student.load_student` loads it into any
``StableDiffusionXLPipeline`` built on the teacher's weights.

Output folder: ``distill_config.json``, ``latents.safetensors`` (+ ``latents.json``),
``log.jsonl``, ``checkpoints/step_NNNNNN`` (`fourview.training.checkpoints`; the LoRA as
``student_lora.safetensors``, not the frozen UNet; the run resumes from the latest),
``val/step_NNNNNN.png`` (+ ``val/step_NNNNNN/NN.png``, student samples) and ``lora/``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from fourview.atomic import atomic_path, write_text_atomic
from fourview.errors import InputError
from fourview.mvgen.dataset import grid_dataset
from fourview.mvgen.lcm import (
    consistency_output,
    ddim_step,
    guided,
    noised,
    predicted_noise,
    predicted_x0,
    pseudo_huber,
    skipping_timesteps,
)
from fourview.mvgen.lora import add_lora, lora_state_dict
from fourview.mvgen.student import STUDENT_FILE, STUDENT_GUIDANCE, STUDENT_STEPS
from fourview.mvgen.validation import default_val_prompts, validation_images, write_validation
from fourview.pretrained import resolve_weights
from fourview.training import EMA, CheckpointLayout, Checkpoints, RunConfig, averaged, step_generator, training_process

logger = logging.getLogger(__name__)


LCM_LORA_TARGETS: tuple[str, ...] = (
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "proj_in",
    "proj_out",
    "ff.net.0.proj",
    "ff.net.2",
    "conv1",
    "conv2",
    "conv_shortcut",
    "downsamplers.0.conv",
    "upsamplers.0.conv",
    "time_emb_proj",
)
"""UNet module names that get the LoRA (LCM-LoRA's SDXL set: attention, feed-forward, ResNets, resampling)."""

CHECKPOINT_LAYOUT = CheckpointLayout(digits=6, marker="state.json", lora_file="student_lora.safetensors")
"""Names in ``OUT/checkpoints`` (as earlier runs wrote them); checkpoints hold the LoRA, not the frozen UNet."""


@dataclass(frozen=True, kw_only=True)
class LCMDistillConfig(RunConfig):
    """Everything a distillation run needs (frozen; saved as ``OUT/distill_config.json``).

    The run's output, schedule, optimizer, EMA (of the LoRA), checkpoint and seed fields are
    `RunConfig`'s; ``batch_size`` counts grids.
    """

    teacher: str
    """The generator to distil: "demo" (the shipped weights), a diffusers folder or a hub id."""
    data: str
    """Folder of rendered objects: one folder each with grid.png and caption.txt."""
    lora_rank: int = 16
    """Rank of the student's LoRA."""
    lora_alpha: float | None = None
    """LoRA scale numerator (default: the rank, i.e. scale 1)."""
    target_modules: tuple[str, ...] = LCM_LORA_TARGETS
    """UNet module names that get the LoRA (suffix match)."""
    init_lora: str | None = None
    """Start the LoRA from these weights (a ``lora/`` folder of an earlier run) instead of zero."""
    num_ddim_timesteps: int = 50
    """Points of the skipping schedule (k = 1000 / this); the student's LCMScheduler original_inference_steps."""
    timestep_scaling: float = 10.0
    """Timestep scaling of the boundary condition (LCMScheduler's timestep_scaling)."""
    guidance_min: float = 3.0
    """Smallest classifier-free guidance scale of the teacher (diffusers' convention: 1 = no guidance)."""
    guidance_max: float = 7.0
    """Largest classifier-free guidance scale of the teacher (the student learns about the range's middle)."""
    loss: Literal["huber", "l2"] = "huber"
    """Distance between student and target: pseudo-Huber or squared error."""
    huber_c: float = 0.001
    """Pseudo-Huber constant c (latent units)."""
    gradient_checkpointing: bool = False
    """Recompute UNet activations in the backward pass (less memory, slower)."""
    val_prompts: tuple[str, ...] = ()
    """Validation prompts (default: 8 held-out and 4 training combinations of the synthetic world)."""
    val_inference_steps: int = 4
    """Student sampler steps of the validation samples."""
    val_guidance: float = 1.0
    """Guidance scale of the validation samples (1: none)."""
    max_minutes: float | None = None
    """Stop this call (with a checkpoint) once the loop has run this long; the final LoRA is still written."""
    # this trainer's defaults of shared fields
    steps: int = 1000
    batch_size: int = 8
    min_lr_ratio: float = 1.0
    warmup_steps: int = 0
    checkpoint_every: int = 250
    validate_every: int = 0


@dataclass(frozen=True)
class LCMDistillResult:
    """What a distillation call did.

    Attributes:
        out_dir: the run's folder.
        steps: optimizer steps done in total (including resumed ones).
        time_s: wall time of this call, seconds.
        eval_loss_start: consistency loss on a fixed batch (fixed latents, noise, schedule points,
            guidance) before this call's first step.
        eval_loss_end: the same after its last step.
        weights: the student's LoRA folder (``OUT/lora``, with ``student.json``); None when the
            call stopped early by ``stop_after_steps``.
        val_dir: the last validation samples' folder, or None.
    """

    out_dir: Path
    steps: int
    time_s: float
    eval_loss_start: float
    eval_loss_end: float
    weights: Path | None
    val_dir: Path | None


# ---------------------------------------------------------------------------------------------
# distillation


def distill_lcm(config: LCMDistillConfig) -> LCMDistillResult:
    """Distil the teacher into a few-step LCM-LoRA student (see the module docstring); resumable.

    Multi-GPU under ``accelerate launch`` (data parallel over the LoRA).

    Raises:
        InputError: inconsistent options, missing data or weights.
    """
    _check(config)
    with training_process(config.num_threads):
        return _distill(config)


def _distill(config: LCMDistillConfig) -> LCMDistillResult:
    from accelerate import Accelerator

    t_start = time.time()
    out = Path(config.out)
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.grad_accumulation
    )
    main = accelerator.is_main_process
    dev = accelerator.device
    if main:
        out.mkdir(parents=True, exist_ok=True)
        config.write_json(out / "distill_config.json")

    pipe = load_teacher(config.teacher)
    unet, vae = pipe.unet, pipe.vae
    for m in (unet, vae, pipe.text_encoder, pipe.text_encoder_2):
        m.requires_grad_(False)
        m.eval()
        m.to(dev)
    prediction_type = pipe.scheduler.config.get("prediction_type", "epsilon")
    num_train = int(pipe.scheduler.config.num_train_timesteps)
    alphas_cumprod = _alphas_cumprod(pipe.scheduler).to(dev)  # [T]
    schedule = skipping_timesteps(num_train, config.num_ddim_timesteps).to(dev)  # [N]
    skip = num_train // config.num_ddim_timesteps
    resolution = int(unet.config.sample_size) * int(pipe.vae_scale_factor)

    grids = grid_dataset(config.data, resolution)
    mean, std = _latents(vae, grids, out, accelerator)  # [N, C, h, w] each
    scale = float(vae.config.scaling_factor)

    _add_student_lora(unet, config)
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    trained = [(n, p) for n, p in unet.named_parameters() if p.requires_grad]
    params = [p for _, p in trained]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    ema = EMA(trained, config.ema_decay) if config.ema_decay > 0 else None
    if ema is not None:
        accelerator.register_for_checkpointing(ema)
    unet_w, opt = accelerator.prepare(unet, opt)
    checkpoints = Checkpoints(accelerator, out / "checkpoints", config.keep_checkpoints, CHECKPOINT_LAYOUT, True)

    step = 0
    latest = checkpoints.latest() if config.resume else None
    if latest is not None:
        step = checkpoints.load(latest)
        logger.info("resumed from %s (step %d)", latest, step)

    add_time = torch.tensor([resolution, resolution, 0, 0, resolution, resolution], dtype=torch.float32)

    def embed(captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """SDXL prompt embeddings exactly as the pipeline computes them: [B, 77, D], [B, P]."""
        with torch.no_grad():
            ctx, _, pooled, _ = pipe.encode_prompt(captions, device=dev, do_classifier_free_guidance=False)
        return ctx.float(), pooled.float()

    def run_unet(z, t, ctx, pooled):
        b = z.shape[0]
        cond = {"text_embeds": pooled, "time_ids": add_time.to(dev).repeat(b, 1)}
        return unet_w(z, t, ctx, added_cond_kwargs=cond).sample.float()

    def batch_loss(idx: torch.Tensor, gen: torch.Generator, n_index=None, guidance=None) -> torch.Tensor:
        """LCM consistency loss of grids ``idx`` (random parts from ``gen``, or fixed ones)."""
        b = idx.shape[0]
        z0 = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)) * scale  # [B, C, h, w]
        noise = torch.randn(z0.shape, generator=gen)
        if n_index is None:
            n_index = torch.randint(0, config.num_ddim_timesteps, (b,), generator=gen)
        if guidance is None:
            guidance = config.guidance_min + (config.guidance_max - config.guidance_min) * torch.rand(b, generator=gen)
        z0, noise, n_index = z0.to(dev), noise.to(dev), n_index.to(dev)
        t_start = schedule[n_index]  # [B]
        t_end = (t_start - skip).clamp(min=0)  # [B]
        z_start = noised(z0, noise, t_start, alphas_cumprod)
        ctx, pooled = embed([grids.captions[int(i)] for i in idx])
        # student: f_theta(z_{t_n}, t_n)
        out_s = run_unet(z_start, t_start, ctx, pooled)
        student = consistency_output(out_s, t_start, z_start, prediction_type, alphas_cumprod, config.timestep_scaling)
        with torch.no_grad():
            raw = accelerator.unwrap_model(unet_w)
            raw.disable_adapters()
            try:  # teacher with guidance: cond and uncond branches in one batch
                out_t = run_unet(
                    torch.cat([z_start, z_start]), torch.cat([t_start, t_start]),
                    torch.cat([ctx, torch.zeros_like(ctx)]), torch.cat([pooled, torch.zeros_like(pooled)]),
                )  # fmt: skip
            finally:
                raw.enable_adapters()
            x0_c, x0_u = predicted_x0(
                out_t, t_start.repeat(2), z_start.repeat(2, 1, 1, 1), prediction_type, alphas_cumprod
            ).chunk(2)
            eps_c, eps_u = predicted_noise(
                out_t, t_start.repeat(2), z_start.repeat(2, 1, 1, 1), prediction_type, alphas_cumprod
            ).chunk(2)
            x0, eps = guided(x0_c, x0_u, guidance.to(dev)), guided(eps_c, eps_u, guidance.to(dev))
            z_end = ddim_step(x0, eps, t_end, alphas_cumprod)  # [B, C, h, w] teacher's ODE step
            # target: f_theta-(z_{t_n - k}, t_n - k), the same network without gradient
            out_e = run_unet(z_end, t_end, ctx, pooled)
            target = consistency_output(out_e, t_end, z_end, prediction_type, alphas_cumprod, config.timestep_scaling)
        if config.loss == "huber":
            return pseudo_huber(student, target, config.huber_c)
        return torch.nn.functional.mse_loss(student.float(), target.float())

    def eval_loss() -> float:
        g = torch.Generator().manual_seed(config.seed + 12345)
        n = min(8, len(grids))
        idx = torch.arange(n)
        n_index = torch.linspace(0, config.num_ddim_timesteps - 1, n).round().long()
        guidance = torch.full((n,), 0.5 * (config.guidance_min + config.guidance_max))
        was_training = unet.training
        unet.eval()
        with torch.no_grad():
            value = float(batch_loss(idx, g, n_index, guidance))
        unet.train(was_training)
        return value

    loss_start = eval_loss()
    log_path = out / "log.jsonl"
    end = config.end_step(step)
    val_dir = None
    t_loop, step0 = time.time(), step
    running: list[float] = []
    timed_out = False
    while step < end:
        for group in opt.param_groups:
            group["lr"] = config.lr_at(step)
        for micro in range(config.grad_accumulation):
            gen = step_generator(config.seed, step, accelerator.process_index, micro)
            idx = torch.randint(0, len(grids), (config.batch_size,), generator=gen)
            with accelerator.accumulate(unet_w):
                loss = batch_loss(idx, gen)
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(params, config.max_grad_norm)
                opt.step()
                opt.zero_grad(set_to_none=True)
            running.append(float(loss.detach()))
        step += 1
        if ema is not None:
            ema.update()
        timed_out = config.max_minutes is not None and time.time() - t_loop > 60.0 * config.max_minutes
        if main and (step % config.log_every == 0 or step == end or timed_out):
            rate = (step - step0) / max(time.time() - t_loop, 1e-9)
            rec = {"step": step, "loss": float(np.mean(running)), "lr": opt.param_groups[0]["lr"], "steps_per_s": rate,
                   "time_s": time.time() - t_start}  # fmt: skip
            running = []
            with log_path.open("a") as f:
                f.write(json.dumps(rec) + "\n")
            logger.info(f"lcm step {step}/{config.steps} loss {rec['loss']:.5f} lr {rec['lr']:.2e} {rate:.2f} it/s")
        if config.checkpoint_due(step, end) or timed_out:
            checkpoints.save(step)
        if main and config.validate_every and step % config.validate_every == 0 and step < end and not timed_out:
            with averaged(ema):
                val_dir = _validate(config, pipe, unet_w, accelerator, resolution, step, out)
            unet.train()
        if timed_out:
            break
    loss_end = eval_loss()
    accelerator.wait_for_everyone()

    weights = None
    finished = step >= config.steps or timed_out
    if finished and main:
        with averaged(ema):
            weights = _save_student(config, pipe, unet_w, accelerator, out, step, loss_start, loss_end)
            val_dir = _validate(config, pipe, unet_w, accelerator, resolution, step, out)
    return LCMDistillResult(out, step, time.time() - t_start, loss_start, loss_end, weights, val_dir)


def load_teacher(name: str):
    """The teacher as a float32 ``StableDiffusionXLPipeline``: "demo", a diffusers folder or a hub id.

    Raises:
        InputError: the weights cannot be loaded.
    """
    from diffusers import StableDiffusionXLPipeline

    path = resolve_weights(name, "mvgen").location
    try:
        pipe = StableDiffusionXLPipeline.from_pretrained(path, dtype=torch.float32, add_watermarker=False)
    except (OSError, ValueError, KeyError, TypeError) as err:
        first = (str(err).splitlines() or [type(err).__name__])[0]
        raise InputError(f"cannot load the teacher {name!r}: {type(err).__name__}: {first}") from None
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _check(c: LCMDistillConfig) -> None:
    if c.lora_rank < 1:
        raise InputError(f"--lora-rank must be >= 1, got {c.lora_rank}")
    if not 1 <= c.num_ddim_timesteps <= 1000:
        raise InputError(f"--num-ddim-timesteps must be in [1, 1000], got {c.num_ddim_timesteps}")
    if not 1.0 <= c.guidance_min <= c.guidance_max:
        raise InputError(f"need 1 <= --guidance-min <= --guidance-max, got {c.guidance_min}, {c.guidance_max}")
    if c.huber_c <= 0:
        raise InputError(f"--huber-c must be > 0, got {c.huber_c}")
    if c.val_inference_steps < 1:
        raise InputError(f"--val-inference-steps must be >= 1, got {c.val_inference_steps}")
    if c.val_inference_steps > c.num_ddim_timesteps:
        raise InputError(
            f"--val-inference-steps ({c.val_inference_steps}) exceeds --num-ddim-timesteps ({c.num_ddim_timesteps})"
        )
    if not c.target_modules:
        raise InputError("--target-modules is empty")
    if c.init_lora is not None and not (Path(c.init_lora) / "pytorch_lora_weights.safetensors").is_file():
        raise InputError(f"--init-lora: no pytorch_lora_weights.safetensors in {c.init_lora}")


def _alphas_cumprod(scheduler) -> torch.Tensor:
    """[T] float32 cumulative alphas of the teacher's training noise schedule."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(scheduler.config).alphas_cumprod.float()


def _add_student_lora(unet, c: LCMDistillConfig) -> None:
    """Attach the student's LoRA (zero-initialised B: the student starts as the teacher), or load ``init_lora``."""
    add_lora(unet, rank=c.lora_rank, alpha=c.lora_alpha, target_modules=c.target_modules, init="default", seed=c.seed)
    if c.init_lora is not None:
        from diffusers import StableDiffusionXLPipeline
        from diffusers.utils import convert_unet_state_dict_to_peft
        from peft.utils import set_peft_model_state_dict

        sd, _ = StableDiffusionXLPipeline.lora_state_dict(c.init_lora)
        sd = {k.removeprefix("unet."): v for k, v in sd.items() if k.startswith("unet.")}
        result = set_peft_model_state_dict(unet, convert_unet_state_dict_to_peft(sd), adapter_name="default")
        missing = [k for k in getattr(result, "unexpected_keys", []) if "lora" in k]
        if missing:
            raise InputError(f"--init-lora {c.init_lora} does not fit this LoRA (rank / targets differ)")


def _latents(vae, grids, out: Path, accelerator) -> tuple[torch.Tensor, torch.Tensor]:
    """VAE posterior mean and std of every grid, cached in ``OUT/latents.safetensors``: [N, C, h, w] each."""
    from safetensors.torch import load_file, save_file

    paths = [str(p) for p in grids.paths]
    path, meta_path = out / "latents.safetensors", out / "latents.json"
    fingerprint = float(sum(p.detach().double().abs().sum() for p in vae.parameters()))  # which VAE encoded them
    if path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        same_vae = abs(meta.get("vae_fingerprint", -1.0) - fingerprint) <= 1e-3 * abs(fingerprint)
        if meta["paths"] == paths and meta["resolution"] == grids.resolution and same_vae:
            t = load_file(str(path))
            return t["mean"], t["std"]
    means, stds = [], []
    with torch.no_grad():
        for i0 in range(0, len(grids), 16):
            x = torch.stack([grids.image(i) for i in range(i0, min(len(grids), i0 + 16))]).to(accelerator.device)
            post = vae.encode(x.to(vae.dtype)).latent_dist
            means.append(post.mean.float().cpu())
            stds.append(post.std.float().cpu())
    mean, std = torch.cat(means), torch.cat(stds)
    if accelerator.is_main_process:
        with atomic_path(path) as tmp:
            save_file({"mean": mean.contiguous(), "std": std.contiguous()}, str(tmp))
        meta = {"paths": paths, "resolution": grids.resolution, "vae_fingerprint": fingerprint}
        write_text_atomic(meta_path, json.dumps(meta))
    return mean, std


def _student_pipeline(pipe, unet_w, accelerator, c: LCMDistillConfig):
    """A ``StableDiffusionXLPipeline`` sharing the teacher's modules, with the student UNet and LCM sampler."""
    from diffusers import LCMScheduler, StableDiffusionXLPipeline

    parts = dict(pipe.components)
    parts["unet"] = accelerator.unwrap_model(unet_w)
    parts["scheduler"] = LCMScheduler.from_config(
        pipe.scheduler.config, original_inference_steps=c.num_ddim_timesteps, timestep_scaling=c.timestep_scaling
    )
    student = StableDiffusionXLPipeline(**parts)
    student.set_progress_bar_config(disable=True)
    return student


def _validate(c: LCMDistillConfig, pipe, unet_w, accelerator, resolution: int, step: int, out: Path) -> Path:
    """Student samples (``val_inference_steps`` LCM steps) of the validation prompts, seeds ``seed + i``."""
    prompts = c.val_prompts or default_val_prompts()
    student = _student_pipeline(pipe, unet_w, accelerator, c)
    student.unet.eval()
    images = validation_images(student, prompts, resolution, c.val_inference_steps, c.val_guidance, c.seed)
    settings = {"prompts": list(prompts), "resolution": resolution, "steps": c.val_inference_steps,
                "guidance": c.val_guidance, "seed": c.seed, "scheduler": "LCMScheduler"}  # fmt: skip
    return write_validation(out, step, images, settings)


def _save_student(c: LCMDistillConfig, pipe, unet_w, accelerator, out: Path, step: int, l0: float, l1: float) -> Path:
    """Write ``OUT/lora``: diffusers LoRA weights + ``student.json``."""
    from diffusers import StableDiffusionXLPipeline

    unet = accelerator.unwrap_model(unet_w)
    # peft's key names (lora_A / lora_B), as diffusers' LCM-LoRA script saves them: converting them to
    # the older "lora.down" names only covers attention layers, and a mixed file loads without them.
    layers = lora_state_dict(unet)
    folder = out / "lora"
    StableDiffusionXLPipeline.save_lora_weights(str(folder), unet_lora_layers=layers, safe_serialization=True)
    meta = {
        "kind": "lcm-lora",
        "teacher": c.teacher,
        "scheduler": "LCMScheduler",
        "num_ddim_timesteps": c.num_ddim_timesteps,
        "timestep_scaling": c.timestep_scaling,
        "recommended_steps": STUDENT_STEPS,
        "recommended_guidance": STUDENT_GUIDANCE,
        "teacher_guidance_range": [c.guidance_min, c.guidance_max],
        "lora_rank": c.lora_rank,
        "distill_steps": step,
        "batch_size": c.batch_size * c.grad_accumulation * accelerator.num_processes,
        "eval_loss": [l0, l1],
    }
    write_text_atomic(folder / STUDENT_FILE, json.dumps(meta, indent=1) + "\n")
    return folder

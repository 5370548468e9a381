"""Training of the reconstructor (stage A: volume rendering; stage B: DMTet), with HF Accelerate.

One function, `train`, driven by a frozen `TrainConfig`. Per optimizer step, for each of
``batch_size`` objects (per process; times ``grad_accumulation``): the U-Net reads the object's
four rig views, the planes are rendered from ``views_per_object`` random dataset cameras and
compared with those frames (MSE + a perceptual term + an opacity term, `fourview.recon.losses`).

* Stage A (``stage="volume"``) renders ``rays_per_view`` rays per camera: random pixels (half of
  them, by default, on the object's silhouette, which is where the information is) or one random
  square patch (``ray_sampling="patch"``, which lets the perceptual term see image structure).
* Stage B (``stage="dmtet"``) renders whole images at the config's ``render_resolution``; with
  ``volume_weight`` it also volume-renders ``rays_per_view`` random pixels per camera from the
  SDF read as a log-density and adds that loss (``loss`` in the log includes it; TensorBoard has
  it alone as ``train/volume``; ``mse`` and ``mask`` stay the DMTet render's).

Distributed training and mixed precision come from Accelerate (``accelerate launch`` for DDP and
multi-node); the renderers always run in float32. The learning rate follows linear warm-up and
cosine decay as a function of the optimizer step. An exponential moving average (EMA) of the
weights is kept; validation and the saved model use it. The run's settings shared with the other
trainers (schedule, checkpoints, EMA...) are `fourview.training.run.RunConfig`'s.

Exact resume: a checkpoint (``OUT/checkpoints/step_NNNNNNNN``, `fourview.training.checkpoints`)
holds the model, the optimizer, the processes' RNG states, this loop's own state (step counter,
the ray-sampling generator: ``custom_checkpoint_0.pkl``), the EMA (``custom_checkpoint_1.pkl``)
and ``loop_state.json``. The data order is a pure function of the step
(`fourview.recon.dataset.ObjectBatchSampler`), so training N steps straight and N/2 + resume +
N/2 give the same losses. Checkpoint files other than the weights are pickles: resume only from
checkpoints you wrote.

Outputs in ``OUT``: ``log.csv`` (step, loss terms, lr, time, steps/s, validation metrics),
TensorBoard events under ``OUT/tb`` (when tensorboard is importable), ``checkpoints/``,
``final/`` (`Reconstructor.save_pretrained` with the EMA weights), ``metrics.json``, and
``train_config.json`` / ``recon_config.json`` for provenance.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from fourview.atomic import write_text_atomic
from fourview.errors import InputError
from fourview.recon.config import ReconConfig, recon_preset
from fourview.recon.dataset import ObjectBatch, ObjectBatchSampler, RenderedObjects, collate_objects
from fourview.recon.loading import init_config, load_init_weights
from fourview.recon.losses import (
    LossConfig,
    PerceptualLoss,
    lpips_status,
    make_perceptual_loss,
    psnr,
    reconstruction_loss,
    ssim,
)
from fourview.recon.model import ReconOutput, ReconRender, Reconstructor, VolumeRenderer
from fourview.training import EMA, Checkpoints, RunConfig, averaged, seeded_initialisation, training_process

__all__ = ["TrainConfig", "TrainResult", "ValMetrics", "evaluate", "sample_pixels", "train"]

logger = logging.getLogger(__name__)

PRESETS = ("full", "demo", "tiny")


@dataclass(frozen=True, kw_only=True)
class TrainConfig(RunConfig):
    """Everything a training run needs (frozen; saved as ``OUT/train_config.json``).

    The run's output, schedule, optimizer, EMA, checkpoint and seed fields are `RunConfig`'s;
    ``batch_size`` counts objects. Mixed precision applies to the U-Net; the renderers stay float32.
    """

    data: str
    """Folder of rendered training objects (`fourview.recon.dataset.RenderedObjects`)."""
    preset: str = "demo"
    """Model size: a preset name ("full", "demo", "tiny") or the path of a ReconConfig JSON file."""
    stage: Literal["volume", "dmtet"] = "volume"
    """Stage A (volume rendering) or B (DMTet); picks the preset's renderer."""
    views_per_object: int = 4
    """Supervising random cameras per object per step (the seed: 4)."""
    rays_per_view: int = 256
    """Stage A: rays rendered per supervising camera (the image is not rendered whole)."""
    ray_sampling: Literal["pixels", "patch"] = "pixels"
    """Stage A: random pixels, or one random square patch of side isqrt(rays_per_view) per camera."""
    foreground_fraction: float = 0.5
    """Stage A, "pixels": expected fraction of rays drawn from the frame's silhouette (alpha > 0)."""
    val_data: str | None = None
    """Folder of held-out rendered objects."""
    val_objects: tuple[str, ...] = ()
    """Held-out object names inside ``data`` (excluded from training), used when ``val_data`` is None."""
    val_max_objects: int = 16
    """Held-out objects per validation."""
    val_views: int = 4
    """Novel views (the first random frames) per held-out object."""
    init_from: str | None = None
    """Initialise from these weights (folder or hub id), e.g. stage B from stage A's ``final``."""
    num_workers: int = 0
    """DataLoader worker processes (one torch thread each)."""
    channels_last: bool = True
    """Keep the U-Net's weights in channels-last memory format (faster convolutions on CPU)."""
    perceptual: Literal["auto", "lpips", "ssim", "none"] = "auto"
    """Perceptual loss term: LPIPS if its weights are present ("auto"), else 1 - SSIM; or forced."""
    mse_weight: float = 1.0
    """Weight of the RGB MSE."""
    perceptual_weight: float = 0.5
    """Weight of the perceptual term (only where images are rendered: patches or stage B)."""
    mask_weight: float = 0.1
    """Weight of the opacity loss against the frames' alpha."""
    mask_kind: Literal["bce", "l1"] = "bce"
    """Opacity loss kind."""
    volume_weight: float = 0.0
    """Stage B: weight of stage A's loss on ``rays_per_view`` pixels per frame volume-rendered from
    the SDF read as a log-density (`fourview.recon.decoder.volume_density`). DMTet supervises only
    the surface; this keeps the field around it a density that refinement can volume-render."""
    tensorboard: bool = True
    """Write TensorBoard events when tensorboard is importable."""
    progress: bool = True
    """Show a tqdm progress bar."""
    # this trainer's defaults of shared fields
    lr: float = 1e-3
    ema_decay: float = 0.999

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.stage not in ("volume", "dmtet"):
            raise InputError(f"stage must be 'volume' or 'dmtet', got {self.stage!r}")
        for name in ("views_per_object", "rays_per_view", "val_max_objects", "val_views"):
            if getattr(self, name) < 1:
                raise InputError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_workers", "volume_weight"):
            if getattr(self, name) < 0:
                raise InputError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.foreground_fraction <= 1:
            raise InputError(f"TrainConfig.foreground_fraction must be in [0, 1], got {self.foreground_fraction}")
        if self.ray_sampling not in ("pixels", "patch"):
            raise InputError(f"TrainConfig.ray_sampling must be 'pixels' or 'patch', got {self.ray_sampling!r}")
        if self.volume_weight > 0 and self.stage != "dmtet":
            raise InputError("TrainConfig.volume_weight is a stage-B term (stage 'dmtet'); stage A is volume-rendered")
        LossConfig(self.mse_weight, self.perceptual_weight, self.mask_weight, self.mask_kind)  # validates

    def recon_config(self) -> ReconConfig:
        """The model config: the preset for this stage, or the JSON file (whose renderer must match)."""
        if self.preset in PRESETS:
            return recon_preset(self.preset, self.stage)  # type: ignore[arg-type]
        path = Path(self.preset)
        if not path.is_file():
            raise InputError(f"preset must be one of {list(PRESETS)} or a ReconConfig JSON file; {path} not found")
        try:
            cfg = ReconConfig.from_json(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as err:
            raise InputError(f"cannot read {path}: {err}") from None
        except InputError as err:
            raise InputError(f"{path}: {err}") from None
        if cfg.renderer != self.stage:
            raise InputError(f"{path} has renderer {cfg.renderer!r} but the stage is {self.stage!r}")
        return cfg

    def loss_config(self) -> LossConfig:
        return LossConfig(self.mse_weight, self.perceptual_weight, self.mask_weight, self.mask_kind)


@dataclass
class ValMetrics:
    """Novel-view metrics on held-out objects (renders of the EMA model vs dataset frames, on white).

    Attributes:
        psnr: mean PSNR over views, dB.
        ssim: mean SSIM over views.
        lpips: mean LPIPS over views, or None when unavailable (see ``lpips_note``).
        objects: held-out objects evaluated.
        views: views evaluated in all.
        resolution: image side, pixels.
        lpips_note: why LPIPS is missing, or which weights computed it.
    """

    psnr: float
    ssim: float
    lpips: float | None
    objects: int
    views: int
    resolution: int
    lpips_note: str = ""


@dataclass
class TrainResult:
    """What `train` returns.

    Attributes:
        out_dir: the run's folder.
        final_dir: ``OUT/final`` (EMA weights, `Reconstructor.save_pretrained` layout); None when
            this call stopped early (``stop_after_steps``) and the run is not finished.
        steps: optimizer steps done in all (including before a resume).
        time_s: wall time of this call's training loop, seconds (validation included).
        steps_per_s: optimizer steps per second of this call (validation and checkpoints excluded).
        losses: per-step total loss of this call, in order.
        val: final validation, or None without held-out objects.
    """

    out_dir: Path
    final_dir: Path | None
    steps: int
    time_s: float
    steps_per_s: float
    losses: list[float] = field(default_factory=list)
    val: ValMetrics | None = None


class _LoopState:
    """The training loop's own resumable state: the step counter and the ray generator."""

    def __init__(self, generator: torch.Generator) -> None:
        self.step = 0
        self.generator = generator

    def state_dict(self) -> dict:
        return {"step": self.step, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.generator.set_state(state["generator"])


class _TrainingForward(nn.Module):
    """U-Net forward and differentiable render in one module call (what DDP and autocast wrap)."""

    def __init__(self, model: Reconstructor) -> None:
        super().__init__()
        self.model = model
        self.volume = VolumeRenderer(model.config)

    def forward(
        self,
        views: torch.Tensor,
        elevation_deg: torch.Tensor,
        c2w: torch.Tensor,
        fov_deg: torch.Tensor,
        pixels: torch.Tensor | None,
        generator: torch.Generator | None,
        volume_pixels: torch.Tensor | None = None,
    ) -> tuple[ReconRender, ReconRender | None]:
        """The configured renderer's render, and a volume render of ``volume_pixels`` (or None)."""
        out = self.model(views, elevation_deg)
        with torch.autocast(device_type=views.device.type, enabled=False):
            out32 = ReconOutput(
                planes=out.planes.float(),
                texture_planes=None if out.texture_planes is None else out.texture_planes.float(),
            )
            c2w, fov = c2w.float(), fov_deg.float()
            render = self.model.render(out32, c2w, pixels=pixels, generator=generator, fov_deg=fov)
            if volume_pixels is None:
                return render, None
            volume = self.model.render(
                out32, c2w, pixels=volume_pixels, generator=generator, fov_deg=fov, renderer=self.volume
            )
            return render, volume


def _gather_pixels(
    target_rgb: torch.Tensor, target_alpha: torch.Tensor, pixels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames [B, K, H, W, 3] and [B, K, H, W] at flat pixel indices [B, K, P]: [B, K, P, 3], [B, K, P]."""
    b, k, h, w = target_alpha.shape
    rgb = target_rgb.reshape(b, k, h * w, 3).gather(2, pixels[..., None].expand(-1, -1, -1, 3))
    return rgb, target_alpha.reshape(b, k, h * w).gather(2, pixels)


def sample_pixels(
    alpha: torch.Tensor,
    n: int,
    mode: Literal["pixels", "patch"] = "pixels",
    foreground_fraction: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pixels to render for each supervising frame (stage A).

    Args:
        alpha: [B, K, H, W] the frames' alpha.
        n: pixels per frame (``mode="patch"``: a square of side ``isqrt(n)``, at most the image).
        mode: "pixels": ``n`` distinct random pixels drawn with probability
            ``foreground_fraction * [alpha > 0] / |silhouette| + (1 - foreground_fraction) / (H W)``
            (uniform for an empty frame); "patch": one random square patch, row-major.
        foreground_fraction: see ``mode``.
        generator: random source (on ``alpha``'s device).

    Returns:
        [B, K, P] int64 flat indices ``row * W + col`` (P = n, or the patch's area).
    """
    b, k, h, w = alpha.shape
    if mode == "pixels":
        n = min(n, h * w)
        fg = (alpha.reshape(b * k, h * w) > 0).float()  # [BK, HW]
        count = fg.sum(-1, keepdim=True)
        fg_w = torch.where(count > 0, fg / count.clamp(min=1.0), torch.full_like(fg, 1.0 / (h * w)))
        probs = foreground_fraction * fg_w + (1.0 - foreground_fraction) / (h * w)
        return torch.multinomial(probs, n, replacement=False, generator=generator).reshape(b, k, n)
    elif mode == "patch":
        side = max(1, min(math.isqrt(n), h, w))
        r0 = torch.randint(0, h - side + 1, (b * k, 1, 1), generator=generator, device=alpha.device)
        c0 = torch.randint(0, w - side + 1, (b * k, 1, 1), generator=generator, device=alpha.device)
        ar = torch.arange(side, device=alpha.device)
        idx = (r0 + ar[None, :, None]) * w + (c0 + ar[None, None, :])  # [BK, side, side]
        return idx.reshape(b, k, side * side)
    else:
        raise InputError(f"unknown ray sampling {mode!r}; use 'pixels' or 'patch'")


@torch.no_grad()
def evaluate(
    model: Reconstructor,
    dataset: RenderedObjects,
    max_objects: int = 16,
    views: int = 4,
    lpips_fn: PerceptualLoss | None = None,
    lpips_note: str = "",
) -> ValMetrics:
    """Novel-view PSNR / SSIM (/ LPIPS) of ``model`` on held-out objects, deterministic renders.

    For each of the first ``max_objects`` objects: planes from its rig views, renders from its first
    ``views`` random frames at the dataset's target resolution (``model.config.render_resolution``
    when the dataset resizes to it), compared on white.

    Args:
        model: the reconstructor (its weights as they are: swap in the EMA first).
        dataset: held-out objects (its ``views_per_sample`` is not used).
        max_objects: objects evaluated.
        views: frames per object.
        lpips_fn: a `PerceptualLoss` of kind "lpips" to report LPIPS, else None.
        lpips_note: stored in the result (why LPIPS is missing, or its weights).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    psnrs, ssims, lpipss = [], [], []
    n_obj = min(max_objects, len(dataset))
    res = 0
    try:
        for i in range(n_obj):
            count = min(views, len(dataset.records[i].random))
            rgb_t, _, c2w, fov = dataset.frames(i, range(count))
            res = rgb_t.shape[1]
            out = model(dataset.rig_views(i)[None].to(device), dataset.records[i].elevation_deg)
            render = model.render(
                out, c2w[None].to(device), (rgb_t.shape[1], rgb_t.shape[2]), fov_deg=fov[None].to(device)
            )
            pred = render.rgb[0].clamp(0, 1).permute(0, 3, 1, 2).float().cpu()  # [V, 3, H, W]
            target = rgb_t.permute(0, 3, 1, 2)
            psnrs.append(psnr(pred, target))
            if min(pred.shape[-2:]) >= 11:
                ssims.append(ssim(pred, target))
            if lpips_fn is not None and lpips_fn.kind == "lpips":
                lpipss.append(lpips_fn(pred, target))
    finally:
        model.train(was_training)
    return ValMetrics(
        psnr=float(torch.cat(psnrs).mean()),
        ssim=float(torch.cat(ssims).mean()) if ssims else float("nan"),
        lpips=float(torch.cat(lpipss).mean()) if lpipss else None,
        objects=n_obj,
        views=int(sum(len(p) for p in psnrs)),
        resolution=res,
        lpips_note=lpips_note,
    )


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


_CSV_FIELDS = ["step", "loss", "mse", "mask", "perceptual", "lr", "time_s", "steps_per_s", "val_psnr", "val_ssim",
               "val_lpips"]  # fmt: skip


def _truncate_csv(path: Path, step: int) -> None:
    """Drop rows after ``step`` (a resume from an earlier checkpoint than the log's end)."""
    if not path.is_file():
        return
    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("step") and int(r["step"]) <= step]
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=_CSV_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, text.getvalue())


def _fmt(x: float | None) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.6g}"


def train(cfg: TrainConfig) -> TrainResult:
    """Train the reconstructor as ``cfg`` says (see the module docstring).

    Returns:
        `TrainResult`.

    Raises:
        InputError: bad data folders, presets, or settings (e.g. fp16 without CUDA).
    """
    with training_process(cfg.num_threads):
        return _train(cfg)


def _train(cfg: TrainConfig) -> TrainResult:
    from accelerate import Accelerator
    from tqdm import tqdm

    if cfg.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise InputError("mixed_precision 'fp16' needs a CUDA GPU; use 'bf16' or 'no' on a CPU")
    recon_cfg = cfg.recon_config()
    if cfg.init_from is not None:
        recon_cfg = init_config(recon_cfg, cfg.init_from)
    out_dir = Path(cfg.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    tb = False
    if cfg.tensorboard:
        try:
            import tensorboard  # noqa: F401

            tb = True
        except ImportError:
            logger.info("tensorboard not importable: no TensorBoard events, CSV log only")
    accelerator = Accelerator(
        gradient_accumulation_steps=cfg.grad_accumulation,
        mixed_precision=cfg.mixed_precision,
        log_with="tensorboard" if tb else None,
        project_dir=str(out_dir),
    )
    device = accelerator.device
    main = accelerator.is_main_process

    # Data.
    exclude = list(cfg.val_objects) if cfg.val_data is None and cfg.val_objects else None
    train_set = RenderedObjects(
        cfg.data,
        views_per_sample=cfg.views_per_object,
        view_resolution=recon_cfg.unet.view_resolution,
        target_resolution=recon_cfg.render_resolution,
        exclude=exclude,
        seed=cfg.seed,
    )
    val_set = None
    if cfg.val_data is not None:
        val_set = RenderedObjects(cfg.val_data, 1, recon_cfg.unet.view_resolution, recon_cfg.render_resolution)
    elif cfg.val_objects:
        val_set = RenderedObjects(
            cfg.data, 1, recon_cfg.unet.view_resolution, recon_cfg.render_resolution, objects=list(cfg.val_objects)
        )

    # Model, EMA, optimizer.
    with seeded_initialisation(cfg.seed):
        model = Reconstructor(recon_cfg)
    if cfg.init_from is not None:
        report = load_init_weights(model, cfg.init_from)
        if main:
            logger.info("init from %s: %s", cfg.init_from, report.summary())
    model.to(device)
    if cfg.channels_last:
        model.unet.to(memory_format=torch.channels_last)
    ema = EMA(model.named_parameters(), cfg.ema_decay) if cfg.ema_decay > 0 else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    wrapper, optimizer = accelerator.prepare(_TrainingForward(model), optimizer)
    generator = torch.Generator(device=device).manual_seed(cfg.seed * 1_000_003 + accelerator.process_index)
    loop = _LoopState(generator)
    accelerator.register_for_checkpointing(loop)  # custom_checkpoint_0.pkl, then the EMA's _1: keep the order
    if ema is not None:
        accelerator.register_for_checkpointing(ema)
    checkpoints = Checkpoints(accelerator, out_dir / "checkpoints", cfg.keep_checkpoints)

    perceptual = make_perceptual_loss(cfg.perceptual) if cfg.perceptual_weight > 0 else None
    lpips_ok, lpips_reason = lpips_status()
    lpips_eval = perceptual if perceptual is not None and perceptual.kind == "lpips" else None
    if lpips_eval is None and lpips_ok and val_set is not None:
        lpips_eval = make_perceptual_loss("lpips")
    if perceptual is not None and cfg.stage == "volume" and cfg.ray_sampling == "pixels" and main:
        logger.info("ray_sampling 'pixels': the perceptual term (%s) is not used in stage A", perceptual.kind)

    # Resume.
    latest = checkpoints.latest() if cfg.resume else None
    if latest is not None:
        checkpoints.load(latest)
        if main:
            logger.info("resumed from %s at step %d", latest, loop.step)
    start_step = loop.step
    csv_path = out_dir / "log.csv"
    if main:
        cfg.write_json(out_dir / "train_config.json")
        write_text_atomic(out_dir / "recon_config.json", recon_cfg.to_json() + "\n")
        if start_step == 0 and csv_path.exists():
            csv_path.unlink()
        _truncate_csv(csv_path, start_step)
    if tb:
        accelerator.init_trackers("tb")

    sampler = ObjectBatchSampler(
        len(train_set),
        cfg.batch_size,
        seed=cfg.seed,
        start_batch=start_step * cfg.grad_accumulation,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
    )
    loader = DataLoader(
        train_set,
        batch_sampler=sampler,
        collate_fn=collate_objects,
        num_workers=cfg.num_workers,
        worker_init_fn=_worker_init if cfg.num_workers > 0 else None,
    )
    batches = iter(loader)
    loss_cfg = cfg.loss_config()
    unwrapped: Reconstructor = accelerator.unwrap_model(wrapper).model

    def validate() -> ValMetrics | None:
        if val_set is None or not main:
            return None
        with averaged(ema):
            return evaluate(unwrapped, val_set, cfg.val_max_objects, cfg.val_views, lpips_eval, lpips_reason)

    def write_row(row: dict) -> None:
        new = not csv_path.exists()
        with csv_path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=_CSV_FIELDS)
            if new:
                writer.writeheader()
            writer.writerow(row)

    bar = tqdm(total=cfg.steps, initial=start_step, desc=f"train {cfg.stage}", disable=not (cfg.progress and main))
    losses: list[float] = []
    window: dict[str, list[float]] = {}
    t_start = time.perf_counter()
    train_time = 0.0
    window_time, window_steps = 0.0, 0
    val: ValMetrics | None = None
    wrapper.train()
    stop_at = cfg.end_step(start_step)
    while loop.step < stop_at:
        t0 = time.perf_counter()
        step = loop.step
        lr = cfg.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        step_terms: dict[str, float] = {}
        for _ in range(cfg.grad_accumulation):
            batch: ObjectBatch = next(batches).to(device)
            pixels = volume_pixels = None
            if cfg.stage == "volume":
                pixels = sample_pixels(
                    batch.target_alpha, cfg.rays_per_view, cfg.ray_sampling, cfg.foreground_fraction, generator
                )
            elif cfg.volume_weight > 0:
                volume_pixels = sample_pixels(
                    batch.target_alpha, cfg.rays_per_view, "pixels", cfg.foreground_fraction, generator
                )
            with accelerator.accumulate(wrapper):
                render, volume = wrapper(
                    batch.views, batch.elevation_deg, batch.c2w, batch.fov_deg, pixels, generator, volume_pixels
                )
                target_rgb, target_alpha = batch.target_rgb, batch.target_alpha
                if pixels is not None:
                    target_rgb, target_alpha = _gather_pixels(target_rgb, target_alpha, pixels)
                    if cfg.ray_sampling == "patch":  # whole patches: images for the perceptual term
                        b, k = pixels.shape[:2]
                        side = math.isqrt(pixels.shape[-1])
                        target_rgb = target_rgb.reshape(b, k, side, side, 3)
                        target_alpha = target_alpha.reshape(b, k, side, side)
                        render = ReconRender(
                            rgb=render.rgb.reshape(b, k, side, side, 3),
                            opacity=render.opacity.reshape(b, k, side, side),
                        )
                terms = reconstruction_loss(render.rgb, render.opacity, target_rgb, target_alpha, loss_cfg, perceptual)
                total = terms.total
                if volume is not None:
                    v_rgb, v_alpha = _gather_pixels(batch.target_rgb, batch.target_alpha, volume_pixels)
                    volume_terms = reconstruction_loss(volume.rgb, volume.opacity, v_rgb, v_alpha, loss_cfg)
                    total = total + cfg.volume_weight * volume_terms.total
                accelerator.backward(total)
                if accelerator.sync_gradients and cfg.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(wrapper.parameters(), cfg.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            floats = terms.as_floats()
            if volume is not None:
                floats["loss"] = float(total.detach())
                floats["volume"] = float(volume_terms.total.detach())
            for name, value in floats.items():
                step_terms[name] = step_terms.get(name, 0.0) + value / cfg.grad_accumulation
        loop.step += 1
        if ema is not None:
            ema.update()
        losses.append(step_terms["loss"])
        for name, value in step_terms.items():
            window.setdefault(name, []).append(value)
        dt = time.perf_counter() - t0
        train_time += dt
        window_time += dt
        window_steps += 1
        bar.update()
        bar.set_postfix(loss=f"{step_terms['loss']:.4f}", lr=f"{lr:.2e}")

        step = loop.step
        val_now = None
        if cfg.validation_due(step):
            val_now = validate()
            if val_now is not None:
                val = val_now
                bar.write(f"step {step}: val PSNR {val_now.psnr:.2f} dB, SSIM {val_now.ssim:.4f}")
        if step % cfg.log_every == 0 or step == cfg.steps or val_now is not None:
            means = {k: float(np.mean(v)) for k, v in window.items()}
            perceptual_value = means.get("lpips", means.get("ssim_loss"))
            row = {
                "step": step,
                "loss": _fmt(means["loss"]),
                "mse": _fmt(means["mse"]),
                "mask": _fmt(means["mask"]),
                "perceptual": _fmt(perceptual_value),
                "lr": _fmt(lr),
                "time_s": _fmt(time.perf_counter() - t_start),
                "steps_per_s": _fmt(window_steps / window_time if window_time > 0 else None),
                "val_psnr": _fmt(val_now.psnr if val_now else None),
                "val_ssim": _fmt(val_now.ssim if val_now else None),
                "val_lpips": _fmt(val_now.lpips if val_now else None),
            }
            if main:
                write_row(row)
            if tb:
                scalars = {f"train/{k}": v for k, v in means.items()}
                scalars["train/lr"] = lr
                if val_now is not None:
                    scalars.update({"val/psnr": val_now.psnr, "val/ssim": val_now.ssim})
                    if val_now.lpips is not None:
                        scalars["val/lpips"] = val_now.lpips
                accelerator.log(scalars, step=step)
            window, window_time, window_steps = {}, 0.0, 0
        if cfg.checkpoint_due(step, stop_at):
            checkpoints.save(step)
    bar.close()
    time_s = time.perf_counter() - t_start
    done_here = loop.step - start_step

    finished = loop.step >= cfg.steps
    final_dir = out_dir / "final" if finished else None
    if finished and val is None and done_here == 0:  # the run was already complete: validate for the result
        val = validate()
    if finished and main:
        with averaged(ema):
            unwrapped.save_pretrained(final_dir)
        perceptual_kind = perceptual.kind if perceptual is not None else None
        metrics = {
            "steps": loop.step,
            "steps_this_run": done_here,
            "time_s": time_s,
            "steps_per_s": done_here / train_time if train_time > 0 else None,
            "final_train_loss": float(np.mean(losses[-cfg.log_every :])) if losses else None,
            "perceptual_loss": perceptual_kind,
            "perceptual_used_in_training": perceptual_kind is not None
            and not (cfg.stage == "volume" and cfg.ray_sampling == "pixels"),
            "lpips_available": lpips_ok,
            "lpips_note": lpips_reason,
            "val": dataclasses.asdict(val) if val is not None else None,
            "stage": cfg.stage,
            "preset": cfg.preset,
            "processes": accelerator.num_processes,
            "device": str(device),
            "torch_threads": torch.get_num_threads(),
        }
        write_text_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    accelerator.wait_for_everyone()
    if tb:
        accelerator.end_training()
    return TrainResult(
        out_dir=out_dir,
        final_dir=final_dir,
        steps=loop.step,
        time_s=time_s,
        steps_per_s=done_here / train_time if train_time > 0 else 0.0,
        losses=losses,
        val=val,
    )

"""Training: overfitting one batch, exact resume (of older checkpoints too), validation, outputs, stage B, settings."""

from __future__ import annotations

import csv
import json
import math
import os
import re
from pathlib import Path

import pytest
import torch

from fourview.errors import InputError
from fourview.recon.config import recon_preset
from fourview.recon.dataset import RenderedObjects, collate_objects
from fourview.recon.losses import LossConfig, reconstruction_loss
from fourview.recon.model import Reconstructor
from fourview.recon.train import TrainConfig, evaluate, sample_pixels, train
from fourview.training import training_process, warmup_cosine


def _config(rendered: Path, out: Path, **kw) -> TrainConfig:
    base = dict(
        data=str(rendered),
        out=str(out),
        preset="tiny",
        steps=4,
        batch_size=2,
        rays_per_view=48,
        warmup_steps=1,
        checkpoint_every=0,
        validate_every=0,
        log_every=1,
        tensorboard=False,
        progress=False,
        perceptual="ssim",
    )
    base.update(kw)
    return TrainConfig(**base)


def test_loss_is_finite_and_decreases_overfitting_one_batch(rendered):
    torch.manual_seed(0)
    model = Reconstructor(recon_preset("tiny")).train()
    cfg = model.config
    ds = RenderedObjects(rendered, 4, cfg.unet.view_resolution, cfg.render_resolution)
    batch = collate_objects([ds[0], ds[1]])
    g = torch.Generator().manual_seed(0)
    pixels = sample_pixels(batch.target_alpha, 64, generator=g)  # [2, 4, 64], fixed
    b, k, h, w = batch.target_alpha.shape
    target_rgb = batch.target_rgb.reshape(b, k, h * w, 3).gather(2, pixels[..., None].expand(-1, -1, -1, 3))
    target_alpha = batch.target_alpha.reshape(b, k, h * w).gather(2, pixels)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        out = model(batch.views, batch.elevation_deg)
        r = model.render(out, batch.c2w, pixels=pixels, generator=g, fov_deg=batch.fov_deg)
        loss = reconstruction_loss(r.rgb, r.opacity, target_rgb, target_alpha, LossConfig()).total
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.5 * losses[0], losses
    assert min(losses[-5:]) < min(losses[:5])


def test_resume_gives_the_same_losses_as_training_straight(rendered, tmp_path):
    straight = train(_config(rendered, tmp_path / "a", ema_decay=0.9))
    first = train(_config(rendered, tmp_path / "b", ema_decay=0.9, stop_after_steps=2))
    assert first.final_dir is None and first.steps == 2
    assert (tmp_path / "b" / "checkpoints" / "step_00000002" / "loop_state.json").is_file()
    second = train(_config(rendered, tmp_path / "b", ema_decay=0.9))
    assert second.steps == 4 and len(second.losses) == 2
    assert first.losses + second.losses == pytest.approx(straight.losses, rel=1e-6, abs=1e-7)
    assert len(set(straight.losses)) > 1  # the steps saw different data (a vacuous test would not)
    a = Reconstructor.from_pretrained(straight.final_dir)  # EMA weights
    b = Reconstructor.from_pretrained(second.final_dir)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-7, msg=name)
    rows = list(csv.DictReader((tmp_path / "b" / "log.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]  # the resumed log continues


class _State:
    """An object registered for checkpointing whose state is a given dict (what the old loop and EMA saved)."""

    def __init__(self, state: dict) -> None:
        self.state = state

    def state_dict(self) -> dict:
        return self.state

    def load_state_dict(self, state: dict) -> None:
        self.state = state


class _OldTrainingForward(torch.nn.Module):
    """What the old trainer prepared: the reconstructor as ``.model`` (weights saved as ``model.*``)."""

    def __init__(self, model: Reconstructor) -> None:
        super().__init__()
        self.model = model


def _write_checkpoint_as_29f8437(state: Path, root: Path, cfg: TrainConfig, step: int) -> None:
    """Write the training state held in checkpoint folder ``state`` the way the trainer of commit 29f8437 wrote
    a checkpoint: Accelerate's ``save_state`` of the prepared model and AdamW, the loop state ({step, generator})
    then the EMA ({decay, updates, shadow}) registered in that order, into ``.step_N.tmp``; then
    ``loop_state.json`` and the rename to ``step_NNNNNNNN``."""
    from accelerate import Accelerator
    from safetensors.torch import load_file

    loop = torch.load(state / "custom_checkpoint_0.pkl", weights_only=False)
    ema = torch.load(state / "custom_checkpoint_1.pkl", weights_only=False)
    with training_process(None):  # Accelerate's settings are forgotten afterwards
        wrapper = _OldTrainingForward(Reconstructor(cfg.recon_config()))
        wrapper.load_state_dict(load_file(str(state / "model.safetensors")))
        optimizer = torch.optim.AdamW(wrapper.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                      betas=(0.9, 0.99))  # fmt: skip
        accelerator = Accelerator(gradient_accumulation_steps=cfg.grad_accumulation, mixed_precision="no")
        wrapper, optimizer = accelerator.prepare(wrapper, optimizer)
        optimizer.load_state_dict(torch.load(state / "optimizer.bin", weights_only=False))
        accelerator.register_for_checkpointing(_State({"step": loop["step"], "generator": loop["generator"]}))
        accelerator.register_for_checkpointing(
            _State({"decay": ema["decay"], "updates": ema["updates"], "shadow": ema["shadow"]})
        )
        tmp = root / f".step_{step:08d}.tmp"
        accelerator.save_state(str(tmp))
    (tmp / "loop_state.json").write_text(json.dumps({"step": step}) + "\n")
    os.replace(tmp, root / f"step_{step:08d}")


def test_a_checkpoint_written_by_the_trainer_of_29f8437_resumes_exactly(rendered, tmp_path):
    """Runs started before the trainers shared their checkpoint code resume from their checkpoints as written."""
    straight = train(_config(rendered, tmp_path / "straight", ema_decay=0.9))
    first = train(_config(rendered, tmp_path / "new", ema_decay=0.9, stop_after_steps=2))
    state = tmp_path / "new" / "checkpoints" / "step_00000002"
    assert sorted(p.name for p in state.iterdir()) == [
        "custom_checkpoint_0.pkl", "custom_checkpoint_1.pkl", "loop_state.json", "model.safetensors", "optimizer.bin",
        "random_states_0.pkl",
    ]  # fmt: skip
    old_run = tmp_path / "old"
    (old_run / "checkpoints").mkdir(parents=True)
    _write_checkpoint_as_29f8437(state, old_run / "checkpoints", _config(rendered, old_run, ema_decay=0.9), 2)
    resumed = train(_config(rendered, old_run, ema_decay=0.9))
    assert resumed.steps == 4 and len(resumed.losses) == 2
    assert first.losses + resumed.losses == pytest.approx(straight.losses, rel=1e-6, abs=1e-7)
    a = Reconstructor.from_pretrained(straight.final_dir)  # the EMA weights
    b = Reconstructor.from_pretrained(resumed.final_dir)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-7, msg=name)
    assert sorted(p.name for p in (old_run / "checkpoints").iterdir()) == ["step_00000002", "step_00000004"]


def test_validation_metrics_logs_and_final_weights(rendered, tmp_path):
    names = RenderedObjects(rendered).names
    cfg = _config(rendered, tmp_path / "run", steps=2, validate_every=1, val_objects=(names[1],), val_views=2,
                  batch_size=1, checkpoint_every=1, keep_checkpoints=1, tensorboard=True)  # fmt: skip
    result = train(cfg)
    assert result.val is not None and result.val.objects == 1 and result.val.views == 2
    assert math.isfinite(result.val.psnr) and 0 < result.val.psnr < 60 and -1 <= result.val.ssim <= 1
    assert result.val.resolution == 16
    assert result.val.lpips is None or result.val.lpips >= 0
    rows = list(csv.DictReader((tmp_path / "run" / "log.csv").open()))
    assert [r["step"] for r in rows] == ["1", "2"] and all(r["val_psnr"] for r in rows)
    assert all(float(r["loss"]) > 0 for r in rows)
    sched = dict(warmup_steps=cfg.warmup_steps, total_steps=cfg.steps, min_lr_ratio=cfg.min_lr_ratio, peak=cfg.lr)
    assert [float(r["lr"]) for r in rows] == pytest.approx([warmup_cosine(k, **sched) for k in (0, 1)], rel=1e-5)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["val"]["psnr"] == pytest.approx(result.val.psnr)
    assert metrics["perceptual_loss"] == "ssim" and not metrics["perceptual_used_in_training"]
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["step_00000002"]  # keep 1
    assert list((tmp_path / "run" / "tb").rglob("events.out.tfevents.*"))
    # The saved model is the validated (EMA) one: evaluating it again gives the same numbers.
    model = Reconstructor.from_pretrained(result.final_dir)
    val_set = RenderedObjects(rendered, 1, 32, 16, objects=[names[1]])
    again = evaluate(model, val_set, views=2)
    assert again.psnr == pytest.approx(result.val.psnr, rel=1e-5)
    # Training never saw the held-out object.
    assert RenderedObjects(rendered, exclude=[names[1]]).names == [names[0]]

    # Stage B starts from stage A's weights and trains with DMTet on whole images.
    stage_b = _config(rendered, tmp_path / "b", stage="dmtet", steps=1, batch_size=1, views_per_object=2,
                      init_from=str(result.final_dir), perceptual_weight=0.5)  # fmt: skip
    res_b = train(stage_b)
    assert res_b.steps == 1 and all(math.isfinite(x) for x in res_b.losses)
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["perceptual_used_in_training"]
    assert Reconstructor.from_pretrained(res_b.final_dir).config.renderer == "dmtet"
    # The same step with stage A's volume loss added (the SDF volume-rendered as a log-density).
    stage_bv = _config(rendered, tmp_path / "bv", stage="dmtet", steps=1, batch_size=1, views_per_object=2,
                       init_from=str(result.final_dir), perceptual_weight=0.5, volume_weight=2.0)  # fmt: skip
    res_bv = train(stage_bv)
    assert math.isfinite(res_bv.losses[0]) and res_bv.losses[0] > res_b.losses[0] + 1e-4


def test_sample_pixels_modes():
    g = torch.Generator().manual_seed(0)
    alpha = torch.zeros(2, 3, 8, 8)
    alpha[..., 2:4, 3:6] = 1.0  # a 6-pixel silhouette
    alpha[1, 2] = 0.0  # an empty frame: uniform
    pix = sample_pixels(alpha, 5, "pixels", foreground_fraction=1.0, generator=g)
    assert pix.shape == (2, 3, 5) and pix.dtype == torch.int64
    assert all(len(set(row.tolist())) == 5 for row in pix.reshape(-1, 5))  # distinct
    inside = alpha.reshape(2, 3, 64).gather(2, pix) > 0
    assert inside[0].all() and inside[1, :2].all() and not inside[1, 2].all()
    patch = sample_pixels(alpha, 10, "patch", generator=g)  # side 3
    assert patch.shape == (2, 3, 9)
    rows, cols = patch // 8, patch % 8
    assert ((rows.amax(-1) - rows.amin(-1)) == 2).all() and ((cols.amax(-1) - cols.amin(-1)) == 2).all()
    with pytest.raises(InputError, match="unknown ray sampling 'rings'"):
        sample_pixels(alpha, 4, "rings")


def test_bad_settings_are_rejected(tmp_path):  # the schedule itself: tests/test_lr_schedule.py
    for bad, message in (
        (dict(steps=0), "--steps must be >= 1, got 0"),
        (dict(stage="nerf"), "stage must be 'volume' or 'dmtet', got 'nerf'"),
        (dict(ema_decay=1.0), re.escape("--ema-decay must be in [0, 1), got 1.0")),
        (dict(mixed_precision="fp8"), "--mixed-precision must be 'no', 'fp16' or 'bf16', got 'fp8'"),
        (dict(foreground_fraction=2.0), re.escape("foreground_fraction must be in [0, 1], got 2.0")),
        (dict(mask_weight=-1.0), "mask_weight must be >= 0, got -1.0"),
        (dict(stop_after_steps=0), "--stop-after-steps must be >= 1, got 0"),
        (dict(volume_weight=-1.0), "volume_weight must be >= 0, got -1.0"),
        (dict(volume_weight=1.0), "volume_weight is a stage-B term"),  # stage A (the default) has no volume term
    ):
        with pytest.raises(InputError, match=message):
            TrainConfig(data="d", out="o", **bad)
    path = tmp_path / "cfg.json"
    path.write_text(recon_preset("tiny", "dmtet").to_json())
    assert TrainConfig(data="d", out="o", preset=str(path), stage="dmtet").recon_config().renderer == "dmtet"
    with pytest.raises(InputError, match="renderer"):
        TrainConfig(data="d", out="o", preset=str(path)).recon_config()
    with pytest.raises(InputError, match="preset"):
        TrainConfig(data="d", out="o", preset="huge").recon_config()
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="fp16"):
            train(TrainConfig(data="d", out=str(tmp_path / "o"), mixed_precision="fp16"))

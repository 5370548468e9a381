"""LCM-LoRA distillation (`fourview.mvgen.distill`) on a tiny random SDXL and four synthetic grids."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from fourview.errors import InputError
from fourview.mvgen.distill import LCMDistillConfig, distill_lcm, load_teacher
from fourview.mvgen.student import load_student, student_settings
from fourview.mvgen.validation import validation_images

PROMPTS = ("a red box", "a blue box")
COLOURS = {"red": (200, 30, 35), "blue": (30, 85, 205), "green": (45, 145, 55), "yellow": (240, 205, 35)}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A tiny random SDXL pipeline saved in diffusers' layout (grid 64, v-prediction)."""
    from diffusers import StableDiffusionXLPipeline

    from fourview.mvgen.components import build_components
    from fourview.mvgen.config import mvgen_preset

    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("teacher")
    StableDiffusionXLPipeline(**build_components(mvgen_preset("tiny"), seed=0), add_watermarker=False).save_pretrained(
        folder
    )
    return folder


@pytest.fixture(scope="module")
def grids(tmp_path_factory):
    """Four objects in the dataset renderer's layout: a box in each cell of a white 64 px grid."""
    root = tmp_path_factory.mktemp("grids")
    for i, (name, rgb) in enumerate(COLOURS.items()):
        folder = root / f"obj{i}"
        folder.mkdir()
        im = np.full((64, 64, 3), 255, np.uint8)
        for cy in (16, 48):
            for cx in (16, 48):
                im[cy - 8 : cy + 8, cx - 5 - i : cx + 5 + i] = rgb
        Image.fromarray(im).save(folder / "grid.png")
        (folder / "caption.txt").write_text(f"a {name} box\n")
    return root


def _config(teacher, grids, out, **kw) -> LCMDistillConfig:
    base = dict(teacher=str(teacher), data=str(grids), out=str(out), lora_rank=4, batch_size=4, lr=2e-3,
                log_every=5, checkpoint_every=0, val_prompts=PROMPTS, num_threads=1)  # fmt: skip
    base.update(kw)
    return LCMDistillConfig(**base)


@pytest.fixture(scope="module")
def run(teacher, grids, tmp_path_factory):
    out = tmp_path_factory.mktemp("lcm")
    return distill_lcm(_config(teacher, grids, out, steps=20))


# ---------------------------------------------------------------------------------------------
# distillation, saving, reloading


def test_distillation_lowers_the_consistency_loss(run):
    assert run.steps == 20
    assert run.eval_loss_end < 0.95 * run.eval_loss_start, (run.eval_loss_start, run.eval_loss_end)
    lines = [json.loads(x) for x in (run.out_dir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [5, 10, 15, 20] and all(np.isfinite(r["loss"]) for r in lines)
    # checkpoints hold the LoRA and the optimizer, not the frozen UNet
    ckpt = run.out_dir / "checkpoints" / "step_000020"
    assert (ckpt / "student_lora.safetensors").is_file() and not list(ckpt.glob("model*.safetensors"))
    settings = student_settings(run.weights)
    assert settings["num_ddim_timesteps"] == 50 and settings["timestep_scaling"] == 10.0
    assert settings["distill_steps"] == 20 and settings["recommended_steps"] == 4


def test_saved_student_reloads_and_reproduces_its_samples(run, teacher):
    from diffusers import LCMScheduler

    saved = np.stack([np.asarray(Image.open(run.val_dir / f"{i:02d}.png"), np.float32) / 255 for i in range(2)])
    pipe = load_teacher(str(teacher))
    plain = LCMScheduler.from_config(pipe.scheduler.config)
    load_student(pipe, run.weights)
    assert isinstance(pipe.scheduler, LCMScheduler) and pipe.scheduler.config.original_inference_steps == 50
    assert pipe.get_active_adapters() == ["student"]
    again = np.stack(validation_images(pipe, PROMPTS, 64, 4, 1.0, seed=0))  # [2, 64, 64, 3]
    assert np.abs(again - saved).max() <= 1.0 / 255 + 1e-6  # the PNGs are 8-bit
    # the LoRA matters: the teacher's UNet with the same LCM sampler draws something else
    pipe.disable_lora()
    pipe.scheduler = plain
    without = np.stack(validation_images(pipe, PROMPTS, 64, 4, 1.0, seed=0))
    assert np.abs(without - again).max() > 4.0 / 255


def test_resume_continues_exactly(teacher, grids, tmp_path):
    from safetensors.torch import load_file

    kw = dict(steps=3, batch_size=1, log_every=1, val_prompts=("a red box",), val_inference_steps=1)
    whole = distill_lcm(_config(teacher, grids, tmp_path / "whole", **kw))
    first = distill_lcm(_config(teacher, grids, tmp_path / "split", stop_after_steps=2, **kw))
    assert first.steps == 2 and first.weights is None
    second = distill_lcm(_config(teacher, grids, tmp_path / "split", **kw))
    assert second.steps == 3 and second.weights is not None
    a = load_file(str(whole.weights / "pytorch_lora_weights.safetensors"))
    b = load_file(str(second.weights / "pytorch_lora_weights.safetensors"))
    assert a.keys() == b.keys() and len(a) > 0
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


def test_the_student_saved_is_the_ema_of_its_lora(teacher, grids, tmp_path):
    from safetensors.torch import load_file

    run = distill_lcm(_config(teacher, grids, tmp_path / "ema", steps=2, batch_size=1, ema_decay=0.5,
                              val_prompts=("a red box",), val_inference_steps=1))  # fmt: skip
    ema = torch.load(run.out_dir / "checkpoints" / "step_000002" / "custom_checkpoint_0.pkl", weights_only=False)
    saved = load_file(str(run.weights / "pytorch_lora_weights.safetensors"))
    assert ema["updates"] == 2 and len(saved) == len(ema["shadow"]) > 0
    for name, shadow in ema["shadow"].items():
        torch.testing.assert_close(saved["unet." + name.replace(".default", "")], shadow, rtol=0, atol=0)


def test_bad_inputs_raise_input_error(teacher, grids, tmp_path):
    with pytest.raises(InputError, match="guidance"):
        distill_lcm(_config(teacher, grids, tmp_path / "g", guidance_min=0.5))
    with pytest.raises(InputError, match="model_index.json"):
        distill_lcm(_config(tmp_path, grids, tmp_path / "t"))
    with pytest.raises(InputError, match="grid.png"):
        distill_lcm(_config(teacher, tmp_path, tmp_path / "d"))
    pipe = load_teacher(str(teacher))
    with pytest.raises(InputError, match="student weights must be a folder with pytorch_lora_weights.safetensors"):
        load_student(pipe, tmp_path)


def test_init_lora_starts_from_saved_student(run, teacher, grids, tmp_path):
    warm = distill_lcm(_config(teacher, grids, tmp_path / "warm", steps=1, lr=0.0, init_lora=str(run.weights)))
    assert warm.eval_loss_start == pytest.approx(run.eval_loss_end, rel=1e-5)


def test_cli_runs_a_short_distillation_and_reports_errors(teacher, grids, tmp_path, capsys):
    from fourview.cli import main

    out = tmp_path / "cli"
    args = ["train", "mvgen-lcm", "--teacher", str(teacher), "--data", str(grids), "--out", str(out), "--steps", "1",
            "--batch-size", "1", "--lora-rank", "2", "--val-prompts", "a red box", "--num-threads", "1"]  # fmt: skip
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 0
    assert "distilled 1 steps" in capsys.readouterr().out
    assert (out / "lora" / "pytorch_lora_weights.safetensors").is_file() and (
        out / "val" / "step_000001.png"
    ).is_file()
    with pytest.raises(SystemExit) as e:
        main(args[:-2] + ["--guidance-min", "7", "--guidance-max", "3"])
    assert e.value.code == 2 and "guidance" in capsys.readouterr().err

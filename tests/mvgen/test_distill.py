"""LCM-LoRA distillation (`fourview.mvgen.distill`) on a tiny random SDXL and four synthetic grids."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from fourview.errors import InputError
from fourview.mvgen.distill import (
    LCMDistillConfig,
    boundary_scalings,
    consistency_output,
    ddim_step,
    distill_lcm,
    load_student,
    load_teacher,
    predicted_noise,
    predicted_x0,
    pseudo_huber,
    skipping_timesteps,
    student_settings,
)

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
# LCM maths against diffusers' schedulers


def _lcm_scheduler(prediction_type: str):
    from diffusers import LCMScheduler

    return LCMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type=prediction_type
    )


def test_boundary_scalings_match_lcm_scheduler_and_limits():
    sched = _lcm_scheduler("epsilon")
    t = torch.tensor([0, 1, 19, 259, 999])
    c_skip, c_out = boundary_scalings(t)
    for i, ti in enumerate(t.tolist()):
        ref_skip, ref_out = sched.get_scalings_for_boundary_condition_discrete(ti)
        assert c_skip[i].item() == pytest.approx(ref_skip, rel=1e-6, abs=1e-12)
        assert c_out[i].item() == pytest.approx(ref_out, rel=1e-6, abs=1e-12)
    assert c_skip[0].item() == 1.0 and c_out[0].item() == 0.0  # f(z, 0) = z: the boundary condition
    assert c_skip[-1].item() < 1e-6 and c_out[-1].item() == pytest.approx(1.0, abs=1e-6)
    # with sigma_data: c_skip = sd^2 / (u^2 + sd^2) and c_out^2 = u^2 / (u^2 + sd^2) sum to 1
    s, o = boundary_scalings(torch.tensor([3]), timestep_scaling=0.1, sigma_data=0.5)
    assert (s + o**2).item() == pytest.approx(1.0, abs=1e-6) and s.item() == pytest.approx(0.25 / 0.34, rel=1e-6)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_x0_and_noise_recovered_from_each_parameterisation(prediction_type):
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    t = torch.tensor([5, 400, 990])
    z = sched.add_noise(x0, eps, t)
    out = {"epsilon": eps, "v_prediction": sched.get_velocity(x0, eps, t), "sample": x0}[prediction_type]
    torch.testing.assert_close(
        predicted_x0(out, t, z, prediction_type, sched.alphas_cumprod), x0, atol=2e-4, rtol=1e-4
    )
    torch.testing.assert_close(
        predicted_noise(out, t, z, prediction_type, sched.alphas_cumprod), eps, atol=2e-4, rtol=1e-4
    )


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_consistency_output_is_lcm_scheduler_denoised(prediction_type):
    sched = _lcm_scheduler(prediction_type)
    sched.set_timesteps(4)
    g = torch.Generator().manual_seed(1)
    z, out = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g)
    for t in sched.timesteps:  # 999, 759, 499, 259: every step's denoised sample
        ref = sched.step(out, t, z).denoised
        ours = consistency_output(out, t.reshape(1), z, prediction_type, sched.alphas_cumprod, 10.0)
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_skipping_schedule_is_the_lcm_scheduler_grid():
    sched = _lcm_scheduler("epsilon")
    sched.set_timesteps(50)  # num_inference_steps = original_inference_steps: the whole grid
    ours = skipping_timesteps(1000, 50)
    assert ours[0].item() == 19 and ours[-1].item() == 999 and torch.all(ours.diff() == 20)
    torch.testing.assert_close(ours.flip(0), sched.timesteps)
    sched.set_timesteps(4)
    assert set(sched.timesteps.tolist()) <= set(ours.tolist())
    with pytest.raises(InputError):
        skipping_timesteps(1000, 0)


def test_ddim_step_is_exact_along_one_trajectory():
    """With the true x0 and noise, one DDIM step lands on q(z_s | x0) with the same noise."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    g = torch.Generator().manual_seed(2)
    x0, eps = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    prev = torch.tensor([0, 479])
    torch.testing.assert_close(ddim_step(x0, eps, prev, sched.alphas_cumprod), sched.add_noise(x0, eps, prev))


def test_pseudo_huber_is_quadratic_near_zero_and_linear_far():
    c = 1.0
    small, big = torch.full((10,), 1e-2), torch.full((10,), 1e4)
    zero = torch.zeros(10)
    assert pseudo_huber(small, zero, c).item() == pytest.approx(0.5 * 1e-4 / c, rel=5e-3)
    assert pseudo_huber(big, zero, c).item() == pytest.approx(1e4 - c, rel=1e-5)
    assert pseudo_huber(zero, zero, c).item() == 0.0


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

    from fourview.mvgen.train import validation_images

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


def test_bad_inputs_raise_input_error(teacher, grids, tmp_path):
    with pytest.raises(InputError, match="guidance"):
        distill_lcm(_config(teacher, grids, tmp_path / "g", guidance_min=0.5))
    with pytest.raises(InputError, match="model_index.json"):
        distill_lcm(_config(tmp_path, grids, tmp_path / "t"))
    with pytest.raises(InputError, match="grid.png"):
        distill_lcm(_config(teacher, tmp_path, tmp_path / "d"))
    pipe = load_teacher(str(teacher))
    with pytest.raises(InputError, match="student LoRA"):
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


def test_shipped_student_fits_the_shipped_generator():
    import warnings

    from fourview.mvgen.distill import DEMO_STUDENT
    from fourview.mvgen.pipeline import DEMO_MVGEN, MultiViewPipeline

    if (
        not (DEMO_STUDENT / "pytorch_lora_weights.safetensors").is_file()
        or not (DEMO_MVGEN / "model_index.json").is_file()
    ):
        pytest.skip("shipped demo weights absent")
    pipe = MultiViewPipeline.from_pretrained("demo")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # peft warns when LoRA keys do not match the UNet
        load_student(pipe.sdxl, "demo")
    assert student_settings(DEMO_STUDENT)["teacher"] == "demo"
    out = pipe("a red mug", num_inference_steps=4, guidance_scale=1.0, seed=0)
    assert out.grids.shape == (1, 128, 128, 3) and np.isfinite(out.grids).all()

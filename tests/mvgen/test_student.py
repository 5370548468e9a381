"""Loading the few-step student (`fourview.mvgen.student`); a trained one's round trip is in test_distill.py."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from fourview.errors import InputError
from fourview.mvgen.pipeline import MultiViewPipeline
from fourview.mvgen.student import load_student, student_folder, student_scheduler, student_settings
from fourview.pretrained import demo_folder


def test_student_scheduler_takes_the_students_settings(tmp_path):
    from diffusers import DDPMScheduler, LCMScheduler

    teacher = DDPMScheduler(beta_schedule="scaled_linear", prediction_type="v_prediction").config
    plain = student_scheduler(teacher)
    assert isinstance(plain, LCMScheduler) and plain.config.prediction_type == "v_prediction"
    (tmp_path / "student.json").write_text(json.dumps({"num_ddim_timesteps": 25, "timestep_scaling": 5.0}))
    tuned = student_scheduler(teacher, tmp_path)
    assert tuned.config.original_inference_steps == 25 and tuned.config.timestep_scaling == 5.0


def test_missing_student_files_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="student.json"):
        student_settings(tmp_path)
    with pytest.raises(InputError, match="student weights must be a folder with pytorch_lora_weights.safetensors"):
        load_student(object(), tmp_path)
    with pytest.raises(InputError, match="student weights not found: owner/student .*not a hub id"):
        student_folder("owner/student")
    with pytest.raises(InputError, match="student weights not found: .*nowhere is neither a folder nor a hub id"):
        load_student(object(), tmp_path / "nowhere")


def test_demo_student_is_the_shipped_folder():
    if not (demo_folder("student") / "pytorch_lora_weights.safetensors").is_file():
        pytest.skip("shipped demo student absent")
    assert student_folder("demo") == demo_folder("student")
    assert student_folder(demo_folder("student")) == demo_folder("student")


def test_shipped_student_fits_the_shipped_generator():
    if (
        not (demo_folder("student") / "pytorch_lora_weights.safetensors").is_file()
        or not (demo_folder("mvgen") / "model_index.json").is_file()
    ):
        pytest.skip("shipped demo weights absent")
    pipe = MultiViewPipeline.from_pretrained("demo")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # peft warns when LoRA keys do not match the UNet
        load_student(pipe.sdxl, "demo")
    assert student_settings(demo_folder("student"))["teacher"] == "demo"
    out = pipe("a red mug", num_inference_steps=4, guidance_scale=1.0, seed=0)
    assert out.grids.shape == (1, 128, 128, 3) and np.isfinite(out.grids).all()

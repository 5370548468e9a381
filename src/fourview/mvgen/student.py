"""The few-step student of the generator: loading its LoRA and its ``LCMScheduler`` into a pipeline.

A student folder, as ``fourview train mvgen-lcm`` writes it (`fourview.mvgen.distill`), holds the
LoRA in diffusers' format (``pytorch_lora_weights.safetensors``) and ``student.json``: the
sampler settings (``num_ddim_timesteps``, ``timestep_scaling``, recommended steps and guidance),
the teacher and a training summary. The student samples with the teacher's weights plus that
LoRA, and ``LCMScheduler`` with the teacher's betas and prediction type.
"""

from __future__ import annotations

import json
from pathlib import Path

from fourview.errors import InputError
from fourview.pretrained import resolve_weights

STUDENT_FILE: str = "student.json"
"""Sampler settings written next to the student's LoRA weights."""

STUDENT_STEPS: int = 4
"""Recommended sampler steps of a student (``student.json``'s ``recommended_steps`` unless it says otherwise)."""
STUDENT_GUIDANCE: float = 1.0
"""Recommended guidance of a student: 1, no classifier-free guidance (``recommended_guidance``)."""


def student_folder(name: str | Path) -> Path:
    """The local folder of a student: ``demo`` or a folder (`fourview.pretrained.resolve_weights`).

    Raises:
        InputError: the demo student missing, a folder without the LoRA file, or a hub id (a
            student's ``student.json`` is read from a local folder).
    """
    source = resolve_weights(name, "student")
    if source.path is None:
        raise InputError(f"student weights not found: {name} (a student is 'demo' or a local folder, not a hub id)")
    return source.path


def student_scheduler(scheduler_config, student: str | Path | None = None):
    """``LCMScheduler`` for a student: the teacher's betas and prediction type, the student's LCM settings.

    Args:
        scheduler_config: the teacher pipeline's ``scheduler.config``.
        student: the student's LoRA folder; its ``student.json`` sets ``original_inference_steps``
            and ``timestep_scaling`` (LCMScheduler's defaults, 50 and 10, otherwise).

    Returns:
        a ``diffusers.LCMScheduler``.
    """
    from diffusers import LCMScheduler

    extra = {}
    if student is not None and (Path(student) / STUDENT_FILE).is_file():
        meta = json.loads((Path(student) / STUDENT_FILE).read_text())
        extra = {"original_inference_steps": meta["num_ddim_timesteps"], "timestep_scaling": meta["timestep_scaling"]}
    return LCMScheduler.from_config(scheduler_config, **extra)


def load_student(pipe, path: str | Path, adapter_name: str = "student", weight: float = 1.0) -> None:
    """Make a ``StableDiffusionXLPipeline`` (the teacher's weights) sample as the few-step student.

    Loads the LoRA in diffusers' format as adapter ``adapter_name``, activates it with ``weight``
    next to the adapters already active (at weight 1), and replaces the scheduler by
    `student_scheduler`. Sample with ``num_inference_steps`` 1 to 8 (4 is the default of
    ``student.json``) and ``guidance_scale`` 1 (no classifier-free guidance).

    Args:
        pipe: a ``StableDiffusionXLPipeline`` (or the ``.sdxl`` of a `MultiViewPipeline`).
        path: the student folder (``pytorch_lora_weights.safetensors`` + ``student.json``), or
            "demo" for the shipped one (distilled from the demo generator;
            `fourview.pretrained.resolve_weights`).
        adapter_name: name of the adapter.
        weight: LoRA weight of the student (1 as distilled).

    Raises:
        InputError: the folder or its weights are missing or unreadable.
    """
    path = student_folder(path)
    from diffusers.utils import logging as dlogging

    active = [a for a in pipe.get_active_adapters() if a != adapter_name] if _has_adapters(pipe) else []
    level = dlogging.get_verbosity()
    dlogging.set_verbosity_error()  # not "no LoRA keys for the text encoders": the student has none
    try:
        pipe.load_lora_weights(str(path), adapter_name=adapter_name)
    except (OSError, ValueError, KeyError) as err:
        first = (str(err).splitlines() or [type(err).__name__])[0]
        raise InputError(f"cannot load the student LoRA {path}: {type(err).__name__}: {first}") from None
    finally:
        dlogging.set_verbosity(level)
    pipe.set_adapters(active + [adapter_name], adapter_weights=[1.0] * len(active) + [float(weight)])
    pipe.scheduler = student_scheduler(pipe.scheduler.config, path)


def student_settings(path: str | Path) -> dict:
    """The ``student.json`` record of a student folder (sampler settings, teacher, training summary).

    Raises:
        InputError: no ``student.json`` there.
    """
    f = Path(path) / STUDENT_FILE
    if not f.is_file():
        raise InputError(f"no {STUDENT_FILE} in student folder {path}")
    return json.loads(f.read_text())


def _has_adapters(pipe) -> bool:
    try:
        return bool(pipe.get_list_adapters())
    except (ValueError, AttributeError):
        return False

"""The settings and process set-up every trainer shares: `RunConfig`, `training_process`.

The trainers' configs (`fourview.recon.train.TrainConfig`, `fourview.mvgen.train.MVGenTrainConfig`,
`fourview.mvgen.distill.LCMDistillConfig`) inherit `RunConfig`'s fields and add their own; all
fields are keyword-only, so the configs stay flat (one ``--option`` per field on the command
line). A trainer whose default differs redeclares that field with its default alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from fourview.atomic import write_text_atomic
from fourview.errors import InputError
from fourview.training.lr_schedule import warmup_cosine


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """A training run's output folder, schedule, optimizer, precision, EMA, checkpoints, logging and seed."""

    out: str
    """Output folder (created); an existing run there is resumed when ``resume``."""
    steps: int = 2000
    """Optimizer steps."""
    batch_size: int = 4
    """Samples per micro-batch per process."""
    grad_accumulation: int = 1
    """Micro-batches per optimizer step."""
    lr: float = 1e-4
    """Peak learning rate (AdamW)."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of ``lr`` (cosine decay; 1: constant after warm-up)."""
    warmup_steps: int = 100
    """Linear warm-up from 0, optimizer steps."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping (0: off)."""
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    """Accelerate's mixed precision (fp16 needs CUDA)."""
    ema_decay: float = 0.0
    """EMA decay of the trained weights per optimizer step (warmed up as min(decay, (1 + n) / (10 + n)));
    0: off. Validation and the saved weights use the average."""
    checkpoint_every: int = 500
    """Optimizer steps between checkpoints (0: only at the end)."""
    keep_checkpoints: int = 2
    """Most recent checkpoints kept."""
    validate_every: int = 500
    """Optimizer steps between validations (0: only at the end)."""
    log_every: int = 10
    """Optimizer steps per log row (losses averaged over them)."""
    seed: int = 0
    """Seed of the initialisation, data order and every random draw of the run."""
    resume: bool = True
    """Continue from the latest checkpoint in ``out/checkpoints`` if there is one."""
    stop_after_steps: int | None = None
    """Stop this call after so many optimizer steps, with a checkpoint (a time slice; resume continues)."""
    num_threads: int | None = None
    """torch CPU threads of the training process (None or 0: torch's default). On a CPU shared with
    other jobs, fewer threads often run faster (threads stall waiting for each other)."""

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "grad_accumulation", "keep_checkpoints", "log_every"):
            if getattr(self, name) < 1:
                raise InputError(f"{_option(name)} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "warmup_steps", "weight_decay", "max_grad_norm", "checkpoint_every", "validate_every",
                     "seed"):  # fmt: skip
            if getattr(self, name) < 0:
                raise InputError(f"{_option(name)} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise InputError(f"--min-lr-ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not 0 <= self.ema_decay < 1:
            raise InputError(f"--ema-decay must be in [0, 1), got {self.ema_decay}")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise InputError(f"--mixed-precision must be 'no', 'fp16' or 'bf16', got {self.mixed_precision!r}")
        if self.stop_after_steps is not None and self.stop_after_steps < 1:
            raise InputError(f"--stop-after-steps must be >= 1, got {self.stop_after_steps}")
        if self.num_threads is not None and self.num_threads < 0:
            raise InputError(f"--num-threads must be >= 0, got {self.num_threads}")

    def lr_at(self, step: int) -> float:
        """The learning rate of optimizer step ``step`` (0-based): `warmup_cosine` from ``lr``."""
        return warmup_cosine(
            step, warmup_steps=self.warmup_steps, total_steps=self.steps, min_lr_ratio=self.min_lr_ratio, peak=self.lr
        )

    def end_step(self, start: int) -> int:
        """Where a call starting at step ``start`` stops: ``steps``, or earlier with ``stop_after_steps``."""
        return self.steps if self.stop_after_steps is None else min(self.steps, start + self.stop_after_steps)

    def checkpoint_due(self, step: int, end: int) -> bool:
        """Whether a checkpoint is written after step ``step`` (every ``checkpoint_every``, and at ``end``)."""
        return bool(self.checkpoint_every and step % self.checkpoint_every == 0) or step == end

    def validation_due(self, step: int) -> bool:
        """Whether the run validates after step ``step`` (every ``validate_every``, and after the last step)."""
        return bool(self.validate_every and step % self.validate_every == 0) or step == self.steps

    def write_json(self, path: Path) -> None:
        """Save the config as JSON (``dataclasses.asdict``) for provenance."""
        write_text_atomic(path, json.dumps(dataclasses.asdict(self), indent=2) + "\n")


def _option(field: str) -> str:
    return "--" + field.replace("_", "-")


@contextlib.contextmanager
def training_process(num_threads: int | None) -> Iterator[None]:
    """Around a training call: torch's CPU threads set to ``num_threads`` (None or 0: unchanged), and
    afterwards restored and Accelerate's process-wide settings forgotten (the distributed state stays),
    so that another call in this process may use other settings."""
    threads_before = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(threads_before)
        from accelerate.state import AcceleratorState, GradientState  # heavy optional dependency

        AcceleratorState._reset_state(reset_partial_state=False)
        GradientState._reset_state()

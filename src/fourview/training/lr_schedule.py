"""The learning-rate schedule of every training loop: linear warm-up, then cosine decay.

Every trainer sets each optimizer step's learning rate by hand from `warmup_cosine` (through
`fourview.training.run.RunConfig.lr_at`), so a run resumed from a checkpoint gets exactly the
rates of an uninterrupted one.
"""

from __future__ import annotations

import math


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int, min_lr_ratio: float, peak: float = 1.0) -> float:
    """Learning rate of optimizer step ``step``: linear warm-up to ``peak``, then cosine to ``peak * min_lr_ratio``.

    Warm-up: step ``s < warmup_steps`` gets ``peak * (s + 1) / warmup_steps`` (so step 0 is
    already above 0 and step ``warmup_steps - 1`` reaches ``peak``). Then the cosine runs from
    ``peak`` at step ``warmup_steps`` to ``peak * min_lr_ratio`` at step ``total_steps`` and stays
    there for later steps.

    Args:
        step: 0-based optimizer step.
        warmup_steps: steps of linear warm-up (0: start at ``peak``).
        total_steps: the step at which the decay ends (the run's length in optimizer steps).
        min_lr_ratio: final learning rate as a fraction of ``peak``, in [0, 1].
        peak: the learning rate after warm-up; the default 1.0 gives the multiplier of a base
            learning rate (as ``torch.optim.lr_scheduler.LambdaLR`` wants).

    Returns:
        The learning rate (or multiplier, with ``peak=1.0``).
    """
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return peak * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))

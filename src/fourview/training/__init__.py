"""What every trainer shares: run settings, learning-rate schedule, EMA, checkpoints and seeds."""

from fourview.training.checkpoints import CheckpointLayout, Checkpoints
from fourview.training.ema import EMA, averaged
from fourview.training.lr_schedule import warmup_cosine
from fourview.training.run import RunConfig, training_process
from fourview.training.seeds import derive_seed, seeded_initialisation, step_generator

__all__ = [
    "EMA",
    "CheckpointLayout",
    "Checkpoints",
    "RunConfig",
    "averaged",
    "derive_seed",
    "seeded_initialisation",
    "step_generator",
    "training_process",
    "warmup_cosine",
]

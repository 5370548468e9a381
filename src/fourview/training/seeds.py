"""Seeds of a training run's random draws, without touching the caller's random state."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from several integers (run seed, step, process...); deterministic, unlike ``hash``."""
    a, b = np.random.SeedSequence([int(x) for x in parts]).generate_state(2, np.uint32)
    return (int(a) * (1 << 31) + int(b)) & ((1 << 63) - 1)


def step_generator(*parts: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``derive_seed(*parts)``: the draws of one step, whatever came before."""
    return torch.Generator().manual_seed(derive_seed(*parts))


@contextlib.contextmanager
def seeded_initialisation(seed: int) -> Iterator[None]:
    """Inside: modules built on the CPU draw their initial weights from ``seed``; the caller's RNG is restored after.

    torch's layer initialisers take no generator; they draw from the global CPU generator, which
    is forked here (its state saved and put back), so results do not depend on earlier draws and
    later draws do not depend on this block.
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield

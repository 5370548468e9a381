"""The exponential moving average (EMA) of trained weights that validation and the saved models use."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch


class EMA:
    """Exponential moving average of a fixed set of parameters (float32 shadow copies).

    The parameters are held by reference: `update` reads their current values, `applied` swaps the
    averages in. A checkpoint holds ``state_dict()`` (``decay``, ``updates`` and ``shadow``, a
    dict of float32 tensors by parameter name).

    Args:
        named_parameters: ``(name, parameter)`` pairs, e.g. ``model.named_parameters()``.
        decay: target decay; the effective decay of update n (1, 2, ...) is
            ``min(decay, (1 + n) / (10 + n))``, so the first updates follow the weights closely.
    """

    def __init__(self, named_parameters: Iterable[tuple[str, torch.nn.Parameter]], decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.parameters = dict(named_parameters)
        self.shadow = {n: p.detach().float().clone() for n, p in self.parameters.items()}

    @torch.no_grad()
    def update(self) -> None:
        """Move the averages towards the parameters' current values (call once per optimizer step)."""
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for n, p in self.parameters.items():
            self.shadow[n].lerp_(p.detach().float(), 1.0 - d)

    @torch.no_grad()
    def copy_to_parameters(self) -> None:
        """Write the averages into the parameters (in their dtype)."""
        for n, p in self.parameters.items():
            p.copy_(self.shadow[n].to(p.dtype))

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Inside: the parameters hold the averages; afterwards their own values again."""
        backup = {n: p.detach().clone() for n, p in self.parameters.items()}
        self.copy_to_parameters()
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in self.parameters.items():
                    p.copy_(backup[n])

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        """Restore a `state_dict`, or the state of ``diffusers.training_utils.EMAModel`` (older mvgen checkpoints)."""
        if "shadow_params" in state:  # EMAModel: a list in the parameters' order, its step count
            state = {
                "decay": state["decay"],
                "updates": state["optimization_step"],
                "shadow": dict(zip(self.parameters, state["shadow_params"], strict=True)),
            }
        self.decay, self.updates = float(state["decay"]), int(state["updates"])
        self.shadow = {n: t.float().clone() for n, t in state["shadow"].items()}


def averaged(ema: EMA | None) -> contextlib.AbstractContextManager:
    """``ema.applied()``, or a context that changes nothing when there is no EMA."""
    return contextlib.nullcontext() if ema is None else ema.applied()

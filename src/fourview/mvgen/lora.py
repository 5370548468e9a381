"""LoRA adapters on the generator's UNet for training (`fourview.mvgen.train`, `fourview.mvgen.distill`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch


def add_lora(
    unet,
    *,
    rank: int,
    alpha: float | None,
    target_modules: Sequence[str],
    init: Literal["default", "gaussian"],
    seed: int,
) -> None:
    """Attach a peft LoRA (adapter ``"default"``) to ``unet`` with initial weights drawn from ``seed``.

    As peft initialises them, B is zero (the adapted UNet starts as the base) and A is drawn from
    Kaiming-uniform (``"default"``) or a normal with standard deviation 1 / rank (``"gaussian"``);
    here from a generator seeded with ``seed``, not torch's global RNG.

    Args:
        unet: a diffusers ``UNet2DConditionModel``.
        rank: the LoRA rank.
        alpha: the scale numerator (None: ``rank``, i.e. scale 1).
        target_modules: module names that get the LoRA (suffix match).
        init: the distribution of A.
        seed: seed of A.
    """
    from peft import LoraConfig  # heavy optional dependency

    unet.add_adapter(
        LoraConfig(
            r=rank,
            lora_alpha=alpha if alpha is not None else rank,
            init_lora_weights="gaussian" if init == "gaussian" else True,
            target_modules=list(target_modules),
        )
    )
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, weight in unet.named_parameters():
            if ".lora_A." not in name:
                continue
            fresh = torch.empty(weight.shape)
            if init == "gaussian":
                torch.nn.init.normal_(fresh, std=1 / rank, generator=generator)
            else:
                torch.nn.init.kaiming_uniform_(fresh, a=math.sqrt(5), generator=generator)
            weight.copy_(fresh)


def lora_state_dict(unet) -> dict[str, torch.Tensor]:
    """The LoRA weights of ``unet`` under peft's names (``...lora_A.weight``), detached and contiguous."""
    from peft.utils import get_peft_model_state_dict  # heavy optional dependency

    return {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(unet).items()}

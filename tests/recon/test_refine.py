"""Refinement of a reconstructor's prediction on its views (`fourview.recon.refine`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fourview.errors import InputError
from fourview.recon.config import recon_preset
from fourview.recon.model import Reconstructor
from fourview.recon.refine import RefineConfig, refine_reconstruction


def test_refine_lowers_the_loss_and_keeps_the_model(rig):
    model = Reconstructor(recon_preset("tiny")).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = RefineConfig(steps=25, rays_per_view=256, lr=0.05, prior_weight=0.0)
    result = refine_reconstruction(model, rig, cfg)
    assert (
        result.history[-1]["rgb"] + result.history[-1]["opacity"]
        < result.history[0]["rgb"] + result.history[0]["opacity"]
    )
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert result.config == model.config


def test_refine_restores_thread_count(rig):
    torch.set_num_threads(2)  # the autouse fixture of conftest.py restores its own setting after
    model = Reconstructor(recon_preset("tiny")).eval()
    refine_reconstruction(model, rig, RefineConfig(steps=1, rays_per_view=16, num_threads=1))
    assert torch.get_num_threads() == 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("stage", ["volume", "dmtet"])
def test_refine_runs_on_cuda_in_both_stages(rig, stage):
    """Refinement on a CUDA model (the render jitter's generator lives there); stage B volume-renders."""
    model = Reconstructor(recon_preset("tiny", stage)).eval().cuda()
    result = refine_reconstruction(model, rig, RefineConfig(steps=3, rays_per_view=64))
    assert result.field.planes.is_cuda and all(np.isfinite(h["loss"]) for h in result.history)


def test_bad_config_is_an_input_error():
    with pytest.raises(InputError, match="rays per view"):
        RefineConfig(rays_per_view=0)
    with pytest.raises(InputError, match="resolution"):
        RefineConfig(resolution=4)
    with pytest.raises(InputError, match="samples per ray must be >= 2"):
        RefineConfig(samples_per_ray=1)
    with pytest.raises(InputError, match="num_threads must be >= 0"):
        RefineConfig(num_threads=-1)

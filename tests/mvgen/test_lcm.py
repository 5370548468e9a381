"""The LCM maths (`fourview.mvgen.lcm`) against diffusers' schedulers."""

from __future__ import annotations

import re

import pytest
import torch

from fourview.errors import InputError
from fourview.mvgen.lcm import (
    boundary_scalings,
    consistency_output,
    ddim_step,
    guided,
    noised,
    predicted_noise,
    predicted_x0,
    pseudo_huber,
    skipping_timesteps,
)


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
    with pytest.raises(InputError, match=re.escape("num_ddim_timesteps must be in [1, 1000], got 0")):
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


def test_noised_is_the_schedulers_forward_process_and_guidance_interpolates():
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    g = torch.Generator().manual_seed(3)
    x0, eps = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    t = torch.tensor([3, 777])
    torch.testing.assert_close(noised(x0, eps, t, sched.alphas_cumprod), sched.add_noise(x0, eps, t))
    scale = torch.tensor([1.0, 3.0])
    out = guided(x0, eps, scale)
    torch.testing.assert_close(out[0], x0[0])  # scale 1: the conditional estimate
    torch.testing.assert_close(out[1], eps[1] + 3.0 * (x0[1] - eps[1]))

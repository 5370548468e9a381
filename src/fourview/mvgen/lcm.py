"""The maths of latent consistency models (LCM): pure functions of tensors (tested against ``LCMScheduler``).

A consistency function ``f(z_t, t) = c_skip(t) z_t + c_out(t) x0(z_t, t)`` maps every point of a
probability-flow ODE trajectory to its start; ``c_skip``, ``c_out`` (`boundary_scalings`) make
``f`` the identity at t = 0. Distillation (`fourview.mvgen.distill`) samples the skipping schedule
``t_n = (n + 1) k - 1`` (`skipping_timesteps`), lets the teacher take one guided DDIM step from
``t_n`` to ``t_n - k`` (`predicted_x0`, `predicted_noise`, `guided`, `ddim_step`) and pulls the
student's ``f`` at ``t_n`` towards its own ``f`` at ``t_n - k`` (`consistency_output`,
`pseudo_huber`). ``LCMScheduler`` samples the student with the same ``f``.
"""

from __future__ import annotations

import torch

from fourview.errors import InputError

SIGMA_DATA: float = 0.5
"""Standard deviation of the data in the consistency boundary condition (LCM and ``LCMScheduler``)."""


def boundary_scalings(
    timesteps: torch.Tensor, timestep_scaling: float = 10.0, sigma_data: float = SIGMA_DATA
) -> tuple[torch.Tensor, torch.Tensor]:
    """The consistency model's boundary-condition weights ``c_skip(t)``, ``c_out(t)``.

    ``f(z, t) = c_skip z + c_out x0(z, t)`` with ``c_skip = sd^2 / ((s t)^2 + sd^2)`` and
    ``c_out = s t / sqrt((s t)^2 + sd^2)`` (``s = timestep_scaling``): at t = 0, f is the
    identity; elsewhere it is nearly the network's clean-sample estimate.

    Args:
        timesteps: [B] discrete timesteps (0..999), any dtype.
        timestep_scaling: ``s`` above.
        sigma_data: ``sd`` above.

    Returns:
        ``c_skip`` and ``c_out``, each [B] float32.
    """
    t = timesteps.float() * timestep_scaling
    c_skip = sigma_data**2 / (t**2 + sigma_data**2)
    c_out = t / (t**2 + sigma_data**2) ** 0.5
    return c_skip, c_out


def predicted_x0(
    model_output: torch.Tensor,
    timesteps: torch.Tensor,
    sample: torch.Tensor,
    prediction_type: str,
    alphas_cumprod: torch.Tensor,
) -> torch.Tensor:
    """The clean-sample estimate from a UNet output at ``z_t = a x0 + s eps``.

    Args:
        model_output: [B, C, h, w] the UNet's prediction (epsilon, v or the sample itself).
        timesteps: [B] discrete timesteps.
        sample: [B, C, h, w] the noisy latent ``z_t``.
        prediction_type: "epsilon", "v_prediction" or "sample".
        alphas_cumprod: [T] the scheduler's cumulative alphas (``a^2``).

    Returns:
        [B, C, h, w] ``x0``.
    """
    a, s = _alpha_sigma(alphas_cumprod, timesteps, sample)
    if prediction_type == "epsilon":
        return (sample - s * model_output) / a
    if prediction_type == "v_prediction":
        return a * sample - s * model_output
    if prediction_type == "sample":
        return model_output
    raise InputError(f"unknown prediction type {prediction_type!r}; expected epsilon, v_prediction or sample")


def predicted_noise(
    model_output: torch.Tensor,
    timesteps: torch.Tensor,
    sample: torch.Tensor,
    prediction_type: str,
    alphas_cumprod: torch.Tensor,
) -> torch.Tensor:
    """The noise estimate from a UNet output at ``z_t = a x0 + s eps`` (arguments as `predicted_x0`).

    Returns:
        [B, C, h, w] ``eps``.
    """
    a, s = _alpha_sigma(alphas_cumprod, timesteps, sample)
    if prediction_type == "epsilon":
        return model_output
    if prediction_type == "v_prediction":
        return a * model_output + s * sample
    if prediction_type == "sample":
        return (sample - a * model_output) / s
    raise InputError(f"unknown prediction type {prediction_type!r}; expected epsilon, v_prediction or sample")


def consistency_output(
    model_output: torch.Tensor,
    timesteps: torch.Tensor,
    sample: torch.Tensor,
    prediction_type: str,
    alphas_cumprod: torch.Tensor,
    timestep_scaling: float = 10.0,
) -> torch.Tensor:
    """The consistency function ``f(z_t, t) = c_skip z_t + c_out x0`` (``LCMScheduler.step``'s ``denoised``).

    Returns:
        [B, C, h, w].
    """
    c_skip, c_out = boundary_scalings(timesteps, timestep_scaling)
    x0 = predicted_x0(model_output, timesteps, sample, prediction_type, alphas_cumprod)
    return _bcast(c_skip, sample) * sample + _bcast(c_out, sample) * x0


def skipping_timesteps(num_train_timesteps: int, num_ddim_timesteps: int) -> torch.Tensor:
    """The distillation schedule ``t_n = (n + 1) k - 1``, ``k = num_train_timesteps // num_ddim_timesteps``.

    These are the timesteps ``LCMScheduler`` (``original_inference_steps = num_ddim_timesteps``)
    samples from.

    Returns:
        [num_ddim_timesteps] int64, ascending.

    Raises:
        InputError: a schedule longer than the training timesteps, or empty.
    """
    if not 1 <= num_ddim_timesteps <= num_train_timesteps:
        raise InputError(f"num_ddim_timesteps must be in [1, {num_train_timesteps}], got {num_ddim_timesteps}")
    k = num_train_timesteps // num_ddim_timesteps
    return torch.arange(1, num_ddim_timesteps + 1, dtype=torch.int64) * k - 1


def ddim_step(
    pred_x0: torch.Tensor, pred_noise: torch.Tensor, prev_timesteps: torch.Tensor, alphas_cumprod: torch.Tensor
) -> torch.Tensor:
    """One deterministic DDIM step to ``prev_timesteps``: ``a_prev x0 + s_prev eps``.

    Args:
        pred_x0: [B, C, h, w] clean-sample estimate at the current step.
        pred_noise: [B, C, h, w] noise estimate at the current step.
        prev_timesteps: [B] the timesteps to step to (>= 0).
        alphas_cumprod: [T] the scheduler's cumulative alphas.

    Returns:
        [B, C, h, w] ``z_prev``.
    """
    a, s = _alpha_sigma(alphas_cumprod, prev_timesteps, pred_x0)
    return a * pred_x0 + s * pred_noise


def noised(
    z0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor
) -> torch.Tensor:
    """The forward process ``z_t = a z0 + s eps`` (``a^2`` = ``alphas_cumprod[t]``, ``s^2 = 1 - a^2``).

    Args:
        z0: [B, C, h, w] clean latents.
        noise: [B, C, h, w] standard normal noise.
        timesteps: [B] discrete timesteps.
        alphas_cumprod: [T] the scheduler's cumulative alphas.

    Returns:
        [B, C, h, w] ``z_t``.
    """
    a, s = _alpha_sigma(alphas_cumprod, timesteps, z0)
    return a * z0 + s * noise


def guided(cond: torch.Tensor, uncond: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Classifier-free guidance ``uncond + g (cond - uncond)`` with one scale per sample.

    Args:
        cond: [B, C, h, w] the conditional estimate.
        uncond: [B, C, h, w] the unconditional estimate.
        scale: [B] guidance scales ``g`` (1: the conditional estimate itself).

    Returns:
        [B, C, h, w].
    """
    return uncond + _bcast(scale, cond) * (cond - uncond)


def pseudo_huber(a: torch.Tensor, b: torch.Tensor, c: float) -> torch.Tensor:
    """Mean of ``sqrt((a - b)^2 + c^2) - c`` (quadratic below c, linear above); a scalar."""
    return (torch.sqrt((a.float() - b.float()) ** 2 + c * c) - c).mean()


def _alpha_sigma(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, like: torch.Tensor):
    ac = alphas_cumprod.to(like.device)[timesteps.to(like.device).long()].to(like.dtype)  # [B]
    return _bcast(ac.sqrt(), like), _bcast((1 - ac).sqrt(), like)


def _bcast(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return x.to(like.device, like.dtype).reshape(-1, *([1] * (like.ndim - 1)))

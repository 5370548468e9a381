"""Best-of-N sampling: rank candidate grids by how much the prompt explains them.

A text-to-image diffusion model is also a classifier (Li et al. 2023, "Your Diffusion Model is
Secretly a Zero-Shot Classifier"): its denoising error on a noised image estimates the image's
negative log-likelihood (up to weights and constants), with or without the prompt. The drop in
error that the prompt brings,

    alignment(x, c) = E_{t, noise} [ |f(x_t, t, empty) - y|^2 - |f(x_t, t, c) - y|^2 ],

with ``y`` the model's training target (noise or velocity), estimates the pointwise mutual
information log p(x | c) - log p(x): how much better the prompt explains ``x`` than no prompt
does. Among candidates drawn for one prompt, the one with the highest alignment is the one the
prompt explains best; the unconditional term puts candidates of different complexity on one scale.

Every candidate is scored with the same timesteps and the same noise (a paired comparison, so the
ranking does not depend on luck of the noise draw). The empty prompt is what classifier-free
guidance uses: zero embeddings when the pipeline sets ``force_zeros_for_empty_prompt`` (SDXL's
default, and how the demo generator dropped captions in training), else the encoded "".
"""

from __future__ import annotations

import torch

__all__ = ["prompt_alignment"]


@torch.no_grad()
def prompt_alignment(
    sdxl,
    latents: torch.Tensor,
    prompts: list[str],
    num_timesteps: int = 8,
    seed: int = 0,
    batch_size: int = 32,
) -> torch.Tensor:
    """How much each prompt explains its latents (higher: better explained).

    Args:
        sdxl: a diffusers ``StableDiffusionXLPipeline`` (its UNet, text encoders and scheduler config).
        latents: [N, C, h, w] clean latents, scaled as the UNet expects (the sampler's output).
        prompts: N prompts, one per latent.
        num_timesteps: timesteps per latent, evenly spaced over 10%..90% of the training schedule.
        seed: seed of the shared noise.
        batch_size: UNet batch (rows of latent x timestep).

    Returns:
        [N] float32 alignment scores (mean squared error drop in the model's target space).
    """
    from diffusers import DDPMScheduler

    if latents.ndim != 4 or latents.shape[0] != len(prompts):
        raise ValueError(f"expected [N, C, h, w] latents for {len(prompts)} prompts, got {tuple(latents.shape)}")
    unet = sdxl.unet
    device, dtype = latents.device, unet.dtype
    sched = DDPMScheduler.from_config(sdxl.scheduler.config)
    n_train = int(sched.config.num_train_timesteps)
    ts = torch.linspace(0.1 * n_train, 0.9 * n_train, num_timesteps).round().long().to(device)  # [T]
    n, t = latents.shape[0], num_timesteps
    cond, _, pooled, _ = sdxl.encode_prompt(
        prompt=list(prompts), device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
    )  # [N, L, D], [N, P]
    if bool(sdxl.config.get("force_zeros_for_empty_prompt", True)):
        empty, empty_pooled = torch.zeros_like(cond[:1]), torch.zeros_like(pooled[:1])
    else:
        empty, _, empty_pooled, _ = sdxl.encode_prompt(
            prompt=[""], device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
    g = torch.Generator("cpu").manual_seed(seed)
    noise = torch.randn((t, *latents.shape[1:]), generator=g).to(device, torch.float32)  # [T, C, h, w]
    size = latents.shape[-1] * int(sdxl.vae_scale_factor)  # grid side in pixels, as the sampler's time ids
    time_ids = torch.tensor([[size, size, 0, 0, size, size]], dtype=dtype, device=device)

    # Rows: (latent i, timestep j, conditional or empty) -> squared error of the prediction.
    x = latents.float().repeat_interleave(t, 0)  # [N T, C, h, w]
    eps = noise.repeat(n, 1, 1, 1)
    steps = ts.repeat(n)  # [N T]
    noisy = sched.add_noise(x, eps, steps)
    target = eps if sched.config.prediction_type == "epsilon" else sched.get_velocity(x, eps, steps)
    errors = []
    for ctx, pool in ((cond, pooled), (empty.expand_as(cond), empty_pooled.expand_as(pooled))):
        ctx, pool = ctx.repeat_interleave(t, 0), pool.repeat_interleave(t, 0)  # [N T, L, D], [N T, P]
        err = torch.empty(n * t, device=device)
        for i in range(0, n * t, batch_size):
            j = min(i + batch_size, n * t)
            pred = unet(
                noisy[i:j].to(dtype), steps[i:j], ctx[i:j].to(dtype),
                added_cond_kwargs={"text_embeds": pool[i:j].to(dtype), "time_ids": time_ids.expand(j - i, -1)},
            ).sample  # fmt: skip
            err[i:j] = ((pred.float() - target[i:j]) ** 2).mean(dim=(1, 2, 3))
        errors.append(err.view(n, t))
    return (errors[1] - errors[0]).mean(dim=1)  # [N]

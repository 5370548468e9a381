"""Refinement: fine-tuning a trained reconstructor's prediction on the views it was given.

`refine_reconstruction` starts from a `fourview.recon.model.Reconstructor`'s triplanes for the four
rig views (`fourview.views.PosedViews`, any one elevation) and fine-tunes them (and a copy of the
decoder, at a lower rate) on those views with the reconstructor's volume renderer: colour and
opacity losses on random pixels, plus an L2 pull back towards the predicted planes, so that what
the views do not see keeps the learned prior. The job behind ``fourview reconstruct --optimize
--recon``; the result is an `fourview.recon.optimize.OptimizeResult` like the fit's from nothing.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, replace

import torch
from tqdm import tqdm

from fourview.errors import InputError
from fourview.recon.model import ReconOutput, Reconstructor, VolumeRenderer
from fourview.recon.optimize import OptimizeResult, check_view_set
from fourview.recon.optimize_losses import resize_views
from fourview.views import PosedViews

__all__ = ["RefineConfig", "refine_reconstruction"]


@dataclass(frozen=True)
class RefineConfig:
    """Settings of `refine_reconstruction`."""

    steps: int = 300
    """Adam steps on the input views."""
    rays_per_view: int = 512
    """Random pixels rendered per view and step."""
    lr: float = 0.005
    """Learning rate of the planes (the decoder's is a tenth of it; 0 freezes it)."""
    decoder_lr_scale: float = 0.1
    opacity_weight: float = 1.0
    prior_weight: float = 1.0
    """Weight of the mean squared change of the planes from the prediction."""
    resolution: int | None = None
    """Side of the images the losses see (None: the views' own)."""
    samples_per_ray: int | None = 32
    """Samples per ray of the volume renders, half stratified and half by importance, at most the
    model's own ``samples_per_ray`` (None: the model's own)."""
    seed: int = 0
    num_threads: int = 1
    """torch threads during the refinement on a CPU, restored after (0 leaves torch's setting): on a
    shared CPU, more threads spend their time waiting on each other."""

    def __post_init__(self) -> None:
        if self.steps < 0 or self.rays_per_view < 1 or not self.lr > 0:
            raise InputError("refine steps must be >= 0, rays per view >= 1 and the learning rate > 0")
        if self.resolution is not None and self.resolution < 8:
            raise InputError(f"refine resolution must be >= 8 pixels, got {self.resolution}")
        if self.samples_per_ray is not None and self.samples_per_ray < 2:
            raise InputError(f"refine samples per ray must be >= 2, got {self.samples_per_ray}")
        if self.num_threads < 0:
            raise InputError(f"refine num_threads must be >= 0, got {self.num_threads}")


def refine_reconstruction(
    model: Reconstructor,
    views: PosedViews,
    config: RefineConfig = RefineConfig(),
    progress: bool = False,
) -> OptimizeResult:
    """Fine-tune a reconstructor's prediction for the four rig views on those views.

    Args:
        model: the reconstructor (its weights are not changed: the decoder is copied). Either
            stage: the losses see volume renders (a stage-B SDF read as a log-density,
            `fourview.recon.decoder.volume_density`).
        views: the four rig views, rig order, at any one elevation.
        config: schedule and weights.
        progress: progress bar with the loss.

    Returns:
        `OptimizeResult` with the refined field (the model's decoder kind) and the model's config.

    Raises:
        InputError: not four rig views, or views `check_view_set` rejects.
    """
    check_view_set(views)
    threads = torch.get_num_threads()
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    try:
        return _refine(model, views, config, progress)
    finally:
        torch.set_num_threads(threads)


def _refine(model: Reconstructor, views: PosedViews, config: RefineConfig, progress: bool) -> OptimizeResult:
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(config.seed)
    dev = next(model.parameters()).device
    # The renderer's sample jitter is drawn on the model's device (a CPU generator fails on CUDA).
    render_gen = gen if dev.type == "cpu" else torch.Generator(device=dev).manual_seed(config.seed)
    pred = model.predict(views)
    planes0 = pred.planes.detach().clone()
    tex0 = None if pred.texture_planes is None else pred.texture_planes.detach().clone()
    planes = planes0.clone().requires_grad_(True)
    tex = None if tex0 is None else tex0.clone().requires_grad_(True)
    refined = copy.deepcopy(model)
    refined.requires_grad_(False)
    params = [{"params": [p for p in (planes, tex) if p is not None], "lr": config.lr}]
    if config.decoder_lr_scale > 0:
        refined.decoder.requires_grad_(True)
        params.append({"params": list(refined.decoder.parameters()), "lr": config.lr * config.decoder_lr_scale})
    opt = torch.optim.Adam(params, fused=dev.type in ("cpu", "cuda"))
    # Stage B too: DMTet's silhouettes give weak gradients (`fourview.recon.render_mesh`), so its
    # SDF is refined as the log-density it started from (`fourview.recon.decoder.volume_density`).
    samples = min(config.samples_per_ray or model.config.samples_per_ray, model.config.samples_per_ray)
    volume = VolumeRenderer(replace(model.config, samples_per_ray=samples))

    res = config.resolution or views.resolution[0]
    alpha, rgb = resize_views(views.images, res)  # [V, H, W], [V, H, W, 3]
    v, h, w = alpha.shape
    target_rgb = (rgb * alpha[..., None] + (1.0 - alpha[..., None])).reshape(v, -1, 3)  # on white
    target_a = alpha.reshape(v, -1)
    c2w = torch.from_numpy(views.c2w).float()[None].to(dev)
    fov = torch.from_numpy(views.fov_deg).float()[None].to(dev)
    history: list[dict] = []
    bar = tqdm(total=config.steps, desc="refine", unit="step", disable=not progress, leave=False)
    for step in range(config.steps):
        pix = torch.stack([torch.randperm(h * w, generator=gen)[: config.rays_per_view] for _ in range(v)])  # [V, P]
        out = refined.render(ReconOutput(planes, tex), c2w, (h, w), pixels=pix[None].to(dev), generator=render_gen,
                             fov_deg=fov, renderer=volume)  # fmt: skip
        t_rgb = target_rgb.gather(1, pix[..., None].expand(-1, -1, 3)).to(dev)
        t_a = target_a.gather(1, pix).to(dev)
        l_rgb = (out.rgb[0] - t_rgb).square().mean()
        l_a = (out.opacity[0] - t_a).square().mean()
        l_prior = (planes - planes0).square().mean()
        if tex is not None:
            l_prior = l_prior + (tex - tex0).square().mean()
        loss = l_rgb + config.opacity_weight * l_a + config.prior_weight * l_prior
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.update()
        if step % 10 == 0 or step == config.steps - 1:
            rec = {"step": step + 1, **{k: float(t.detach()) for k, t in (("loss", loss), ("rgb", l_rgb),
                   ("opacity", l_a), ("prior", l_prior))}}  # fmt: skip
            history.append(rec)
            bar.set_postfix(loss=f"{rec['loss']:.4f}")
    bar.close()
    refined.eval()
    result = ReconOutput(planes.detach(), None if tex is None else tex.detach())
    return OptimizeResult(refined.field(result, 0), model.config, history, time.perf_counter() - start)

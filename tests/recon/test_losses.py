"""Losses and metrics: PSNR and SSIM against references, LPIPS detection without downloads, loss terms."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from fourview.errors import InputError
from fourview.recon.losses import (
    LPIPS_BACKBONE_FILES,
    LossConfig,
    PerceptualLoss,
    lpips_status,
    make_perceptual_loss,
    mask_loss,
    psnr,
    reconstruction_loss,
    ssim,
)


def _images(n: int = 2, c: int = 3, h: int = 24, w: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth image with structure and a noisy, shifted copy, both in [0, 1], float64."""
    g = torch.Generator().manual_seed(seed)
    axis_y = torch.linspace(0, 1, h, dtype=torch.float64)
    yy, xx = torch.meshgrid(axis_y, torch.linspace(0, 1, w, dtype=torch.float64), indexing="ij")
    base = torch.stack([0.5 + 0.4 * torch.sin(6 * xx + k) * torch.cos(4 * yy - k) for k in range(c)])  # [C, H, W]
    a = base.expand(n, c, h, w).clone()
    b = (a + 0.08 * torch.randn(n, c, h, w, generator=g, dtype=torch.float64)).clamp(0, 1)
    if n > 1:
        b[1] = b[1].roll(2, dims=-1)
    return a, b


def test_psnr_matches_the_definition():
    a = torch.zeros(2, 3, 4, 4)
    b = a.clone()
    b[0] += 0.1  # MSE 0.01 -> 20 dB
    b[1, :, :2] += 0.5  # half the pixels off by 0.5: MSE 0.125 -> 9.03 dB
    torch.testing.assert_close(psnr(b, a), torch.tensor([20.0, 10 * math.log10(1 / 0.125)]))
    assert torch.isinf(psnr(a, a)).all()
    with pytest.raises(InputError, match=re.escape("psnr needs equal shapes, got (2, 3, 4, 4) and (2, 2, 4, 4)")):
        psnr(a, a[:, :2])


def test_ssim_matches_skimage_gaussian_11x11_sigma_1_5():
    a, b = _images()
    ours = ssim(b, a)
    for i in range(2):
        ref = structural_similarity(
            a[i].permute(1, 2, 0).numpy(),
            b[i].permute(1, 2, 0).numpy(),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
            channel_axis=-1,
        )
        assert abs(float(ours[i]) - ref) < 1e-9, (float(ours[i]), ref)
    assert 0.2 < float(ours.min()) < 0.99  # a real, partial similarity (the test is not vacuous)
    assert torch.allclose(ssim(a, a), torch.ones(2, dtype=torch.float64))


def test_ssim_of_a_constant_pair_by_hand():
    # Constant images x = 0.2, y = 0.6: no variance, SSIM = (2 mx my + C1) / (mx^2 + my^2 + C1).
    x, y = torch.full((1, 1, 11, 11), 0.2, dtype=torch.float64), torch.full((1, 1, 11, 11), 0.6, dtype=torch.float64)
    c1 = 0.01**2
    expected = (2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1)
    assert abs(float(ssim(x, y)) - expected) < 1e-12


def test_ssim_is_differentiable_and_checks_sizes():
    a, b = _images()
    b = b.float().requires_grad_(True)
    (1 - ssim(b, a.float())).mean().backward()
    assert b.grad is not None and torch.isfinite(b.grad).all() and b.grad.abs().sum() > 0
    with pytest.raises(InputError, match="at least 11x11"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))


def test_lpips_status_looks_at_the_hub_cache_without_downloading(tmp_path, monkeypatch):
    pytest.importorskip("lpips")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    ok, reason = lpips_status("alex")
    assert not ok and "not in the torch hub cache" in reason and str(tmp_path) in reason
    assert not (tmp_path / "checkpoints").exists()  # nothing was fetched
    # "auto" falls back to SSIM and says what it is; forcing LPIPS is an error.
    loss = make_perceptual_loss("auto")
    assert isinstance(loss, PerceptualLoss) and loss.kind == "ssim"
    with pytest.raises(InputError, match="LPIPS unavailable"):
        make_perceptual_loss("lpips")
    # With the backbone file in place, it counts as available (not loaded here).
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / LPIPS_BACKBONE_FILES["alex"]).write_bytes(b"")
    ok, reason = lpips_status("alex")
    assert ok and LPIPS_BACKBONE_FILES["alex"] in reason


def test_perceptual_kinds_and_names():
    assert make_perceptual_loss("none") is None
    loss = make_perceptual_loss("ssim")
    a, b = _images()
    torch.testing.assert_close(loss(b.float(), a.float()), 1 - ssim(b.float(), a.float()))
    with pytest.raises(InputError, match="unknown perceptual loss 'vgg-ish'"):
        make_perceptual_loss("vgg-ish")
    with pytest.raises(InputError, match="an LPIPS module is needed exactly for kind 'lpips'"):
        PerceptualLoss("lpips")  # LPIPS without its network


def test_mask_losses_by_hand():
    opacity = torch.tensor([0.9, 0.2, 0.5])
    alpha = torch.tensor([1.0, 0.0, 1.0])
    bce = -(math.log(0.9) + math.log(0.8) + math.log(0.5)) / 3
    assert abs(float(mask_loss(opacity, alpha, "bce")) - bce) < 1e-6
    assert abs(float(mask_loss(opacity, alpha, "l1")) - (0.1 + 0.2 + 0.5) / 3) < 1e-6
    assert float(mask_loss(torch.ones(3), torch.ones(3), "bce")) < 1e-4  # clamped, finite
    with pytest.raises(InputError, match="unknown mask loss 'focal'"):
        mask_loss(opacity, alpha, "focal")


def test_reconstruction_loss_terms_and_weights():
    g = torch.Generator().manual_seed(0)
    rgb, target = torch.rand(2, 3, 16, 16, 3, generator=g), torch.rand(2, 3, 16, 16, 3, generator=g)
    opacity, alpha = torch.rand(2, 3, 16, 16, generator=g), (torch.rand(2, 3, 16, 16, generator=g) > 0.5).float()
    cfg = LossConfig(mse_weight=2.0, perceptual_weight=0.5, mask_weight=0.25)
    terms = reconstruction_loss(rgb, opacity, target, alpha, cfg, make_perceptual_loss("ssim"))
    mse = (rgb - target).square().mean()
    flat = lambda t: t.flatten(0, 1).permute(0, 3, 1, 2)  # noqa: E731
    perc = (1 - ssim(flat(rgb), flat(target))).mean()
    torch.testing.assert_close(terms.mse, mse)
    torch.testing.assert_close(terms.perceptual, perc)
    torch.testing.assert_close(terms.total, 2.0 * mse + 0.5 * perc + 0.25 * mask_loss(opacity, alpha))
    assert terms.perceptual_kind == "ssim" and set(terms.as_floats()) == {"loss", "mse", "mask", "ssim_loss"}
    # Scattered rays have no image structure: no perceptual term.
    rays = reconstruction_loss(
        rgb[:, :, 0], opacity[:, :, 0], target[:, :, 0], alpha[:, :, 0], cfg, make_perceptual_loss("ssim")
    )
    assert rays.perceptual is None and "ssim_loss" not in rays.as_floats()
    with pytest.raises(InputError, match="LossConfig.mask_weight must be >= 0, got -1.0"):
        LossConfig(mask_weight=-1.0)
    with pytest.raises(InputError, match=re.escape("rendered rgb (2, 3, 16, 16, 3) and target (2, 3, 16, 16, 2)")):
        reconstruction_loss(rgb, opacity, target[..., :2], alpha)


def test_psnr_and_ssim_on_numpy_noise_agree_with_skimage_psnr():
    from skimage.metrics import peak_signal_noise_ratio

    a, b = _images(n=1)
    ref = peak_signal_noise_ratio(a[0].numpy(), b[0].numpy(), data_range=1.0)
    assert abs(float(psnr(b, a)[0]) - ref) < 1e-4
    assert np.isfinite(ref)

"""Tests of the image metrics: PSNR, SSIM, LPIPS only when its weights are present."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fourview.errors import InputError
from fourview.evaluation.metrics import image_scores, load_lpips
from fourview.recon.losses import lpips_status


def test_psnr_of_a_known_noise_level():
    target = np.full((2, 16, 16, 3), 0.5, np.float32)
    signs = np.where((np.arange(16)[:, None] + np.arange(16)[None]) % 2 == 0, 1.0, -1.0)
    pred = target + np.float32(0.1) * signs[None, :, :, None].astype(np.float32)  # MSE 0.01
    scores = image_scores(pred, target)
    assert scores.psnr == pytest.approx(20.0, abs=1e-3)  # 10 log10(1 / 0.01)
    assert scores.views == 2 and scores.ssim < 1.0
    same = image_scores(target, target)
    assert same.ssim == pytest.approx(1.0) and math.isinf(same.psnr)


def test_rgba_is_composited_on_white_first():
    rng = np.random.default_rng(0)
    pred, target = rng.random((1, 16, 16, 4), np.float32), rng.random((1, 16, 16, 4), np.float32)
    pred[..., 3] = target[..., 3] = 0.0  # transparent everywhere: both are white
    scores = image_scores(pred, target)
    assert math.isinf(scores.psnr) and scores.ssim == pytest.approx(1.0)
    target[..., 3] = 1.0
    target[..., :3] = 0.0  # opaque black against white: MSE 1
    assert image_scores(pred, target).psnr == pytest.approx(0.0, abs=1e-6)


def test_lpips_without_its_weights_is_reported_unavailable(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty hub cache
    lpips = load_lpips()
    assert not lpips.available and "not in the torch hub cache" in lpips.note
    images = np.full((1, 16, 16, 3), 0.5, np.float32)
    scores = image_scores(images, images, lpips)
    assert scores.lpips is None and scores.lpips_note == lpips.note
    assert image_scores(images, images).lpips_note == "not requested"


def test_lpips_with_its_weights_is_zero_for_equal_images():
    if not lpips_status()[0]:
        pytest.skip("LPIPS backbone weights are not on this machine")
    lpips = load_lpips()
    images = np.random.default_rng(0).random((1, 64, 64, 3), np.float32)
    assert image_scores(images, images, lpips).lpips == pytest.approx(0.0, abs=1e-6)


def test_image_scores_refuse_mismatched_stacks():
    with pytest.raises(InputError, match="stacks of one shape"):
        image_scores(np.zeros((1, 16, 16, 3)), np.zeros((1, 16, 16, 4)))

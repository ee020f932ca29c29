"""Metric definitions: PSNR, SSIM, label accuracy, matching, LPIPS fallback, baselines."""

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from fedsim.attacks import Normalization, evaluate, label_accuracy, lpips_distance, psnr, ssim


def test_psnr_of_identical_images_is_inf():
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert np.all(np.isinf(psnr(x, x))) and np.all(psnr(x, x) > 0)


def test_psnr_with_mse_1e2_is_20_db():
    x = 0.9 * torch.rand(
        3, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    y = x + 0.1  # stays inside [0, 1], so clamping does not change the MSE of exactly 1e-2
    np.testing.assert_allclose(psnr(y, x), 20.0, atol=1e-3)


def test_psnr_clamps_to_unit_range():
    x = torch.zeros(1, 1, 4, 4)
    assert psnr(x - 5.0, x)[0] == math.inf


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_matches_scikit_image(channels):
    gen = torch.Generator().manual_seed(2)
    for _ in range(20):
        a = torch.rand(1, channels, 28, 28, generator=gen, dtype=torch.float64)
        b = (a + 0.2 * torch.randn(a.shape, generator=gen, dtype=torch.float64)).clamp(0, 1)
        ref = structural_similarity(
            a[0].permute(1, 2, 0).numpy(),
            b[0].permute(1, 2, 0).numpy(),
            channel_axis=-1,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
        )
        assert abs(ssim(a, b)[0] - ref) < 1e-3
        assert abs(ssim(a, a)[0] - 1.0) < 1e-6


def test_label_accuracy_is_multiset_overlap():
    assert label_accuracy([1, 1, 2], [1, 2, 2]) == pytest.approx(2 / 3)
    assert label_accuracy(torch.tensor([3, 1]), torch.tensor([1, 3])) == 1.0


def test_permuted_perfect_reconstruction_scores_inf_after_matching():
    gen = torch.Generator().manual_seed(3)
    target = torch.rand(5, 1, 28, 28, generator=gen)
    perm = torch.tensor([3, 0, 4, 1, 2])
    labels = torch.arange(5)
    metrics = evaluate(target[perm], target, Normalization(), labels[perm], labels)
    assert np.all(np.isinf(metrics.psnr_db))
    assert metrics.label_accuracy == 1.0
    assert np.allclose(metrics.ssim, 1.0)


def test_evaluate_denormalizes_and_reports_baselines():
    norm = Normalization(mean=(0.5,), std=(0.25,))
    target01 = torch.full((2, 1, 16, 16), 0.5)
    mean_image = torch.full((1, 16, 16), 0.4)
    metrics = evaluate(
        norm.normalize(target01),
        norm.normalize(target01),
        norm,
        torch.tensor([0, 1]),
        torch.tensor([0, 1]),
        mean_image,
    )
    np.testing.assert_allclose(metrics.zero_image_psnr_db, -10 * np.log10(0.25))
    np.testing.assert_allclose(metrics.mean_image_psnr_db, 20.0, atol=1e-3)
    assert np.all(np.isinf(metrics.psnr_db))


def test_lpips_is_nan_with_a_reason_when_unavailable():
    x = torch.rand(2, 1, 28, 28)
    values, note = lpips_distance(x, x)
    if note:
        assert np.all(np.isnan(values)) and "LPIPS unavailable" in note
    else:  # an environment with the package and cached AlexNet weights
        assert np.allclose(values, 0.0, atol=1e-4)

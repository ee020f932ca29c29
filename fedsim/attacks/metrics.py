"""Reconstruction quality: PSNR, SSIM, LPIPS, label accuracy, batch matching and baselines.

All image metrics work on denormalised images clamped to [0, 1] (data range 1), one value per
image, after reconstructions are matched to targets by a Hungarian assignment on MSE.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from skimage.metrics import structural_similarity
from torch import Tensor

from fedsim.attacks.observation import Normalization


def _batch(images: Tensor) -> Tensor:
    return (images if images.dim() == 4 else images.unsqueeze(0)).detach().to(torch.float64)


def psnr(reconstruction: Tensor, target: Tensor) -> np.ndarray:
    """Per-image PSNR in dB with data range 1; +inf where the images are identical.

    Parameters
    ----------
    reconstruction, target
        Images in [0, 1], shape ``(B, C, H, W)`` or ``(C, H, W)``; both are clamped to [0, 1].
    """
    rec, tgt = _batch(reconstruction).clamp(0, 1), _batch(target).clamp(0, 1)
    mse = ((rec - tgt) ** 2).flatten(1).mean(dim=1).numpy()
    with np.errstate(divide="ignore"):
        return np.where(mse == 0, np.inf, -10.0 * np.log10(mse))


def ssim(reconstruction: Tensor, target: Tensor) -> np.ndarray:
    """Per-image standard SSIM (Gaussian window σ 1.5, K1 0.01, K2 0.03, data range 1)."""
    rec, tgt = _batch(reconstruction).clamp(0, 1), _batch(target).clamp(0, 1)
    values = []
    for r, t in zip(rec.numpy(), tgt.numpy(), strict=True):
        values.append(
            structural_similarity(
                r,
                t,
                channel_axis=0,
                data_range=1.0,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
            )
        )
    return np.asarray(values)


def lpips_distance(reconstruction: Tensor, target: Tensor) -> tuple[np.ndarray, str]:
    """Per-image LPIPS (AlexNet) or NaN with the reason it is unavailable.

    Images smaller than 32 px are bilinearly upsampled to 64 px first.  The AlexNet backbone
    comes from torchvision's weight download, which fails offline; that yields NaN.
    """
    rec, tgt = _batch(reconstruction).clamp(0, 1).float(), _batch(target).clamp(0, 1).float()
    nan = np.full(rec.shape[0], np.nan)
    try:
        import lpips  # type: ignore[import-not-found]

        metric = lpips.LPIPS(net="alex", verbose=False)
    except Exception as error:  # noqa: BLE001 - any failure means "not available"
        return nan, f"LPIPS unavailable: {type(error).__name__}: {error}"
    if rec.shape[-1] < 32:
        rec, tgt = (
            torch.nn.functional.interpolate(t, size=64, mode="bilinear") for t in (rec, tgt)
        )
    if rec.shape[1] == 1:
        rec, tgt = rec.repeat(1, 3, 1, 1), tgt.repeat(1, 3, 1, 1)
    with torch.no_grad():
        return metric(rec, tgt, normalize=True).flatten().double().numpy(), ""


def label_accuracy(recovered: Tensor | list[int], true: Tensor | list[int]) -> float:
    """Multiset overlap of recovered and true labels, divided by the batch size."""
    rec = Counter(torch.as_tensor(recovered).tolist())
    tru = Counter(torch.as_tensor(true).tolist())
    return sum((rec & tru).values()) / sum(tru.values())


def match_order(reconstruction: Tensor, target: Tensor) -> np.ndarray:
    """Hungarian assignment on MSE: ``reconstruction[order[j]]`` is matched to ``target[j]``."""
    rec, tgt = _batch(reconstruction).clamp(0, 1), _batch(target).clamp(0, 1)
    cost = torch.cdist(tgt.flatten(1), rec.flatten(1)) ** 2
    rows, cols = linear_sum_assignment(cost.numpy())
    return cols[np.argsort(rows)]


@dataclass(frozen=True)
class ReconstructionMetrics:
    """Per-image metrics of one attacked batch (after matching) and its trivial baselines.

    ``psnr_db``, ``ssim``, ``lpips`` and the baselines are per target image; PSNRs in dB.
    """

    psnr_db: np.ndarray
    ssim: np.ndarray
    lpips: np.ndarray
    lpips_note: str
    label_accuracy: float
    zero_image_psnr_db: np.ndarray
    mean_image_psnr_db: np.ndarray
    order: np.ndarray

    def summary(self) -> dict[str, float]:
        """Batch mean and max PSNR (dB), mean SSIM/LPIPS, label accuracy and mean baselines."""
        return {
            "psnr_mean_db": float(np.mean(self.psnr_db)),
            "psnr_max_db": float(np.max(self.psnr_db)),
            "ssim_mean": float(np.mean(self.ssim)),
            "lpips_mean": float(np.mean(self.lpips)),
            "label_accuracy": self.label_accuracy,
            "zero_image_psnr_db": float(np.mean(self.zero_image_psnr_db)),
            "mean_image_psnr_db": float(np.mean(self.mean_image_psnr_db)),
        }


def evaluate(
    reconstruction: Tensor,
    target: Tensor,
    normalization: Normalization,
    recovered_labels: Tensor,
    true_labels: Tensor,
    mean_image: Tensor | None = None,
) -> ReconstructionMetrics:
    """Score a reconstruction against the private batch.

    Parameters
    ----------
    reconstruction, target
        Batches ``(B, C, H, W)`` in model input space (denormalised and clamped here).
    normalization
        The victim model's input normalization.
    recovered_labels, true_labels
        Class indices, shape ``(B,)``.
    mean_image
        Dataset mean image ``(C, H, W)`` in [0, 1] for the mean-image baseline (NaN if None).
    """
    rec = normalization.denormalize(_batch(reconstruction)).clamp(0, 1)
    tgt = normalization.denormalize(_batch(target)).clamp(0, 1)
    order = match_order(rec, tgt)
    rec = rec[torch.as_tensor(order)]
    lp, note = lpips_distance(rec, tgt)
    zero = psnr(torch.zeros_like(tgt), tgt)
    if mean_image is None:
        mean_psnr = np.full(tgt.shape[0], np.nan)
    else:
        mean_psnr = psnr(_batch(mean_image).expand_as(tgt), tgt)
    return ReconstructionMetrics(
        psnr_db=psnr(rec, tgt),
        ssim=ssim(rec, tgt),
        lpips=lp,
        lpips_note=note,
        label_accuracy=label_accuracy(recovered_labels, true_labels),
        zero_image_psnr_db=zero,
        mean_image_psnr_db=mean_psnr,
        order=order,
    )

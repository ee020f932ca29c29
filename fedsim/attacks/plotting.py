"""PNG grids of originals (top row) above reconstructions (bottom row)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from torch import Tensor


def save_reconstruction_grid(
    originals: Tensor,
    reconstructions: Tensor,
    path: str | Path,
    psnr_db: Sequence[float] | None = None,
) -> Path:
    """Write a two-row PNG grid; each reconstruction is titled with its PSNR in dB.

    Parameters
    ----------
    originals, reconstructions
        Matched batches of images in [0, 1], shape ``(B, C, H, W)`` (C = 1 or 3).
    path
        Output file (``.png``).
    psnr_db
        Per-image PSNR in dB for the titles, or None for no titles.
    """
    n = originals.shape[0]
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.4), squeeze=False)
    for row, images in enumerate((originals, reconstructions)):
        for j in range(n):
            img = images[j].detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
            ax = axes[row][j]
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 1 and psnr_db is not None:
                ax.set_title(f"{psnr_db[j]:.1f} dB", fontsize=8)
    axes[0][0].set_ylabel("original")
    axes[1][0].set_ylabel("reconstruction")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, format="png", dpi=100)
    plt.close(fig)
    return out

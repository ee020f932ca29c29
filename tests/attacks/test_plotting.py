"""The reconstruction grid writes a valid PNG."""

import torch

from fedsim.attacks import save_reconstruction_grid


def test_grid_is_a_png(tmp_path):
    gen = torch.Generator().manual_seed(0)
    originals, recon = (
        torch.rand(3, 1, 28, 28, generator=gen),
        torch.rand(3, 1, 28, 28, generator=gen),
    )
    path = save_reconstruction_grid(
        originals, recon, tmp_path / "grid.png", [12.3, 45.6, float("inf")]
    )
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    rgb = save_reconstruction_grid(
        torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32), tmp_path / "c.png"
    )
    assert rgb.read_bytes()[:4] == b"\x89PNG"

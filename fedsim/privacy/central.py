"""DP-FedAvg's server step (McMahan et al. 2018): noise on the sum, a fixed denominator."""

from __future__ import annotations

import torch

from fedsim.rng import torch_generator


class CentralNoise:
    """Turns the decoded mean of ``n`` clipped updates into DP-FedAvg's noised estimate.

    ``release(rnd, mean, n) = (n * mean + N(0, (z C)^2 I)) / m``: the sum of the clipped
    updates plus Gaussian noise of std ``z C`` per coordinate, divided by the *expected* number
    of clients ``m`` (the fixed-denominator estimator), not by ``n``, so a dropped client does
    not change the scale. Round ``rnd``'s noise comes from the server's own stream
    ``(seed, round)``, so it is the same whatever the network does, and after a resume.
    """

    def __init__(self, noise_multiplier: float, clip_norm: float, expected_clients: int,
                 seed: int):
        self.std = noise_multiplier * clip_norm
        self.expected_clients, self.seed = expected_clients, seed

    def release(self, rnd: int, mean: torch.Tensor, n: int) -> torch.Tensor:
        """The noised update of round ``rnd`` from the weighted mean of ``n`` (uniform) updates."""
        total = mean.double() * n
        if self.std > 0:
            noise = torch.randn(mean.numel(), generator=torch_generator(self.seed, "round", rnd),
                                dtype=torch.float64)
            total = total + self.std * noise.to(mean.device)
        return (total / self.expected_clients).to(mean.dtype)

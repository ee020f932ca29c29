"""Fixed-point encoding of weighted updates into Z_{2^k}, and decoding of their sum.

A client with weight ``w`` (its sample count, or 1) and float update ``x`` (p values) encodes the
p + 1 ring elements ``(round(w x_i 2^f) for i < p) + (w,)``: the update scaled by its weight in
fixed point with ``f`` fractional bits, then the weight itself, so the server learns only the
survivors' total weight. Negative values are two's complement mod ``2^k``.

Range: the sum over ``n`` clients is exact (no wrap-around) while every coordinate's true sum
lies in ``[-(2^(k-1) - 1), 2^(k-1) - 1]``; each client therefore clips its scaled values to
``+-c`` with ``c = floor((2^(k-1) - 1) / n)`` (``n``: clients that advertised keys), which
guarantees it. With k = 32, f = 16 and n = 10 that is ``|w x_i| <= 3276.7``; k = 64 lifts it to
about 1.4e14. Decoding: ``mean_i = signed(S_i) / 2^f / signed(S_p)``, exactly the weighted mean
of the fixed-point values (resolution ``2^-f / W`` for total weight ``W``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Ring:
    """Integers mod ``2^modulus_bits`` (32 or 64) carrying ``fraction_bits`` fixed-point bits."""

    modulus_bits: int
    fraction_bits: int

    def __post_init__(self) -> None:
        if self.modulus_bits not in (32, 64):
            raise ValueError(f"modulus_bits must be 32 or 64, got {self.modulus_bits}")
        if not 0 <= self.fraction_bits < self.modulus_bits - 1:
            raise ValueError(f"fraction_bits must be in 0..{self.modulus_bits - 2}, "
                             f"got {self.fraction_bits}")

    @property
    def dtype(self) -> np.dtype:
        """Unsigned little-endian storage (numpy arithmetic on it wraps mod 2^k)."""
        return np.dtype("<u4" if self.modulus_bits == 32 else "<u8")

    @property
    def element_bytes(self) -> int:
        return self.modulus_bits // 8

    def clip_bound(self, n: int) -> int:
        """Largest |scaled value| a client may send when ``n`` clients are summed."""
        return (2 ** (self.modulus_bits - 1) - 1) // n

    def encode(self, update: torch.Tensor | np.ndarray, weight: int, n: int) -> tuple[np.ndarray, int]:
        """``(ring elements (p + 1), count of clipped coordinates)`` of ``weight * update``."""
        x = np.asarray(update, dtype=np.float64).reshape(-1)
        scaled = np.rint(x * (float(weight) * 2.0 ** self.fraction_bits))
        c = float(self.clip_bound(n))
        clipped = int(np.count_nonzero(np.abs(scaled) > c))
        ints = np.clip(scaled, -c, c).astype(np.int64)
        out = np.empty(x.size + 1, dtype=self.dtype)
        out[:-1] = ints.view(np.uint64).astype(self.dtype)  # two's complement, truncated mod 2^k
        out[-1] = weight
        return out, clipped

    def signed(self, elements: np.ndarray) -> np.ndarray:
        """Ring elements as signed integers (int64) in ``[-2^(k-1), 2^(k-1))``."""
        signed_dtype = np.int32 if self.modulus_bits == 32 else np.int64
        return elements.astype(self.dtype).view(signed_dtype).astype(np.int64)

    def decode_mean(self, total: np.ndarray) -> torch.Tensor:
        """The weighted mean update (float32, p values) from the sum of encoded inputs."""
        s = self.signed(total)
        weight = int(s[-1])
        if weight <= 0:
            raise ValueError(f"secure aggregation: total weight {weight} is not positive")
        mean = s[:-1].astype(np.float64) / 2.0 ** self.fraction_bits / weight
        return torch.from_numpy(mean).float()

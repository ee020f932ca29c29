"""ENN codec (Li & Han 2019): clients send codes of chunks, the server decodes only their average.

Pipeline for a flat update of ``numel`` values (chunk length n, code length m, N slots):

1. zero-pad to ``C = ceil(numel / n)`` chunks of n and multiply by ``scale``, one factor common
   to every client (chosen so the scaled values have roughly the pre-training variance; a
   per-client factor would break "the decoder outputs the average");
2. encode each chunk with the shared encoder to m float32 values;
3. payload (little endian): magic ``b"EC"`` (2 B), m (uint16, 2 B), numel (uint32, 4 B), then the
   ``C * m`` codes as float32 — exactly ``8 + 4 m ceil(numel / n)`` bytes
   (:meth:`EnnCodec.payload_nbytes`);
4. the server stacks, per chunk index, the codes of slots 0..N-1 in slot order, decodes the mean
   chunk, divides by ``scale`` and reassembles (trimming the padding).

Fewer than N reporters (k < N): missing slots get the code of a zero update; the decoder then
approximates ``(1/N) * sum of the k reporters' chunks``, so the result is multiplied by N/k.
This multiplies the approximation error by N/k as well.

The decoder returns the **unweighted** mean, so aggregation requires uniform weights (1/k each)
and raises ``ValueError`` otherwise. A single payload cannot be decoded (``decode`` raises
``NotImplementedError``): individual updates are hidden from the server by design.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from fedsim.codecs.base import EncodedUpdate, UpdateCodec
from fedsim.enn.cache import load_or_train
from fedsim.enn.config import EnnConfig
from fedsim.enn.network import EnnNet
from fedsim.wire import pack_vector

#: Payload header size in bytes: magic (2) + m (uint16) + numel (uint32).
HEADER_BYTES = 8
_MAGIC = b"EC"
_HEADER = struct.Struct("<2sHI")


def common_scale(update_std: float, sample_var: float = 0.1) -> float:
    """Scale that maps updates of standard deviation ``update_std`` to variance ``sample_var``.

    Use one value for all clients (e.g. measured on the first round, or fixed per scenario).
    """
    if update_std <= 0:
        raise ValueError("update_std must be positive")
    return math.sqrt(sample_var) / update_std


class EnnCodec(UpdateCodec):
    """Uplink codec around a pre-trained :class:`~fedsim.enn.network.EnnNet`.

    Parameters
    ----------
    net : EnnNet
        Trained network (its config gives n, m and N).
    scale : float
        Common factor applied to every update before encoding (dimensionless, > 0); the decoded
        mean is divided by it. See :func:`common_scale`.
    """

    name = "enn"

    def __init__(self, net: EnnNet, *, scale: float):
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.net = net.eval().requires_grad_(False)
        self.config: EnnConfig = net.config
        self.scale = float(scale)
        with torch.no_grad():
            self._zero_code = self.net.encode(torch.zeros(self.config.n))

    @classmethod
    def from_args(cls, *, scale: float, cache_dir: Path | None = None, **fields) -> EnnCodec:
        """Codec from config-like arguments, pre-training (or loading from cache) the network.

        Parameters
        ----------
        scale : float
            Common update scale (see :class:`EnnCodec`).
        cache_dir : Path, optional
            Overrides the cache directory (default ``$FEDSIM_CACHE`` or ``~/.cache/fedsim/enn``).
        **fields
            Any :class:`~fedsim.enn.config.EnnConfig` field: ``n``, ``ratio``, ``slots``,
            ``residual_blocks``, ``scheme``, ``encoder_hidden``, ``decoder_width``,
            ``activation``, ``sample_var``, ``samples``, ``steps``, ``batch``, ``lr``, ``seed``.
        """
        result, _ = load_or_train(EnnConfig(**fields), cache_dir)
        return cls(result.net, scale=scale)

    def payload_nbytes(self, numel: int) -> int:
        """Exact payload size in bytes for an update of ``numel`` values."""
        return HEADER_BYTES + 4 * self.config.m * self._chunks(numel)

    def setup_payload(self) -> bytes:
        """Encoder weights (state-dict order, fp32 wire format of :mod:`fedsim.wire`)."""
        flat = torch.cat([p.reshape(-1) for p in self.net.encoder.state_dict().values()])
        return pack_vector(flat)

    def encode(self, update: torch.Tensor, *, seed: int, slot: int) -> EncodedUpdate:
        if update.dim() != 1:
            raise ValueError(f"expected a flat update, got shape {tuple(update.shape)}")
        numel = update.numel()
        n, c = self.config.n, self._chunks(numel)
        padded = torch.zeros(c * n)
        padded[:numel] = update.detach().float().cpu()
        with torch.no_grad():
            codes = self.net.encode(self.scale * padded.view(c, n))
        body = np.ascontiguousarray(codes.numpy(), dtype="<f4").tobytes()
        payload = _HEADER.pack(_MAGIC, self.config.m, numel) + body
        return EncodedUpdate(payload, {"bits_per_coord": 8.0 * len(payload) / numel})

    def aggregate(self, payloads: Sequence[bytes], weights: Sequence[float], slots: Sequence[int],
                  *, numel: int) -> torch.Tensor:
        k, big_n = len(payloads), self.config.slots
        if not 1 <= k <= big_n or len(weights) != k or len(slots) != k:
            raise ValueError(f"need 1..{big_n} payloads with one weight and slot each")
        if any(not math.isclose(w, 1.0 / k, rel_tol=1e-6) for w in weights):
            raise ValueError("ENN decodes the unweighted mean: weights must all equal 1/k")
        if len(set(slots)) != k or not all(0 <= s < big_n for s in slots):
            raise ValueError(f"slots must be distinct values in 0..{big_n - 1}, got {list(slots)}")
        c = self._chunks(numel)
        codes = self._zero_code.expand(c, big_n, self.config.m).clone()
        for payload, slot in zip(payloads, slots):
            codes[:, slot] = self._parse(payload, numel)
        with torch.no_grad():
            mean = self.net.decode_mean(codes) * (big_n / k) / self.scale
        return mean.reshape(-1)[:numel].contiguous()

    def _chunks(self, numel: int) -> int:
        if numel < 1:
            raise ValueError("numel must be positive")
        return -(-numel // self.config.n)

    def _parse(self, payload: bytes, numel: int) -> torch.Tensor:
        if len(payload) != self.payload_nbytes(numel):
            raise ValueError(f"ENN payload has {len(payload)} bytes, expected {self.payload_nbytes(numel)}")
        magic, m, count = _HEADER.unpack_from(payload)
        if magic != _MAGIC or m != self.config.m or count != numel:
            raise ValueError("payload does not match this ENN codec (magic, m or numel)")
        arr = np.frombuffer(payload, dtype="<f4", offset=HEADER_BYTES)
        return torch.from_numpy(arr.copy()).view(-1, self.config.m)

"""ENN with layer-aligned linear codes refitted every round (``codec: {kind: enn, structure: layers}``).

Every round the server fits one linear code per weight matrix (:mod:`fedsim.enn.layer_code`) on
update statistics it makes itself: ``proxy.per_round`` FedAvg updates of the **current** global
model on the public proxy set (:mod:`fedsim.enn.proxy`), plus the global update it applied last
round. It sends the codes (all ``U``, float32, :mod:`fedsim.wire` format) to each selected client
with the global model (message ``codec_round``, counted in ``bytes_down``). Clients send
``c = U^T M`` per coded matrix and the other entries (biases, small matrices) as they are; the server's decoder outputs the
weighted mean directly, ``U (sum_i w_i c_i)`` (linear: exact for any weights and any number of
reporters).

Payload (little endian): magic ``b"EL"`` (2 B), ratio (uint16), numel (uint32), round (uint32),
then per state entry its codes (``r x cols``) or its values, float32: ``12 + 4 (sum r cols +
uncoded values)`` bytes (:meth:`EnnLayerCodec.encoded_nbytes`).

Error feedback needs no extra download: the client's own decoded contribution is ``U U^T M``.
What the server learns: a linear code has a left inverse on its range, so whoever holds ``U``
(the server, any client, an eavesdropper on the downlink) decodes each client's projected update
``U U^T M_i`` from its payload alone (:meth:`EnnLayerCodec.decode`); the attack table measures it.
"""

from __future__ import annotations

import copy
import math
import struct
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from fedsim.codecs.base import EncodedUpdate, UpdateCodec
from fedsim.codecs.feedback import FeedbackEncoder
from fedsim.enn.layer_code import MIN_ROWS, code_rank, coded_entries, fit_bases, layer_views
from fedsim.enn.proxy import (
    EnnProxyConfig,
    proxy_digits,
    proxy_partition,
    refit_updates,
)
from fedsim.wire import pack_vector

_HEADER = struct.Struct("<2sHII")
_MAGIC = b"EL"


class EnnLayerCodec(UpdateCodec):
    """Layer-aligned linear ENN whose codes the server refits every round on proxy updates.

    Parameters
    ----------
    model
        The run's initial global model (shapes, and the network the proxy clients train).
    ratio
        Rows of a weight matrix per code row.
    min_rows
        Weight matrices with fewer rows are sent uncoded.
    proxy
        How the server makes its proxy updates each round.
    error_feedback
        Clients keep what their code lost and add it to their next update.
    """

    name = "enn"

    def __init__(self, model: nn.Module, *, ratio: int, proxy: EnnProxyConfig,
                 error_feedback: bool = False, min_rows: int = MIN_ROWS):
        state = model.state_dict()
        if any(not v.is_floating_point() for v in state.values()):
            raise ValueError("codec 'enn' with structure: layers needs a model whose state is all "
                             "floating point")
        self.ratio, self.proxy, self.error_feedback = ratio, proxy, error_feedback
        self.names = list(state)
        self.shapes = [tuple(v.shape) for v in state.values()]
        self.min_rows = min_rows
        self.coded = coded_entries(self.shapes, ratio, min_rows)
        if not any(self.coded):
            largest = max((s[0] for s in self.shapes if len(s) >= 2), default=0)
            raise ValueError(f"codec 'enn' with structure: layers codes no weight matrix of this "
                             f"model (the most rows is {largest}, min_rows is {min_rows}, and a "
                             f"code must save 1 % of the values): lower min_rows")
        # values each entry puts on the wire: its code rows x columns, or all of its values
        self._wire_sizes = [code_rank(s[0], ratio) * (math.prod(s) // s[0]) if coded
                            else math.prod(s) for s, coded in zip(self.shapes, self.coded)]
        self._numel = sum(math.prod(s) for s in self.shapes)
        self._work = copy.deepcopy(model).cpu()
        self._data: tuple | None = None  # proxy images, labels and partition (loaded once)
        self._bases: dict[int, list[torch.Tensor | None]] = {}  # round -> its codes
        self._last_global: torch.Tensor | None = None
        self._last_round: int | None = None

    # -- server side: the round's codes ---------------------------------------------------
    def round_payload(self, rnd: int, global_wire: torch.Tensor) -> bytes:
        """Fit round ``rnd``'s codes from ``global_wire`` (the model the round starts from);
        their bytes, which every selected client downloads."""
        if self._data is None:
            x, y = proxy_digits()
            self._data = (x, y, proxy_partition(y, self.proxy))
        flat = global_wire.detach().float().cpu()
        samples = refit_updates(self._work, *self._data, self.proxy, flat, rnd)
        previous = (flat - self._last_global if self._last_global is not None
                    and self._last_round == rnd - 1 else None)
        self._bases[rnd] = fit_bases(samples, self.shapes, self.ratio, previous, self.min_rows)
        self._last_global, self._last_round = flat, rnd
        return pack_vector(torch.cat([u.reshape(-1) for u in self._bases[rnd] if u is not None]))

    def bases(self, rnd: int) -> list[torch.Tensor | None]:
        """Round ``rnd``'s codes (the server fitted them when it dispatched the round)."""
        if rnd not in self._bases:
            raise ValueError(f"no ENN layer codes for round {rnd} (the server sends them with "
                             f"the round's model)")
        return self._bases[rnd]

    # -- sizes -------------------------------------------------------------------------------
    def encoded_nbytes(self, numel: int, rnd: int) -> int:
        if numel != self._numel:
            raise ValueError(f"update has {numel} values, the model {self._numel}")
        return _HEADER.size + 4 * sum(self._wire_sizes)

    # -- client side ---------------------------------------------------------------------------
    def for_client(self, cid: int) -> UpdateCodec:
        return FeedbackEncoder(self) if self.error_feedback else self

    def encode(self, update: torch.Tensor, *, seed: int, slot: int, rnd: int = 0) -> EncodedUpdate:
        if update.dim() != 1:
            raise ValueError(f"expected a flat update, got shape {tuple(update.shape)}")
        x = update.detach().float().cpu()
        parts = [v.reshape(-1) if u is None else (u.T @ v).reshape(-1)
                 for u, v in zip(self.bases(rnd), layer_views(x, self.shapes))]
        body = np.ascontiguousarray(torch.cat(parts).numpy(), dtype="<f4").tobytes()
        payload = _HEADER.pack(_MAGIC, self.ratio, x.numel(), rnd) + body
        return EncodedUpdate(payload, {"bits_per_coord": 8.0 * len(payload) / x.numel()})

    # -- decoding ----------------------------------------------------------------------------
    def aggregate(self, payloads: Sequence[bytes], weights: Sequence[float], slots: Sequence[int],
                  *, numel: int) -> torch.Tensor:
        if not payloads or len(weights) != len(payloads):
            raise ValueError("need at least one payload and one weight per payload")
        parsed = [self._parse(p, numel) for p in payloads]
        rounds = {rnd for rnd, _ in parsed}
        if len(rounds) != 1:
            raise ValueError(f"payloads of several rounds {sorted(rounds)} cannot be averaged")
        mean = sum(w * codes.double() for (_, codes), w in zip(parsed, weights))
        return self._decode_codes(mean.float(), rounds.pop())

    def decode(self, payload: bytes, *, numel: int) -> torch.Tensor:
        """One client's projected update ``U U^T M`` per matrix (what any holder of the codes
        computes from its payload)."""
        rnd, codes = self._parse(payload, numel)
        return self._decode_codes(codes, rnd)

    def entry_codes(self, payload: bytes) -> dict[str, torch.Tensor]:
        """State entry name -> its code ``U`` in the payload's round (coded entries only)."""
        rnd = _HEADER.unpack_from(payload)[3]
        return {n: u for n, u in zip(self.names, self.bases(rnd)) if u is not None}

    def own_contribution(self, payload: bytes, slot: int, numel: int) -> torch.Tensor:
        """The client's part of the decoded mean, times the number of reporters (linear code)."""
        return self.decode(payload, numel=numel)

    def _decode_codes(self, codes: torch.Tensor, rnd: int) -> torch.Tensor:
        parts = codes.split(self._wire_sizes)
        return torch.cat([c if u is None else (u @ c.view(u.shape[1], -1)).reshape(-1)
                          for u, c in zip(self.bases(rnd), parts)])

    def _parse(self, payload: bytes, numel: int) -> tuple[int, torch.Tensor]:
        expected = self.encoded_nbytes(numel, 0)
        if len(payload) != expected:
            raise ValueError(f"ENN layer payload has {len(payload)} bytes, expected {expected}")
        magic, ratio, count, rnd = _HEADER.unpack_from(payload)
        if magic != _MAGIC or ratio != self.ratio or count != numel:
            raise ValueError("payload does not match this ENN layer codec (magic, ratio or numel)")
        arr = np.frombuffer(payload, dtype="<f4", offset=_HEADER.size)
        return rnd, torch.from_numpy(arr.copy())

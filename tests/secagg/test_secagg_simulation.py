"""Secure aggregation inside the simulation: the exact sum of the survivors under 0, 1 and 30%
dropouts, the documented bytes per client in the messages table, a server that never holds an
unmasked single update, determinism, aborted rounds and config errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import simpy
import torch
from object_graph import reachable

from fedsim import engine
from fedsim.data import load_dataset
from fedsim.domain import PlainDomain
from fedsim.hooks import EngineHooks
from fedsim.message import payload_bytes
from fedsim.network import Network
from fedsim.nodes.availability import Availability
from fedsim.nodes.router import Router
from fedsim.nodes.secagg_server import SecAggServer
from fedsim.recorder import Recorder
from fedsim.scenario import ScenarioError, load_scenario
from fedsim.secagg import Ring
from fedsim.wire import pack_vector, unpack_vector

ROOT = Path(__file__).resolve().parents[2]
N = 10
BASE = ["rounds=1", f"data.num_clients={N}", "data.train_limit=400", "data.test_limit=100",
        "data.partition={kind: dirichlet, alpha: 1.0}", "model.kind=mlp", "model.hidden=16"]
SECAGG = "secure_aggregation={kind: bonawitz, threshold: 0.5}"
RING = Ring(32, 16)
# seed 0, round 1: p_dropout 0.2 drops client 7; 0.25 drops clients 3, 7 and 9 (30%)
DROPS = {"0": ("0.0", []), "1": ("0.2", [7]), "30%": ("0.25", [3, 7, 9])}


def _cfg(*over: str):
    return load_scenario(ROOT / "scenarios" / "tiny.yaml", [*BASE, *over]).runs[0]


class Watch:
    """Engine hooks that keep the messages, the server and each new global model (flat)."""

    def __init__(self, on_server_message=None):
        self.sent, self.models, self.server = [], {}, None
        self._on_server_message = on_server_message

    def hooks(self, **extra) -> EngineHooks:
        return EngineHooks(on_node=self._node, on_message=self._message,
                           on_global_model=self._model, **extra)

    def _node(self, node):
        if isinstance(node, SecAggServer):
            self.server = node

    def _message(self, msg):
        self.sent.append(msg)
        if self._on_server_message is not None and "server" in (msg.src, msg.dst):
            self._on_server_message(self.server, msg)

    def _model(self, rnd, state):
        self.models[rnd] = PlainDomain(state).to_wire(state)


@pytest.fixture(scope="module")
def plain_updates():
    """Round 1's fp32 updates of every client (plain FedAvg, same seed: the same training)."""
    watch = Watch()
    engine.run(_cfg(), hooks=watch.hooks())
    return {int(m.src.split("/")[1]): unpack_vector(payload_bytes(m.payload))
            for m in watch.sent if m.kind == "update_up" and m.round == 1}


@pytest.fixture(scope="module")
def weights():
    cfg = _cfg()
    parts = engine.client_partition(cfg, load_dataset(cfg.data.dataset,
                                                      train_limit=cfg.data.train_limit,
                                                      test_limit=cfg.data.test_limit))
    return {c: len(parts[c]) for c in range(N)}


def _secagg(drops: str, *over: str, hooks=None):
    watch = Watch()
    res = engine.run(_cfg(SECAGG, f"availability.p_dropout={DROPS[drops][0]}", *over),
                     hooks=watch.hooks() if hooks is None else hooks(watch))
    return res, watch


def _expected_model(initial: torch.Tensor, updates, weights, survivors) -> torch.Tensor:
    total = np.zeros(initial.numel() + 1, dtype=np.uint64)
    for c in survivors:
        total += RING.encode(updates[c], weights[c], N)[0].astype(np.uint64)
    return initial + RING.decode_mean(total.astype(RING.dtype))


@pytest.mark.parametrize(("drops", "dropout_before"), [
    ("0", "masked_input"), ("1", "masked_input"), ("30%", "masked_input"),
    ("30%", "share_keys"), ("30%", "unmasking")])
def test_global_step_is_the_exact_fixed_point_sum_of_the_survivors(
        plain_updates, weights, drops, dropout_before):
    res, watch = _secagg(drops, f"secure_aggregation.dropout_before={dropout_before}")
    dropped = DROPS[drops][1]
    assert [c for c in range(N) if Availability(0, 0.0, float(DROPS[drops][0])).drops_out(c, 1)] \
        == dropped
    # a client leaving before unmasking has sent its masked input: it is in the sum
    survivors = [c for c in range(N) if dropout_before == "unmasking" or c not in dropped]
    row = res.rounds.set_index("round").loc[1]
    assert (row["n_completed"], row["n_dropout"], row["secagg_status"]) == \
        (len(survivors), len(dropped), "ok")
    aggregated = res.clients.query("status == 'aggregated'")["client"].tolist()
    assert aggregated == survivors
    expected = _expected_model(watch.models[0], plain_updates, weights, survivors)
    assert torch.equal(watch.models[1], expected)
    assert (res.clients["secagg_clipped"].dropna() == 0).all()


def _extra_bytes(n1: int, n2: int, n3: int, stage: str) -> int:
    """docs/schemes.md: one client's SecAgg key/share bytes in a round (``bytes_keys``), by the
    last protocol round it took part in."""
    total = 64 + (8 + 68 * n1)
    if stage in ("shares", "masked", "reveal"):
        total += (4 + 76 * (n1 - 1)) + (4 + 76 * (n2 - 1))
    if stage in ("masked", "reveal"):
        total += 4 + 4 * n3
    if stage == "reveal":
        total += 8 + 20 * n3 + 36 * (n2 - n3)
    return total


@pytest.mark.parametrize("drops", ["0", "30%"])
def test_bytes_per_client_match_the_documented_formula(drops):
    res, _ = _secagg(drops)
    msgs = res.messages.query("round == 1")
    numel = res.info["wire_numel"]
    dropped = DROPS[drops][1]
    n3 = N - len(dropped)
    for c in range(N):
        mine = msgs[(msgs["src"] == f"client/{c}") | (msgs["dst"] == f"client/{c}")]
        protocol = mine[mine["kind"].str.startswith("sa_")]["bytes"].sum()
        assert protocol == _extra_bytes(N, N, n3, "shares" if c in dropped else "reveal")
        masked = mine.query("kind == 'masked_update'")["bytes"].tolist()
        assert masked == ([] if c in dropped else [8 + 4 * (numel + 1)])  # fp32 update + 4
    if not dropped:
        assert _extra_bytes(N, N, N, "reveal") == 244 * N - 60 == 2380
    row = res.rounds.set_index("round").loc[1]
    assert row["bytes_keys"] == msgs[msgs["kind"].str.startswith("sa_")]["bytes"].sum()
    assert row["bytes_up"] == n3 * (8 + 4 * (numel + 1))


def test_server_never_holds_an_unmasked_single_update(plain_updates, weights):
    """Walk the server's object graph (its protocol state, its inbox, its running process)
    whenever a message reaches or leaves it and after each round: no array, tensor or byte
    string equals a client's fixed-point or fp32 update; what it does hold of each client is
    the masked input."""
    singles = {c: RING.encode(plain_updates[c], weights[c], N)[0] for c in range(N)}
    forbidden = {x.tobytes() for x in singles.values()} | {x[:-1].tobytes() for x in
                                                            singles.values()}
    forbidden |= {pack_vector(u) for u in plain_updates.values()}
    forbidden |= {u.numpy().tobytes() for u in plain_updates.values()}
    masked, walks = set(), []

    def check(server, msg=None):
        if msg is not None and msg.kind == "masked_update":
            masked.add(msg.payload)
        # not entering the test's own hooks (they hold the updates it looks for)
        objs = reachable(server, (simpy.Environment, Router, Network, Recorder, EngineHooks))
        held = set()
        for o in objs:
            if isinstance(o, (bytes, bytearray)):
                held.add(bytes(o))
            elif isinstance(o, np.ndarray):
                held.add(o.tobytes())
                if o.dtype == RING.dtype:
                    held.add(o.astype(np.int64).astype(np.float32).tobytes())
            elif isinstance(o, torch.Tensor):
                held.add(o.detach().numpy().tobytes())
        assert not held & forbidden
        walks.append(bool(held & masked))

    res, _ = _secagg("30%", "rounds=2", hooks=lambda w: Watch(check).hooks(
        on_round_closed=lambda row: check(w.server)))
    assert res.rounds["secagg_status"].iloc[1:].eq("ok").all()
    assert len(walks) > 50 and any(walks)  # the walk does reach the masked inputs it holds


def test_same_seed_gives_identical_tables():
    a, _ = _secagg("30%", "rounds=2")
    b, _ = _secagg("30%", "rounds=2")
    for table in ("rounds", "clients", "messages"):
        pd.testing.assert_frame_equal(*[t[[c for c in t.columns if "host" not in c]]
                                        for t in (getattr(a, table), getattr(b, table))])


def test_too_few_survivors_abort_the_round_without_an_update():
    res, watch = _secagg("0", "rounds=2", "availability.p_dropout=0.7",
                         "secure_aggregation.threshold=0.8")
    row = res.rounds.set_index("round").loc[1]
    assert row["secagg_status"] == "aborted: MaskedInputCollection: 1 clients, threshold 8"
    assert row["n_completed"] == 0 and row["n_dropout"] == 9
    assert torch.equal(watch.models[1], watch.models[0])
    # the one client left had uploaded its masked input; the server told it the round is off
    first = res.clients.query("round == 1").set_index("client")["status"]
    assert first[2] == "discarded" and (first.drop(2) == "dropout").all()
    assert [m.dst for m in watch.sent if m.kind == "sa_abort" and m.round == 1] == ["client/2"]


@pytest.mark.parametrize(("override", "message"), [
    ("codec={kind: qsgd, levels: 4}", "with codec 'qsgd'"),
    ("aggregation={mode: async, buffer_size: 2}", "with aggregation.mode async"),
    ("selection.overcommit=1.5", "with selection.overcommit"),
    ("encryption={kind: keynet}", "with encryption 'keynet'"),
    ("selection.clients_per_round=1", "needs at least 2 clients per round, got 1"),
    ("secure_aggregation.modulus_bits=16", "modulus_bits"),
    ("secure_aggregation.fixed_point_bits=31", "must be at most modulus_bits - 2 \\(30\\)"),
])
def test_unsupported_combinations_are_one_line_errors(override, message):
    with pytest.raises(ScenarioError, match=message) as err:
        _cfg(SECAGG, override)
    assert "\n" not in str(err.value)

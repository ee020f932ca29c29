"""Asynchronous FedBuff aggregation: staleness, concurrency, determinism, composition."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from fedsim import engine
from fedsim.codecs.identity import IdentityCodec
from fedsim.hooks import EngineHooks
from fedsim.nodes.policy import BufferedUpdate, FedBuffPolicy
from fedsim.scenario import ScenarioError, load_scenario
from fedsim.wire import pack_vector

HETEROGENEOUS = ["rounds=4", "data.num_clients=12", "data.train_limit=600", "data.test_limit=200",
                 "compute.device=null",
                 "compute.flops_per_s={dist: lognormal, median: 2.0e+10, sigma: 1.0}"]
ASYNC = "aggregation={mode: async, concurrency: 6, buffer_size: 3}"


def _run(*over: str, hooks: EngineHooks | None = None):
    cfg = load_scenario("scenarios/quickstart.yaml", [*HETEROGENEOUS, *over]).runs[0]
    torch.set_num_threads(1)
    return engine.run(cfg, hooks=hooks)


def _no_host(df: pd.DataFrame) -> pd.DataFrame:
    return df[[c for c in df.columns if "host" not in c]]


def test_fedbuff_step_is_discounted_weighted_sum_in_canonical_order():
    """x' = x + lr * sum_i (n_i / sum n) (1 + tau_i)^-a u_i, whatever order the buffer is in."""
    counts = {0: 10, 1: 30, 2: 60}
    policy = FedBuffPolicy(IdentityCodec(), weighting="samples", sample_counts=counts, numel=4,
                           staleness_exponent=0.5, server_lr=2.0, selection_seed=0)
    u = {c: torch.arange(4, dtype=torch.float32) * (c + 1) for c in counts}
    buf = [BufferedUpdate(1, c, pack_vector(u[c]), tau) for c, tau in [(2, 0), (0, 3), (1, 1)]]
    x = torch.ones(4)
    got = policy.aggregate(1, x, buf)
    want = x + 2.0 * sum(counts[b.client] / 100 * (1 + b.staleness) ** -0.5 * u[b.client]
                         for b in buf)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert torch.equal(policy.aggregate(1, x, buf[::-1]), got)


def test_async_run_keeps_concurrency_and_records_staleness():
    res = _run(ASYNC)
    rounds, clients = res.rounds.set_index("round"), res.clients
    assert list(rounds.index) == [0, 1, 2, 3, 4]
    assert (rounds.loc[1:, "n_completed"] == 3).all()  # one aggregation per 3 arrivals
    used = clients[clients["status"] == "aggregated"]
    assert len(used) == 4 * 3
    assert (used["staleness"] == used["applied_round"] - used["round"]).all()
    assert (used["staleness"] >= 0).all() and used["staleness"].max() >= 1  # some were stale
    assert not clients.duplicated(["round", "client"]).any()  # once per client and round
    # never more than `concurrency` clients between model download and upload
    events = sorted([(t, +1) for t in clients["t_start"]]
                    + [(t + d + c + x + up, -1) for t, d, c, x, up in zip(
                        clients["t_start"], clients["download_s"], clients["compute_s"],
                        clients["crypto_s"], clients["upload_s"])])
    live = peak = 0
    for _, step in events:
        live += step
        peak = max(peak, live)
    assert peak == 6
    assert rounds["test_accuracy"].iloc[-1] > rounds["test_accuracy"].iloc[0]


def test_async_is_deterministic():
    a, b = _run(ASYNC), _run(ASYNC)
    for table in ("rounds", "clients", "messages"):
        pd.testing.assert_frame_equal(_no_host(getattr(a, table)), _no_host(getattr(b, table)))


def test_async_composes_with_qsgd_and_keynet():
    """QSGD updates are buffered like fp32 ones; KeyNet's linear domain averages ciphertexts to
    the plaintext run's model (power-of-two gains: exact)."""
    q = _run(ASYNC, "codec={kind: qsgd, levels: 4}", "selection.weighting=uniform")
    assert (q.clients["bits_per_coord"] < 8).all()
    finals = []
    for enc in ([], ["encryption={kind: keynet, gains: power_of_two, key_seed: 5}"]):
        states = []
        res = _run(ASYNC, "rounds=2", *enc,
                   hooks=EngineHooks(on_global_model=lambda rnd, s, keep=states: keep.append(s)))
        finals.append((res, states[-1]))
    (plain, sp), (enc, se) = finals
    assert enc.info.get("cipher_numel", 0) > 0
    diff = max((sp[k] - se[k]).abs().max().item() for k in sp if sp[k].is_floating_point())
    assert diff < 1e-6
    pd.testing.assert_series_equal(plain.clients["staleness"], enc.clients["staleness"])


@pytest.mark.parametrize(("over", "needle"), [
    (["codec={kind: enn}", "selection.weighting=uniform"], "codec 'enn'"),
    (["aggregation={mode: async, concurrency: 2, buffer_size: 3}"], "aggregation.buffer_size"),
    (["aggregation={mode: async, concurrency: 50}"], "aggregation.concurrency"),
    (["selection.overcommit=1.5"], "selection.overcommit"),
])
def test_async_refuses_what_it_cannot_do(over, needle):
    with pytest.raises(ScenarioError, match=needle):
        load_scenario("scenarios/quickstart.yaml",
                      [*HETEROGENEOUS, "aggregation={mode: async}", *over])

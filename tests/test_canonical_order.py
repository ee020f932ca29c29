"""What is learned never depends on the network: the server aggregates in slot order.

Property: perturb every client link (bandwidth, latency) and every device speed, dropping nobody,
and the global model is bit-identical at every round, for FedAvg, FedPAQ, KeyNet and ENN, although
the updates arrive in a different order.
"""

from __future__ import annotations

import pytest
import torch

from fedsim import engine
from fedsim.hooks import EngineHooks
from fedsim.scenario import load_scenario

SCHEMES = {
    "fedavg": [],
    "fedpaq": ["codec={kind: qsgd, levels: 4}", "selection.weighting=uniform",
               "training.local_epochs=null", "training.local_steps=5"],
    "keynet": ["encryption={kind: keynet, key_seed: 11}"],
    "enn": ["codec={kind: enn, ratio: 4, chunk: 16, pretrain: {steps: 20}}",
            "selection.weighting=uniform"],
}
#: Each client's uplink, downlink, latency and device speed drawn afresh, spread over decades.
PERTURBED = [
    ("network.clients={uplink_bps: {dist: lognormal, median: 2.0e+6, sigma: 1.5}, "
     "downlink_bps: {dist: uniform, low: 1.0e+6, high: 1.0e+8}, "
     "latency_s: {dist: uniform, low: 0.001, high: 0.5}}"),
    "compute.device=null", "compute.flops_per_s={dist: lognormal, median: 1.0e+9, sigma: 1.5}",
]


def _run(scheme: str, perturbed: bool):
    over = ["rounds=3", "data.num_clients=6",
            "selection.clients_per_round=4", "data.train_limit=300"]
    cfg = load_scenario("scenarios/tiny.yaml", over + SCHEMES[scheme]
                        + (PERTURBED if perturbed else [])).runs[0]
    models: list[torch.Tensor] = []
    hooks = EngineHooks(on_global_model=lambda rnd, state: models.append(
        torch.cat([v.reshape(-1).float() for v in state.values()])))
    torch.set_num_threads(1)
    res = engine.run(cfg, hooks=hooks)
    return res, models


def _arrival_order(res) -> list[tuple[int, str]]:
    ups = res.messages[res.messages["kind"] == "update_up"].sort_values(["round", "t_arrive"],
                                                                       kind="stable")
    return list(zip(ups["round"], ups["src"]))


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_network_changes_never_change_what_is_learned(scheme):
    base, base_models = _run(scheme, perturbed=False)
    other, other_models = _run(scheme, perturbed=True)
    # the perturbation really reorders arrivals and changes the clock, and drops nobody
    assert _arrival_order(base) != _arrival_order(other)
    assert base.rounds["sim_time_end"].iloc[-1] != other.rounds["sim_time_end"].iloc[-1]
    assert (other.clients["status"] == "aggregated").all() and len(other.clients) == 3 * 4
    assert len(base_models) == len(other_models) == 4  # the initial model and 3 rounds
    for rnd, (a, b) in enumerate(zip(base_models, other_models, strict=True)):
        assert torch.equal(a, b), f"{scheme}: global model of round {rnd} differs"
    assert not torch.equal(base_models[0], base_models[-1])

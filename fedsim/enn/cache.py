"""On-disk cache of pre-trained ENNs, keyed by :meth:`EnnConfig.key`.

Directory: ``$FEDSIM_CACHE`` if set, else ``~/.cache/fedsim/enn``. One file per config,
``enn-<key>.pt`` (``enn-<key>-<data key>.pt`` when trained on given groups): a checked cache file (:mod:`fedsim.cachefile`: version, key, SHA-256), written
atomically, so concurrent runs never read a half-written file and a damaged one is retrained.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from fedsim.cachefile import log, read_cache, write_cache
from fedsim.enn.config import EnnConfig
from fedsim.enn.network import EnnNet
from fedsim.enn.pretrain import PretrainResult, init_net, train_enn


def cache_dir() -> Path:
    """The cache directory (not created here)."""
    env = os.environ.get("FEDSIM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "fedsim" / "enn"


def cache_path(config: EnnConfig, directory: Path | None = None, data_key: str | None = None) -> Path:
    """File holding the trained weights of ``config`` (trained on the data named ``data_key``)."""
    return (directory or cache_dir()) / f"enn-{_key(config, data_key)}.pt"


def _key(config: EnnConfig, data_key: str | None) -> str:
    return f"{config.key()}-{data_key}" if data_key else config.key()


def _config_json(config: EnnConfig) -> str:
    return json.dumps(asdict(config), sort_keys=True)


def _load(payload: bytes, config: EnnConfig, path: Path) -> PretrainResult | None:
    """The trained ENN in a checked cache payload, or None (warned) if it does not fit."""
    try:
        blob = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
        if blob["config"] != _config_json(config):
            raise ValueError("it holds another ENN config")
        net: EnnNet = init_net(config)
        net.load_state_dict(blob["state"])
        final_loss = float(blob["final_loss"])
    except Exception as exc:  # noqa: BLE001 (any unpickling or shape error: retrain)
        log.warning("cache %s does not fit this ENN (%s); retraining", path,
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return None
    net.eval().requires_grad_(False)
    return PretrainResult(net, final_loss)


def _save(path: Path, key: str, config: EnnConfig, result: PretrainResult) -> None:
    buf = io.BytesIO()
    torch.save({"config": _config_json(config), "state": result.net.state_dict(),
                "final_loss": result.final_loss}, buf)
    write_cache(path, "enn", key, buf.getvalue())


def load_or_train(config: EnnConfig, directory: Path | None = None, *,
                  data: tuple[str, Callable[[], torch.Tensor]] | None = None,
                  ) -> tuple[PretrainResult, bool]:
    """Trained ENN for ``config`` from the cache, training and caching it on a miss.

    ``data`` is ``(key, make_groups)``: train on ``make_groups()`` (see
    :func:`~fedsim.enn.pretrain.train_enn`) instead of Gaussian samples; ``key`` must identify
    those groups, and ``make_groups`` is only called on a miss. A corrupt, truncated, foreign or old cache file is retrained and replaced, and an
    unwritable cache folder keeps the weights in memory only (one warning line each).

    Returns
    -------
    result : PretrainResult
    cached : bool
        True when the weights came from disk (no training happened).
    """
    key = _key(config, data[0] if data else None)
    path = cache_path(config, directory, data[0] if data else None)
    payload = read_cache(path, "enn", key)
    cached = None if payload is None else _load(payload, config, path)
    if cached is not None:
        return cached, True
    result = train_enn(config, data[1]() if data else None)
    _save(path, key, config, result)
    return result, False

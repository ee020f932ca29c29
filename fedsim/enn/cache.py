"""On-disk cache of pre-trained ENNs, keyed by :meth:`EnnConfig.key`.

Directory: ``$FEDSIM_CACHE`` if set, else ``~/.cache/fedsim/enn``. One file per config,
``enn-<key>.pt`` (``enn-<key>-<data key>.pt`` when trained on given groups), written atomically (temporary file in the same directory, then
:func:`os.replace`), so concurrent runs never read a half-written file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from fedsim.enn.config import EnnConfig
from fedsim.enn.network import EnnNet
from fedsim.enn.pretrain import PretrainResult, init_net, train_enn


def cache_dir() -> Path:
    """The cache directory (not created here)."""
    env = os.environ.get("FEDSIM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "fedsim" / "enn"


def cache_path(config: EnnConfig, directory: Path | None = None, data_key: str | None = None) -> Path:
    """File holding the trained weights of ``config`` (trained on the data named ``data_key``)."""
    suffix = f"-{data_key}" if data_key else ""
    return (directory or cache_dir()) / f"enn-{config.key()}{suffix}.pt"


def _config_json(config: EnnConfig) -> str:
    return json.dumps(asdict(config), sort_keys=True)


def _load(path: Path, config: EnnConfig) -> PretrainResult:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if blob["config"] != _config_json(config):
        raise ValueError(f"{path} holds a different ENN config")
    net: EnnNet = init_net(config)
    net.load_state_dict(blob["state"])
    net.eval().requires_grad_(False)
    return PretrainResult(net, float(blob["final_loss"]))


def _save(path: Path, config: EnnConfig, result: PretrainResult) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {
        "config": _config_json(config),
        "state": result.net.state_dict(),
        "final_loss": result.final_loss,
    }
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(blob, fh)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load_or_train(config: EnnConfig, directory: Path | None = None, *,
                  data: tuple[str, Callable[[], torch.Tensor]] | None = None,
                  ) -> tuple[PretrainResult, bool]:
    """Trained ENN for ``config`` from the cache, training and caching it on a miss.

    ``data`` is ``(key, make_groups)``: train on ``make_groups()`` (see
    :func:`~fedsim.enn.pretrain.train_enn`) instead of Gaussian samples; ``key`` must identify
    those groups, and ``make_groups`` is only called on a miss.

    Returns
    -------
    result : PretrainResult
    cached : bool
        True when the weights came from disk (no training happened).
    """
    path = cache_path(config, directory, data[0] if data else None)
    if path.exists():
        return _load(path, config), True
    result = train_enn(config, data[1]() if data else None)
    _save(path, config, result)
    return result, False

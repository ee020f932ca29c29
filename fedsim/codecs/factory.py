"""Builds the uplink codec named by a run's ``codec`` config, through the codec registry."""

from __future__ import annotations

from torch import nn

from fedsim.codecs.base import CodecContext, UpdateCodec
from fedsim.config import CodecSettings
from fedsim.config.registry import CODECS


def make_codec(cfg: CodecSettings, *, slots: int, model: nn.Module | None = None) -> UpdateCodec:
    """The codec for ``cfg``; ``slots`` is the number of updates aggregated per round (ENN's N).

    ``model`` is the initial global model (the server holds it); an ENN pre-trained on proxy
    updates needs it.
    """
    return CODECS.factory(cfg.kind)(cfg, CodecContext(slots, model))

"""Builds the uplink codec named by a run's ``codec`` config."""

from __future__ import annotations

from torch import nn

from fedsim.codecs.base import UpdateCodec
from fedsim.codecs.identity import IdentityCodec
from fedsim.config import CodecConfig, EnnCodecConfig, IdentityCodecConfig, QsgdCodecConfig


def make_codec(cfg: CodecConfig, *, slots: int, model: nn.Module | None = None) -> UpdateCodec:
    """The codec for ``cfg``; ``slots`` is the number of updates aggregated per round (ENN's N).

    ``model`` is the initial global model (the server holds it); an ENN pre-trained on proxy
    updates needs it.
    """
    if isinstance(cfg, IdentityCodecConfig):
        return IdentityCodec()
    if isinstance(cfg, QsgdCodecConfig):
        from fedsim.codecs.qsgd import QsgdCodec

        return QsgdCodec(levels=cfg.levels, bucket_size=cfg.bucket_size, norm=cfg.norm)
    if isinstance(cfg, EnnCodecConfig):
        from fedsim.codecs.enn import EnnCodec

        proxy = None
        if cfg.pretrain.data == "proxy":
            if model is None:
                raise ValueError("an ENN pre-trained on proxy updates needs the initial model")
            from fedsim.enn.proxy import proxy_key, proxy_updates

            spec = cfg.pretrain.proxy
            proxy = (f"proxy-{proxy_key(spec, model)}", lambda: proxy_updates(model, spec, slots))
        return EnnCodec.from_args(
            scale=cfg.scale, side_info=cfg.side_info, error_feedback=cfg.error_feedback, proxy=proxy,
            n=cfg.chunk, ratio=cfg.ratio, slots=slots,
            residual_blocks=cfg.residual_blocks, scheme=cfg.scheme,
            encoder_hidden=cfg.encoder_hidden, decoder_width=cfg.decoder_width, activation=cfg.activation,
            steps=cfg.pretrain.steps,
            batch=cfg.pretrain.batch_size, lr=cfg.pretrain.lr, seed=cfg.pretrain.seed)
    raise TypeError(f"no codec for {cfg!r}")

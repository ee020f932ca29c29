"""Uplink codecs: how a client's update becomes bytes, and how the server aggregates them."""

from fedsim.codecs.base import EncodedUpdate, UpdateCodec

__all__ = ["EncodedUpdate", "UpdateCodec"]

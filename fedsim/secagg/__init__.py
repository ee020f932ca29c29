"""Secure aggregation (Bonawitz et al. 2017, semi-honest, with dropouts): the protocol's math.

Pure functions and per-round state objects, no SimPy: :mod:`~fedsim.secagg.ring` (fixed-point
encoding mod 2^k), :mod:`~fedsim.secagg.primitives` (X25519, HKDF, AES-GCM, AES-CTR PRG, Shamir
from ``cryptography`` and PyCryptodome), :mod:`~fedsim.secagg.wire` (message formats and sizes)
and :mod:`~fedsim.secagg.protocol` (what a client and the server compute in each round). The
SimPy processes that exchange these messages are :mod:`fedsim.nodes.secagg_server` and
:mod:`fedsim.nodes.secagg_client`.
"""

from fedsim.secagg.protocol import ClientRound, SecAggAbort, ServerRound, threshold_count
from fedsim.secagg.ring import Ring

__all__ = ["ClientRound", "Ring", "SecAggAbort", "ServerRound", "threshold_count"]

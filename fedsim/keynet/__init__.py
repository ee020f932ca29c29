"""KeyNet weight encryption (Byrne et al., arXiv 2008.04469) as a pure transform (no simpy).

Modules: :mod:`~fedsim.keynet.lowering` (layers → sparse homogeneous matrices),
:mod:`~fedsim.keynet.keys` (keys, seeds, bytes), :mod:`~fedsim.keynet.plan` (walking a model),
:mod:`~fedsim.keynet.cipher` / :mod:`~fedsim.keynet.channel` (lowered / channel-space ciphers),
:mod:`~fedsim.keynet.domain` (``KeyNetDomain``), :mod:`~fedsim.keynet.inference` (encrypted
networks) and :mod:`~fedsim.keynet.report` (sizes).
"""

from fedsim.keynet.domain import KeyNetDomain, make_keys
from fedsim.keynet.inference import encrypt_input, encrypted_network
from fedsim.keynet.keys import SEED_BYTES, Key, KeySet, KeySlot, seed_from_bytes, seed_to_bytes
from fedsim.keynet.plan import NetworkPlan, plan_network
from fedsim.keynet.report import nnz_table, size_table

__all__ = [
           "SEED_BYTES",
           "Key",
           "KeyNetDomain",
           "KeySet",
           "KeySlot",
           "NetworkPlan",
           "encrypt_input",
           "encrypted_network",
           "make_keys",
           "nnz_table",
           "plan_network",
           "seed_from_bytes",
           "seed_to_bytes",
           "size_table",
]

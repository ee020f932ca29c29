"""Adversaries inside a run: each threat model is a class that says what it sees and knows.

An adversary subscribes to the :class:`~fedsim.network.Network` and keeps, as they arrive, only
the messages its threat model lets it see (:meth:`Adversary.sees`). What it may use besides the
captured bytes is declared on the class: whether it holds the server's aggregation state (the
ENN decoder), which isolations of one client's contribution it tries, and whether it holds the
KeyNet keys. Each registers its config class under its ``kind`` (fedsim/config/registry.py):

* ``eavesdropper``: messages whose path crosses one of its links;
* ``server``: every message sent to or by the server (honest but curious; ENN zero-fill only);
* ``adaptive_server``: the same, and it uses scheme parameters (every ENN isolation);
* ``key_agent``: a compromised key agent colluding with the server: the server's view plus the
  KeyNet keys it generated.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import Field

from fedsim.config import AdversarySettings
from fedsim.config.registry import ADVERSARIES
from fedsim.message import Message
from fedsim.network import Link

if TYPE_CHECKING:
    from fedsim.config import RunConfig


class Adversary:
    """Captures the model broadcasts, updates and keys its threat model allows it to see."""

    #: holds the server's aggregation state (the ENN decoder), so it can isolate one client
    holds_decoder: ClassVar[bool] = True
    #: holds the encryption keys (it generated them)
    holds_keys: ClassVar[bool] = False
    #: tunes its attack to the scheme's public parameters (e.g. matches candidate updates through
    #: a linear code it knows: the ``code_aware`` isolation)
    tunes_to_scheme: ClassVar[bool] = True

    def __init__(self, spec: AdversarySettings) -> None:
        self.kind = spec.kind
        self.name = spec.kind  # the adversary_view column
        self.models: dict[tuple[int, int], bytes] = {}  # (round, client) -> model_down payload
        self.updates: dict[int, list[tuple[int, bytes]]] = defaultdict(list)  # arrival order
        self.key_payload: bytes | None = None  # a captured KeyNet key message: it decrypts
        self.init_payload: bytes | None = None  # a captured plaintext theta0 (init_by: server)
        self.layout_payload: bytes | None = None  # the published KeyNet layout, if it saw it
        self.unmask: dict[int, bytes] = {}  # round -> a captured sa_unmask (SecAgg survivors)

    def sees(self, msg: Message, path: tuple[Link, ...]) -> bool:
        """Whether the threat model gives this adversary ``msg`` (sent along ``path``)."""
        return "server" in (msg.src, msg.dst)

    def isolations(self, configured: Sequence[str]) -> list[str]:
        """The isolations of one client's contribution it tries, of the ``configured`` ones."""
        return list(configured)

    def knowledge(self, domain: str, strategy: str) -> str:
        """What it knows besides the captured bytes, for the ``knowledge`` column."""
        parts = ["architecture", "lr", "batching", f"labels:{strategy}"]
        if domain == "encrypted":
            parts.append("keynet_layout")
        if self.holds_keys:
            parts.append("keynet_keys")
        elif self.key_payload is not None:
            parts.append("keynet_keys_captured")
        return ",".join(parts)

    def on_arrival(self, msg: Message, path: tuple[Link, ...], t_send: float, t_arrive: float) -> None:
        """Network observer callback."""
        if not self.sees(msg, path):
            return
        if msg.kind == "model_down":
            self.models[(msg.round, int(msg.dst.split("/")[1]))] = msg.payload
        elif msg.kind == "update_up":
            self.updates[msg.round].append((int(msg.src.split("/")[1]), msg.payload))
        elif msg.kind == "key":
            self.key_payload = msg.payload
        elif msg.kind == "init_plain":
            self.init_payload = msg.payload
        elif msg.kind == "keynet_layout":
            self.layout_payload = msg.payload
        elif msg.kind == "sa_unmask":
            self.unmask[msg.round] = msg.payload


# -- eavesdropper ---------------------------------------------------------------------------------
class EavesdropperConfig(AdversarySettings):
    """Sees every message that crosses one of ``links`` (e.g. ``client/0:up``, ``server:ingress``)."""

    kind: Literal["eavesdropper"]
    links: Annotated[list[str], Field(min_length=1)]

    def check_run(self, run: RunConfig) -> None:
        n = run.data.num_clients
        known = {f"client/{c}:{d}" for c in range(n) for d in ("up", "down")}
        known |= {"server:ingress", "server:egress"}
        if run.encryption.key_agent:
            known |= {"key_agent:ingress", "key_agent:egress"}
        for link in self.links:
            if link not in known:
                raise ValueError(f"attack.adversaries: eavesdropper link {link!r} does not "
                                 f"exist or carries no traffic (e.g. client/0:up, "
                                 f"server:ingress; key_agent links only with keynet)")


class Eavesdropper(Adversary):
    """Reads the links it taps; holds no decoder and no keys (unless it captures them)."""

    holds_decoder = False
    tunes_to_scheme = False

    def __init__(self, spec: EavesdropperConfig) -> None:
        super().__init__(spec)
        self.links = frozenset(spec.links)
        self.name = f"eavesdropper[{','.join(sorted(self.links))}]"

    def sees(self, msg: Message, path: tuple[Link, ...]) -> bool:
        return any(link.name in self.links for link in path)


# -- the server and its colluders -----------------------------------------------------------------
class ServerConfig(AdversarySettings):
    """The honest-but-curious server: everything sent to or by it."""

    kind: Literal["server"]


class ServerAdversary(Adversary):
    """The server's view; it isolates a client by zero-filling the other slots only (it does not
    tune the isolation to the scheme)."""

    tunes_to_scheme = False

    def isolations(self, configured: Sequence[str]) -> list[str]:
        return ["zero"]


class AdaptiveServerConfig(AdversarySettings):
    """The server that also uses scheme parameters (every configured ENN isolation)."""

    kind: Literal["adaptive_server"]


class KeyAgentConfig(AdversarySettings):
    """A compromised key agent colluding with the server: the server's view and the keys."""

    kind: Literal["key_agent"]


class KeyAgentAdversary(Adversary):
    """The server's view plus everything the key agent sends; holds the keys it generated."""

    holds_keys = True

    def sees(self, msg: Message, path: tuple[Link, ...]) -> bool:
        return super().sees(msg, path) or msg.src == "key_agent"


ADVERSARIES.register(EavesdropperConfig, Eavesdropper)
ADVERSARIES.register(ServerConfig, ServerAdversary)
ADVERSARIES.register(AdaptiveServerConfig, Adversary)
ADVERSARIES.register(KeyAgentConfig, KeyAgentAdversary)

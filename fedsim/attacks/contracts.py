"""What the attack harness needs from a codec or a weight domain: public methods, typed here.

The attacks never read a private attribute of the scheme they attack; a codec or domain takes
part in an attack by providing these members (structural typing: no import of this module).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from torch import Tensor

if TYPE_CHECKING:
    from collections import OrderedDict

    from fedsim.attacks.result import AttackResult
    from fedsim.config import AttackConfig
    from fedsim.keynet.keys import Key


@dataclass(frozen=True)
class AttackMethod:
    """An attack as the harness runs it (registered in ``ATTACKS`` under ``attack.method``).

    ``settings(attack config, label strategy, encrypted domain)`` gives its hyperparameters;
    ``run(observation, hyperparameters, seed=..., labels=...)`` attacks; ``joint_labels``: it
    optimises soft labels with the input (DLG) instead of inferring them first.
    """

    settings: Callable[[AttackConfig, str, bool], Any]
    run: Callable[..., AttackResult]
    joint_labels: bool = False


class SlotCount(Protocol):
    """A decoder's configuration: ``slots``, the number of codes it decodes together (N)."""

    slots: int


@runtime_checkable
class LinearCode(Protocol):
    """A codec that projects each state entry on a public per-round subspace (ENN layer codes):
    a payload decodes to ``U U^T M`` per coded entry, so whoever holds the round's codes can
    also simulate what the code keeps of a candidate update (the code-aware attack)."""

    def entry_codes(self, payload: bytes) -> dict[str, Tensor]:
        """State entry name -> its code ``U`` (``a x r``) for the round ``payload`` was encoded
        in; uncoded entries are absent."""
        ...


@runtime_checkable
class SlotDecoder(Protocol):
    """A codec whose server decodes codes stacked in slots (ENN): updates are never decoded one
    by one, but whoever holds the decoder can isolate one slot's contribution
    (:func:`fedsim.attacks.adapters.enn_isolate`)."""

    config: SlotCount

    def payload_offset(self, payload: bytes) -> int:
        """The chunk-grid offset a payload was encoded with."""
        ...

    def parse(self, payload: bytes, numel: int, offset: int) -> tuple[Tensor, Tensor]:
        """Codes ``(C, m)`` and chunk side information ``(C,)`` of one payload."""
        ...

    def silent_stack(self, numel: int, offset: int) -> tuple[Tensor, Tensor, Tensor]:
        """Codes ``(C, N, m)`` of zero updates in every slot, zero side information ``(C, N)``,
        and the ``(N,)`` mask of present slots (none)."""
        ...

    def decode_stack(self, codes: Tensor, rms: Tensor, present: Tensor) -> Tensor:
        """``(1/N) *`` the sum of the present slots' chunks ``(C, n)``."""
        ...

    def unchunk(self, chunks: Tensor, numel: int, offset: int) -> Tensor:
        """Flat vector of ``numel`` from decoded chunks on the grid ``offset``."""
        ...


@runtime_checkable
class KeyedDomain(Protocol):
    """An encrypted weight domain as the harness holds it (the keys, outside the protocol).

    ``relative``: the wire vector is relative to a plaintext initial model (an attack in the
    encrypted domain needs the absolute ciphertext); ``input_key()``: the input key, with which
    the harness encrypts the private images only to score a reconstruction in that domain.
    (A method, not a property: ``isinstance`` on Python 3.11 evaluates protocol properties.)
    """

    @property
    def relative(self) -> bool: ...

    def input_key(self) -> Key:
        """The input key (raises ``ValueError`` where the domain has none)."""
        ...

    def from_wire(self, flat: Tensor) -> OrderedDict[str, Tensor]:
        """Decrypt a wire vector to the float state entries."""
        ...

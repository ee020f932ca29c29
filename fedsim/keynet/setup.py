"""KeyNet inside a run: the key agent's keys, the clients' domain, and the harness's view.

Protocol (see ``docs/schemes.md``, section ``keynet``):

* The key agent samples one key set from a 63-bit key seed drawn from OS entropy (or the
  configured ``key_seed``, for exact replays; never derived from the run seed) and answers every ``key_request`` with a ``key`` message: the serialized :class:`KeySet`
  (``key_delivery: material``) or the 8-byte key seed (``key_delivery: seed``; the client
  derives the same keys with :func:`make_keys`). The server is never sent either.
* ``init_by: client``: client 0 encrypts the initial model and sends ``model_init``; the server
  starts from that ciphertext.
* ``init_by: server``: the server draws the initial model theta0 in plaintext and sends it once to
  every client (``init_plain``). The wire vector is then relative to theta0,
  ``wire = E (theta - theta0)``, so the server starts from the zero vector and never needs a
  ciphertext of theta0. This reveals theta0 to the server (and to anyone who breaks into it).
* Test accuracy is computed by the harness, which holds the keys outside the protocol
  (:attr:`EncryptionSetup.eval_domain`).
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Callable
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from fedsim.config import EncryptionSettings, Int, PosInt
from fedsim.config.registry import ENCRYPTIONS
from fedsim.domain import EncryptionSetup, PlainDomain, WeightDomain
from fedsim.keynet.domain import KeyNetDomain, make_keys
from fedsim.keynet.keys import GAIN_KINDS, SPACES, Key, KeySet, seed_from_bytes, seed_to_bytes
from fedsim.keynet.layout import layout_bytes
from fedsim.keynet.plan import NetworkPlan, plan_network
from fedsim.keynet.report import size_table
from fedsim.wire import pack_vector, unpack_vector


class KeyNetConfig(EncryptionSettings):
    """KeyNet weight encryption (docs/schemes.md, section keynet).

    ``gains`` picks the keys' diagonal gains. ``continuous`` (the KeyNet paper's choice):
    log-uniform in [1/2, 2]; every ciphertext value is a plaintext value times an arbitrary
    real, so encrypted arithmetic is only equal to plaintext arithmetic up to fp32 rounding,
    and long runs drift apart like any 1-ulp perturbation of SGD. ``power_of_two``: gains
    2**k with k uniform on {-2, ..., 2}; with ``alpha: 1`` encryption, the server's weighted
    average and decryption are then exact in floating point and an encrypted run reproduces
    the plaintext run bit for bit. The cost is a smaller key space: 5 gains per coordinate
    (about 2.3 bits) instead of a continuum, and the gains are recognisable as powers of two.
    (``alpha > 1`` blocks are real-valued either way and are not exact.)

    ``key_seed``: None (the default) makes the key agent draw its key seed from OS entropy, so
    nothing derived from the run seed (which the server uses for selection) can rebuild the keys.
    An integer replays a run's keys exactly (run_info.json records the drawn seed); whoever reads
    a scenario file holding it can decrypt, so it never goes to the server.
    """

    kind: Literal["keynet"]
    space: Literal[SPACES] = "lowered"
    alpha: PosInt = 1
    gains: Literal[GAIN_KINDS] = "continuous"
    key_delivery: Literal["material", "seed"] = "material"
    init_by: Literal["client", "server"] = "client"
    key_seed: Int | None = Field(None, ge=0, lt=2**63)

    title: ClassVar[str] = "KeyNet"
    key_agent: ClassVar[bool] = True
    quantizes_plaintext: ClassVar[bool] = True
    resumable: ClassVar[bool] = False


class KeyNetWireDomain(WeightDomain):
    """A :class:`KeyNetDomain` as the client (or the harness) uses it on the wire.

    Parameters
    ----------
    inner : KeyNetDomain
        The keyed cipher ``wire = E theta + offset``, ``theta = D wire``.
    template : dict[str, torch.Tensor]
        A state dict of the model (layout only).
    base : torch.Tensor or None
        Plaintext flat vector theta0 (``init_by: server``): the wire vector is then
        ``E (theta - theta0)``. None: the absolute ciphertext ``E theta + offset``.

    Notes
    -----
    Cost model: one :meth:`to_wire` is ``2 nnz(E)`` FLOPs and one :meth:`from_wire` is
    ``2 nnz(D)`` FLOPs (one multiply-add per stored entry), see :attr:`crypto_flops`.
    """

    def __init__(self, inner: KeyNetDomain, template: dict[str, torch.Tensor],
                 base: torch.Tensor | None = None):
        self.inner = inner
        self.plain = PlainDomain(template)
        if self.plain.numel != inner.plan.n_params:
            raise ValueError(f"model has {self.plain.numel} float values, plan has "
                             f"{inner.plan.n_params}")
        self._base = None if base is None else base.detach().double().cpu().numpy()

    @property
    def numel(self) -> int:
        """Length of the ciphertext vector (values)."""
        return self.inner.numel

    @property
    def relative(self) -> bool:
        """Whether the wire vector is relative to a plaintext theta0 (``init_by: server``)."""
        return self._base is not None

    def input_key(self) -> Key:
        """The input key ``A_0`` (chained lowered space; see :attr:`KeyNetDomain.image_key`)."""
        return self.inner.image_key

    @property
    def crypto_flops(self) -> tuple[float, float]:
        """FLOPs of one (to_wire, from_wire): ``2 nnz`` of the encryption / decryption maps."""
        c = self.inner.cipher
        return 2.0 * c.enc.nnz, 2.0 * c.dec.nnz

    def to_wire(self, state: dict[str, torch.Tensor]) -> torch.Tensor:
        """Float32 ciphertext of ``state`` (float64 arithmetic, rounded once)."""
        theta = self.plain.to_wire(state).double().numpy()
        c = self.inner.cipher
        wire = c.enc @ (theta - self._base) if self._base is not None else c.encrypt(theta)
        return torch.from_numpy(wire.astype(np.float32))

    def from_wire(self, flat: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """Decrypt a ciphertext vector to the float state entries (float32)."""
        if flat.numel() != self.numel:
            raise ValueError(f"wire vector has {flat.numel()} values, expected {self.numel}")
        theta = self.inner.cipher.decrypt(flat.detach().double().cpu().numpy().reshape(-1))
        if self._base is not None:
            theta = theta + self._base
        return self.plain.from_wire(torch.from_numpy(theta.astype(np.float32)))

    def encrypt_delta(self, plain_delta: torch.Tensor) -> torch.Tensor:
        """Ciphertext of a plaintext update: ``E delta`` (the offset cancels in differences)."""
        d = plain_delta.detach().double().cpu().numpy().reshape(-1)
        return torch.from_numpy((self.inner.cipher.enc @ d).astype(np.float32))


def keynet_setup(cfg: KeyNetConfig, model: nn.Module, input_shape: tuple[int, ...],
                 initial_state: dict[str, torch.Tensor]) -> EncryptionSetup:
    """Wire KeyNet into a run: key agent payloads, client domains and the harness's domain.

    Parameters
    ----------
    cfg : KeyNetConfig
        Key space, block size alpha, key delivery and who initialises the model.
    model : nn.Module
        The model (architecture; its weights are not read).
    input_shape : tuple[int, ...]
        One input sample, e.g. ``(1, 28, 28)``.
    initial_state : dict[str, torch.Tensor]
        The initial global model theta0 (plaintext, held by the initialising party).
    """
    plan = plan_network(model, tuple(input_shape), lower=cfg.space == "lowered")
    key_seed = secrets.randbits(63) if cfg.key_seed is None else cfg.key_seed
    keys = make_keys(plan, key_seed, cfg.space, cfg.alpha, gains=cfg.gains)
    key_bytes = keys.to_bytes() if cfg.key_delivery == "material" else seed_to_bytes(key_seed)
    template = {k: v for k, v in initial_state.items()}
    plain = PlainDomain(template)
    base = plain.to_wire(initial_state) if cfg.init_by == "server" else None
    harness = KeyNetWireDomain(KeyNetDomain(model, input_shape, keys, cfg.space, plan=plan),
                               template, base)
    domain_from_key = _client_domains(cfg, model, input_shape, plan, template)
    sizes = size_table(harness.inner)
    info = {
        "eval_outside_protocol": True,
        "keynet_space": cfg.space, "keynet_alpha": cfg.alpha, "keynet_gains": cfg.gains,
        "key_delivery": cfg.key_delivery, "init_by": cfg.init_by, "keynet_key_seed": key_seed,
        "key_message_bytes": len(key_bytes), "key_material_bytes": keys.nbytes(),
        "plain_numel": plain.numel, "cipher_numel": harness.numel,
        "plain_model_bytes": len(pack_vector(torch.zeros(plain.numel))),
        "cipher_model_bytes": len(pack_vector(torch.zeros(harness.numel))),
        "encrypt_flops": harness.crypto_flops[0], "decrypt_flops": harness.crypto_flops[1],
        "nnz_per_layer": {s.name: {"kind": s.kind, "plain": s.plain, "nnz": s.nnz} for s in sizes},
    }
    return EncryptionSetup(
        client_domain=None, domain_from_key=domain_from_key, key_payload=lambda client: key_bytes,
        eval_domain=harness, init_by_client=cfg.init_by == "client",
        init_broadcast=None if base is None else pack_vector(base), quantize_plaintext=True,
        info=info, layout_payload=layout_bytes(harness.inner))


def _client_domains(cfg: KeyNetConfig, model: nn.Module, input_shape: tuple[int, ...],
                    plan: NetworkPlan, template: dict[str, torch.Tensor],
                    ) -> Callable[[bytes, bytes | None], KeyNetWireDomain]:
    """``f(key message, init_plain payload or None) -> domain``, run by each client.

    Clients that receive the same bytes get the same cipher, so it is built once per distinct
    payload (host time only; the result is identical). The plan is architecture, not key material.
    """
    ciphers: dict[bytes, KeyNetDomain] = {}

    def from_key(payload: bytes, init: bytes | None) -> KeyNetWireDomain:
        if payload not in ciphers:
            keys = (KeySet.from_bytes(payload) if cfg.key_delivery == "material" else
                    make_keys(plan, seed_from_bytes(payload), cfg.space, cfg.alpha,
                              gains=cfg.gains))
            ciphers[payload] = KeyNetDomain(model, input_shape, keys, cfg.space, plan=plan)
        base = None if init is None else unpack_vector(init)
        return KeyNetWireDomain(ciphers[payload], template, base)

    return from_key


ENCRYPTIONS.register(KeyNetConfig, keynet_setup)

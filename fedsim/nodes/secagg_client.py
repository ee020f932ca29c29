"""The client side of secure aggregation: the four message rounds around local training."""

from __future__ import annotations

from typing import Literal

from fedsim.message import Message
from fedsim.nodes.client import Client
from fedsim.rng import numpy_rng
from fedsim.secagg import ClientRound, Ring
from fedsim.secagg.protocol import SECRET_BYTES
from fedsim.wire import unpack_vector

DropPoint = Literal["share_keys", "masked_input", "unmasking"]


class SecAggClient(Client):
    """A client that uploads only its masked, fixed-point, weighted update.

    Per round: AdvertiseKeys, ShareKeys, local training, MaskedInputCollection, Unmasking
    (:mod:`fedsim.secagg.protocol`). Its key pairs and self-mask seed come from its own stream
    ``(seed, "client", cid, "secagg", round)``. A client that drops out this round
    (``availability.p_dropout``) leaves before the Bonawitz round named by ``dropout_before``
    and the server sees a dropped connection. ``weight`` multiplies the update before masking
    (its sample count, or 1 for uniform weighting).

    Notes
    -----
    The masking work (``|U2| + 1`` AES-CTR streams of ``p + 1`` words) is not charged simulated
    compute time.
    """

    def __init__(self, *args, ring: Ring, weight: int, dropout_before: DropPoint, **kwargs):
        super().__init__(*args, **kwargs)
        self.ring, self.weight, self.dropout_before = ring, weight, dropout_before

    def _round(self, msg: Message):
        rnd = msg.round
        row = {"round": rnd, "client": self.cid, "download_s": self.env.now - msg.meta["t_send"],
               "bytes_down": msg.nbytes, "t_start": msg.meta["t_send"]}
        secret = numpy_rng(self.seed, "client", self.cid, "secagg", rnd).bytes(SECRET_BYTES)
        proto = ClientRound(self.cid, rnd, secret, self.ring)
        drops = self.availability.drops_out(self.cid, rnd)
        self._send(rnd, "sa_advertise", proto.advertise())
        keys = yield from self._await(rnd, "sa_keys", row)
        if keys is None or self._left(drops, "share_keys", rnd, row):
            return
        self._send(rnd, "sa_shares", proto.share_keys(keys.payload))
        routed = yield from self._await(rnd, "sa_routed", row)
        if routed is None:
            return
        work = self._train_and_encode(msg)
        compute_s = self.compute.seconds(work.samples * self.train_flops_per_sample,
                                         work.host_train_s)
        row.update(compute_s=compute_s, crypto_s=0.0, samples=work.samples, steps=work.steps)
        yield self.env.timeout(compute_s)
        if self._left(drops, "masked_input", rnd, row):
            return
        masked, clipped = proto.masked_input(routed.payload, unpack_vector(work.payload),
                                             self.weight)
        self.recorder.outcomes[(rnd, self.cid)]["secagg_clipped"] = clipped
        t_up = self.env.now
        yield self._send(rnd, "masked_update", masked)
        self.recorder.clients.append({**row, "status": "uploaded", "upload_s": self.env.now - t_up,
                                      "bytes_up": len(masked)})
        request = yield from self._await(rnd, "sa_unmask", None)
        if request is None or self._left(drops, "unmasking", rnd, None):
            return
        self._send(rnd, "sa_reveal", proto.reveal(request.payload))

    def _send(self, rnd: int, kind: str, payload: bytes):
        return self.router.send(Message(kind, self.name, "server", rnd, payload))

    def _await(self, rnd: int, kind: str, row: dict | None):
        """The server's ``kind`` message of round ``rnd``, or None if it aborted the round (then
        ``row``, if given, is recorded as aborted)."""
        msg = yield self.inbox.get(lambda m: m.round == rnd and m.kind in (kind, "sa_abort"))
        if msg.kind == "sa_abort":
            if row is not None:
                self.recorder.clients.append({**row, "status": "aborted",
                                              "upload_s": float("nan"), "bytes_up": 0})
            return None
        return msg

    def _left(self, drops: bool, point: DropPoint, rnd: int, row: dict | None) -> bool:
        """Whether the client drops out here (it signals the server, and records ``row``)."""
        if not drops or point != self.dropout_before:
            return False
        self.router.signal(Message("dropout", self.name, "server", rnd, b""))
        if row is not None:
            self.recorder.clients.append({**row, "status": "dropout", "upload_s": float("nan"),
                                          "bytes_up": 0})
        return True

"""The client process: receive the global model, train locally, encode and upload the update."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import simpy
import torch

from fedsim.codecs.base import UpdateCodec
from fedsim.domain import PlainDomain, WeightDomain
from fedsim.message import Message
from fedsim.nodes.availability import Availability
from fedsim.nodes.router import Router
from fedsim.recorder import Recorder
from fedsim.rng import seed_for
from fedsim.trainers import Trainer
from fedsim.wire import pack_vector, unpack_vector


@dataclass(frozen=True)
class ComputeModel:
    """Simulated compute time of one client: FLOPs / speed, or host seconds x scale."""

    timing: str  # "flops" | "measured"
    flops_per_s: float
    measured_scale: float

    def seconds(self, flops: float, host_s: float) -> float:
        return flops / self.flops_per_s if self.timing == "flops" else host_s * self.measured_scale


class Client:
    """One FL client: a SimPy process that owns its data indices, keys and random streams."""

    def __init__(self, env: simpy.Environment, router: Router, inbox: simpy.Store, cid: int,
                 trainer: Trainer, num_samples: int, train_flops_per_sample: float,
                 compute: ComputeModel, codec: UpdateCodec, availability: Availability,
                 recorder: Recorder, seed: int, domain: WeightDomain | None,
                 domain_from_key: Callable[[bytes, bytes | None], WeightDomain] | None = None,
                 initial_state: dict[str, torch.Tensor] | None = None, await_init: bool = False,
                 pre_codec: UpdateCodec | None = None):
        self.env, self.router, self.inbox, self.cid = env, router, inbox, cid
        self.name = f"client/{cid}"
        self.trainer, self.compute = trainer, compute
        self.num_samples, self.train_flops_per_sample = num_samples, train_flops_per_sample
        self.codec = codec.for_client(cid)  # per-client state (e.g. ENN error feedback) stays here
        self.availability, self.recorder, self.seed = availability, recorder, seed
        self.domain = domain
        self._domain_from_key = domain_from_key
        self._initial_state = initial_state  # set on the client that initialises the model
        self._await_init = await_init  # the server sends a plaintext initial model (init_plain)
        # lossy codec run on the plaintext update before encryption (KeyNet + QSGD)
        self.pre_codec = pre_codec
        self._held: deque[Message] = deque()  # round messages that arrived during set-up

    def run(self):
        """Fetch keys if the scheme needs them, send the initial model if asked, then serve rounds."""
        if self._domain_from_key is not None:
            self.router.send(Message("key_request", self.name, "key_agent", 0, b"KREQ" + self.cid.to_bytes(4, "little")))
            key = yield from self._next(lambda m: m.kind == "key", hold=True)
            init = (yield from self._next(lambda m: m.kind == "init_plain", hold=True)) \
                if self._await_init else None
            self.domain = self._domain_from_key(key.payload, init.payload if init else None)
        if self._initial_state is not None:
            h0 = time.perf_counter()
            wire = self.domain.to_wire(self._initial_state)
            if self.domain.crypto_flops[0]:
                yield self.env.timeout(self.compute.seconds(self.domain.crypto_flops[0],
                                                            time.perf_counter() - h0))
            self.router.send(Message("model_init", self.name, "server", 0, pack_vector(wire)))
            self._initial_state = None
        while True:
            msg = yield from self._next(lambda m: m.kind == "model_down")
            yield from self._round(msg)

    def _next(self, accept, hold: bool = False):
        """The next message ``accept`` takes; others are dropped (or kept for later if ``hold``)."""
        for i, msg in enumerate(self._held):
            if accept(msg):
                del self._held[i]
                return msg
        while True:
            msg = yield self.inbox.get()
            if accept(msg):
                return msg
            if hold:
                self._held.append(msg)

    def _round(self, msg: Message):
        rnd = msg.round
        t_recv = self.env.now
        row = {"round": rnd, "client": self.cid, "download_s": t_recv - msg.meta["t_send"],
               "bytes_down": msg.nbytes, "t_start": msg.meta["t_send"]}
        h0 = time.perf_counter()
        global_wire = unpack_vector(msg.payload)
        global_state = self.domain.from_wire(global_wire)
        host_crypto = time.perf_counter() - h0
        outcome = self.trainer.train(self.cid, rnd, global_state)
        result, state, host_train = outcome.result, outcome.state, outcome.host_seconds
        # The trained state may live in a model shared by all clients: take this client's update
        # out of it now, before the simulated compute time lets another client train on it.
        h1 = time.perf_counter()
        seed, slot = seed_for(self.seed, "client", self.cid, "codec", rnd), msg.meta.get("slot", 0)
        pre_metrics = {}
        if self.pre_codec is not None:  # quantize the plaintext update, encrypt its dequantization
            plain = PlainDomain(global_state)
            pre = self.pre_codec.encode(plain.to_wire(state) - plain.to_wire(global_state),
                                        seed=seed, slot=slot)
            pre_metrics = {**{f"plain_{k}": v for k, v in pre.metrics.items()},
                           "bytes_plain_codec": len(pre.payload)}
            q = self.pre_codec.decode(pre.payload, numel=plain.numel)
            h2 = time.perf_counter()
            delta = self.domain.encrypt_delta(q)
        else:
            h2 = time.perf_counter()
            delta = self.domain.to_wire(state) - global_wire
        host_crypto += time.perf_counter() - h2
        encoded = self.codec.encode(delta, seed=seed, slot=slot, rnd=rnd)
        row["host_encode_s"] = time.perf_counter() - h1
        compute_s = self.compute.seconds(result.samples * self.train_flops_per_sample, host_train)
        crypto_flops = sum(self.domain.crypto_flops)
        crypto_s = self.compute.seconds(crypto_flops, host_crypto) if crypto_flops else 0.0
        row.update(compute_s=compute_s, crypto_s=crypto_s, host_crypto_s=host_crypto,
                   samples=result.samples, steps=result.steps, train_loss=result.mean_loss,
                   host_train_s=host_train, **pre_metrics)
        t_off = self.availability.online_until(self.cid)  # its session's end (inf: none)
        yield self.env.timeout(min(compute_s + crypto_s, max(t_off - self.env.now, 0.0)))
        if self.env.now >= t_off or self.availability.drops_out(self.cid, rnd):
            self.router.signal(Message("dropout", self.name, "server", rnd, b""))
            self.recorder.clients.append({**row, "status": "dropout", "upload_s": float("nan"),
                                          "bytes_up": 0})
            return
        t_up = self.env.now
        upload = self.router.send(Message("update_up", self.name, "server", rnd, encoded.payload))
        yield upload if t_off == float("inf") else upload | self.env.timeout(t_off - t_up)
        sent = None if upload.triggered else self.router.cancel(upload)  # offline mid-upload
        if sent is not None:
            self.router.signal(Message("dropout", self.name, "server", rnd, b""))
            self.recorder.clients.append({**row, **encoded.metrics, "status": "aborted",
                                          "upload_s": self.env.now - t_up, "bytes_up": sent})
            return
        if not upload.triggered:
            yield upload  # its last byte had left before the session ended
        self.recorder.clients.append({**row, **encoded.metrics, "status": "uploaded",
                                      "upload_s": self.env.now - t_up, "bytes_up": len(encoded.payload)})

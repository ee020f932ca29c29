"""The client process: receive the global model, train locally, encode and upload the update."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import simpy
import torch

from fedsim.codecs.base import UpdateCodec
from fedsim.domain import PlainDomain, WeightDomain
from fedsim.message import DeferredPayload, Message
from fedsim.nodes.availability import Availability
from fedsim.nodes.router import Router
from fedsim.recorder import Recorder
from fedsim.rng import seed_for
from fedsim.trainers import Trainer
from fedsim.wire import pack_vector, unpack_vector, vector_numel


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

    def __init__(self, env: simpy.Environment, router: Router, inbox: simpy.FilterStore, cid: int,
                 trainer: Trainer, num_samples: int, train_flops_per_sample: float,
                 compute: ComputeModel, codec: UpdateCodec, availability: Availability,
                 recorder: Recorder, seed: int, domain: WeightDomain | None,
                 domain_from_key: Callable[[bytes, bytes | None], WeightDomain] | None = None,
                 initial_state: dict[str, torch.Tensor] | None = None, await_init: bool = False,
                 pre_codec: UpdateCodec | None = None, defer_training: bool = False):
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
        # train only when the server uses the update (the engine decides when that is exact)
        self.defer_training = defer_training

    def run(self):
        """Fetch keys if the scheme needs them, send the initial model if asked, then serve rounds."""
        if self._domain_from_key is not None:
            self.router.send(Message("key_request", self.name, "key_agent", 0, b"KREQ" + self.cid.to_bytes(4, "little")))
            key = yield self.inbox.get(lambda m: m.kind == "key")
            init = (yield self.inbox.get(lambda m: m.kind == "init_plain")) \
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
            # the codec set-up (e.g. the ENN encoder) and a round's codec state are the shared
            # codec object: their bytes count, the messages themselves need no handling
            msg = yield self.inbox.get(lambda m: m.kind in ("model_down", "codec_setup",
                                                            "codec_round"))
            if msg.kind == "model_down":
                yield from self._round(msg)

    def _round(self, msg: Message):
        rnd = msg.round
        t_recv = self.env.now
        row = {"round": rnd, "client": self.cid, "download_s": t_recv - msg.meta["t_send"],
               "bytes_down": msg.nbytes, "t_start": msg.meta["t_send"]}
        payload: bytes | DeferredPayload
        if self.defer_training:
            # the timeline needs only the work's size and the payload's size: train later, and
            # only if the server uses the update
            steps, samples = self.trainer.planned(self.cid, rnd)
            compute_s = self.compute.seconds(samples * self.train_flops_per_sample, 0.0)
            crypto_s = 0.0
            nbytes = self.codec.encoded_nbytes(vector_numel(msg.payload), rnd)
            payload = DeferredPayload(nbytes, lambda: self._train_and_encode(msg).payload)
        else:
            work = self._train_and_encode(msg)
            steps, samples, payload = work.steps, work.samples, work.payload
            compute_s = self.compute.seconds(samples * self.train_flops_per_sample, work.host_train_s)
            crypto_flops = sum(self.domain.crypto_flops)
            crypto_s = (self.compute.seconds(crypto_flops, work.host_crypto_s)
                        if crypto_flops else 0.0)
        row.update(compute_s=compute_s, crypto_s=crypto_s, samples=samples, steps=steps)
        t_off = self.availability.online_until(self.cid)  # its session's end (inf: none)
        yield self.env.timeout(min(compute_s + crypto_s, max(t_off - self.env.now, 0.0)))
        if self.env.now >= t_off or self.availability.drops_out(self.cid, rnd):
            self.router.signal(Message("dropout", self.name, "server", rnd, b""))
            self.recorder.clients.append({**row, "status": "dropout", "upload_s": float("nan"),
                                          "bytes_up": 0})
            return
        t_up = self.env.now
        upload = self.router.send(Message("update_up", self.name, "server", rnd, payload))
        yield upload if t_off == float("inf") else upload | self.env.timeout(t_off - t_up)
        sent = None if upload.triggered else self.router.cancel(upload)  # offline mid-upload
        if sent is not None:
            self.router.signal(Message("dropout", self.name, "server", rnd, b""))
            self.recorder.clients.append({**row, "status": "aborted",
                                          "upload_s": self.env.now - t_up, "bytes_up": sent})
            return
        if not upload.triggered:
            yield upload  # its last byte had left before the session ended
        self.recorder.clients.append({**row, "status": "uploaded", "upload_s": self.env.now - t_up,
                                      "bytes_up": len(payload)})

    def _train_and_encode(self, msg: Message) -> _Work:
        """Train on round ``msg.round``'s global model and encode the update; the outcome's
        measurements go to the recorder (the tables show them for aggregated updates)."""
        rnd = msg.round
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
        self.recorder.outcomes[(rnd, self.cid)] = {
            "host_encode_s": time.perf_counter() - h1, "host_crypto_s": host_crypto,
            "train_loss": result.mean_loss, "host_train_s": host_train, **pre_metrics,
            **encoded.metrics}
        return _Work(encoded.payload, result.steps, result.samples, host_train, host_crypto)


@dataclass(frozen=True)
class _Work:
    """What a client's local training and encoding produced, for its timeline."""

    payload: bytes
    steps: int
    samples: int
    host_train_s: float
    host_crypto_s: float

"""Forward-model consistency of every scheme adapter: at the true input the simulated
observation matches the captured one (cosine >= 0.99999); the negated capture gives <= -0.9999."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from fedsim.attacks import adapters
from fedsim.attacks.inverting import cosine_distance
from fedsim.attacks.labels import infer_labels
from fedsim.attacks.observation import Normalization
from fedsim.codecs.qsgd import QsgdCodec
from fedsim.domain import PlainDomain
from fedsim.keynet import KeyNetDomain, encrypt_input, plan_network
from fedsim.keynet.keys import KeySet, KeySlot
from fedsim.keynet.layout import layout_bytes, parse_layout
from tests.attacks.support import lenet, mnist_digits

SHAPE = (1, 1, 28, 28)


def _cos(a, b) -> float:
    return 1.0 - float(cosine_distance([t.detach() for t in a], [t.detach() for t in b]))


def _batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = mnist_digits()
    return torch.from_numpy(x[:n]).float(), torch.from_numpy(y[:n])


def _train(model, x, y, lr, schedule):
    """The client's real float32 SGD; returns the flat plain update."""
    trained = copy.deepcopy(model)
    opt = torch.optim.SGD(trained.parameters(), lr=lr)
    for rows in schedule:
        opt.zero_grad()
        F.cross_entropy(trained(x[rows]), y[rows]).backward()
        opt.step()
    dom = PlainDomain(model.state_dict())
    return dom.to_wire(trained.state_dict()) - dom.to_wire(model.state_dict()), trained


def _check(obs, truth, labels):
    sim = obs.forward_model(truth.to(obs.forward_model.dtype), labels)
    assert _cos(sim, obs.target) >= 0.99999
    assert _cos(sim, [-t for t in obs.target]) <= -0.9999


def test_fedavg_single_step_as_gradient():
    model, (x, y) = lenet(0), _batch(1)
    delta, _ = _train(model, x, y, 0.05, [torch.arange(1)])
    obs = adapters.update_observation(model, delta, 0.05, [torch.arange(1)], SHAPE, 10,
                                      Normalization())
    assert obs.forward_model.describe()["kind"] == "gradient"
    _check(obs, x, y)
    assert infer_labels(obs, "idlg").tolist() == y.tolist()


def test_fedavg_five_steps_unrolled():
    model, (x, y) = lenet(1), _batch(4)
    schedule = [torch.tensor([0, 1]), torch.tensor([2, 3])] * 2 + [torch.tensor([0, 1])]
    delta, _ = _train(model, x, y, 1e-4, schedule)
    obs = adapters.update_observation(model, delta, 1e-4, schedule, (4, 1, 28, 28), 10,
                                      Normalization())
    assert obs.forward_model.describe() == {"kind": "sgd_scheduled", "lr": 1e-4, "steps": 5,
                                            "dtype": "float64"}
    _check(obs, x, y)


def test_fedpaq_dequantized_update():
    model, (x, y) = lenet(2), _batch(1)
    delta, _ = _train(model, x, y, 0.05, [torch.arange(1)])
    codec = QsgdCodec(levels=2**16, bucket_size=512)
    observed = codec.decode(codec.encode(delta, seed=3, slot=0).payload, numel=delta.numel())
    obs = adapters.update_observation(model, observed, 0.05, [torch.arange(1)], SHAPE, 10,
                                      Normalization())
    _check(obs, x, y)
    coarse = QsgdCodec(levels=1, bucket_size=512)
    noisy = coarse.decode(coarse.encode(delta, seed=3, slot=0).payload, numel=delta.numel())
    obs1 = adapters.update_observation(model, noisy, 0.05, [torch.arange(1)], SHAPE, 10,
                                       Normalization())
    sim = obs1.forward_model(x.double(), y)
    assert 0.0 < _cos(sim, obs1.target) < 0.9  # s = 1 with buckets of 512: a very noisy view


def permutation_domain(model, seed: int = 0) -> KeyNetDomain:
    """KeyNet lowered-space domain with pure permutation keys (no gains, alpha = 1)."""
    plan = plan_network(model, SHAPE[1:], None, lower=True)
    slots = [KeySlot(s.size, s.alpha, False, s.identity, s.role) for s in plan.key_slots()]
    return KeyNetDomain(model, SHAPE[1:], KeySet.generate(slots, seed, "lowered"), plan=plan)


def test_keynet_encrypted_domain_permutation_keys():
    model, (x, y) = lenet(3), _batch(1)
    dom = permutation_domain(model)
    _, trained = _train(model, x, y, 0.05, [torch.arange(1)])
    wire0 = dom.to_wire(model.state_dict())
    delta = dom.to_wire(trained.state_dict()) - wire0
    layout = adapters.EncryptedLayout.from_domain(dom)
    obs = adapters.encrypted_observation(layout, wire0, delta, 0.05, SHAPE, 10, Normalization())
    x_enc = encrypt_input(dom.image_key, x).reshape(SHAPE)
    assert torch.allclose(obs.forward_model.logits(x_enc).float(), model(x), atol=1e-5)
    _check(obs, x_enc, y)
    assert infer_labels(obs, "idlg").tolist() == y.tolist()
    assert obs.forward_model.n_groups == sum(p.numel() for p in model.parameters()) + 1


def test_keynet_layout_message_matches_formula_and_domain():
    dom = permutation_domain(lenet(3))
    payload = layout_bytes(dom)
    segs = [s for s in dom.segments if s.kind == "layer"]
    assert len(payload) == 16 + sum(24 + 4 * (s.shape[0] + 1) + 4 * len(s.indices) for s in segs)
    layers, numel = parse_layout(payload)
    assert numel == dom.numel and len(layers) == len(segs)
    for got, seg in zip(layers, segs):
        assert got.shape == tuple(seg.shape) and got.start == seg.start
        assert (got.indptr == seg.indptr).all() and (got.indices == seg.indices).all()
    with pytest.raises(ValueError, match="trailing"):
        parse_layout(payload + b"\0")


class _IdentityEnn:
    """A lossless stand-in ENN (code = chunk, decoder = mean) to check the isolation algebra."""

    def __init__(self, slots: int, n: int = 64, scale: float = 2.0):
        self.config = SimpleNamespace(slots=slots, m=n, n=n)
        self.scale = scale

    def encode(self, update: torch.Tensor) -> bytes:
        n = self.config.n
        padded = torch.zeros(-(-update.numel() // n) * n)
        padded[: update.numel()] = update * self.scale
        return padded.numpy().tobytes()

    def payload_offset(self, payload: bytes) -> int:
        return 0

    def unchunk(self, chunks: torch.Tensor, numel: int, offset: int) -> torch.Tensor:
        return chunks.reshape(-1)[offset:offset + numel]

    def parse(self, payload: bytes, numel: int, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
        import numpy as np

        codes = torch.from_numpy(np.frombuffer(payload, dtype="float32").copy()).view(-1, self.config.n)
        return codes, torch.zeros(codes.shape[0])

    def silent_stack(self, numel: int, offset: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c, big_n = -(-numel // self.config.n), self.config.slots
        return (torch.zeros(c, big_n, self.config.n), torch.zeros(c, big_n),
                torch.zeros(big_n, dtype=torch.bool))

    def decode_stack(self, codes: torch.Tensor, rms: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        return codes.mean(dim=-2) / self.scale


@pytest.mark.parametrize("method", adapters.ISOLATIONS)
def test_enn_isolation_exact_decoder(method):
    model, (x, y) = lenet(4), _batch(3)
    codec = _IdentityEnn(slots=4)
    deltas = [_train(model, x[i:i + 1], y[i:i + 1], 0.05, [torch.arange(1)])[0] for i in range(3)]
    payloads = [codec.encode(d) for d in deltas]
    isolated = adapters.enn_isolate(codec, payloads, 1, method, deltas[1].numel())
    assert torch.allclose(isolated, deltas[1], atol=1e-6)
    obs = adapters.update_observation(model, isolated, 0.05, [torch.arange(1)], SHAPE, 10,
                                      Normalization())
    _check(obs, x[1:2], y[1:2])


def test_bad_isolation_and_sizes():
    model = lenet(0)
    with pytest.raises(ValueError, match="isolation"):
        adapters.enn_isolate(_IdentityEnn(2), [_IdentityEnn(2).encode(torch.zeros(70))], 0,
                             "bogus", 70)
    with pytest.raises(ValueError, match="parameters"):
        adapters.split_flat(model, torch.zeros(5), torch.float64)

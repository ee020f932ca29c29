"""Secure aggregation's protocol math without a simulation: exact sums under dropouts in every
protocol round, the wire sizes, the threshold, the fixed-point ring."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsim.secagg import ClientRound, Ring, SecAggAbort, ServerRound, threshold_count, wire
from fedsim.secagg.protocol import SECRET_BYTES

N, P = 10, 257


def _inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    xs = {c: torch.from_numpy(rng.normal(scale=0.1, size=P).astype(np.float32)) for c in range(N)}
    ws = {c: int(rng.integers(1, 200)) for c in range(N)}
    return xs, ws


def _protocol(ring: Ring, drop: dict[str, set[int]], threshold: float = 0.5):
    """Run one round with clients leaving before ``share_keys``, ``masked_input`` or
    ``unmasking``; returns (server's sum, survivors U3, payloads by kind and client)."""
    xs, ws = _inputs()
    rng = np.random.default_rng(1)
    clients = {c: ClientRound(c, 3, rng.bytes(SECRET_BYTES), ring) for c in range(N)}
    server = ServerRound(ring, P, threshold_count(threshold, N))
    sent: dict[str, dict[int, bytes]] = {"sa_advertise": {c: cl.advertise()
                                                          for c, cl in clients.items()}}
    keys = server.key_list(sent["sa_advertise"])
    sent["sa_shares"] = {c: cl.share_keys(keys) for c, cl in clients.items()
                         if c not in drop.get("share_keys", set())}
    routed = server.route(sent["sa_shares"])
    sent["sa_routed"], sent["masked_update"] = routed, {}
    for c in sorted(routed, reverse=True):  # arrival order must not matter
        if c not in drop.get("masked_input", set()):
            sent["masked_update"][c], _ = clients[c].masked_input(routed[c], xs[c], ws[c])
            server.add_masked(c, sent["masked_update"][c])
    request = server.unmask_request()
    u3 = sorted(sent["masked_update"])
    sent["sa_reveal"] = {c: clients[c].reveal(request) for c in u3
                         if c not in drop.get("unmasking", set())}
    total = server.unmask(sent["sa_reveal"])
    return total, u3, sent, keys, request


DROPOUTS = {
    "none": {},
    "one": {"masked_input": {4}},
    "30% before masked input": {"masked_input": {0, 5, 9}},
    "30% in every round": {"share_keys": {2}, "masked_input": {6}, "unmasking": {8}},
    "30% before unmasking": {"unmasking": {1, 2, 3}},
}


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("case", DROPOUTS)
def test_unmasked_sum_is_the_exact_fixed_point_sum_of_the_survivors(case, bits):
    ring = Ring(bits, 16)
    total, u3, _, _, _ = _protocol(ring, DROPOUTS[case])
    xs, ws = _inputs()
    expected = np.zeros(P + 1, dtype=np.uint64)
    for c in u3:  # plain integer sum of the survivors' encodings, reduced mod 2^k
        expected += ring.encode(xs[c], ws[c], N)[0].astype(np.uint64)
    assert np.array_equal(total, expected.astype(ring.dtype))
    dropped_masked = DROPOUTS[case].get("masked_input", set()) | DROPOUTS[case].get("share_keys",
                                                                                   set())
    assert u3 == sorted(set(range(N)) - dropped_masked)
    # and it decodes to the survivors' weighted mean up to the fixed-point resolution
    mean = sum(ws[c] * xs[c].double() for c in u3) / sum(ws[c] for c in u3)
    assert (ring.decode_mean(total).double() - mean).abs().max() <= 2.0 ** -16


def test_masked_inputs_look_nothing_like_the_inputs():
    ring = Ring(32, 16)
    _, _, sent, _, _ = _protocol(ring, {})
    xs, ws = _inputs()
    for c, payload in sent["masked_update"].items():
        y = wire.unpack_masked(payload, ring.dtype)
        x = ring.encode(xs[c], ws[c], N)[0]
        assert np.count_nonzero(y == x) < 3  # a masked word equals the input w.p. 2^-32


@pytest.mark.parametrize(("drop", "where"), [
    ({"share_keys": set(range(6))}, "ShareKeys: 4 clients, threshold 5"),
    ({"masked_input": set(range(6))}, "MaskedInputCollection: 4 clients, threshold 5"),
    ({"masked_input": {0}, "unmasking": set(range(1, 6))}, "Unmasking: 4 clients, threshold 5"),
])
def test_fewer_than_threshold_aborts(drop, where):
    with pytest.raises(SecAggAbort, match=f"^{where}$"):
        _protocol(Ring(32, 16), drop)


def test_threshold_is_a_fraction_of_the_round_but_never_one_client():
    assert [threshold_count(0.5, n) for n in (2, 3, 10, 11)] == [2, 2, 5, 6]
    assert threshold_count(0.01, 10) == 2 and threshold_count(1.0, 7) == 7


def test_payload_sizes_match_the_documented_formulas():
    ring = Ring(32, 16)
    drop = {"share_keys": {2}, "masked_input": {6, 7}, "unmasking": {8}}
    _, _, sent, keys, request = _protocol(ring, drop)
    n1, n2, n3 = N, N - 1, N - 3
    assert {len(p) for p in sent["sa_advertise"].values()} == {64}
    assert len(keys) == wire.keys_nbytes(n1) == 8 + 68 * n1
    assert {len(p) for p in sent["sa_shares"].values()} == {4 + 76 * (n1 - 1)}
    assert {len(p) for p in sent["sa_routed"].values()} == {4 + 76 * (n2 - 1)}
    assert {len(p) for p in sent["masked_update"].values()} == {8 + 4 * (P + 1)}
    assert len(request) == wire.unmask_nbytes(n3) == 4 + 4 * n3
    assert {len(p) for p in sent["sa_reveal"].values()} == {8 + 20 * n3 + 36 * (n2 - n3)}
    assert wire.masked_nbytes(P, 64) == 8 + 8 * (P + 1)


def test_a_client_never_reveals_both_secrets_of_one_client():
    ring = Ring(32, 16)
    _, u3, sent, _, _ = _protocol(ring, {"masked_input": {1, 4}})
    for payload in sent["sa_reveal"].values():
        b, s = wire.unpack_reveal(payload)
        assert sorted(b) == u3 and sorted(s) == [1, 4]


def test_fixed_point_encoding_clips_so_the_sum_cannot_wrap():
    ring = Ring(32, 4)
    c = ring.clip_bound(3)
    big = torch.tensor([1e12, -1e12, 1.5, -1.5])
    enc, clipped = ring.encode(big, 2, 3)
    assert clipped == 2
    assert list(ring.signed(enc)) == [c, -c, 48, -48, 2]
    total = sum(enc.astype(np.uint64) for _ in range(3)).astype(ring.dtype)  # three such clients
    assert list(ring.signed(total)[:2]) == [3 * c, -3 * c]  # no wrap-around
    assert ring.decode_mean(total)[2].item() == 1.5


def test_ring_rejects_unsupported_parameters():
    with pytest.raises(ValueError, match="modulus_bits must be 32 or 64, got 16"):
        Ring(16, 8)
    with pytest.raises(ValueError, match="fraction_bits must be in 0..30, got 31"):
        Ring(32, 31)

"""Keys: invertible, sparse, well conditioned, ReLU-compatible at α = 1, seeded, serializable."""

from __future__ import annotations

import numpy as np
import pytest
from keynet_nets import LENET_INPUT, make_lenet

from fedsim.keynet.domain import make_keys
from fedsim.keynet.keys import (
    SEED_BYTES,
    Key,
    KeySet,
    KeySlot,
    random_key,
    seed_from_bytes,
    seed_to_bytes,
)
from fedsim.keynet.plan import plan_network


def _nnz_per_line(m) -> tuple[int, int]:
    m = m.tocsr()
    return int(np.diff(m.indptr).max()), int(np.diff(m.tocsc().indptr).max())


@pytest.mark.parametrize("n,alpha", [(1, 1), (10, 1), (784, 2), (785, 4), (101, 8), (3, 4)])
def test_key_inverse_sparsity_and_condition(n, alpha):
    key = random_key(np.random.default_rng(n + alpha), n, alpha)
    a, ainv = key.matrix(), key.inverse_matrix()
    assert np.abs(a @ ainv - np.eye(n + 1)).max() < 1e-10
    last = a.toarray()[-1]
    np.testing.assert_array_equal(last, np.eye(n + 1)[-1])
    assert max(_nnz_per_line(a)) <= alpha and max(_nnz_per_line(ainv)) <= alpha
    assert key.cond_bound() < 1e3
    assert np.linalg.cond(a.toarray(), np.inf) <= key.cond_bound() * (1 + 1e-9)


def test_block_keys_really_mix():
    key = random_key(np.random.default_rng(0), 64, 4)
    assert _nnz_per_line(key.matrix(False)) == (4, 4)
    assert _nnz_per_line(key.inverse_matrix(False)) == (4, 4)


def test_alpha_one_commutes_with_relu_exactly_and_blocks_do_not():
    rng = np.random.default_rng(1)
    z = rng.standard_normal((500, 3))
    a1 = random_key(rng, 500, 1).matrix(False)
    np.testing.assert_array_equal(np.maximum(a1 @ z, 0), a1 @ np.maximum(z, 0))
    a2 = random_key(rng, 500, 2).matrix(False)
    assert np.abs(np.maximum(a2 @ z, 0) - a2 @ np.maximum(z, 0)).max() > 0.05


def test_no_gains_slot_is_a_pure_permutation():
    key = random_key(np.random.default_rng(2), 50, 1, gains=False)
    np.testing.assert_array_equal(key.gain, 1.0)
    np.testing.assert_array_equal(np.sort(key.perm), np.arange(50))


def test_same_seed_same_keys_other_seed_other_keys():
    plan = plan_network(make_lenet(), LENET_INPUT)
    k1, k2 = (make_keys(plan, 7, alpha=2) for _ in range(2))
    k3 = make_keys(plan, 8, alpha=2)
    assert k1.to_bytes() == k2.to_bytes()
    assert k1.to_bytes() != k3.to_bytes()
    gen = make_keys(plan, np.random.default_rng(5), alpha=2)
    assert gen.to_bytes() == make_keys(plan, np.random.default_rng(5), alpha=2).to_bytes()


def test_key_bytes_round_trip_with_documented_size():
    slots = [KeySlot(10), KeySlot(13, alpha=4), KeySlot(5, identity=True), KeySlot(0),
             KeySlot(9, alpha=3, gains=False)]
    keys = KeySet.generate(slots, 3, "channel")
    buf = keys.to_bytes()
    assert len(buf) == keys.nbytes()
    # 9 header + per key 8 + 12 n (+ 8 (⌊n/α⌋ α² + r²) for blocks)
    expected = 9 + (8 + 120) + (8 + 156 + 8 * (3 * 16 + 1)) + (8 + 60) + 8 + (8 + 108 + 8 * 27)
    assert len(buf) == expected
    back = KeySet.from_bytes(buf)
    assert back.space == "channel" and back.to_bytes() == buf
    for a, b in zip(keys.keys, back.keys):
        assert (a.matrix() != b.matrix()).nnz == 0


def test_key_set_rejects_garbage():
    with pytest.raises(ValueError):
        KeySet.from_bytes(b"nope" + bytes(5))
    buf = KeySet.generate([KeySlot(4)], 0, "lowered").to_bytes()
    with pytest.raises(ValueError):
        KeySet.from_bytes(buf + b"\0")


def test_seed_message():
    buf = seed_to_bytes(2**63 + 5)
    assert len(buf) == SEED_BYTES and seed_from_bytes(buf) == 2**63 + 5


def test_single_key_round_trip():
    key = random_key(np.random.default_rng(9), 30, 4)
    back, end = Key.from_bytes(key.to_bytes())
    assert end == key.nbytes()
    np.testing.assert_array_equal(back.blocks, key.blocks)
    np.testing.assert_array_equal(back.tail, key.tail)

"""LEAF's synthetic(alpha, beta): shapes, the published generator's moments, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsim.data.synthetic import CLASSES, FEATURES, generate, sample_counts

torch.set_num_threads(1)


def test_sample_counts_follow_the_published_lognormal():
    """floor(lognormal(4, 2)) + 50: median e^4, 84th percentile e^6, never below 50."""
    counts = sample_counts(100_000, 4.0, 2.0, 50, np.random.default_rng(0))
    assert counts.dtype == np.int64 and counts.min() >= 50
    extra = counts - 50 + 0.5  # undo the floor on average
    assert np.median(np.log(extra)) == pytest.approx(4.0, abs=0.03)
    assert np.log(np.quantile(extra, 0.8413)) == pytest.approx(6.0, abs=0.05)


def test_shapes_split_and_partition():
    d = generate(30, 1.0, 1.0, rng=np.random.default_rng(1), mu=3.0, sigma=1.0, min_samples=10)
    counts = sample_counts(30, 3.0, 1.0, 10, np.random.default_rng(1))  # the same first draw
    n_test = np.floor(0.1 * counts).astype(int)
    assert d.x_train.shape == (int((counts - n_test).sum()), FEATURES)
    assert d.x_test.shape == (int(n_test.sum()), FEATURES)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert [len(p) for p in d.client_parts] == list(counts - n_test)
    joined = np.concatenate(d.client_parts)
    assert np.array_equal(joined, np.arange(len(d.y_train)))  # each sample owned once, in order
    assert 0 <= int(d.y_train.min()) and int(d.y_train.max()) < CLASSES == d.num_classes


def test_feature_covariance_is_j_to_the_minus_1_2():
    """Within a client, feature j varies with variance j^-1.2 around the client's mean."""
    d = generate(4, 0.0, 0.0, rng=np.random.default_rng(2), mu=np.log(4000), sigma=0.0,
                 min_samples=1, test_fraction=0.0)
    want = np.arange(1, FEATURES + 1) ** -1.2
    for p in d.client_parts:
        var = d.x_train[p].double().var(dim=0).numpy()
        np.testing.assert_allclose(var, want, rtol=0.12)


@pytest.mark.parametrize("beta", [0.0, 2.0])
def test_client_means_have_variance_one_plus_beta_squared(beta):
    """v_k ~ N(B_k, 1) with B_k ~ N(0, beta): client feature means vary by 1 + beta^2."""
    d = generate(600, 0.0, beta, rng=np.random.default_rng(3), mu=np.log(200), sigma=0.0,
                 min_samples=1, test_fraction=0.0)
    means = np.stack([d.x_train[p].double().mean(dim=0).numpy() for p in d.client_parts])
    # sample-mean noise adds about j^-1.2 / 200 per feature: negligible
    assert means.var() == pytest.approx(1 + beta**2, rel=0.1)


def test_labels_are_non_iid_by_construction():
    """Each client labels with its own random linear model: per-client label distributions
    are far more concentrated than the pooled one; alpha = beta = 0 is the least skewed."""

    def entropy(counts):
        p = counts[counts > 0] / counts.sum()
        return float(-(p * np.log(p)).sum())

    def client_entropy(alpha, beta):
        d = generate(200, alpha, beta, rng=np.random.default_rng(4), mu=np.log(300), sigma=0.0,
                     min_samples=1, test_fraction=0.0)
        y = d.y_train.numpy()
        per = np.mean([entropy(np.bincount(y[p], minlength=CLASSES)) for p in d.client_parts])
        return per, entropy(np.bincount(y, minlength=CLASSES))

    per0, pooled0 = client_entropy(0.0, 0.0)
    per1, _ = client_entropy(1.0, 1.0)
    assert pooled0 > 0.95 * np.log(CLASSES)  # pooled labels are close to uniform
    assert per1 < per0 < 0.9 * pooled0


def test_deterministic_in_the_generator():
    a = generate(20, 0.5, 0.5, rng=np.random.default_rng(5), mu=3.0, sigma=1.0, min_samples=5)
    b = generate(20, 0.5, 0.5, rng=np.random.default_rng(5), mu=3.0, sigma=1.0, min_samples=5)
    c = generate(20, 0.5, 0.5, rng=np.random.default_rng(6), mu=3.0, sigma=1.0, min_samples=5)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert a.x_train.shape != c.x_train.shape or not torch.equal(a.x_train, c.x_train)

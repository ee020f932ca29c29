"""Inverting Gradients, its schedule and restart rule, and the FedAvg forward model."""

import dataclasses

import pytest
import torch
from support import lenet, mnist_digits

from fedsim.attacks import (
    IG_PAPER_LENET,
    GradientForwardModel,
    Observation,
    UnrolledFedAvgForwardModel,
    inverting_attack,
    observe,
    psnr,
)
from fedsim.attacks.inverting import cosine_distance, milestones


def _digit(index: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = mnist_digits()
    return torch.tensor(images[index : index + 1]), torch.tensor(labels[index : index + 1])


def test_milestones_match_the_reference_schedule():
    assert milestones(4800) == (1799, 2999, 4203)


def test_inverting_gradients_improves_gradient_loss():
    x, y = _digit()
    fm = GradientForwardModel(lenet(1))
    obs = Observation(observe(fm, x, y), fm, tuple(x.shape), 10)
    config = dataclasses.replace(IG_PAPER_LENET, iterations=60, restarts=2)
    result = inverting_attack(obs, config, seed=0)
    assert result.final_grad_loss < 0.5 * result.trace[0]
    assert result.final_grad_loss == min(result.extras["restart_scores"])
    assert result.iterations == 120 and result.labels.tolist() == y.tolist()
    assert result.reconstruction.min() >= 0 and result.reconstruction.max() <= 1  # boxed


def test_restart_choice_is_reproducible_and_ignores_ground_truth():
    x, y = _digit()
    fm = GradientForwardModel(lenet(1))
    obs = Observation(observe(fm, x, y), fm, tuple(x.shape), 10)
    config = dataclasses.replace(IG_PAPER_LENET, iterations=20, restarts=3)
    first = inverting_attack(obs, config, seed=4)
    x.fill_(0.5)  # corrupt the ground truth after observing: nothing may change
    second = inverting_attack(obs, config, seed=4)
    assert first.extras["best_restart"] == second.extras["best_restart"]
    assert torch.equal(first.reconstruction, second.reconstruction)


@pytest.mark.parametrize("steps", [1, 5])
def test_fedavg_forward_model_is_consistent(steps):
    x, y = _digit()
    model = lenet(2)
    fm = UnrolledFedAvgForwardModel(model, lr=1e-4, steps=steps, dtype=torch.float32)
    observed = observe(fm, x, y)
    simulated = [t.detach() for t in fm(x.float(), y)]
    assert 1 - float(cosine_distance(simulated, observed)) >= 0.99999
    assert 1 - float(cosine_distance(simulated, [-o for o in observed])) <= -0.9999
    if steps == 1:  # one step is the gradient times -lr (float64: θ - lr·g - θ is exact enough)
        delta = observe(UnrolledFedAvgForwardModel(model, lr=1e-4, steps=1), x, y)
        grads = observe(GradientForwardModel(model), x, y)
        for d, g in zip(delta, grads):
            torch.testing.assert_close(d, -1e-4 * g, rtol=1e-6, atol=1e-15)


def test_fedavg_variant_recovers_one_digit_from_one_step():
    x, y = _digit()
    fm = UnrolledFedAvgForwardModel(lenet(1), lr=1e-4, steps=1)
    obs = Observation(observe(fm, x, y), fm, tuple(x.shape), 10)
    result = inverting_attack(obs, dataclasses.replace(IG_PAPER_LENET, iterations=300), seed=0)
    assert result.labels.tolist() == y.tolist()  # iDLG rule on -Δ/lr
    assert psnr(result.reconstruction, x)[0] >= 25

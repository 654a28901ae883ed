"""Every algorithm on tiny random data: it builds, updates, predicts; plus exact checks of their parts."""
import math

import pytest
import torch

from XRM.algorithms import ALGORITHMS, GroupDRO, TrainingSet, build_algorithm
from XRM.networks import LinearHead
from XRM.sampling import StepSampler, group_balancing_weights, subsample_to_smallest_group

HPARAMS = {"optimizer": "sgd", "lr": 0.1, "weight_decay": 0.0, "eta": 0.1, "lambda": 10.0,
           "penalty_anneal_iters": 2, "tau": 0.1}


def _training_set(n: int = 16, held_out: bool = True) -> tuple[TrainingSet, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=generator)
    y = (x[:, 0] > 0).long()
    a = (x[:, 1] > 0).long()
    logits = torch.randn(n, 2, generator=generator) if held_out else None
    return TrainingSet(y, y * 2 + a, 2, 2, generator, logits), x


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_each_algorithm_updates_and_predicts(name):
    training_set, x = _training_set()
    algorithm = build_algorithm(name, lambda: LinearHead(3, 2), training_set, HPARAMS)
    before = [p.detach().clone() for p in algorithm.network.parameters()]
    index = torch.arange(len(x))
    for _ in range(3):
        algorithm.update(index, x, training_set.y, training_set.groups)
    after = list(algorithm.network.parameters())
    assert any(not torch.equal(b, a) for b, a in zip(before, after))
    logits = algorithm.predict(x)
    expected_shape = (16, 2, 2) if algorithm.phase == 1 else (16, 2)
    assert logits.shape == expected_shape and torch.isfinite(logits).all()
    # state needed to resume is in the state dict
    assert set(algorithm.state_dict()) >= {f"network.{k}" for k in algorithm.network.state_dict()}


def test_group_dro_weights_follow_group_losses_exactly():
    training_set, x = _training_set()
    group_dro = GroupDRO(LinearHead(3, 2), training_set, HPARAMS)  # zero logits: every loss is log 2
    groups = torch.tensor([0, 0, 3, 3])
    logits = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    group_dro.loss(logits, torch.arange(4), torch.tensor([0, 0, 1, 1]), groups)
    # groups 0 and 3 had loss log 2: q_g ∝ 0.25 * exp(0.1 log 2); groups 1, 2 stay at 0.25
    up = 0.25 * math.exp(0.1 * math.log(2))
    total = 2 * up + 0.5
    assert group_dro.q.tolist() == pytest.approx([up / total, 0.25 / total, 0.25 / total, up / total])


def test_mat_shift_enters_training_only():
    training_set, x = _training_set()
    mat = build_algorithm("MAT", lambda: LinearHead(3, 2), training_set, HPARAMS)
    assert mat.shift.shape == (16, 2)
    assert torch.equal(mat.predict(x), mat.network(x))  # no shift at prediction time
    logits = torch.zeros(16, 2)
    loss = mat.loss(logits, torch.arange(16), training_set.y, training_set.groups)
    expected = torch.nn.functional.cross_entropy(mat.shift, training_set.y)
    assert loss.item() == pytest.approx(expected.item())


def test_samplers_balance_and_subsample_groups():
    groups = torch.tensor([0] * 6 + [1] * 2 + [2] * 4)
    weights = group_balancing_weights(groups)
    assert weights[:6].sum().item() == pytest.approx(1.0)
    assert weights[6:8].sum().item() == pytest.approx(1.0)
    subset = subsample_to_smallest_group(groups, torch.Generator().manual_seed(1))
    assert torch.bincount(groups[subset]).tolist() == [2, 2, 2]
    sampler = StepSampler(torch.arange(12), 4, seed=2)
    epoch = torch.cat([sampler.batch(step) for step in range(3)])
    assert sorted(epoch.tolist()) == list(range(12))  # one epoch sees every example once
    assert not torch.equal(epoch, torch.cat([sampler.batch(step) for step in range(3, 6)]))  # reshuffled
    # a batch depends on (seed, step) only: a fresh sampler resumed at step 7 draws the same
    assert torch.equal(StepSampler(torch.arange(12), 4, seed=2).batch(7), sampler.batch(7))
    balanced = StepSampler(torch.arange(12), 3000, seed=0, weights=weights)
    assert torch.bincount(groups[balanced.batch(0)]).tolist() == pytest.approx([1000, 1000, 1000], abs=100)


def test_sgd_momentum_defaults_to_0_9_and_zero_gives_plain_gradient_steps():
    training_set, x = _training_set()
    default = build_algorithm("ERM", lambda: LinearHead(3, 2), training_set, HPARAMS)
    assert [group["momentum"] for group in default.optimizer.param_groups] == [0.9, 0.9]
    plain = build_algorithm("ERM", lambda: LinearHead(3, 2), training_set, {**HPARAMS, "sgd_momentum": 0.0})
    index, y = torch.arange(len(x)), training_set.y
    weight, bias = torch.zeros(2, 3, requires_grad=True), torch.zeros(2, requires_grad=True)
    for _ in range(2):
        plain.update(index, x, y, training_set.groups)
        loss = torch.nn.functional.cross_entropy(x @ weight.T + bias, y)
        grad_weight, grad_bias = torch.autograd.grad(loss, [weight, bias])
        with torch.no_grad():  # w <- w - lr * grad: no velocity carried over
            weight -= HPARAMS["lr"] * grad_weight
            bias -= HPARAMS["lr"] * grad_bias
    assert torch.allclose(plain.network.weight, weight, atol=1e-6)
    assert torch.allclose(plain.network.bias, bias, atol=1e-6)

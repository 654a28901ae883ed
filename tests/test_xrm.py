"""XRM's pieces: flip probability, class-balanced loss, label flipping, cross-mistakes, degeneracy."""
import pytest
import torch
import torch.nn.functional as F

from XRM.algorithms import Batch, RunData
from XRM.algorithms.xrm import (XRM, class_balanced_cross_entropy, cross_mistakes, flip_probability, flip_rates,
                                is_degenerate)


def test_flip_probability_is_zero_at_chance_and_one_when_certain():
    probabilities = flip_probability(torch.tensor([0.5, 0.75, 1.0]), num_classes=2)
    assert probabilities.tolist() == pytest.approx([0.0, 0.5, 1.0])
    # K = 3: (0.6 - 1/3) * 3 / 2 = 0.4
    assert flip_probability(torch.tensor([0.6]), num_classes=3).item() == pytest.approx(0.4)


def test_class_balanced_loss_sums_per_class_means():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    y = torch.tensor([0, 0, 1])
    losses = F.cross_entropy(logits, y, reduction="none")
    expected = (losses[0] + losses[1]) / 2 + losses[2]
    loss = class_balanced_cross_entropy(logits[None], y[None], torch.ones(1, 3), 2)
    assert loss.item() == pytest.approx(expected.item())


def test_labels_flip_to_a_certain_held_out_prediction():
    n = 8
    y = torch.zeros(n, dtype=torch.long)
    xrm = XRM(2)
    run = RunData(y, y, 2, 1, 1, seed=0, hparams={})
    state = {key: value[None] for key, value in xrm.initial_state(run).items()}
    # both twins output a huge logit for class 1: held-out confidence 1 -> every label flips
    twin_logits = torch.tensor([-100.0, 100.0])[None, None, :, None].expand(1, n, 2, 2)
    batch = Batch(torch.arange(n)[None], y[None], y[None], torch.ones(1, n), torch.rand(1, n), 0)
    _, state = xrm.loss(twin_logits, batch, state, {})
    assert state["dynamic_labels"][0, :n].tolist() == [1] * n
    assert flip_rates(state["dynamic_labels"], y).tolist() == [1.0]


def test_padding_writes_no_label():
    y = torch.zeros(4, dtype=torch.long)
    xrm = XRM(2)
    state = {key: value[None] for key, value in xrm.initial_state(RunData(y, y, 2, 1, 1, 0, {})).items()}
    twin_logits = torch.tensor([-100.0, 100.0])[None, None, :, None].expand(1, 4, 2, 2)
    batch = Batch(torch.tensor([[0, 1, 4, 4]]), torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long),
                  torch.tensor([[1.0, 1.0, 0.0, 0.0]]), torch.zeros(1, 4), 0)
    _, state = xrm.loss(twin_logits, batch, state, {})
    assert state["dynamic_labels"][0, :4].tolist() == [1, 1, 0, 0]  # examples 2 and 3 were not in the batch


def test_cross_mistakes_and_degeneracy():
    y = torch.tensor([0, 0, 1, 1])
    twin_logits = torch.zeros(4, 2, 2)
    twin_logits[:, :, 0] = torch.tensor([[1.0, 0], [1.0, 0], [0, 1.0], [0, 1.0]])  # first twin right everywhere
    twin_logits[:, :, 1] = torch.tensor([[1.0, 0], [0, 1.0], [0, 1.0], [1.0, 0]])  # second wrong on 1 and 3
    attributes = cross_mistakes(twin_logits, y)
    assert attributes.tolist() == [0, 1, 0, 1]
    assert not is_degenerate(y, attributes)
    assert is_degenerate(y, torch.tensor([0, 1, 0, 0]))  # class 1 not split

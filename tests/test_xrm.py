"""XRM's pieces: flip probability, class-balanced loss, label flipping, cross-mistakes, degeneracy."""
import pytest
import torch
import torch.nn.functional as F

from XRM.algorithms import TrainingSet, build_algorithm, class_balanced_cross_entropy, flip_probability
from XRM.group_inference import cross_mistakes, is_degenerate
from XRM.networks import LinearHead


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
    assert class_balanced_cross_entropy(logits, y, 2).item() == pytest.approx(expected.item())


def test_labels_flip_to_a_certain_held_out_prediction():
    n = 8
    x = torch.zeros(n, 2)
    y = torch.zeros(n, dtype=torch.long)
    generator = torch.Generator().manual_seed(0)
    training_set = TrainingSet(y, torch.zeros(n, dtype=torch.long), 2, 1, generator)
    hparams = {"optimizer": "sgd", "lr": 0.0, "weight_decay": 0.0}
    xrm = build_algorithm("XRM", lambda: LinearHead(2, 2), training_set, hparams)
    # both twins output a huge logit for class 1: held-out confidence 1 -> every label flips
    for twin in xrm.network.twins:
        twin.bias.data = torch.tensor([-100.0, 100.0])
    xrm.update(torch.arange(n), x, y, y)
    assert xrm.dynamic_labels.tolist() == [1] * n
    assert xrm.flip_rate().item() == pytest.approx(1.0)
    assert xrm.true_labels.tolist() == [0] * n


def test_cross_mistakes_and_degeneracy():
    y = torch.tensor([0, 0, 1, 1])
    twin_logits = torch.zeros(4, 2, 2)
    twin_logits[:, :, 0] = torch.tensor([[1.0, 0], [1.0, 0], [0, 1.0], [0, 1.0]])  # first twin right everywhere
    twin_logits[:, :, 1] = torch.tensor([[1.0, 0], [0, 1.0], [0, 1.0], [1.0, 0]])  # second wrong on 1 and 3
    attributes = cross_mistakes(twin_logits, y)
    assert attributes.tolist() == [0, 1, 0, 1]
    assert not is_degenerate(y, attributes)
    assert is_degenerate(y, torch.tensor([0, 1, 0, 0]))  # class 1 not split

"""Group ids and worst-group accuracy, including more than two attributes."""
import pytest
import torch

from XRM.evaluation import GroupAccuracy
from XRM.groups import group_ids


def test_group_ids_count_attributes_from_the_data():
    y = torch.tensor([0, 0, 1, 1])
    a = torch.tensor([0, 7, 3, 7])  # eight attribute values, as on CivilComments val/test
    assert group_ids(y, a).tolist() == [0, 7, 11, 15]
    # a fixed 2 * y + a would collide (0, 7) with (1, 5): here they stay apart
    assert len(set(group_ids(torch.tensor([0, 1]), torch.tensor([7, 5])).tolist())) == 2


def test_worst_group_accuracy_over_eight_attributes():
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1])
    a = torch.tensor([0, 0, 5, 5, 7, 7, 7, 2, 2])
    predictions = torch.tensor([0, 0, 0, 1, 1, 0, 0, 1, 1])
    other_run = torch.ones(9, dtype=torch.long)  # a second run of the stack predicts 1 everywhere
    average, worst = GroupAccuracy(y, a)(torch.stack([predictions, other_run]))
    # groups: (0,0) 2/2, (0,5) 1/2, (1,7) 1/3, (1,2) 2/2; the second run gets class 0's groups all wrong
    assert worst.tolist() == pytest.approx([1 / 3, 0.0])
    assert average.tolist() == pytest.approx([6 / 9, 5 / 9])

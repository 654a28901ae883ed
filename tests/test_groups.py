"""Group ids and worst-group accuracy, including more than two attributes."""
import pytest
import torch

from XRM.common.groups import group_ids
from XRM.engine.evaluation import GroupAccuracy


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


def test_va_wga_uses_the_groups_of_each_runs_group_label_source():
    from XRM.data.base import SplitTensors
    from XRM.engine.evaluation import StackEvaluator

    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    true = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])
    inferred = torch.tensor([0, 1, 1, 1, 0, 0, 0, 1])
    split = SplitTensors(torch.zeros(8, 1), y, true)
    prediction = torch.tensor([0, 1, 0, 0, 1, 1, 0, 1])  # wrong on examples 1 and 6
    # three runs predicting alike, with the sources 'yes' (true groups), 'no' (the classes), a phase-1 file
    evaluator = StackEvaluator(split, split, [true, torch.zeros(8, dtype=torch.long), inferred], [None, inferred, inferred])
    metrics = evaluator(lambda x: torch.nn.functional.one_hot(prediction, 2).float().expand(3, 8, 2))
    # true groups (0,0) 1/2, (0,1) 2/2, (1,0) 2/2, (1,1) 1/2; classes 3/4 and 3/4; inferred (0,0) 1/1,
    # (0,1) 2/3, (1,0) 2/3, (1,1) 1/1
    assert metrics["va_wga"].tolist() == pytest.approx([0.5, 0.75, 2 / 3])
    assert metrics["va_gi_wga"][1:].tolist() == pytest.approx([2 / 3, 2 / 3]) and metrics["va_gi_wga"][0].isnan()
    assert metrics["te_wga"].tolist() == pytest.approx([0.5] * 3)  # test: always the true groups
    # each true test group's accuracy, keyed by its id y * 2 + a
    per_group = {key: metrics[key].tolist() for key in metrics if key.startswith("te_acc_group_")}
    assert per_group == {"te_acc_group_0": [0.5] * 3, "te_acc_group_1": [1.0] * 3,
                         "te_acc_group_2": [1.0] * 3, "te_acc_group_3": [0.5] * 3}
    assert metrics["va_avg_acc"].tolist() == pytest.approx([0.75] * 3)

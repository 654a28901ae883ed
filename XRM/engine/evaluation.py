"""Evaluation of a stack: accuracy and worst-group accuracy of every run at once, on the device.

Nothing here waits for the device: metrics stay tensors [H] until the loop reads them.
"""
import torch

from XRM.common.groups import group_ids
from XRM.data.base import SplitTensors
from XRM.results import records


class GroupAccuracy:
    """Average and worst-group accuracy of predictions on one split with given attributes."""

    def __init__(self, y: torch.Tensor, attributes: torch.Tensor) -> None:
        groups = group_ids(y, attributes.to(y.device))
        present, inverse = torch.unique(groups, return_inverse=True)
        self.y = y
        self.group_ids = present.tolist()  # read once here, so that evaluating never waits for the device
        self.membership = torch.nn.functional.one_hot(inverse).float()  # [n, groups present]
        self.sizes = self.membership.sum(dim=0)

    def per_group(self, predictions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(average accuracy [H], accuracy of each group present [H, G], in ``group_ids`` order)."""
        correct = (predictions == self.y).float()
        return correct.mean(dim=1), (correct @ self.membership) / self.sizes

    def __call__(self, predictions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(average accuracy [H], worst-group accuracy [H]) of predictions [H, n]."""
        average, per_group = self.per_group(predictions)
        return average, per_group.min(dim=1).values


def class_difference(per_class: torch.Tensor) -> torch.Tensor:
    """ClassDiff: the mean absolute difference between the accuracies of every pair of classes,
    per_class [H, C] -> [H] (binary: |acc_0 - acc_1|; 0 with a single class)."""
    classes = per_class.shape[1]
    differences = (per_class[:, :, None] - per_class[:, None, :]).abs().sum(dim=(1, 2))
    return differences / max(classes * (classes - 1), 1)


def _shared(attributes: list[torch.Tensor | None], y: torch.Tensor) -> list[tuple[GroupAccuracy, torch.Tensor]]:
    """One GroupAccuracy per distinct attribute tensor, with the members [k] that use it."""
    sources: dict[int, tuple[torch.Tensor, list[int]]] = {}
    for member, tensor in enumerate(attributes):
        if tensor is not None:
            sources.setdefault(id(tensor), (tensor, []))[1].append(member)
    return [(GroupAccuracy(y, tensor), torch.tensor(members, device=y.device)) for tensor, members in sources.values()]


class StackEvaluator:
    """Phase-2 metrics of H runs, as the reference defines them.

    ``va_wga``: worst-group accuracy over the validation groups of each run's --group_labels
    source (``validation_groups[h]``: the true attributes for 'yes', zeros for 'no', so the
    classes, and a phase-1 file's inferred attributes); ``va_gi_wga``: over the XRM-inferred
    validation groups where the run has them (``inferred[h]``, else NaN); ``te_wga``, the
    average accuracies and each test group's accuracy (``te_acc_group_<g>``): over the true groups;
    ``va_neg_class_diff``: minus ClassDiff of the validation class accuracies (labels only).
    """

    def __init__(self, validation: SplitTensors, test: SplitTensors, validation_groups: list[torch.Tensor],
                 inferred: list[torch.Tensor | None]) -> None:
        self.splits = {"va": validation, "te": test}
        self.test_groups = GroupAccuracy(test.y, test.a)
        self.validation_classes = GroupAccuracy(validation.y, torch.zeros_like(validation.y))
        self.validation_groups = _shared(validation_groups, validation.y)
        self.inferred = _shared(inferred, validation.y)

    @staticmethod
    def _per_member(shared: list[tuple[GroupAccuracy, torch.Tensor]], predictions: torch.Tensor) -> torch.Tensor:
        worst = torch.full((len(predictions),), float("nan"), device=predictions.device)
        for accuracy, members in shared:
            worst[members] = accuracy(predictions[members])[1]
        return worst

    def validation(self, predict) -> dict[str, torch.Tensor]:
        """The validation metrics (va_avg_acc, va_wga, va_gi_wga) -> [H] values; ``predict(inputs)``
        gives every run's logits [H, n, K]."""
        validation = predict(self.splits["va"].x).argmax(dim=-1)
        return {
            records.VA_AVG_ACC: (validation == self.splits["va"].y).float().mean(dim=1),
            records.VA_WGA: self._per_member(self.validation_groups, validation),
            records.VA_GI_WGA: self._per_member(self.inferred, validation),
            records.VA_NEG_CLASS_DIFF: -class_difference(self.validation_classes.per_group(validation)[1]),
        }

    def test(self, predict) -> dict[str, torch.Tensor]:
        """The test metrics (te_avg_acc, te_wga, te_acc_group_<g>) -> [H] values: a pass over the
        test split for every run of the stack (one batched pass; the caller keeps the runs it needs)."""
        test = predict(self.splits["te"].x).argmax(dim=-1)
        test_average, test_per_group = self.test_groups.per_group(test)
        return {
            records.TE_AVG_ACC: test_average,
            records.TE_WGA: test_per_group.min(dim=1).values,
            **{records.test_group_accuracy_key(group): test_per_group[:, column]
               for column, group in enumerate(self.test_groups.group_ids)},
        }

    def test_keys(self) -> list[str]:
        """The keys :meth:`test` returns, known without a pass (a record's null test metrics)."""
        return [records.TE_AVG_ACC, records.TE_WGA,
                *(records.test_group_accuracy_key(group) for group in self.test_groups.group_ids)]

    def __call__(self, predict) -> dict[str, torch.Tensor]:
        """Every metric name -> [H] values: :meth:`validation`'s, then :meth:`test`'s."""
        return {**self.validation(predict), **self.test(predict)}

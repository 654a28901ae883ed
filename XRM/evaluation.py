"""Evaluation of a stack: accuracy and worst-group accuracy of every run at once, on the device.

Nothing here waits for the device: metrics stay tensors [H] until the loop reads them.
"""
import torch

from XRM import records
from XRM.data.base import SplitTensors
from XRM.groups import group_ids


class GroupAccuracy:
    """Average and worst-group accuracy of predictions on one split with given attributes."""

    def __init__(self, y: torch.Tensor, attributes: torch.Tensor) -> None:
        groups = group_ids(y, attributes.to(y.device))
        _, inverse = torch.unique(groups, return_inverse=True)
        self.y = y
        self.membership = torch.nn.functional.one_hot(inverse).float()  # [n, groups present]
        self.sizes = self.membership.sum(dim=0)

    def __call__(self, predictions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(average accuracy [H], worst-group accuracy [H]) of predictions [H, n]."""
        correct = (predictions == self.y).float()
        per_group = (correct @ self.membership) / self.sizes
        return correct.mean(dim=1), per_group.min(dim=1).values


class StackEvaluator:
    """Phase-2 metrics of H runs: va/te accuracy and worst-group accuracy (true groups), and
    va_gi_wga for runs given inferred validation groups (``inferred[h]``: a tensor or None)."""

    def __init__(self, validation: SplitTensors, test: SplitTensors, inferred: list[torch.Tensor | None]) -> None:
        self.splits = {"va": validation, "te": test}
        self.true_groups = {name: GroupAccuracy(split.y, split.a) for name, split in self.splits.items()}
        # runs sharing one inferred-group tensor are evaluated together
        sources: dict[int, tuple[torch.Tensor, list[int]]] = {}
        for member, attributes in enumerate(inferred):
            if attributes is not None:
                sources.setdefault(id(attributes), (attributes, []))[1].append(member)
        device = validation.y.device
        self.inferred = [(GroupAccuracy(validation.y, attributes), torch.tensor(members, device=device))
                         for attributes, members in sources.values()]
        self.has_inferred = [attributes is not None for attributes in inferred]

    def __call__(self, predict) -> dict[str, torch.Tensor]:
        """Metric name -> [H] values; ``predict(inputs)`` gives every run's logits [H, n, K].

        va_gi_wga is NaN for runs without inferred validation groups.
        """
        metrics = {}
        for name, split in self.splits.items():
            predictions = predict(split.x).argmax(dim=-1)
            average, worst = self.true_groups[name](predictions)
            metrics[records.metric_key(name, "avg_acc")], metrics[records.metric_key(name, "wga")] = average, worst
            if name == "va":
                inferred = torch.full_like(worst, float("nan"))
                for accuracy, members in self.inferred:
                    inferred[members] = accuracy(predictions[members])[1]
                metrics[records.VA_GI_WGA] = inferred
        return metrics

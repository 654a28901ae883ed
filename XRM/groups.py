"""Groups from labels and attributes, and the accuracies reported per evaluation."""
import torch
import torch.nn.functional as F


def sum_by_index(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """Sums of ``values`` ([n] or [n, K]) per index in 0 .. size-1, in a fixed order.

    A one-hot product rather than index_add: CUDA's index_add adds in a varying order, so
    its float sums (and everything trained from them) would differ from run to run.
    """
    return F.one_hot(index, size).to(values.dtype).T @ values


def group_ids(y: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Group id ``y * n_attr + a`` with ``n_attr`` counted from ``a`` (never a fixed 2)."""
    n_attr = int(a.max().item()) + 1 if len(a) else 1
    return y * n_attr + a


def accuracy_metrics(predictions: torch.Tensor, y: torch.Tensor, a: torch.Tensor) -> dict[str, float]:
    """Average accuracy and worst-group accuracy (minimum over the (y, a) groups present)."""
    correct = (predictions == y).float()
    groups = group_ids(y, a)
    present, inverse = torch.unique(groups, return_inverse=True)
    per_group_correct = sum_by_index(correct, inverse, len(present))
    per_group_count = torch.bincount(inverse, minlength=len(present)).float()
    per_group_accuracy = per_group_correct / per_group_count
    return {"avg_acc": correct.mean().item(), "wga": per_group_accuracy.min().item()}

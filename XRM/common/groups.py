"""Groups from labels and attributes, and sums by group in a fixed order."""
import torch


def one_hot(index: torch.Tensor, size: int, dtype: torch.dtype) -> torch.Tensor:
    """``index`` [...] as one-hot rows [..., size] of ``dtype``, without a host synchronisation
    (F.one_hot checks its input's range on the host)."""
    return (index[..., None] == torch.arange(size, device=index.device)).to(dtype)


def sum_by_index(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """Sums of ``values`` ([n] or [n, K]) per index in 0 .. size-1, in a fixed order.

    A one-hot product rather than index_add: CUDA's index_add adds in a varying order, so
    its float sums (and everything trained from them) would differ from run to run.
    """
    return one_hot(index, size, values.dtype).T @ values


def group_ids(y: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Group id ``y * n_attr + a`` with ``n_attr`` counted from ``a`` (never a fixed 2)."""
    n_attr = int(a.max().item()) + 1 if len(a) else 1
    return y * n_attr + a

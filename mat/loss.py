"""MAT's loss as an nn.Module for any training loop: cross-entropy of f(x) + log p_ho(. | x)."""
import torch
from torch import nn

from mat.algorithm import MAT
from XRM.algorithms import Batch, RunData
from XRM.common.errors import UserError
from XRM.runs.hparams import check_hparams


def check_held_out(held_out_logits: torch.Tensor, y: torch.Tensor) -> None:
    """A UserError unless ``held_out_logits`` are finite floats [n, K] and ``y`` [n] class indices 0 .. K-1."""
    if not isinstance(held_out_logits, torch.Tensor) or held_out_logits.ndim != 2 or \
            not held_out_logits.is_floating_point():
        raise UserError("MATLoss: held_out_logits must be a float tensor [n, K] (one row of logits per example)")
    if not bool(torch.isfinite(held_out_logits).all()):
        raise UserError(f"MATLoss: held_out_logits hold {int((~torch.isfinite(held_out_logits)).sum())} NaN or Inf "
                        "values; re-run the group inference or drop those examples")
    n, k = held_out_logits.shape
    if not isinstance(y, torch.Tensor) or y.shape != (n,) or y.is_floating_point() or y.is_complex():
        raise UserError(f"MATLoss: y must be an integer tensor [{n}], one label per row of held_out_logits")
    if n and (int(y.min()) < 0 or int(y.max()) >= k):
        raise UserError(f"MATLoss: labels y lie in {int(y.min())} .. {int(y.max())}, but the held-out logits have "
                        f"{k} classes (0 .. {k - 1})")


class MATLoss(nn.Module):
    """Memorization-Aware Training's loss (Algorithm 1) for a training set of n examples.

    Built once from every training example's held-out logits [n, K] (e.g. from
    mat.infer_groups) and labels [n]; ``tau`` is the temperature on those logits (the
    paper draws it from {0.001, 0.01, 0.1}). Called with a batch's logits [B, K], labels [B]
    and the examples' indices [B] in the training set, it returns the mean cross-entropy of
    the shifted logits: the loss of the registered MAT algorithm main.py trains with. Move it
    to the model's device with ``.to(device)``; predict with the unshifted model.

    Bad input is a UserError: non-finite held-out logits, labels outside their K classes, a
    ``tau`` that is not a finite number > 0, and at each call an index outside 0 .. n-1 or a
    label outside 0 .. K-1 (checked with one synchronisation per call).
    """

    def __init__(self, held_out_logits: torch.Tensor, y: torch.Tensor, tau: float = 0.1) -> None:
        super().__init__()
        check_held_out(held_out_logits, y)
        check_hparams({"tau": tau}, "MAT")
        labels = y.long().cpu()
        run = RunData.from_labels(labels, torch.zeros_like(labels), held_out_logits.shape[1], seed=0,
                                  hparams={"tau": tau}, held_out_logits=held_out_logits.detach().cpu())
        self.algorithm = MAT(held_out_logits.shape[1])
        # log p_ho(. | x_i) of every example (the algorithm's state: one padding row after them)
        self.register_buffer("shift", self.algorithm.initial_state(run)["shift"])

    def check_batch(self, logits: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> None:
        """A UserError unless logits are [B, K], y [B] labels 0 .. K-1 and index [B] example ids 0 .. n-1."""
        n, k = self.shift.shape[0] - 1, self.shift.shape[1]
        if logits.ndim != 2 or logits.shape[1] != k or y.shape != (len(logits),) or index.shape != (len(logits),):
            raise UserError(f"MATLoss: expected logits [B, {k}], y [B] and index [B]; got {tuple(logits.shape)}, "
                            f"{tuple(y.shape)} and {tuple(index.shape)}")
        if index.is_floating_point() or y.is_floating_point():
            raise UserError("MATLoss: index and y must be integer tensors")
        if bool(((index < 0) | (index >= n) | (y < 0) | (y >= k)).any()):
            raise UserError(f"MATLoss: index must hold training-example ids 0 .. {n - 1} and y labels 0 .. {k - 1}; "
                            f"got index {int(index.min())} .. {int(index.max())}, y {int(y.min())} .. {int(y.max())}")

    def forward(self, logits: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of logits [B, K] + the shift of examples ``index`` [B], against ``y`` [B]."""
        self.check_batch(logits, y, index)
        batch = Batch(index.to(self.shift.device)[None], y[None], y[None], logits.new_ones(1, len(y)), None, 0)
        losses, _ = self.algorithm.loss(logits[None], batch, {"shift": self.shift[None]}, {})
        return losses[0]

"""MAT's loss as an nn.Module for any training loop: cross-entropy of f(x) + log p_ho(. | x)."""
import torch
from torch import nn

from mat.algorithm import MAT
from XRM.algorithms import Batch, RunData


class MATLoss(nn.Module):
    """Memorization-Aware Training's loss (Algorithm 1) for a training set of n examples.

    Built once from every training example's held-out logits [n, K] (e.g. from
    mat.infer_groups) and labels [n]; ``tau`` is the temperature on those logits (the
    paper draws it from {0.001, 0.01, 0.1}). Called with a batch's logits [B, K], labels [B]
    and the examples' indices [B] in the training set, it returns the mean cross-entropy of
    the shifted logits: the loss of the registered MAT algorithm main.py trains with. Move it
    to the model's device with ``.to(device)``; predict with the unshifted model.
    """

    def __init__(self, held_out_logits: torch.Tensor, y: torch.Tensor, tau: float = 0.1) -> None:
        super().__init__()
        labels = y.long().cpu()
        run = RunData.from_labels(labels, torch.zeros_like(labels), held_out_logits.shape[1], seed=0,
                                  hparams={"tau": tau}, held_out_logits=held_out_logits.detach().cpu())
        self.algorithm = MAT(held_out_logits.shape[1])
        # log p_ho(. | x_i) of every example (the algorithm's state: one padding row after them)
        self.register_buffer("shift", self.algorithm.initial_state(run)["shift"])

    def forward(self, logits: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of logits [B, K] + the shift of examples ``index`` [B], against ``y`` [B]."""
        batch = Batch(index.to(self.shift.device)[None], y[None], y[None], logits.new_ones(1, len(y)), None, 0)
        losses, _ = self.algorithm.loss(logits[None], batch, {"shift": self.shift[None]}, {})
        return losses[0]

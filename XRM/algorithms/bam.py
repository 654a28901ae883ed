"""BAM: Bias Amplification (Li, Liu & Hu, "Bias Amplification Enhances Minority Group Performance",
TMLR 2024, arXiv 2309.06717), as a phase-2 algorithm without training groups.

Stage 1 trains a bias-amplified model: its training logits are f(x_i) + lambda b_i, with b_i a
learnable auxiliary logit vector of training example i (zero at first). The auxiliary vectors
absorb the examples that f finds hard, so f itself leans further on the easy, spurious rule and
its errors single out the minority. Stage 2 up-weights f's errors (f alone, at the end of stage 1)
by mu and trains the final model.

Here BAM is a :class:`~XRM.algorithms.two_networks.TwoStage` algorithm, as JTT: network 0 is the
bias-amplified model (trained for T = round(fraction x num_steps) steps, then frozen exactly) and
network 1 the final model, trained from its initialisation from T on; its error set is read from
network 0's logits on each batch (the model at T), so a step needs no pass over the training set
and no host synchronisation. The paper's default continues training the stage-1 model in stage 2
("One-M"); starting the final model afresh ("Two-M", JTT's way) is the variant its ablation
compares with, and the one this engine can run without copying weights between networks.

The auxiliary vectors are algorithm state, [n + 1, K] per run (padding row n): each stage-1 step
takes a plain SGD step on them with the run's base ``lr`` (no momentum, decay or schedule), with
the exact gradient of the batch's mean loss, lambda (softmax(f + lambda b) - onehot(y)) / B for
each real example (added up where an example repeats in a batch). They are saved with the run's
state, so a resumed run continues exactly. Hyper-parameters: ``bam_T_fraction``, ``bam_lambda``
(the amplification coefficient) and ``bam_mu`` (the up-weight).
"""
import torch

from XRM.algorithms.base import (RunData, State, gather_rows, masked_mean, one_hot, per_example_cross_entropy,
                                 register_algorithm)
from XRM.algorithms.two_networks import BIASED, DEBIASED, TwoStage, error_weighted_loss
from XRM.common.search_space import OPEN_UNIT_INTERVAL, POSITIVE, choice, uniform


def amplified_logits(logits: torch.Tensor, auxiliary: torch.Tensor, amplification: torch.Tensor) -> torch.Tensor:
    """Stage 1's training logits f(x) + lambda b: logits and auxiliary [H, B, K], amplification [H]."""
    return logits + amplification.to(logits.dtype)[:, None, None] * auxiliary.to(logits.dtype)


def auxiliary_gradient(amplified: torch.Tensor, y: torch.Tensor, mask: torch.Tensor,
                       amplification: torch.Tensor) -> torch.Tensor:
    """The gradient of the batch's mean cross-entropy of ``amplified`` [H, B, K] with respect to each
    position's auxiliary vector: lambda (softmax - onehot(y)) mask / (number of real examples), [H, B, K]."""
    residual = torch.softmax(amplified.detach(), dim=-1) - one_hot(y, amplified.shape[-1], amplified.dtype)
    scale = amplification.to(amplified.dtype) / mask.sum(dim=1).clamp_min(1)
    return residual * (mask * scale[:, None])[..., None]


def auxiliary_step(auxiliary: torch.Tensor, index: torch.Tensor, gradient: torch.Tensor,
                   lr: torch.Tensor) -> torch.Tensor:
    """The per-example table [H, n + 1, K] after an SGD step of rate ``lr`` [H] on the rows ``index``
    [H, B] with ``gradient`` [H, B, K] (repeated rows add their gradients; padding's is zero)."""
    update = -lr.to(auxiliary.dtype)[:, None, None] * gradient.to(auxiliary.dtype)
    return auxiliary.scatter_add(1, index[..., None].expand_as(update), update)


@register_algorithm("BAM")
class BAM(TwoStage):
    """Bias amplification (stage 1, network 0) then the error set up-weighted by mu (network 1);
    see the module docstring."""

    fraction_name = "bam_T_fraction"
    hparam_names = ("bam_lambda", "bam_mu", "lr")
    # The paper's grids were not at hand here. These span the authors' README example (lambda 50,
    # T = 20 stage-1 epochs before 150 stage-2 ones, mu 140) and JTT's ranges for T and the up-weight
    # (the paper tunes BAM as JTT is tuned: up-weights of a few on text, tens to 140 on images).
    search_space = {"bam_T_fraction": (0.2, uniform(0.02, 0.4)),
                    "bam_lambda": (50.0, choice([0.5, 5.0, 20.0, 50.0, 70.0, 100.0])),
                    "bam_mu": (50.0, choice([4.0, 5.0, 6.0, 20.0, 50.0, 100.0, 140.0]))}
    hparam_bounds = {"bam_T_fraction": OPEN_UNIT_INTERVAL, "bam_lambda": POSITIVE, "bam_mu": POSITIVE}

    def initial_state(self, run: RunData) -> State:
        """T, and the auxiliary logit vectors b, zero, [n + 1, K] (float64)."""
        auxiliary = torch.zeros(len(run.y) + 1, run.num_classes, dtype=torch.float64)
        return {**super().initial_state(run), "auxiliary": auxiliary}

    def state_signature(self, run: RunData) -> tuple:
        """The number of classes (the auxiliary vectors' width)."""
        return (run.num_classes,)

    def loss(self, logits, batch, state, hparams):
        """Stage 1 (before T): cross-entropy of network 0's amplified logits, and an SGD step on the
        batch's auxiliary vectors; stage 2: network 1's cross-entropy with network 0's errors weighted mu."""
        second = batch.step >= state["switch_step"]
        biased, final = logits[..., BIASED], logits[..., DEBIASED]
        amplification = hparams["bam_lambda"]
        amplified = amplified_logits(biased, gather_rows(state["auxiliary"], batch.index), amplification)
        first_loss = masked_mean(per_example_cross_entropy(amplified, batch.y), batch.mask)
        with torch.no_grad():
            gradient = auxiliary_gradient(amplified, batch.y, batch.mask, amplification)
            gradient = gradient * (~second).to(gradient.dtype)[:, None, None]  # b is stage 1's alone
            auxiliary = auxiliary_step(state["auxiliary"], batch.index, gradient, hparams["lr"])
        second_loss = error_weighted_loss(final, biased.detach(), batch, hparams["bam_mu"])
        return torch.where(second, second_loss, first_loss), {**state, "auxiliary": auxiliary}

"""BAM: Bias Amplification (Li, Liu & Hu, "Bias Amplification Enhances Minority Group Performance",
TMLR 2024, arXiv 2309.06717), as a phase-2 algorithm without training groups.

Stage 1 trains a bias-amplified model: its training logits are f(x_i) + lambda b_i, with b_i a
learnable auxiliary logit vector of training example i (zero at first). The auxiliary vectors
absorb the examples that f finds hard, so f itself leans further on the easy, spurious rule and
its errors single out the minority. Stage 2 up-weights f's errors (f alone, at the end of stage 1)
by mu and trains the final model.

Here BAM is a :class:`~XRM.algorithms.two_networks.TwoStage` algorithm, as JTT: network 0 is the
bias-amplified model (trained for T = round(fraction x num_steps) steps, then frozen exactly) and
network 1 the final model, trained from T on; its error set is read from network 0's logits on
each batch (the model at T), so a step needs no pass over the training set and no host
synchronisation. ``bam_stage_2`` picks what the final model starts from at T:

- "One-M" (the paper's default, its authors' code loading the stage-1 model at T): stage 2
  continues training the bias-amplified model. Both networks start from one initialisation
  (:meth:`BAM.initialise_networks`) and take the same stage-1 steps (the same amplified loss on
  the same batch, the same auxiliary vectors: the stage-1 loss is the sum of the two copies'), so
  at T network 1 is network 0; network 0 is then frozen as the error set's source and network 1
  trains on. A network with dropout draws its own masks per copy, so there the copies are two
  stage-1 runs from one start rather than one.
- "Two-M" (the variant of the paper's ablation, JTT's way): network 1 is a fresh network that
  stays at its own initialisation until T.

The auxiliary vectors are algorithm state, [n + 1, K] per run (padding row n): each stage-1 step
takes a plain SGD step on them with the run's base ``lr`` (no momentum, decay or schedule), with
the exact gradient of the batch's mean loss, lambda (softmax(f + lambda b) - onehot(y)) / B for
each real example (added up where an example repeats in a batch). They are saved with the run's
state, so a resumed run continues exactly. Hyper-parameters: ``bam_T_fraction``, ``bam_lambda``
(the amplification coefficient), ``bam_mu`` (the up-weight) and ``bam_stage_2``.
"""
import torch

from XRM.algorithms.base import (RunData, State, gather_rows, masked_mean, one_hot, per_example_cross_entropy,
                                 register_algorithm)
from XRM.algorithms.two_networks import BIASED, DEBIASED, TwoStage, error_weighted_loss
from XRM.common.search_space import OPEN_UNIT_INTERVAL, POSITIVE, choice, fixed, one_of, uniform

#: what stage 2's final model starts from: the stage-1 model at T, or a fresh network
STAGE_2_STARTS = ("One-M", "Two-M")


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
                    "bam_mu": (50.0, choice([4.0, 5.0, 6.0, 20.0, 50.0, 100.0, 140.0])),
                    "bam_stage_2": ("One-M", fixed("One-M"))}
    hparam_bounds = {"bam_T_fraction": OPEN_UNIT_INTERVAL, "bam_lambda": POSITIVE, "bam_mu": POSITIVE,
                     "bam_stage_2": one_of(STAGE_2_STARTS)}

    @staticmethod
    def shares_initialisation(hparams: dict) -> bool:
        """One-M: network 1 starts as network 0 (the two train in lockstep until T)."""
        return hparams["bam_stage_2"] == "One-M"

    def initialise_networks(self, networks: list, hparams: dict) -> None:
        """One-M: network 1 starts from network 0's weights; Two-M: each network is its own draw."""
        if self.shares_initialisation(hparams):
            for network in networks[1:]:
                network.load_state_dict(networks[0].state_dict())

    def initial_state(self, run: RunData) -> State:
        """T, the auxiliary logit vectors b, zero, [n + 1, K] (float64), and whether the run is One-M."""
        auxiliary = torch.zeros(len(run.y) + 1, run.num_classes, dtype=torch.float64)
        return {**super().initial_state(run), "auxiliary": auxiliary,
                "one_m": torch.tensor(self.shares_initialisation(run.hparams))}

    def state_signature(self, run: RunData) -> tuple:
        """The number of classes (the auxiliary vectors' width)."""
        return (run.num_classes,)

    def network_updates(self, step, state, hparams):
        """Network 0 before T, network 1 from T on, and before T too where the run is One-M."""
        updates = super().network_updates(step, state, hparams)
        return torch.stack([updates[:, BIASED], updates[:, DEBIASED] | state["one_m"]], dim=1)

    def loss(self, logits, batch, state, hparams):
        """Stage 1 (before T): cross-entropy of network 0's amplified logits (plus network 1's, the
        same, where One-M), and an SGD step on the batch's auxiliary vectors; stage 2: network 1's
        cross-entropy with network 0's errors weighted mu."""
        second = batch.step >= state["switch_step"]
        biased, final = logits[..., BIASED], logits[..., DEBIASED]
        amplification = hparams["bam_lambda"]
        rows = gather_rows(state["auxiliary"], batch.index)
        amplified = amplified_logits(biased, rows, amplification)
        first_loss = masked_mean(per_example_cross_entropy(amplified, batch.y), batch.mask)
        copy_loss = masked_mean(per_example_cross_entropy(amplified_logits(final, rows, amplification), batch.y),
                                batch.mask)
        first_loss = first_loss + torch.where(state["one_m"], copy_loss, torch.zeros_like(copy_loss))
        with torch.no_grad():
            gradient = auxiliary_gradient(amplified, batch.y, batch.mask, amplification)
            gradient = gradient * (~second).to(gradient.dtype)[:, None, None]  # b is stage 1's alone
            auxiliary = auxiliary_step(state["auxiliary"], batch.index, gradient, hparams["lr"])
        second_loss = error_weighted_loss(final, biased.detach(), batch, hparams["bam_mu"])
        return torch.where(second, second_loss, first_loss), {**state, "auxiliary": auxiliary}

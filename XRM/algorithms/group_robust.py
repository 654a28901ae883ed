"""Group-robust baselines over one network: ERM, RWG, SUBG, GroupDRO and IRM."""
import torch

from XRM.algorithms.base import (Algorithm, RunData, State, masked_mean, per_example_cross_entropy, register_algorithm,
                                 sums_by_index)
from XRM.common.groups import one_hot
from XRM.common.search_space import NON_NEGATIVE, POSITIVE, log_uniform, log_uniform_int


@register_algorithm("ERM")
class ERM(Algorithm):
    """Plain empirical risk minimisation with uniformly drawn batches."""


@register_algorithm("RWG")
class RWG(ERM):
    """ERM on batches drawn so that every training group is equally likely (re-weighting)."""

    group_information = "training"
    sampling = "group_balanced"


@register_algorithm("SUBG")
class SUBG(ERM):
    """ERM on a random subset with as many examples of each group as the smallest group."""

    group_information = "training"
    sampling = "group_subsampled"


@register_algorithm("GroupDRO")
class GroupDRO(Algorithm):
    """Group distributionally robust optimisation (Sagawa et al., 2020): exponentiated-gradient group weights."""

    group_information = "training"

    hparam_names = ("eta",)
    search_space = {"eta": (1e-2, log_uniform(-3, -1))}
    hparam_bounds = {"eta": POSITIVE}

    def initial_state(self, run: RunData) -> State:
        """q uniform over the run's groups."""
        return {"q": torch.full((run.num_groups,), 1.0 / run.num_groups, dtype=torch.float64)}

    def state_signature(self, run: RunData) -> tuple:
        """The number of groups."""
        return (run.num_groups,)

    def loss(self, logits, batch, state, hparams):
        """q-weighted sum of per-group mean losses, after the q update on this batch."""
        q = state["q"]
        losses = per_example_cross_entropy(logits, batch.y) * batch.mask
        totals = sums_by_index(losses, batch.groups, q.shape[1])
        counts = sums_by_index(batch.mask, batch.groups, q.shape[1])
        group_losses = totals / counts.clamp_min(1)
        with torch.no_grad():
            grown = torch.where(counts > 0, torch.exp(hparams["eta"][:, None] * group_losses.detach()), 1.0)
            q = q * grown.to(q.dtype)
            q = q / q.sum(dim=1, keepdim=True)
        return (q.to(group_losses.dtype) * group_losses).sum(dim=1), {"q": q}


def _scale_gradient(logits: torch.Tensor, y: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """d/ds of the mean cross-entropy of s * logits at s = 1 over the weighted examples: [H, E].

    logits [H, B, K], y [H, B], weights [H, B, E] (0/1 membership of E example sets).
    """
    labels = one_hot(y, logits.shape[-1], logits.dtype)
    per_example = ((torch.softmax(logits, dim=-1) - labels) * logits).sum(dim=-1)
    return torch.einsum("hb,hbe->he", per_example, weights) / weights.sum(dim=1).clamp_min(1)


@register_algorithm("IRM")
class IRM(Algorithm):
    """Invariant risk minimisation (Arjovsky et al., 2019) with the training groups' attributes as environments."""

    group_information = "training"

    hparam_names = ("lambda", "penalty_anneal_iters")
    search_space = {"lambda": (1e2, log_uniform(-1, 5)), "penalty_anneal_iters": (500, log_uniform_int(0, 4))}
    hparam_bounds = {"lambda": NON_NEGATIVE, "penalty_anneal_iters": NON_NEGATIVE}

    def state_signature(self, run: RunData) -> tuple:
        """The number of attributes (environments)."""
        return (run.num_attributes,)

    def initial_state(self, run: RunData) -> State:
        """The number of environments, as a tensor the loss reads its size from."""
        return {"environments": torch.zeros(run.num_attributes)}

    def loss(self, logits, batch, state, hparams):
        """Mean over the environments present of risk + weight x penalty, the penalty the product
        of the scale gradients of the environment's two halves (alternate examples in batch order);
        the weight is lambda from step penalty_anneal_iters on, 1 before."""
        num_environments = state["environments"].shape[1]
        member = one_hot(batch.groups % num_environments, num_environments, logits.dtype) * batch.mask[..., None]
        rank = member.cumsum(dim=1) - 1
        first_half = member * (rank.remainder(2) == 0)
        second_half = member - first_half
        losses = per_example_cross_entropy(logits, batch.y)
        counts = member.sum(dim=1)
        risks = torch.einsum("hb,hbe->he", losses, member) / counts.clamp_min(1)
        penalties = _scale_gradient(logits, batch.y, first_half) * _scale_gradient(logits, batch.y, second_half)
        present = (counts > 0).to(logits.dtype)
        weight = torch.where(batch.step >= hparams["penalty_anneal_iters"], hparams["lambda"], 1.0)
        total = ((risks + weight[:, None] * penalties) * present).sum(dim=1)
        return total / present.sum(dim=1).clamp_min(1), state

"""Training algorithms: ERM, GroupDRO, IRM, RWG, SUBG, MAT (phase 2) and XRM (phase 1).

Each algorithm sees tensors only: the indices, inputs, labels and group ids of a batch.
Algorithm state that must survive a restart (GroupDRO's q, XRM's dynamic labels, ...) is
kept in registered buffers, so ``state_dict()`` checkpoints it with the network.
"""
from dataclasses import dataclass
from typing import Callable, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from mat.shift import memorization_aware_shift
from XRM.errors import UserError
from XRM.registry import Registry
from XRM.groups import sum_by_index
from XRM.networks import TwinNetwork
from XRM.optimizers import SGD_MOMENTUM, build_optimizer

ALGORITHMS: Registry[type["Algorithm"]] = Registry("algorithm")
A = TypeVar("A", bound=type["Algorithm"])


def register_algorithm(name: str) -> Callable[[A], A]:
    """Class decorator that registers an algorithm under ``name`` (names are unique)."""

    def decorator(cls: A) -> A:
        cls.name = name
        return ALGORITHMS.add(name, cls)

    return decorator


def get_algorithm_class(name: str) -> type["Algorithm"]:
    """The algorithm registered as ``name``; a UserError listing the valid names otherwise."""
    return ALGORITHMS.lookup(name)


#: the only group-label source phase 1 accepts: it infers the groups itself
PHASE_1_GROUP_LABELS = "no"


def check_group_labels(algorithm: type["Algorithm"], group_labels: str) -> None:
    """A UserError when a phase-1 algorithm (which infers groups) is given group labels."""
    if algorithm.phase == 1 and group_labels != PHASE_1_GROUP_LABELS:
        raise UserError("phase 1 (XRM) infers groups and must not be given group labels; use --group_labels no")


@dataclass
class TrainingSet:
    """What an algorithm may know about the whole training set (tensors on the run's device)."""

    y: torch.Tensor
    groups: torch.Tensor
    num_classes: int
    num_attributes: int
    generator: torch.Generator
    held_out_logits: torch.Tensor | None = None


class Algorithm(nn.Module):
    """Empirical risk minimisation; subclasses override :meth:`loss` (and rarely more)."""

    name = ""
    phase = 2
    #: how training batches are drawn: "uniform", "group_balanced" or "group_subsampled"
    sampling = "uniform"
    #: whether the algorithm needs the phase-1 held-out logits of every training example
    needs_held_out_logits = False

    def __init__(self, network: nn.Module, training_set: TrainingSet, hparams: dict) -> None:
        super().__init__()
        self.network = network
        self.num_classes = training_set.num_classes
        self.hparams = hparams
        # hparams_registry gives sgd_momentum to every SGD family; callers of this API may omit it
        self.optimizer = build_optimizer(network, hparams["optimizer"], hparams["lr"], hparams["weight_decay"],
                                         momentum=hparams.get("sgd_momentum", SGD_MOMENTUM))

    def loss(self, logits: torch.Tensor, index: torch.Tensor, y: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the batch."""
        return F.cross_entropy(logits, y)

    def update(self, index: torch.Tensor, x: torch.Tensor, y: torch.Tensor, groups: torch.Tensor) -> None:
        """One optimisation step on a batch."""
        self.optimizer.zero_grad(set_to_none=True)
        self.loss(self.network(x), index, y, groups).backward()
        self.optimizer.step()

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits used for evaluation, [n, K]."""
        return self.network(x)


@register_algorithm("ERM")
class ERM(Algorithm):
    """Plain empirical risk minimisation with uniformly drawn batches."""


@register_algorithm("RWG")
class RWG(ERM):
    """ERM on batches drawn so that every training group is equally likely (re-weighting)."""

    sampling = "group_balanced"


@register_algorithm("SUBG")
class SUBG(ERM):
    """ERM on a random subset with as many examples of each group as the smallest group."""

    sampling = "group_subsampled"


@register_algorithm("GroupDRO")
class GroupDRO(Algorithm):
    """Group distributionally robust optimisation (Sagawa et al., 2020): exponentiated-gradient group weights."""

    def __init__(self, network: nn.Module, training_set: TrainingSet, hparams: dict) -> None:
        super().__init__(network, training_set, hparams)
        num_groups = int(training_set.groups.max().item()) + 1
        self.register_buffer("q", torch.full((num_groups,), 1.0 / num_groups, device=training_set.y.device))

    def loss(self, logits: torch.Tensor, index: torch.Tensor, y: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        """q-weighted sum of per-group mean losses, after the q update on this batch."""
        losses = F.cross_entropy(logits, y, reduction="none")
        totals = sum_by_index(losses, groups, len(self.q))
        counts = sum_by_index(torch.ones_like(losses), groups, len(self.q))
        group_losses = totals / counts.clamp_min(1)
        present = counts > 0
        with torch.no_grad():
            self.q *= torch.where(present, torch.exp(self.hparams["eta"] * group_losses.detach()), 1.0)
            self.q /= self.q.sum()
        return (self.q * group_losses).sum()


@register_algorithm("IRM")
class IRM(Algorithm):
    """Invariant risk minimisation (Arjovsky et al., 2019) with the training groups' attributes as environments."""

    def __init__(self, network: nn.Module, training_set: TrainingSet, hparams: dict) -> None:
        super().__init__(network, training_set, hparams)
        self.register_buffer("update_count", torch.zeros((), dtype=torch.long, device=training_set.y.device))
        self.num_attributes = training_set.num_attributes

    @staticmethod
    def _penalty(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # gradient of the risk w.r.t. a dummy classifier scale, estimated unbiasedly from two halves
        scale = torch.ones((), device=logits.device, requires_grad=True)
        first = F.cross_entropy(logits[::2] * scale, y[::2])
        second = F.cross_entropy(logits[1::2] * scale, y[1::2])
        grad_first = torch.autograd.grad(first, [scale], create_graph=True)[0]
        grad_second = torch.autograd.grad(second, [scale], create_graph=True)[0]
        return grad_first * grad_second

    def loss(self, logits: torch.Tensor, index: torch.Tensor, y: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        """Mean over environments (the attribute of each group) of risk + penalty weight x penalty."""
        attributes = groups % self.num_attributes
        environments = torch.unique(attributes)
        risk = logits.new_zeros(())
        penalty = logits.new_zeros(())
        for environment in environments:
            member = attributes == environment
            risk = risk + F.cross_entropy(logits[member], y[member])
            penalty = penalty + self._penalty(logits[member], y[member])
        weight = torch.where(
            self.update_count >= self.hparams["penalty_anneal_iters"],
            torch.tensor(float(self.hparams["lambda"]), device=logits.device),
            torch.tensor(1.0, device=logits.device),
        )
        self.update_count += 1
        return (risk + weight * penalty) / len(environments)


@register_algorithm("MAT")
class MAT(Algorithm):
    """Memorization-Aware Training: cross-entropy of f(x) + log p_ho(. | x) (Algorithm 1).

    The shift is computed once over the whole training set from the phase-1 held-out
    logits; it is a constant per example and is used in training only.
    """

    needs_held_out_logits = True

    def __init__(self, network: nn.Module, training_set: TrainingSet, hparams: dict) -> None:
        super().__init__(network, training_set, hparams)
        if training_set.held_out_logits is None:
            raise ValueError("MAT needs the held-out logits of phase 1")
        shift = memorization_aware_shift(training_set.held_out_logits, training_set.y, hparams["tau"])
        self.register_buffer("shift", shift)

    def loss(self, logits: torch.Tensor, index: torch.Tensor, y: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the shifted logits."""
        return F.cross_entropy(logits + self.shift[index], y)


def class_balanced_cross_entropy(logits: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Sum over the classes present in the batch of the mean loss within the class."""
    losses = F.cross_entropy(logits, y, reduction="none")
    totals = sum_by_index(losses, y, num_classes)
    counts = sum_by_index(torch.ones_like(losses), y, num_classes)
    return (totals / counts.clamp_min(1)).sum()


def flip_probability(max_probability: torch.Tensor, num_classes: int) -> torch.Tensor:
    """XRM's label-flip probability (p_ho - 1/K) K / (K - 1): 0 at chance, 1 when certain."""
    return ((max_probability - 1.0 / num_classes) * num_classes / (num_classes - 1)).clamp(0.0, 1.0)


@register_algorithm("XRM")
class XRM(Algorithm):
    """Cross-risk minimisation (Pezeshki et al., 2024): twins trained on random halves that flip labels.

    Every training example is assigned to one twin (p = 0.5). Each batch trains every
    example's own twin ("held-in") with a class-balanced loss on the dynamic labels; then
    each example's label flips to the other twin's ("held-out") prediction with
    probability :func:`flip_probability` of that prediction's confidence.
    """

    phase = 1

    def __init__(self, network: nn.Module, training_set: TrainingSet, hparams: dict) -> None:
        if not isinstance(network, TwinNetwork):
            raise ValueError("XRM trains a TwinNetwork")
        super().__init__(network, training_set, hparams)
        n = len(training_set.y)
        device = training_set.y.device
        assignment = torch.rand(n, generator=training_set.generator, device=device) < 0.5
        self.register_buffer("first_twin_holds", assignment)
        self.register_buffer("true_labels", training_set.y.clone())
        self.register_buffer("dynamic_labels", training_set.y.clone())
        self.generator = training_set.generator

    def split_logits(self, twin_logits: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Held-in and held-out logits of training examples ``index`` from twin logits [n, K, 2]."""
        first_holds = self.first_twin_holds[index][:, None]
        held_in = torch.where(first_holds, twin_logits[..., 0], twin_logits[..., 1])
        held_out = torch.where(first_holds, twin_logits[..., 1], twin_logits[..., 0])
        return held_in, held_out

    def update(self, index: torch.Tensor, x: torch.Tensor, y: torch.Tensor, groups: torch.Tensor) -> None:
        """Train each example's own twin on its dynamic label, then flip labels towards held-out predictions."""
        held_in, held_out = self.split_logits(self.network(x), index)
        self.optimizer.zero_grad(set_to_none=True)
        class_balanced_cross_entropy(held_in, self.dynamic_labels[index], self.num_classes).backward()
        self.optimizer.step()
        with torch.no_grad():
            confidence, prediction = torch.softmax(held_out.detach().float(), dim=1).max(dim=1)
            flip = torch.bernoulli(flip_probability(confidence, self.num_classes), generator=self.generator).bool()
            self.dynamic_labels[index] = torch.where(flip, prediction, self.dynamic_labels[index])

    def flip_rate(self) -> torch.Tensor:
        """Fraction of training labels that currently differ from the true ones (a 0-d tensor)."""
        return (self.dynamic_labels != self.true_labels).float().mean()

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Twin logits [n, K, 2]."""
        return self.network(x)


def build_algorithm(
    name: str, make_network: Callable[[], nn.Module], training_set: TrainingSet, hparams: dict
) -> Algorithm:
    """Construct the algorithm registered as ``name``; phase-1 algorithms get twin networks."""
    cls = get_algorithm_class(name)
    network = TwinNetwork(make_network(), make_network()) if cls.phase == 1 else make_network()
    return cls(network, training_set, hparams)

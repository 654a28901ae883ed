"""Training algorithms: ERM, GroupDRO, IRM, RWG, SUBG, MAT (phase 2) and XRM (phase 1).

An algorithm is a loss over a stack of H runs of itself: it sees tensors with a leading
run dimension (logits [H, B, K], the batch's indices, labels, groups and a mask of the
real examples, since runs with smaller batches are padded), its runs' hyper-parameters as
[H] tensors, and its runs' state (GroupDRO's q, XRM's dynamic labels, ...) as stacked
tensors that it returns updated. A single run is a stack of one. Per-example state has
one extra row, index ``n`` (the training set's size), where padded positions write.
"""
import importlib
from dataclasses import dataclass
from typing import Callable, TypeVar

import torch
import torch.nn.functional as F

from XRM.errors import UserError
from XRM.groups import group_ids, one_hot
from XRM.mat_shift import memorization_aware_shift
from XRM.records import GROUP_LABEL_KINDS, group_labels_kind
from XRM.registry import Registry

ALGORITHMS: Registry[type["Algorithm"]] = Registry("algorithm")
A = TypeVar("A", bound=type["Algorithm"])
State = dict[str, torch.Tensor]


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
    """A UserError when ``algorithm`` does not accept this kind of --group_labels
    (phase 1, which infers groups, accepts 'no' only)."""
    if algorithm.phase == 1 and group_labels != PHASE_1_GROUP_LABELS:
        raise UserError("phase 1 (XRM) infers groups and must not be given group labels; use --group_labels no")
    kind = group_labels_kind(group_labels)
    if kind not in algorithm.accepted_group_labels:
        accepted = " or ".join("a phase-1 folder" if k == "inferred" else k for k in algorithm.accepted_group_labels)
        raise UserError(f"{algorithm.name} does not take --group_labels {group_labels}: use {accepted}")


@dataclass(frozen=True)
class RunData:
    """What one run's algorithm may know about the whole training set, to build its state."""

    y: torch.Tensor  # [n] labels
    groups: torch.Tensor  # [n] group ids of the run's group-label source
    num_classes: int
    num_groups: int
    num_attributes: int
    seed: int
    hparams: dict
    held_out_logits: torch.Tensor | None = None  # [n, K], phase 1's, for MAT (AFR: its base model's)
    base_model: dict[str, torch.Tensor] | None = None  # AFR: its base model's head {'weight', 'bias'}

    @classmethod
    def from_labels(cls, y: torch.Tensor, attributes: torch.Tensor, num_classes: int, seed: int, hparams: dict,
                    held_out_logits: torch.Tensor | None = None,
                    base_model: dict[str, torch.Tensor] | None = None) -> "RunData":
        """A run's view of a training set with labels ``y`` and attributes ``attributes`` [n] (on the CPU)."""
        groups = group_ids(y, attributes)
        return cls(y=y, groups=groups, num_classes=num_classes, num_groups=int(groups.max()) + 1,
                   num_attributes=int(attributes.max()) + 1, seed=seed, hparams=hparams,
                   held_out_logits=held_out_logits, base_model=base_model)


@dataclass(frozen=True)
class Batch:
    """One training step of a stack, padded to its longest batch; every tensor [H, B]."""

    index: torch.Tensor  # training example ids; padding points at the extra row n
    y: torch.Tensor
    groups: torch.Tensor
    mask: torch.Tensor  # 1.0 for real examples, 0.0 for padding (the training dtype)
    uniforms: torch.Tensor | None  # per-example uniforms in [0, 1), for algorithms that draw
    step: torch.Tensor | int  # the training step (a 0-d tensor in the loop, so that a CUDA graph can replay it)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the real examples of each run: [H, B] -> [H]."""
    return (values * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1)


def per_example_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of every example: logits [H, B, K], y [H, B] -> [H, B]."""
    return F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(y.shape)


def sums_by_index(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """Per-run sums of ``values`` [H, B] by ``index`` [H, B] in 0 .. size-1: [H, size].

    A one-hot product (a fixed order of additions, unlike CUDA's scatter_add, as
    XRM.groups.sum_by_index), so runs are reproducible and a run sums the same alone as in a stack.
    """
    return torch.einsum("hb,hbs->hs", values, one_hot(index, size, values.dtype))


def gather_rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows ``index`` [H, B] of a per-run table [H, n + 1, ...]: [H, B, ...]."""
    trailing = table.shape[2:]
    expanded = index.view(*index.shape, *([1] * len(trailing))).expand(*index.shape, *trailing)
    return table.gather(1, expanded)


class Algorithm:
    """Empirical risk minimisation; subclasses override :meth:`loss` and :meth:`initial_state`.

    ``hparam_names`` lists the hyper-parameters :meth:`loss` reads (as [H] tensors).
    """

    name = ""
    phase = 2
    #: how training batches are drawn: one of XRM.sampling.SAMPLINGS
    sampling = "uniform"
    #: whether the algorithm needs the phase-1 held-out logits of every training example
    needs_held_out_logits = False
    #: networks per run: XRM trains two twins
    networks_per_run = 1
    #: whether each step's batch carries uniforms (Batch.uniforms) for the algorithm's draws
    draws_uniforms = False
    #: the group information it trains with: "none", "training" (every training example's
    #: group) or "validation" (validation groups, e.g. last-layer retraining); validation
    #: groups for model selection are not counted here (every algorithm may use them)
    group_information = "none"
    #: the kinds of --group_labels it accepts (GROUP_LABEL_KINDS); others get one line
    accepted_group_labels: tuple[str, ...] = GROUP_LABEL_KINDS
    hparam_names: tuple[str, ...] = ()
    #: the splits it trains and selects on (XRM.last_layer_inputs: "standard", or DFR's "validation_halves")
    data_view = "standard"
    #: last-layer retraining: the algorithm whose selected run is its base model (AFR: "AFRBase", DFR:
    #: "ERM"; XRM.last_layer_inputs.needs_base_model says when it is read); None: none
    base_algorithm: str | None = None
    #: whether it starts from (and reads) its base model's last layer (AFR)
    starts_from_base_head = False
    #: whether its uniform draws follow a dataset's class-balanced batches (CivilComments); AFR's
    #: weights balance the classes already
    follows_balanced_batches = True

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes

    def training_pool(self, run: RunData) -> torch.Tensor | None:
        """The training examples its batches are drawn from (ids); None: all of them."""
        return None

    def last_layer_penalty(self, model, part: slice, state: State,
                           hparams: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """A penalty [h] on the last layer of the stack's runs ``part`` (``model.last_layer(part)``),
        added to their losses; None: none."""
        return None

    def initial_state(self, run: RunData) -> State:
        """One run's algorithm state before step 0 (tensors; per-example ones have n + 1 rows)."""
        return {}

    def state_signature(self, run: RunData) -> tuple:
        """Runs of this algorithm with equal signatures have state tensors of equal shapes."""
        return ()

    def loss(self, logits: torch.Tensor, batch: Batch, state: State,
             hparams: dict[str, torch.Tensor]) -> tuple[torch.Tensor, State]:
        """Each run's loss [H] on its batch, and the runs' state after the step."""
        return masked_mean(per_example_cross_entropy(logits, batch.y), batch.mask), state

    def evaluation_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """The logits that classify at evaluation time, [H, n, K]."""
        return logits

    @classmethod
    def first_recorded_step(cls, hparams: dict) -> int:
        """The first evaluation step recorded: before it the network that classifies has not
        trained (JTT's and uLA's second network before T), so there is nothing to select."""
        return 0

    def network_updates(self, step: torch.Tensor | int, state: State,
                        hparams: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Which of each run's networks step ``step`` trains, [H, networks_per_run] (bool); None: all.
        A network left out keeps its weights and optimiser state exactly (no decay, no momentum)."""
        return None


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


@register_algorithm("MAT")
class MAT(Algorithm):
    """Memorization-Aware Training: cross-entropy of f(x) + log p_ho(. | x) (Algorithm 1).

    The shift is computed once over the whole training set from the phase-1 held-out
    logits; it is a constant per example and is used in training only.
    """

    needs_held_out_logits = True

    def initial_state(self, run: RunData) -> State:
        """The shift log p_ho(. | x_i) of every training example (and a zero padding row)."""
        if run.held_out_logits is None:
            raise ValueError("MAT needs the held-out logits of phase 1")
        shift = memorization_aware_shift(run.held_out_logits, run.y, run.hparams["tau"])
        return {"shift": torch.cat([shift, shift.new_zeros(1, shift.shape[1])])}

    def loss(self, logits, batch, state, hparams):
        """Cross-entropy of the shifted logits."""
        shifted = logits + gather_rows(state["shift"], batch.index).to(logits.dtype)
        return masked_mean(per_example_cross_entropy(shifted, batch.y), batch.mask), state


def class_balanced_cross_entropy(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor,
                                 num_classes: int) -> torch.Tensor:
    """Per run, the sum over the classes present in the batch of the mean loss within the class: [H]."""
    losses = per_example_cross_entropy(logits, y) * mask
    totals = sums_by_index(losses, y, num_classes)
    counts = sums_by_index(mask, y, num_classes)
    return (totals / counts.clamp_min(1)).sum(dim=1)


def flip_probability(max_probability: torch.Tensor, num_classes: int) -> torch.Tensor:
    """XRM's label-flip probability (p_ho - 1/K) K / (K - 1): 0 at chance, 1 when certain."""
    return ((max_probability - 1.0 / num_classes) * num_classes / (num_classes - 1)).clamp(0.0, 1.0)


def split_twin_logits(twin_logits: torch.Tensor, first_twin_holds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Held-in and held-out logits from twin logits [..., K, 2] and each example's twin [...]."""
    first_holds = first_twin_holds[..., None]
    held_in = torch.where(first_holds, twin_logits[..., 0], twin_logits[..., 1])
    held_out = torch.where(first_holds, twin_logits[..., 1], twin_logits[..., 0])
    return held_in, held_out


def twin_assignment(num_examples: int, seed: int) -> torch.Tensor:
    """Which examples the first twin trains on (p = 0.5 each), a pure function of the seed."""
    return torch.rand(num_examples, generator=torch.Generator().manual_seed(seed)) < 0.5


@register_algorithm("XRM")
class XRM(Algorithm):
    """Cross-risk minimisation (Pezeshki et al., 2024): twins trained on random halves that flip labels.

    Every training example is assigned to one twin (p = 0.5). Each batch trains every
    example's own twin ("held-in") with a class-balanced loss on the dynamic labels; then
    each example's label flips to the other twin's ("held-out") prediction with
    probability :func:`flip_probability` of that prediction's confidence.
    """

    phase = 1
    networks_per_run = 2
    accepted_group_labels = ("no",)
    draws_uniforms = True

    def initial_state(self, run: RunData) -> State:
        """The twin assignment and the dynamic labels (the true ones at first)."""
        padding = torch.zeros(1, dtype=run.y.dtype)
        return {"first_twin_holds": torch.cat([twin_assignment(len(run.y), run.seed), torch.zeros(1, dtype=torch.bool)]),
                "dynamic_labels": torch.cat([run.y.cpu(), padding])}

    def loss(self, logits, batch, state, hparams):
        """Class-balanced loss of each example's own twin on its dynamic label; the labels after the flips."""
        holds = state["first_twin_holds"].gather(1, batch.index)
        held_in, held_out = split_twin_logits(logits, holds)
        labels = state["dynamic_labels"].gather(1, batch.index)
        loss = class_balanced_cross_entropy(held_in, labels, batch.mask, self.num_classes)
        with torch.no_grad():
            confidence, prediction = torch.softmax(held_out.detach().float(), dim=-1).max(dim=-1)
            probability = flip_probability(confidence, self.num_classes)
            flip = (batch.uniforms < probability) & (batch.mask > 0)
            dynamic = state["dynamic_labels"].scatter(1, batch.index, torch.where(flip, prediction, labels))
        return loss, {**state, "dynamic_labels": dynamic}

    def evaluation_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Twin logits [H, n, K, 2]: phase 1 is evaluated by its flip rate, not by accuracy."""
        return logits


def flip_rates(dynamic_labels: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per run, the fraction of training labels that differ from the true ones: [H]."""
    return (dynamic_labels[:, : len(y)] != y).double().mean(dim=1)


# baselines in their own modules, which import this one: registered once this one is complete
# (JTT, uLA, LfF train two networks per run; DFR, AFRBase and AFR retrain a linear head)
importlib.import_module("XRM.two_model_baselines")
importlib.import_module("XRM.last_layer")

"""The algorithm contract and registry: what every training algorithm is and declares.

An algorithm is a loss over a stack of H runs of itself: it sees tensors with a leading
run dimension (logits [H, B, K], the batch's indices, labels, groups and a mask of the
real examples, since runs with smaller batches are padded), its runs' hyper-parameters as
[H] tensors, and its runs' state (GroupDRO's q, XRM's dynamic labels, ...) as stacked
tensors that it returns updated. A single run is a stack of one. Per-example state has
one extra row, index ``n`` (the training set's size), where padded positions write.

An algorithm is one file: its class, registered with :func:`register_algorithm`, declares its
search space (``search_space``) and the bounds of its hyper-parameters (``hparam_bounds``)
beside its loss. The built-in families live in this package (group_robust, xrm, two_networks,
last_layer); importing ``XRM.algorithms`` registers them. Other packages register theirs
when imported (``mat`` registers MAT).
"""
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from XRM.common.errors import UserError
from XRM.common.groups import group_ids, one_hot
from XRM.common.registry import Registry
from XRM.common.search_space import Bound, SearchSpace
from XRM.results.records import GROUP_LABEL_KINDS, group_labels_kind

ALGORITHMS: Registry[type["Algorithm"]] = Registry("algorithm", names_entries=True)
#: class decorator that registers an algorithm under a name (names are unique; the class learns it as ``name``)
register_algorithm = ALGORITHMS.register
State = dict[str, torch.Tensor]


def get_algorithm_class(name: str) -> type["Algorithm"]:
    """The algorithm registered as ``name``; a UserError listing the valid names otherwise."""
    return ALGORITHMS.lookup(name)


#: the usual splits (Algorithm.data_view): train on 'tr', select on 'va', report 'te'
STANDARD_VIEW = "standard"

#: the only group-label source phase 1 accepts: it infers the groups itself
PHASE_1_GROUP_LABELS = "no"


def check_group_labels(algorithm: type["Algorithm"], group_labels: str) -> None:
    """A UserError when ``algorithm`` does not accept this kind of --group_labels
    (phase 1, which infers groups, accepts 'no' only)."""
    if algorithm.phase == 1 and group_labels != PHASE_1_GROUP_LABELS:
        raise UserError(f"phase 1 ({algorithm.name}) infers groups and must not be given group labels; "
                        "use --group_labels no")
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
    XRM.common.groups.sum_by_index), so runs are reproducible and a run sums the same alone as in a stack.
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
    #: how training batches are drawn: one of XRM.common.sampling.SAMPLINGS
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
    #: phase 1: the record key its runs are selected by (the highest final value; XRM: flip_rate)
    phase_1_metric: str | None = None
    #: phase 1: whether its phase-1 file holds every training example's held-out logits (XRM's,
    #: which MAT reads); EIIL's reference model trains on every example, so it has none
    writes_held_out_logits = False
    #: its own hyper-parameters (and family ones it changes): name -> (default, sampler)
    search_space: SearchSpace = {}
    #: which values of its own hyper-parameters can train: name -> Bound
    hparam_bounds: dict[str, Bound] = {}
    #: the splits it trains and selects on (XRM.runs.last_layer_inputs: "standard", or DFR's "validation_halves")
    data_view = "standard"
    #: last-layer retraining: the algorithm whose selected run is its base model (AFR: "AFRBase", DFR:
    #: "ERM"; XRM.runs.last_layer_inputs.needs_base_model says when it is read); None: none
    base_algorithm: str | None = None
    #: whether it starts from (and reads) its base model's last layer (AFR)
    starts_from_base_head = False
    #: whether its uniform draws follow a dataset's class-balanced batches (CivilComments); AFR's
    #: weights balance the classes already
    follows_balanced_batches = True
    #: its networks' outputs as its own function of the inputs and of each network's one linear
    #: layer, head(x, weight, bias) (XRM.engine.model_stacks.ParameterStack), in place of the
    #: linear product; None: the networks' own outputs. Runs stack only with runs of the same head.
    head = None

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes

    def initialise_networks(self, networks: list, hparams: dict) -> None:
        """Set the starting weights of one run's freshly built networks in place (the run's resolved
        ``hparams`` may say how), drawing from the global generator (seeded from the run's seed); by
        default each network starts as built, its own draw."""

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

    def training_metrics(self, state: State, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """What each run's state says at an evaluation, name -> [H], recorded by a phase-1
        algorithm in place of accuracies (XRM: its flip rate); ``y`` [n] the true training labels."""
        return {}

    def infer_groups(self, train_logits: torch.Tensor, state: State, train_y: torch.Tensor,
                     validation_logits: torch.Tensor | None = None,
                     validation_y: torch.Tensor | None = None) -> list["GroupInference"]:
        """The end of phase 1: each run's inferred groups from its evaluation logits on every
        training example ([H, n, ...]) and, when given, every validation example. Phase-2
        algorithms infer nothing."""
        raise NotImplementedError(f"{self.name} is not a group-inference (phase-1) algorithm")


@dataclass(frozen=True)
class GroupInference:
    """What a phase-1 algorithm infers about one run's examples."""

    train_attributes: torch.Tensor  # long [n_tr]: the inferred attribute; the group is (y, attribute)
    held_out_logits: torch.Tensor | None  # [n_tr, K]: each training example's logits from a model that did
    # not train on it (XRM's held-out twin); None where the algorithm has none (EIIL)
    degenerate: bool  # some class (of either split) is not split into two non-empty inferred groups
    validation_attributes: torch.Tensor | None = None  # long [n_va], when validation logits were given
    #: what the inference itself measures, recorded at the end of the run (EIIL: its penalty); name -> value
    metrics: dict[str, float] = field(default_factory=dict)

"""XRM (phase 1): twins that flip labels, and the end of phase 1, groups inferred by cross-mistakes.

The end of phase 1 is written here once (:meth:`XRM.infer_groups`), for main.py's runs
(XRM.runs.train), for a user's tensors (XRM.api.infer_groups) and for the paper's figures.
"""
import torch

from XRM.algorithms.base import (Algorithm, GroupInference, RunData, State, per_example_cross_entropy,
                                 register_algorithm, sums_by_index)
from XRM.results.records import FLIP_RATE


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
    writes_held_out_logits = True
    networks_per_run = 2
    accepted_group_labels = ("no",)
    draws_uniforms = True
    phase_1_metric = FLIP_RATE

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

    def training_metrics(self, state: State, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each run's flip rate: the fraction of its dynamic labels that differ from the true ones."""
        return {FLIP_RATE: flip_rates(state["dynamic_labels"], y)}

    def infer_groups(self, train_logits, state, train_y, validation_logits=None, validation_y=None):
        """Every run's cross-mistakes on both splits (attribute 1 where either twin errs), the held-out
        twin's logits of every training example, and whether a class of either split is not split in two."""
        holds = state["first_twin_holds"][:, : train_logits.shape[1]]
        inferred = []
        for run, run_logits in enumerate(train_logits):
            _, held_out = split_twin_logits(run_logits, holds[run])
            train_attributes = cross_mistakes(run_logits, train_y)
            degenerate = is_degenerate(train_y, train_attributes)
            validation_attributes = None
            if validation_logits is not None:
                validation_attributes = cross_mistakes(validation_logits[run], validation_y)
                degenerate = degenerate or is_degenerate(validation_y, validation_attributes)
            inferred.append(GroupInference(train_attributes, held_out, degenerate, validation_attributes))
        return inferred


def cross_mistakes(twin_logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Inferred attribute per example from twin logits [..., n, K, 2]: 1 if either twin misclassifies it."""
    wrong_first = twin_logits[..., 0].argmax(dim=-1) != y
    wrong_second = twin_logits[..., 1].argmax(dim=-1) != y
    return (wrong_first | wrong_second).long()


def is_degenerate(y: torch.Tensor, attributes: torch.Tensor) -> bool:
    """True when some class present in ``y`` is not split into two non-empty inferred groups."""
    for label in torch.unique(y):
        if len(torch.unique(attributes[y == label])) < 2:
            return True
    return False


def flip_rates(dynamic_labels: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per run, the fraction of training labels that differ from the true ones: [H]."""
    return (dynamic_labels[:, : len(y)] != y).double().mean(dim=1)

"""Last-layer retraining: DFR, AFR and AFR's base model, as losses over a stack.

Each trains a linear head (the "last layer") on the stack's inputs; what it trains on and
where its base model comes from is XRM.runs.last_layer_inputs's concern; the fixed parts of the
data they train on (DFR's validation halves, AFR's reweighting part) are defined here.
"""
import torch

from XRM.algorithms.base import (Algorithm, RunData, State, gather_rows, masked_mean, per_example_cross_entropy,
                                 register_algorithm)
from XRM.algorithms.group_robust import ERM
from XRM.common.sampling import subsample_to_smallest_group
from XRM.common.search_space import NON_NEGATIVE, POSITIVE, choice, fixed, log_uniform

#: DFR's splits: train on the first validation half, select on the second, report 'te'
VALIDATION_HALVES_VIEW = "validation_halves"
#: the same halves with the inputs as they are, not standardised per feature (DPE normalises each example itself)
RAW_VALIDATION_HALVES_VIEW = "raw_validation_halves"
#: the fraction of the training set AFR reweights on, held out from its base model: the AFR
#: authors' README trains the base on 80% of the training data (train_prop=80) and the last layer
#: on the remaining 20% (train_prop=-20)
AFR_REWEIGHTING_FRACTION = 0.2
#: fixed seeds of the two cuts: every run, whatever its seed, sees the same halves and parts
_HALVES_SEED, _REWEIGHTING_SEED = 20230, 20231


def _fixed_permutation(n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def validation_halves(num_validation: int) -> tuple[torch.Tensor, torch.Tensor]:
    """DFR's two disjoint halves of the validation set (sorted example ids): the training half
    (floor(n / 2) examples) and the selection half (the rest). Fixed for a dataset."""
    order = _fixed_permutation(num_validation, _HALVES_SEED)
    half = num_validation // 2
    return order[:half].sort().values, order[half:].sort().values


def balanced_subset(groups: torch.Tensor, seed: int) -> torch.Tensor:
    """The examples (ids into ``groups``) DFR trains on: as many of every present group as the
    smallest group has, drawn from ``seed``."""
    return subsample_to_smallest_group(groups.cpu(), torch.Generator().manual_seed(seed))


def reweighting_part(num_train: int) -> torch.Tensor:
    """AFR's reweighting examples (sorted ids): a fixed 20% of the training set."""
    count = round(num_train * AFR_REWEIGHTING_FRACTION)
    return _fixed_permutation(num_train, _REWEIGHTING_SEED)[:count].sort().values


def base_model_part(num_train: int) -> torch.Tensor:
    """AFRBase's training examples: every training example outside AFR's reweighting part."""
    keep = torch.ones(num_train, dtype=torch.bool)
    keep[reweighting_part(num_train)] = False
    return keep.nonzero().flatten()


@register_algorithm("DFR")
class DFR(Algorithm):
    """Deep feature reweighting (Kirichenko et al., 2023), DFR^Val: a linear head trained from zero on
    a group-balanced subset of half of the validation set (standardised inputs), with the L1
    penalty of the authors' logistic regression, ||W||_1 / (C n) for n training examples (the
    liblinear objective ||W||_1 + C * sum of losses, divided by C n); selected on the other half.
    """

    group_information = "validation"
    accepted_group_labels = ("yes", "inferred")
    data_view = VALIDATION_HALVES_VIEW
    base_algorithm = "ERM"  # its embeddings, on datasets whose network is more than a head
    hparam_names = ("dfr_c",)
    # the inverse L1 strength C of the authors' logistic regression, from their grids (Waterbirds
    # {1, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01}, CelebA {3, 1, 0.3, 0.1, 0.03, 0.01, 0.003}); the head is
    # trained from zero by the family's optimiser instead of liblinear, so larger rates too
    search_space = {"dfr_c": (0.3, choice([3.0, 1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01, 0.003])),
                    "lr": (1e-2, log_uniform(-3, -1)), "weight_decay": (0.0, fixed(0.0))}
    hparam_bounds = {"dfr_c": POSITIVE}

    def training_pool(self, run: RunData) -> torch.Tensor:
        """The balanced subset of the training half (the run's groups there), drawn from its seed."""
        return balanced_subset(run.groups, run.seed)

    def initial_state(self, run: RunData) -> State:
        """1 / n of the run's training subset (the L1 weight is this over C)."""
        return {"inverse_size": torch.tensor(1.0 / len(self.training_pool(run)), dtype=torch.float64)}

    def last_layer_penalty(self, model, part: slice, state: State, hparams: dict[str, torch.Tensor]) -> torch.Tensor:
        """||W||_1 / (C n) per run (the bias is not penalised)."""
        weight, _ = model.last_layer(part)
        scale = (state["inverse_size"].to(weight.dtype) / hparams["dfr_c"])
        return scale * weight.abs().flatten(1).sum(dim=1)


@register_algorithm("AFRBase")
class AFRBase(ERM):
    """AFR's base model: ERM on the training examples outside AFR's reweighting part (80%)."""

    def training_pool(self, run: RunData) -> torch.Tensor:
        """The training examples AFR does not reweight."""
        return base_model_part(len(run.y))


def afr_weights(base_logits: torch.Tensor, y: torch.Tensor, gamma: float) -> torch.Tensor:
    """AFR's per-example weights (Qiu et al., 2023): exp(-gamma p_i), p_i the base model's
    probability of the true class; multiplied by n / n_y, so every class weighs the same in total
    (an option of the authors' code, always on here); normalised to sum to 1. Inputs [n, K], [n]."""
    probability = torch.softmax(base_logits.double(), dim=-1).gather(1, y[:, None]).squeeze(1)
    weights = torch.exp(-gamma * probability)
    counts = torch.bincount(y, minlength=base_logits.shape[1]).double()
    weights = weights * len(y) / counts[y]
    return weights / weights.sum()


@register_algorithm("AFR")
class AFR(Algorithm):
    """Automatic feature reweighting (Qiu et al., 2023): the base model's head retrained on the
    reweighting part of the training set, starting from the base head, with the loss
    sum_i w_i CE_i + lambda (||W - W_base||^2 + ||b - b_base||^2) (w: :func:`afr_weights`).
    Trains with no group labels; validation groups select."""

    base_algorithm = "AFRBase"
    starts_from_base_head = True
    follows_balanced_batches = False  # uniform draws: each batch's weighted mean estimates sum_i w_i CE_i
    hparam_names = ("afr_lambda",)
    # gamma, the weights' temperature, and lambda, the pull towards the base head; the commands of the
    # authors' README pass gamma 14 and reg_coeff 0.2 (Waterbirds), 1.8 and 0 (CelebA), SGD at 0.02
    # and 0.01: the ranges hold both
    search_space = {"afr_gamma": (4.0, choice([0.5, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0, 20.0])),
                    "afr_lambda": (0.1, choice([0.0, 0.01, 0.1, 0.2, 0.3, 0.4])),
                    "lr": (1e-2, log_uniform(-3, -1)), "weight_decay": (0.0, fixed(0.0))}
    hparam_bounds = {"afr_gamma": NON_NEGATIVE, "afr_lambda": NON_NEGATIVE}

    def training_pool(self, run: RunData) -> torch.Tensor:
        """The reweighting part of the training set."""
        return reweighting_part(len(run.y))

    def initial_state(self, run: RunData) -> State:
        """Every training example's weight times the part's size (mean 1 over the part; 0 outside it
        and on the padding row), and the base head."""
        if run.held_out_logits is None or run.base_model is None:
            raise ValueError("AFR needs its base model's head and logits")
        part = self.training_pool(run)
        weights = torch.zeros(len(run.y) + 1, dtype=torch.float64)
        weights[part] = afr_weights(run.held_out_logits[part], run.y[part], run.hparams["afr_gamma"]) * len(part)
        return {"weights": weights, "base_weight": run.base_model["weight"].double(),
                "base_bias": run.base_model["bias"].double()}

    def loss(self, logits, batch, state, hparams):
        """The weighted cross-entropy, an unbiased estimate of sum_i w_i CE_i on each batch."""
        weights = gather_rows(state["weights"], batch.index).to(logits.dtype)
        return masked_mean(weights * per_example_cross_entropy(logits, batch.y), batch.mask), state

    def last_layer_penalty(self, model, part: slice, state: State, hparams: dict[str, torch.Tensor]) -> torch.Tensor:
        """lambda times the squared distance of each run's head from its base head."""
        weight, bias = model.last_layer(part)
        distance = ((weight - state["base_weight"].to(weight.dtype)) ** 2).flatten(1).sum(dim=1)
        distance = distance + ((bias - state["base_bias"].to(bias.dtype)) ** 2).sum(dim=1)
        return hparams["afr_lambda"] * distance

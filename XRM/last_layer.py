"""Last-layer retraining: DFR, AFR and AFR's base model, as losses over a stack.

Each trains a linear head (the "last layer") on the stack's inputs; what it trains on and
where its base model comes from is XRM.last_layer_inputs's concern.
"""
import torch

from XRM.algorithms import (ERM, Algorithm, RunData, State, gather_rows, masked_mean, per_example_cross_entropy,
                            register_algorithm)
from XRM.last_layer_inputs import (VALIDATION_HALVES_VIEW, balanced_subset, base_model_part, reweighting_part)


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

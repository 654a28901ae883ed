"""The memorization-aware logit shift of MAT (Algorithm 1 of the paper).

Given held-out logits f_ho(x_i) for every training example (from the XRM twin that did not
train on x_i), the shift is log p_ho(y | x_i), where

    p(y_ho | x_i)  = softmax(f_ho(x_i) / tau)
    p(y, y_ho)     = (1/n) sum_i p(y_ho | x_i) 1[y_i = y]            (whole training set)
    p(y | y_ho)    = p(y, y_ho) / sum_y' p(y', y_ho)
    p_ho(y | x_i)  = sum_{y_ho} p(y_ho | x_i) p(y | y_ho).
"""
import torch

from XRM.common.groups import sum_by_index

#: floor on probabilities before the log: keeps the shift finite when the held-out model
#: never predicts some class (an all-zero column of p(y, y_ho)) or tau is tiny
PROBABILITY_FLOOR = 1e-12


def _held_out_predictions(held_out_logits: torch.Tensor, tau: float) -> torch.Tensor:
    """p(y_ho | x_i) = softmax(f_ho(x_i) / tau), in float64 (tau may be 0.001)."""
    return torch.softmax(held_out_logits.double() / tau, dim=1)


def _joint(p_y_ho_given_x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return sum_by_index(p_y_ho_given_x, y.long(), p_y_ho_given_x.shape[1]) / len(y)


def held_out_joint(held_out_logits: torch.Tensor, y: torch.Tensor, tau: float) -> torch.Tensor:
    """The K x K table p(y, y_ho), rows indexed by y, estimated over all given examples."""
    return _joint(_held_out_predictions(held_out_logits, tau), y)


def calibrated_held_out_probabilities(held_out_logits: torch.Tensor, y: torch.Tensor, tau: float) -> torch.Tensor:
    """p_ho(y | x_i) for every example: an [n, K] matrix whose rows sum to one."""
    p_y_ho_given_x = _held_out_predictions(held_out_logits, tau)
    joint = _joint(p_y_ho_given_x, y)
    column_mass = joint.sum(dim=0, keepdim=True)
    # A class the held-out model never predicts has no mass: its column is uninformative,
    # so it gets the class prior instead of 0/0.
    prior = joint.sum(dim=1, keepdim=True).expand_as(joint)
    y_given_y_ho = torch.where(column_mass > 0, joint / column_mass.clamp_min(PROBABILITY_FLOOR), prior)
    return p_y_ho_given_x @ y_given_y_ho.T


def memorization_aware_shift(held_out_logits: torch.Tensor, y: torch.Tensor, tau: float) -> torch.Tensor:
    """The per-example logit shift log p_ho(. | x_i), float32 [n, K], finite for any tau > 0."""
    if tau <= 0:
        raise ValueError(f"tau must be positive, got {tau}")
    if held_out_logits.ndim != 2 or len(held_out_logits) != len(y):
        raise ValueError(
            f"held-out logits must be [n, K] with n = {len(y)} labels; got {tuple(held_out_logits.shape)}")
    probabilities = calibrated_held_out_probabilities(held_out_logits, y, tau)
    return probabilities.clamp_min(PROBABILITY_FLOOR).log().float()

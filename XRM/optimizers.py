"""Optimisers, with weight decay on weights only (never on biases or normalisation layers)."""
import torch
from torch import nn

OPTIMIZERS = ("sgd", "adam", "adamw")
#: SGD's momentum unless the hparams set ``sgd_momentum`` (the figure scripts set 0: the
#: reference's interpretable experiment trains with plain SGD)
SGD_MOMENTUM = 0.9


def decay_parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two parameter groups: matrices/kernels with ``weight_decay``, biases and norms without."""
    decayed, not_decayed = [], []
    for parameter in model.parameters():
        if not parameter.requires_grad:
            continue
        # biases and LayerNorm/BatchNorm scales are 1-D; decaying them is the bug DESIGN.md notes
        (decayed if parameter.ndim > 1 else not_decayed).append(parameter)
    return [
        {"params": decayed, "weight_decay": weight_decay},
        {"params": not_decayed, "weight_decay": 0.0},
    ]


def build_optimizer(
    model: nn.Module, name: str, lr: float, weight_decay: float, momentum: float = SGD_MOMENTUM
) -> torch.optim.Optimizer:
    """SGD (with ``momentum``, 0.9 by default), Adam or AdamW over ``model``'s trainable parameters."""
    groups = decay_parameter_groups(model, weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}; choose from: {', '.join(OPTIMIZERS)}")

"""One update of a fused torch AdamW with gradients handed over, not set on its parameters first.

A stack of text runs (XRM/engine/text_stack.py) keeps each run's own ``torch.optim.AdamW`` (its
state_dict is the run's checkpoint) over views of the stacked tensors: about 200 per run. Its
``step()`` walks every parameter in Python (which has a gradient, which has its state) before the
fused kernel runs, and each view's ``.grad`` must be set first: the 8 runs' updates of a stack of
BERT-base runs took 12.4 ms of host time a step on one H100 machine and 20.1 ms on another, for
about 9.5 ms of the GPU's work. Here the same fused kernel runs through torch's functional AdamW,
on the optimiser's own state tensors, with the gradients given: the arithmetic and the state are
the optimiser's (tested bitwise against ``step()``), and its state_dict is unchanged.
"""
import torch
from torch.optim.adamw import adamw as functional_adamw


def fused_adamw_step(optimizer: torch.optim.Optimizer, gradients: dict[int, torch.Tensor]) -> bool:
    """Update ``optimizer``'s parameters as its ``step()`` would, each with ``gradients[id(parameter)]``;
    done only for a fused AdamW (no amsgrad, maximize, capturable or differentiable) whose every parameter has
    its state and a gradient: else nothing is done and False returned (call ``step()`` then)."""
    if type(optimizer) is not torch.optim.AdamW or not _plain_fused(optimizer):
        return False
    updates = []
    for group in optimizer.param_groups:
        parameters = group["params"]
        states = [optimizer.state.get(parameter) for parameter in parameters]
        grads = [gradients.get(id(parameter)) for parameter in parameters]
        if any(not state for state in states) or any(grad is None for grad in grads):
            return False  # a first step (no state yet) or a parameter without a gradient: step() knows what to do
        updates.append((group, parameters, grads, states))
    for group, parameters, grads, states in updates:
        beta1, beta2 = group["betas"]
        functional_adamw(
            parameters, grads, [state["exp_avg"] for state in states], [state["exp_avg_sq"] for state in states], [],
            [state["step"] for state in states], foreach=False, fused=True, capturable=False, differentiable=False,
            grad_scale=None, found_inf=None, amsgrad=False, beta1=beta1, beta2=beta2, lr=group["lr"],
            weight_decay=group["weight_decay"], eps=group["eps"], maximize=False)
    return True


def _plain_fused(optimizer: torch.optim.Optimizer) -> bool:
    """Whether every group of ``optimizer`` runs torch's fused kernel with none of the options it handles apart."""
    return all(group.get("fused") and not group.get("amsgrad") and not group.get("maximize")
               and not group.get("capturable") and not group.get("differentiable")
               for group in optimizer.param_groups)

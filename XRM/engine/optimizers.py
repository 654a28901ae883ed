"""Optimisers, with weight decay on weights only (never on biases or normalisation layers), and
learning-rate schedules."""
import inspect
from typing import Callable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from XRM.common.registry import Registry

OPTIMIZERS = ("sgd", "adam", "adamw")
#: SGD's momentum unless the hparams set ``sgd_momentum`` (the figure scripts set 0: the
#: reference's interpretable experiment trains with plain SGD)
SGD_MOMENTUM = 0.9


def decay_parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two parameter groups of ``model``'s trainable parameters: matrices/kernels with ``weight_decay``,
    biases and norms without."""
    return decay_groups([p for p in model.parameters() if p.requires_grad], weight_decay)


def decay_groups(parameters: list[torch.Tensor], weight_decay: float) -> list[dict]:
    """Two parameter groups of ``parameters`` (in their order): matrices/kernels with ``weight_decay``,
    biases and norms without."""
    decayed, not_decayed = [], []
    for parameter in parameters:
        # biases and LayerNorm/BatchNorm scales are 1-D; decaying them is the bug DESIGN.md notes
        (decayed if parameter.ndim > 1 else not_decayed).append(parameter)
    return [
        {"params": decayed, "weight_decay": weight_decay},
        {"params": not_decayed, "weight_decay": 0.0},
    ]


def _fused(optimizer_class: type, parameters: list[torch.Tensor]) -> dict:
    """``{"fused": True}`` when ``optimizer_class`` has a fused kernel (one launch for every tensor)
    for parameters all on CUDA, as torch >= 2.4 has for Adam, AdamW and SGD; else ``{}``."""
    on_cuda = bool(parameters) and all(p.is_cuda and p.is_floating_point() for p in parameters)
    return {"fused": True} if on_cuda and "fused" in inspect.signature(optimizer_class).parameters else {}


def build_optimizer(
    model: nn.Module, name: str, lr: float, weight_decay: float, momentum: float = SGD_MOMENTUM
) -> torch.optim.Optimizer:
    """SGD (with ``momentum``, 0.9 by default), Adam or AdamW over ``model``'s trainable parameters
    (a fused update on CUDA)."""
    return optimizer_of_groups(decay_parameter_groups(model, weight_decay), name, lr, momentum)


def optimizer_of_groups(groups: list[dict], name: str, lr: float, momentum: float = SGD_MOMENTUM) -> torch.optim.Optimizer:
    """SGD (with ``momentum``), Adam or AdamW over parameter ``groups`` (a fused update on CUDA)."""
    parameters = [p for group in groups for p in group["params"]]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, **_fused(torch.optim.SGD, parameters))
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, **_fused(torch.optim.Adam, parameters))
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, **_fused(torch.optim.AdamW, parameters))
    raise ValueError(f"unknown optimizer {name!r}; choose from: {', '.join(OPTIMIZERS)}")


#: schedule name -> factor(step, num_steps): the base learning rate's multiplier at update ``step``
#: (0-based) of a run of ``num_steps`` updates; the hparam ``lr_schedule`` names one
LR_SCHEDULES: Registry[Callable[[int, int], float]] = Registry("learning-rate schedule")


@LR_SCHEDULES.register("constant")
def constant_lr_factor(step: int, num_steps: int) -> float:
    """1 at every step: the base learning rate throughout."""
    return 1.0


@LR_SCHEDULES.register("text")
def text_lr_factor(step: int, num_steps: int) -> float:
    """The reference's schedule for BERT fine-tuning (CivilComments, MultiNLI): two linear decays.

    With W = num_steps // 3 + 1: the factor falls from 1 at step 0 towards 0 (1/W at step
    W - 1), jumps back to 1 at step W and falls linearly by 1/num_steps a step, to W/num_steps
    (about 1/3) at step num_steps. For num_steps = 60001 (W = 20001) its mean over the
    training steps 0..60000 is about 0.61.
    """
    first = num_steps // 3 + 1
    if step < first:
        return 1.0 - step / first
    return 1.0 - (step - first) / num_steps


def build_lr_scheduler(optimizer: torch.optim.Optimizer, name: str, num_steps: int) -> LambdaLR:
    """A LambdaLR multiplying ``optimizer``'s learning rates by schedule ``name``'s factor; step it
    after every optimiser step, so that update k uses factor(k)."""
    factor = LR_SCHEDULES.lookup(name)
    return LambdaLR(optimizer, lambda step: factor(step, num_steps))


def _per_run(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[H] values shaped to broadcast over stacked parameters [H, ...]."""
    return values.view(-1, *([1] * (like.ndim - 1)))


class StackedOptimizer:
    """SGD with momentum, Adam or AdamW over stacked parameters [H, ...]: H runs, each with its
    own learning rate, weight decay (on weights only) and momentum, in one update per tensor.

    The arithmetic is torch.optim's (dampening 0; Adam's L2 term added to the gradient,
    AdamW's decay decoupled; betas 0.9, 0.999 and eps 1e-8), applied to every run at once.
    """

    BETAS = (0.9, 0.999)
    EPS = 1e-8

    def __init__(self, name: str, parameters: list[torch.Tensor], decayed: list[bool], lr: torch.Tensor,
                 weight_decay: torch.Tensor, momentum: torch.Tensor, networks_per_run: int = 1) -> None:
        if name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {name!r}; choose from: {', '.join(OPTIMIZERS)}")
        self.name, self.parameters, self.decayed = name, parameters, decayed
        self.lr, self.weight_decay, self.momentum = lr, weight_decay, momentum
        # a device tensor, so that a captured CUDA graph counts its replays (Adam's bias corrections)
        self.steps = torch.zeros((), dtype=torch.float64, device=lr.device)
        # updates each network [H, m] has had: Adam's bias corrections of networks that some steps leave alone
        self.network_steps = torch.zeros((len(lr), networks_per_run), dtype=torch.float64, device=lr.device)
        slots = ["momentum_buffer"] if name == "sgd" else ["exp_avg", "exp_avg_sq"]
        self.state = {slot: [torch.zeros_like(p) for p in parameters] for slot in slots}

    @torch.no_grad()
    def step(self, active: torch.Tensor | None = None) -> None:
        """One update of every run's parameters from their gradients (no host synchronisation).

        ``active`` [H, m] (bool; parameters [H, m, ...]) names the networks this step updates;
        the others keep their parameters and optimiser state exactly (see :meth:`_masked_step`).
        """
        self.steps.add_(1)
        if active is not None:
            self._masked_step(active)
            return
        self.network_steps.add_(1)
        for i, (parameter, decayed) in enumerate(zip(self.parameters, self.decayed)):
            grad, lr, decay = self._gradient(parameter, decayed)
            if self.name == "sgd":
                buffer = self.state["momentum_buffer"][i]
                buffer.mul_(_per_run(self.momentum, parameter)).add_(grad)
                parameter.sub_(lr * buffer)
                continue
            if decay is not None and self.name == "adamw":  # decoupled decay
                parameter.mul_(1 - lr * decay)
            beta1, beta2 = self.BETAS
            exp_avg, exp_avg_sq = self.state["exp_avg"][i], self.state["exp_avg_sq"][i]
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            correction1, correction2 = 1 - beta1 ** self.steps, 1 - beta2 ** self.steps
            denominator = (exp_avg_sq.sqrt() / correction2.sqrt()).add_(self.EPS)
            parameter.sub_((lr / correction1) * exp_avg / denominator)

    def _gradient(self, parameter: torch.Tensor,
                  decayed: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """A parameter's gradient (with the L2 term of SGD and Adam), its runs' learning rates and weight decays."""
        grad = parameter.grad
        lr = _per_run(self.lr, parameter)
        decay = _per_run(self.weight_decay, parameter) if decayed else None
        if decay is not None and self.name != "adamw":
            grad = grad + decay * parameter
        return grad, lr, decay

    def _masked_step(self, active: torch.Tensor) -> None:
        """The update of :meth:`step` where ``active`` is set; elsewhere nothing moves (no weight decay, no
        momentum, no Adam moments). Adam's bias corrections count each network's own updates, so a
        network first trained at step T starts as a fresh Adam does."""
        self.network_steps.add_(active.to(self.network_steps.dtype))
        for i, (parameter, decayed) in enumerate(zip(self.parameters, self.decayed)):
            keep = active.view(*active.shape, *([1] * (parameter.ndim - active.ndim)))
            grad, lr, decay = self._gradient(parameter, decayed)
            if self.name == "sgd":
                buffer = self.state["momentum_buffer"][i]
                moved = buffer * _per_run(self.momentum, parameter) + grad
                buffer.copy_(torch.where(keep, moved, buffer))
                parameter.copy_(torch.where(keep, parameter - lr * moved, parameter))
                continue
            updated = parameter
            if decay is not None and self.name == "adamw":
                updated = parameter * (1 - lr * decay)
            beta1, beta2 = self.BETAS
            exp_avg, exp_avg_sq = self.state["exp_avg"][i], self.state["exp_avg_sq"][i]
            new_avg = exp_avg.lerp(grad, 1 - beta1)
            new_avg_sq = (exp_avg_sq * beta2).addcmul_(grad, grad, value=1 - beta2)
            counts = self.network_steps.view(keep.shape)
            correction1 = (1 - beta1 ** counts).to(parameter.dtype)
            root_correction2 = (1 - beta2 ** counts).sqrt().to(parameter.dtype)
            denominator = (new_avg_sq.sqrt() / root_correction2).add_(self.EPS)
            updated = updated - (lr / correction1) * new_avg / denominator
            exp_avg.copy_(torch.where(keep, new_avg, exp_avg))
            exp_avg_sq.copy_(torch.where(keep, new_avg_sq, exp_avg_sq))
            parameter.copy_(torch.where(keep, updated, parameter))

    def zero_grad(self) -> None:
        """Forget the gradients of the last step."""
        for parameter in self.parameters:
            parameter.grad = None

    def member_state(self, member: int) -> dict:
        """Run ``member``'s optimiser state, on the CPU (for its checkpoint)."""
        return {"steps": int(self.steps.item()), "network_steps": self.network_steps[member].cpu().clone(),
                **{slot: [t[member].cpu().clone() for t in tensors] for slot, tensors in self.state.items()}}

    def load_member_state(self, member: int, state: dict) -> None:
        """Restore run ``member``'s optimiser state from :meth:`member_state`."""
        self.steps.fill_(state["steps"])
        # checkpoints written before per-network counts: every network had every update
        self.network_steps[member] = state.get("network_steps", torch.full_like(self.network_steps[member].cpu(),
                                                                               float(state["steps"]))).to(self.network_steps)
        for slot, tensors in self.state.items():
            for tensor, saved in zip(tensors, state[slot]):
                tensor[member] = saved.to(tensor)

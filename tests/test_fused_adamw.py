"""A fused AdamW updated with its gradients handed over (XRM/engine/fused_adamw.py) ends bitwise where its own
step() ends, state included; anything else is left to step()."""
import copy

import pytest
import torch

from XRM.engine.fused_adamw import fused_adamw_step
from XRM.engine.optimizers import build_lr_scheduler, decay_groups


def _parameters(seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator).requires_grad_(True) for shape in [(5, 3), (3,), (4, 5), (4,)]]


def _gradients(parameters: list[torch.Tensor], step: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(100 + step)
    return [torch.randn(p.shape, generator=generator) for p in parameters]


def _fused_adamw(parameters: list[torch.Tensor], **options) -> torch.optim.AdamW:
    return torch.optim.AdamW(decay_groups(parameters, 0.3), lr=0.01, fused=True, **options)


def test_handed_over_gradients_update_bitwise_as_step_does():
    """Six steps of the text schedule (the learning rate changes every step): parameters, state_dicts and
    learning rates bitwise those of step(); the first step (no state yet) is left to step()."""
    ours, theirs = _parameters(0), _parameters(0)
    optimizers = [_fused_adamw(ours), _fused_adamw(theirs)]
    schedulers = [build_lr_scheduler(optimizer, "text", 9) for optimizer in optimizers]
    taken = []
    for step in range(6):
        gradients = _gradients(ours, step)
        handed = fused_adamw_step(optimizers[0], {id(p): g for p, g in zip(ours, gradients)})
        if not handed:
            for parameter, gradient in zip(ours, gradients):
                parameter.grad = gradient.clone()
            optimizers[0].step()
        taken.append(handed)
        for parameter, gradient in zip(theirs, gradients):
            parameter.grad = gradient.clone()
        optimizers[1].step()
        for scheduler in schedulers:
            scheduler.step()
    assert taken == [False, True, True, True, True, True]
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    assert (ours[0] - _parameters(0)[0]).abs().max() > 1e-3  # they moved
    mine, reference = optimizers[0].state_dict(), optimizers[1].state_dict()
    assert mine["param_groups"] == reference["param_groups"]
    for key, state in reference["state"].items():
        assert state["step"].item() == 6
        assert all(torch.equal(mine["state"][key][name], value) for name, value in state.items())


@pytest.mark.parametrize("case", ["amsgrad", "not fused", "adam", "a gradient missing"])
def test_anything_else_is_left_to_step(case):
    parameters = _parameters(1)
    if case == "adam":
        optimizer = torch.optim.Adam(parameters, lr=0.01, fused=True)
    elif case == "not fused":
        optimizer = torch.optim.AdamW(parameters, lr=0.01)
    else:
        optimizer = _fused_adamw(parameters, amsgrad=case == "amsgrad")
    for parameter, gradient in zip(parameters, _gradients(parameters, 0)):
        parameter.grad = gradient
    optimizer.step()  # every parameter has its state now
    before = copy.deepcopy(optimizer.state_dict())
    values = [parameter.detach().clone() for parameter in parameters]
    handed = {id(p): g for p, g in zip(parameters, _gradients(parameters, 1))}
    if case == "a gradient missing":
        handed.pop(id(parameters[2]))
    assert not fused_adamw_step(optimizer, handed)
    assert all(torch.equal(parameter, value) for parameter, value in zip(parameters, values))  # nothing done
    assert all(torch.equal(before["state"][k]["exp_avg"], v["exp_avg"]) for k, v in optimizer.state_dict()["state"].items())

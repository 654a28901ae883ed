"""How GraphedPasses decides what it captures, on the CPU: the recording itself (CUDA graphs) stands aside
here, replaced by one that notes what it was given (the captures themselves: the *_cuda.py tests, on a GPU)."""
import pytest
import torch
from torch import nn

from XRM.networks import graphed_passes
from XRM.networks.graphed_passes import GraphedPasses


@pytest.fixture
def recorded(monkeypatch) -> list:
    """What each capture was asked to record: (its modules, its inputs' shapes)."""
    seen = []

    def record(modules, inputs, pool):
        seen.append((modules, [tuple(t.shape) for each in inputs for t in each]))
        return tuple(lambda *x, m=m: m(*x) for m in modules)

    monkeypatch.setattr(graphed_passes, "graphed_callables", record)
    return seen


def test_a_key_is_captured_once_uncompiled_by_default(recorded):
    module = nn.Linear(4, 2)
    passes = GraphedPasses(module)
    x = torch.ones(3, 4)
    first, second = passes("a", (x,)), passes("a", (x,))
    passes("b", (torch.ones(5, 4),))
    assert passes.captures == 2 and [shapes for _, shapes in recorded] == [[(3, 4)], [(5, 4)]]
    assert recorded[0][0] == (module,) and torch.equal(first, module(x)) and torch.equal(second, first)


def test_a_compiler_that_fails_leaves_one_warning_and_the_uncompiled_pass(recorded, monkeypatch, capsys):
    def fails(module):
        raise RuntimeError("no compiler here\nmore")

    monkeypatch.setattr(torch, "compile", fails)
    module = nn.Linear(4, 2)
    passes = GraphedPasses(module, compiled=True)
    passes("a", (torch.ones(3, 4),))
    passes("b", (torch.ones(5, 4),))
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "RuntimeError: no compiler here)" in warnings[0]
    assert not passes.compiled and [modules for modules, _ in recorded] == [(module,), (module,)]


def test_a_compiled_pass_is_what_the_compiler_gives(recorded, monkeypatch):
    compiled = nn.Linear(4, 2)
    monkeypatch.setattr(torch, "compile", lambda module: compiled)
    passes = GraphedPasses(nn.Linear(4, 2), compiled=True)
    passes("a", (torch.ones(3, 4),))
    assert passes.compiled and recorded[0][0] == (compiled,)

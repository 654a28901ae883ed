"""Per-example memorisation scores (Feldman & Zhang, 2020, "What neural networks memorize and
why"), estimated by subsampling, and their summaries by group.

M models of one algorithm each train on a random half of the training set. The score of
example i is the accuracy on x_i of the models that trained on it minus that of the models
that did not: mem_i = acc(i | held in) - acc(i | held out), from -1 to 1; near 1 when the
example is fitted only by the models that saw it (memorised), near 0 when every model gets
it right (or wrong) alike. The halves come in complementary pairs, so every example is held
in by exactly M/2 models and held out by the other M/2. The M models train together as one
stack (XRM.engine.in_memory.InMemoryStack), each drawing its batches from its own half.
"""
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from XRM.common.errors import UserError
from XRM.engine.in_memory import InMemoryStack, StackRun


def check_num_models(num_models: int) -> None:
    """A UserError unless ``num_models`` is even and >= 2 (the halves come in complementary pairs)."""
    if num_models < 2 or num_models % 2:
        raise UserError(f"the number of models is {num_models}: give an even number >= 2 (complementary halves)")


def random_halves(n: int, num_models: int, seed: int) -> torch.Tensor:
    """bool [num_models, n]: row m marks the examples model m trains on; rows 2k and 2k + 1 are a
    random half (n // 2 examples) and its complement, drawn from ``seed``."""
    check_num_models(num_models)
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(num_models // 2):
        half = torch.zeros(n, dtype=torch.bool)
        half[torch.randperm(n, generator=generator)[: n // 2]] = True
        rows += [half, ~half]
    return torch.stack(rows)


@dataclass
class MemorizationResult:
    """Every training example's score and the two accuracies it is the difference of (float64 [n],
    NaN where no model held the example in, or none held it out)."""

    scores: torch.Tensor
    held_in_acc: torch.Tensor
    held_out_acc: torch.Tensor


def memorization_scores(correct: torch.Tensor, held_in: torch.Tensor) -> MemorizationResult:
    """Scores from ``correct`` [M, n] (model m classifies x_i right) and ``held_in`` [M, n] (model m
    trained on x_i), both bool."""
    if correct.shape != held_in.shape or correct.ndim != 2:
        raise ValueError(f"correct and held_in must both be [M, n]; got {tuple(correct.shape)} and "
                         f"{tuple(held_in.shape)}")
    correct, held_in = correct.double(), held_in.double()

    def accuracy(members: torch.Tensor) -> torch.Tensor:
        return (correct * members).sum(dim=0) / members.sum(dim=0)  # 0/0 = NaN: no such model

    held_in_acc, held_out_acc = accuracy(held_in), accuracy(1.0 - held_in)
    return MemorizationResult(held_in_acc - held_out_acc, held_in_acc, held_out_acc)


def train_on_halves(algorithm: str, x: torch.Tensor, y: torch.Tensor, held_in: torch.Tensor,
                    make_networks: Callable[[], list[nn.Module]], hparams: dict, seed: int, num_classes: int,
                    held_out_logits: torch.Tensor | None = None,
                    on_step: Callable[[], None] = lambda: None) -> MemorizationResult:
    """Train model m of ``algorithm`` on the examples ``held_in[m]`` (all M as one stack, for
    ``hparams['num_steps']`` steps; model m's networks from ``make_networks()`` under seed
    ``seed + m``), then score every example of (x, y). MAT needs ``held_out_logits`` [n, K]."""
    runs = []
    for model, half in enumerate(held_in):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + model)
            runs.append(StackRun(make_networks(), hparams, seed + model, pool=half.nonzero().flatten()))
    stack = InMemoryStack(algorithm, x, y, runs, num_classes, held_out_logits=held_out_logits)
    stack.train(hparams["num_steps"], on_step)
    diverged = stack.diverged()
    if diverged:
        raise UserError(f"{algorithm}: model(s) {', '.join(map(str, diverged))} diverged (weights no longer finite); "
                        "lower the learning rate (--hparams '{\"lr\": ...}')")
    correct = stack.predict(x).argmax(dim=-1) == y.to(stack.device)
    return memorization_scores(correct.cpu(), held_in)


def group_key(label: int, attribute: int) -> str:
    """The name of group (y, a) in summaries: ``y<label>_a<attribute>``, e.g. ``y0_a1``."""
    return f"y{label}_a{attribute}"


def group_members(y: torch.Tensor, a: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every group present, in (y, a) order: its key and a bool mask of its examples [n]."""
    pairs = sorted({(int(label), int(attribute)) for label, attribute in zip(y.tolist(), a.tolist())})
    return {group_key(label, attribute): (y == label) & (a == attribute) for label, attribute in pairs}


def summarise_by_group(values: torch.Tensor, y: torch.Tensor, a: torch.Tensor) -> dict[str, dict[str, float]]:
    """Per group: the ``mean`` and ``median`` (halfway between the middle two for even counts) of
    ``values`` [n] over its examples, and their number ``n``."""
    return {key: {"mean": values[members].double().mean().item(),
                  "median": values[members].double().quantile(0.5).item(),
                  "n": int(members.sum())}
            for key, members in group_members(y, a).items()}


def mean_by_group(values: torch.Tensor, y: torch.Tensor, a: torch.Tensor) -> dict[str, float]:
    """Per group, the mean of ``values`` [n] over its examples."""
    return {key: values[members].double().mean().item() for key, members in group_members(y, a).items()}

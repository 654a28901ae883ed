"""H runs of one registered algorithm trained together on tensors held in memory: no files.

The step is the engine's (XRM/engine/stack_steps.py, as XRM/runs/train.py trains): the algorithm's loss
and state over a stack (ERM, MAT's shift, XRM's label flips and twins), a ParameterStack for
small networks (a linear layer, an MLP) or a ModuleStack for any other nn.Module (a stack of
one), batches drawn by StepSampler as a pure function of (seed, step) and XRM's flips drawn
from StepUniforms. What differs from the engine: nothing is written, and each run may draw
its batches from its own pool of training examples (e.g. a random half, for memorisation
scores) or train full-batch on its pool in a fixed order (Figure 1).
"""
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from XRM.algorithms import RunData, get_algorithm_class
from XRM.common.sampling import StepSampler, StepUniforms, build_sampler
from XRM.engine.model_stacks import ModuleStack, ParameterStack, is_stackable
from XRM.engine.stack_steps import StackSteps, algorithm_slice
from XRM.networks.classifiers import TwinNetwork

#: steps whose batches are drawn at once (on the CPU), then moved to the device together
STEPS_PER_DRAW = 64


@dataclass
class StackRun:
    """One run's own inputs: its freshly initialised network(s) (two for XRM's twins), its
    hyper-parameters (``optimizer``, ``lr``, ``weight_decay``, ``batch_size``, ``num_steps``, the
    algorithm's own such as MAT's ``tau``), its seed, and the training examples it draws from
    (``pool``, default: all of them). ``full_batch``: every step is the whole pool, in order."""

    networks: list[nn.Module]
    hparams: dict
    seed: int
    pool: torch.Tensor | None = None
    full_batch: bool = False


class _WholePool:
    """The batches of a full-batch run: its pool, in order, at every step."""

    def __init__(self, pool: torch.Tensor) -> None:
        self.pool, self.batch_size = pool, len(pool)

    def batches(self, start: int, stop: int) -> torch.Tensor:
        """[stop - start, len(pool)]: the pool once per step."""
        return self.pool.expand(stop - start, -1)


def _sampler(algorithm: type, run: StackRun, run_data: RunData) -> StepSampler | _WholePool:
    n = len(run_data.y)
    pool = torch.arange(n) if run.pool is None else run.pool.cpu().long()
    if run.full_batch:
        return _WholePool(pool)
    if run.pool is None:
        return build_sampler(algorithm.sampling, run_data.groups, run.hparams["batch_size"], run.seed)
    if algorithm.sampling != "uniform":
        raise ValueError(f"{algorithm.name} draws its own batches ({algorithm.sampling}); it cannot train on a pool")
    return StepSampler(pool, run.hparams["batch_size"], run.seed)


class _WholeSetSteps(StackSteps):
    """Steps whose every batch is the whole training set in order: a ParameterStack's inputs are x
    itself, seen once per run (no copy)."""

    def inputs(self, index: torch.Tensor) -> torch.Tensor:
        """[H, n, ...] for a ParameterStack (a view of x), [n, ...] for a module."""
        if isinstance(self.model, ModuleStack):
            return super().inputs(index)
        return self.x[None].expand(len(index), *self.x.shape)


class InMemoryStack:
    """Runs of the registered algorithm ``algorithm_name`` on the training set (x [n, ...], y [n]),
    trained together one batched step at a time on x's device (see the module docstring).

    ``attributes`` [n] give the groups of algorithms that use them (default: none, the groups
    are the classes); ``held_out_logits`` [n, K] are MAT's phase-1 input. Several runs need
    small networks (nn.Linear or XRM.networks.classifiers.MLP); any other nn.Module trains as a stack of one.
    """

    def __init__(self, algorithm_name: str, x: torch.Tensor, y: torch.Tensor, runs: Sequence[StackRun],
                 num_classes: int, attributes: torch.Tensor | None = None,
                 held_out_logits: torch.Tensor | None = None) -> None:
        cls = get_algorithm_class(algorithm_name)
        self.algorithm = cls(num_classes)
        self.device = x.device
        dtype = x.dtype if x.is_floating_point() else torch.float32
        attributes = torch.zeros_like(y) if attributes is None else attributes
        run_data = [RunData.from_labels(y.cpu(), attributes.cpu(), num_classes, run.seed, run.hparams,
                                        None if held_out_logits is None else held_out_logits.cpu()) for run in runs]
        slices = [algorithm_slice(self.algorithm, 0, run_data, [run.hparams for run in runs], dtype, self.device)]
        if all(is_stackable(net) for run in runs for net in run.networks):
            self.model = ParameterStack([run.networks for run in runs], [run.hparams for run in runs], dtype,
                                        self.device, cls.head)
        elif len(runs) == 1:
            nets = runs[0].networks
            self.model = ModuleStack(TwinNetwork(*nets) if len(nets) == 2 else nets[0], runs[0].hparams, self.device,
                                     num_workers=0)
        else:
            raise ValueError("several runs train as one stack only with small networks (nn.Linear or an MLP)")
        samplers = [_sampler(cls, run, data) for run, data in zip(runs, run_data)]
        uniforms = [StepUniforms(run.seed, sampler.batch_size) if cls.draws_uniforms else None
                    for run, sampler in zip(runs, samplers)]
        whole_set = all(run.full_batch and run.pool is None for run in runs)
        self.steps = (_WholeSetSteps if whole_set else StackSteps)(
            self.model, slices, x, y, [data.groups for data in run_data], samplers, uniforms, dtype, self.device)
        self._drawn: dict | None = None
        self._drawn_start = 0

    @property
    def state(self) -> dict[str, torch.Tensor]:
        """The runs' algorithm state (e.g. XRM's ``dynamic_labels`` [H, n + 1])."""
        return self.steps.slices[0].state

    def step(self, step: int) -> None:
        """Training step ``step`` of every run."""
        if self._drawn is None or not 0 <= step - self._drawn_start < STEPS_PER_DRAW:
            self._drawn_start = step - step % STEPS_PER_DRAW
            self._drawn = self.steps.plan(self._drawn_start, self._drawn_start + STEPS_PER_DRAW)
        self.steps.train_step(self.steps.batch(self._drawn, step - self._drawn_start))

    def train(self, num_steps: int, on_step: Callable[[], None] = lambda: None) -> None:
        """Steps 0 .. num_steps - 1; ``on_step()`` after each (e.g. to move a progress bar)."""
        for step in range(num_steps):
            self.step(step)
            on_step()

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Every run's evaluation logits on ``x`` [n, ...]: [H, n, K] ([H, n, K, 2] for XRM's twins)."""
        return self.steps.evaluation_logits(x)

    def diverged(self) -> list[int]:
        """The runs whose parameters are no longer finite (a loss that stopped being finite leaves them so)."""
        if isinstance(self.model, ParameterStack):
            finite = torch.stack([p.isfinite().flatten(1).all(dim=1) for p in self.model.parameters()]).all(dim=0)
        else:
            finite = torch.stack([p.isfinite().all() for p in self.model.network.parameters()]).all()[None]
        return [h for h, ok in enumerate(finite.tolist()) if not ok]

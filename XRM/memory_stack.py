"""H runs of one registered algorithm trained together on tensors held in memory: no files.

The pieces are the engine's (XRM/train.py): the algorithm's loss and state over a stack
(ERM, MAT's shift, XRM's label flips and twins), a ParameterStack for small networks (a
linear layer, an MLP) or a ModuleStack for any other nn.Module (a stack of one), batches
drawn by StepSampler as a pure function of (seed, step) and XRM's flips drawn from
StepUniforms. What differs from the engine: nothing is written, and each run may draw its
batches from its own pool of training examples (e.g. a random half, for memorisation
scores) or train full-batch on its pool in a fixed order (Figure 1).
"""
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from XRM.algorithms import Batch, RunData, get_algorithm_class
from XRM.model_stacks import ModuleStack, ParameterStack, is_stackable
from XRM.networks import TwinNetwork
from XRM.sampling import StepSampler, StepUniforms, build_sampler

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


class InMemoryStack:
    """Runs of the registered algorithm ``algorithm_name`` on the training set (x [n, ...], y [n]),
    trained together one batched step at a time on x's device (see the module docstring).

    ``attributes`` [n] give the groups of algorithms that use them (default: none, the groups
    are the classes); ``held_out_logits`` [n, K] are MAT's phase-1 input. Several runs need
    small networks (nn.Linear or XRM.networks.MLP); any other nn.Module trains as a stack of one.
    """

    def __init__(self, algorithm_name: str, x: torch.Tensor, y: torch.Tensor, runs: Sequence[StackRun],
                 num_classes: int, attributes: torch.Tensor | None = None,
                 held_out_logits: torch.Tensor | None = None) -> None:
        cls = get_algorithm_class(algorithm_name)
        self.algorithm = cls(num_classes)
        self.device, self.n, self.x = x.device, len(y), x
        dtype = x.dtype if x.is_floating_point() else torch.float32
        attributes = torch.zeros_like(y) if attributes is None else attributes
        run_data = [RunData.from_labels(y.cpu(), attributes.cpu(), num_classes, run.seed, run.hparams,
                                        None if held_out_logits is None else held_out_logits.cpu()) for run in runs]
        states = [self.algorithm.initial_state(data) for data in run_data]
        self.state = {key: torch.stack([s[key] for s in states]).to(self.device) for key in states[0]}
        self.hparams = {name: torch.tensor([float(run.hparams[name]) for run in runs], dtype=dtype, device=self.device)
                        for name in cls.hparam_names}
        if all(is_stackable(net) for run in runs for net in run.networks):
            self.model = ParameterStack([run.networks for run in runs], [run.hparams for run in runs], dtype,
                                        self.device)
        elif len(runs) == 1:
            nets = runs[0].networks
            self.model = ModuleStack(TwinNetwork(*nets) if len(nets) == 2 else nets[0], runs[0].hparams, self.device,
                                     num_workers=0)
        else:
            raise ValueError("several runs train as one stack only with small networks (nn.Linear or an MLP)")
        self.samplers = [_sampler(cls, run, data) for run, data in zip(runs, run_data)]
        self.width = max(sampler.batch_size for sampler in self.samplers)
        self.uniforms = ([StepUniforms(run.seed, sampler.batch_size) for run, sampler in zip(runs, self.samplers)]
                         if cls.draws_uniforms else None)
        # the padding row n (label 0, group 0) is where padded batch positions read and write
        self.y = torch.cat([y, y.new_zeros(1)]).to(self.device)
        self.groups = torch.stack([torch.cat([d.groups, d.groups.new_zeros(1)]) for d in run_data]).to(self.device)
        self.whole_set = all(run.full_batch and run.pool is None for run in runs)
        self._drawn: dict | None = None

    def _draw(self, start: int) -> dict[str, torch.Tensor]:
        """The batches of steps start .. start + STEPS_PER_DRAW - 1 on the device: index (padded with n),
        labels, groups, mask (and uniforms), each [T, H, width]."""
        stop = start + STEPS_PER_DRAW
        index = torch.full((STEPS_PER_DRAW, len(self.samplers), self.width), self.n, dtype=torch.long)
        uniforms = torch.zeros(index.shape, dtype=torch.float64)
        for h, sampler in enumerate(self.samplers):
            batches = sampler.batches(start, stop)
            index[:, h, : batches.shape[1]] = batches
            if self.uniforms is not None:
                uniforms[:, h, : batches.shape[1]] = self.uniforms[h].rows(start, stop)
        index = index.to(self.device)
        groups = self.groups.unsqueeze(0).expand(STEPS_PER_DRAW, -1, -1).gather(2, index)
        return {"start": start, "index": index, "y": self.y[index], "groups": groups,
                "mask": (index < self.n).to(self.x.dtype), "uniforms": uniforms.to(self.device)}

    def _inputs(self, index: torch.Tensor) -> torch.Tensor:
        """The batch's inputs: [H, B, ...] for a ParameterStack, [B, ...] for a module."""
        if isinstance(self.model, ModuleStack):
            return self.x[index[0]]
        if self.whole_set:  # every run's batch is the whole training set in order: no copy
            return self.x[None].expand(len(index), *self.x.shape)
        rows = self.x.index_select(0, index.clamp_max(self.n - 1).flatten())  # padding reads row n - 1
        return rows.view(*index.shape, *self.x.shape[1:])

    def step(self, step: int) -> None:
        """Training step ``step`` of every run."""
        if self._drawn is None or not 0 <= step - self._drawn["start"] < STEPS_PER_DRAW:
            self._drawn = self._draw(step - step % STEPS_PER_DRAW)
        row = step - self._drawn["start"]
        batch = Batch(*(self._drawn[key][row] for key in ("index", "y", "groups", "mask", "uniforms")), step)
        losses, self.state = self.algorithm.loss(self.model.forward(self._inputs(batch.index)), batch, self.state,
                                                 self.hparams)
        self.model.step(losses.sum())

    def train(self, num_steps: int, on_step: Callable[[], None] = lambda: None) -> None:
        """Steps 0 .. num_steps - 1; ``on_step()`` after each (e.g. to move a progress bar)."""
        for step in range(num_steps):
            self.step(step)
            on_step()

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Every run's evaluation logits on ``x`` [n, ...]: [H, n, K] ([H, n, K, 2] for XRM's twins)."""
        return self.algorithm.evaluation_logits(self.model.predict(x))

    def diverged(self) -> list[int]:
        """The runs whose parameters are no longer finite (a loss that stopped being finite leaves them so)."""
        if isinstance(self.model, ParameterStack):
            finite = torch.stack([p.isfinite().flatten(1).all(dim=1) for p in self.model.parameters()]).all(dim=0)
        else:
            finite = torch.stack([p.isfinite().all() for p in self.model.network.parameters()]).all()[None]
        return [h for h, ok in enumerate(finite.tolist()) if not ok]

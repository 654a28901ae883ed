"""The training step of a stack of H runs, held once for every loop that trains stacks.

A StackSteps holds what a step reads and changes: the model stack (a ParameterStack, or a
ModuleStack of one run), the runs' algorithm slices (state and hyper-parameters), the
training labels and each run's groups padded with a row n, each run's batch sampler and
uniforms. It gives the padded batches of steps start .. stop - 1 (``plan``), a batch's inputs
and the step itself. XRM/runs/train.py's StackTrainer adds files, evaluation and checkpoints
around it; XRM/engine/in_memory.py's InMemoryStack trains on tensors in memory with it.
"""
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from XRM.algorithms import Algorithm, Batch, RunData
from XRM.engine.model_stacks import ModuleStack, ParameterStack

#: the keys of a plan whose rows make a step's Batch, in Batch's order
BATCH_KEYS = ("index", "y", "groups", "mask", "uniforms", "step")


@dataclass
class AlgorithmSlice:
    """The runs [begin, end) of a stack that run one algorithm with equally shaped state."""

    algorithm: Algorithm
    begin: int
    end: int
    state: dict[str, torch.Tensor]
    hparams: dict[str, torch.Tensor]


def algorithm_slice(algorithm: Algorithm, begin: int, run_data: Sequence[RunData], hparams: Sequence[dict],
                    dtype: torch.dtype, device: torch.device) -> AlgorithmSlice:
    """The slice of runs begin .. begin + len(run_data) - 1: their initial algorithm state stacked
    on ``device`` and their algorithm hyper-parameters as [H] tensors of ``dtype``."""
    states = [algorithm.initial_state(data) for data in run_data]
    state = {key: torch.stack([s[key] for s in states]).to(device) for key in states[0]}
    values = {name: torch.tensor([float(h[name]) for h in hparams], dtype=dtype, device=device)
              for name in algorithm.hparam_names}
    return AlgorithmSlice(algorithm, begin, begin + len(run_data), state, values)


def padded(rows: torch.Tensor) -> torch.Tensor:
    """``rows`` [n] with the padding row n (0) appended, where padded batch positions read and write."""
    return torch.cat([rows, rows.new_zeros(1)])


class StackSteps:
    """The batches and training steps of a stack (see the module docstring).

    ``x`` [n, ...] are the training inputs (read by ``inputs``; a loop that brings its own
    inputs may pass anything), ``y`` [n] their labels, ``groups`` each run's groups [n];
    ``samplers[h]`` gives run h's batches (``batch_size``, ``batches(start, stop)``) and
    ``uniforms[h]`` its per-example uniforms (None: the algorithm draws none).
    """

    def __init__(self, model: ParameterStack | ModuleStack, slices: list[AlgorithmSlice], x, y: torch.Tensor,
                 groups: Sequence[torch.Tensor], samplers: Sequence, uniforms: Sequence, dtype: torch.dtype,
                 device: torch.device) -> None:
        self.model, self.slices, self.x, self.n = model, slices, x, len(y)
        self.samplers, self.uniforms, self.dtype, self.device = list(samplers), list(uniforms), dtype, device
        self.y = padded(y).to(device)
        self.groups = torch.stack([padded(g) for g in groups]).to(device)
        self.width = max(sampler.batch_size for sampler in self.samplers)
        # the first step whose loss was not finite, per run (-1: none), kept on the device
        self.diverged_step = torch.full((len(self.samplers),), -1, dtype=torch.long, device=device)
        # each run's summed (finite) training losses and steps since the last take_training_losses(), on the device
        self.loss_sum = torch.zeros(len(self.samplers), dtype=torch.float64, device=device)
        self.loss_steps = torch.zeros(len(self.samplers), dtype=torch.float64, device=device)

    def plan(self, start: int, stop: int) -> dict[str, torch.Tensor]:
        """Every run's batches of steps start .. stop-1, padded with index n: tensors [T, H, B] on the
        device (``step`` [T]; ``host_index``: the index on the host)."""
        steps = stop - start
        index = torch.full((steps, len(self.samplers), self.width), self.n, dtype=torch.long)
        uniforms = torch.zeros(index.shape, dtype=torch.float64)
        for h, sampler in enumerate(self.samplers):
            batches = sampler.batches(start, stop)
            index[:, h, : batches.shape[1]] = batches
            if self.uniforms[h] is not None:
                uniforms[:, h, : batches.shape[1]] = self.uniforms[h].rows(start, stop)
        host_index = index
        if self.device.type == "cuda":  # page-locked, so the copies queue behind the training instead of waiting for it
            index, uniforms = index.pin_memory(), uniforms.pin_memory()
        index = index.to(self.device, non_blocking=True)
        groups = self.groups.unsqueeze(0).expand(steps, -1, -1).gather(2, index)
        return {"index": index, "y": self.y[index], "groups": groups, "mask": (index < self.n).to(self.dtype),
                "uniforms": uniforms.to(self.device, non_blocking=True),
                "step": torch.arange(start, stop, device=self.device), "host_index": host_index}

    @staticmethod
    def batch(plan: dict[str, torch.Tensor], row: int) -> Batch:
        """Row ``row`` of ``plan``: one step's Batch."""
        return Batch(*(plan[key][row] for key in BATCH_KEYS))

    def inputs(self, index: torch.Tensor) -> torch.Tensor:
        """The inputs of a step's batches [H, B] from ``x``: [H, B, ...] for a ParameterStack, [B, ...] for a module."""
        if isinstance(self.model, ModuleStack):
            return self.x[index[0]]
        rows = self.x.index_select(0, index.clamp_max(self.n - 1).flatten())  # padding reads row n - 1
        return rows.view(*index.shape, *self.x.shape[1:])

    def train_step(self, batch: Batch, x: torch.Tensor | None = None) -> None:
        """One step of every run on ``batch`` (inputs ``x``, default: ``inputs(batch.index)``); the
        algorithm state is updated in place (a CUDA graph replays it)."""
        active = self.active_networks(batch.step)
        if active is not None and isinstance(self.model, ModuleStack):
            self.model.set_training_networks(active)
        logits = self.model.forward(self.inputs(batch.index) if x is None else x)
        run_losses = []
        for part_slice in self.slices:
            part = slice(part_slice.begin, part_slice.end)
            sliced = Batch(batch.index[part], batch.y[part], batch.groups[part], batch.mask[part],
                           batch.uniforms[part], batch.step)
            losses, state = part_slice.algorithm.loss(logits[part], sliced, part_slice.state, part_slice.hparams)
            penalty = part_slice.algorithm.last_layer_penalty(self.model, part, part_slice.state, part_slice.hparams)
            if penalty is not None:
                losses = losses + penalty
            for key, value in state.items():
                if value is not part_slice.state[key]:
                    part_slice.state[key].copy_(value)
            run_losses.append(losses)
        losses = torch.cat(run_losses)
        finite = torch.isfinite(losses)
        first = (self.diverged_step < 0) & ~finite
        self.diverged_step.copy_(torch.where(first, batch.step, self.diverged_step))
        self.loss_sum.add_(torch.where(finite, losses.detach().double(), 0.0))
        self.loss_steps.add_(finite.double())
        self.model.step(losses.sum(), active)

    def take_training_losses(self) -> torch.Tensor:
        """Each run's mean training loss since the last call [H] (NaN where it took no finite step), then
        start counting again."""
        means = self.loss_sum / self.loss_steps
        self.loss_sum.zero_()
        self.loss_steps.zero_()
        return means

    def active_networks(self, step: torch.Tensor) -> torch.Tensor | None:
        """The stack's [H, m] mask of the networks step ``step`` trains, from each slice's algorithm (None: all
        networks of every run)."""
        updates = [s.algorithm.network_updates(step, s.state, s.hparams) for s in self.slices]
        if all(update is None for update in updates):
            return None
        per_run = self.model.per_run
        return torch.cat([torch.ones(s.end - s.begin, per_run, dtype=torch.bool, device=self.device)
                          if update is None else update for s, update in zip(self.slices, updates)])

    def evaluation_logits(self, inputs) -> torch.Tensor:
        """Every run's logits on ``inputs`` as its algorithm classifies (e.g. the debiased of two networks)."""
        logits = self.model.predict(inputs)
        return torch.cat([s.algorithm.evaluation_logits(logits[s.begin:s.end]) for s in self.slices])

    def slice_of(self, run: int) -> tuple[AlgorithmSlice, int]:
        """The slice that holds run ``run``, and the run's row in it."""
        for part_slice in self.slices:
            if part_slice.begin <= run < part_slice.end:
                return part_slice, run - part_slice.begin
        raise IndexError(run)

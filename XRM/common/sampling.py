"""Mini-batch index draws and per-step random numbers as pure functions of (seed, step).

The batch of step ``t`` depends only on (seed, t), so a run resumed at step t draws exactly
the batches an uninterrupted run draws, data-loader workers may prefetch ahead freely, and
a run draws the same batches alone or in a stack. Draws happen on the CPU, a chunk of steps
at a time (never one call per step), and are the same whatever device trains on them.
"""
import zlib

import torch

#: steps drawn by one generator for draws with replacement and per-step uniforms: the
#: draws of step t come from block t // STEPS_PER_BLOCK, seeded by (seed, block)
STEPS_PER_BLOCK = 64


def _stream_seed(seed: int, *keys: int | str) -> int:
    return zlib.crc32(":".join(str(k) for k in (seed, *keys)).encode())


def _generator(seed: int, *keys: int | str) -> torch.Generator:
    return torch.Generator().manual_seed(_stream_seed(seed, *keys))


class _BlockDraws:
    """Rows of a per-step draw, ``draw(generator, steps) -> [steps, ...]``, made a block at a time."""

    def __init__(self, seed: int, key: str, draw) -> None:
        self.seed, self.key, self.draw = seed, key, draw
        self._cache: dict[int, torch.Tensor] = {}

    def _block(self, block: int) -> torch.Tensor:
        if block not in self._cache:
            self._cache = {block: self.draw(_generator(self.seed, self.key, block), STEPS_PER_BLOCK)}
        return self._cache[block]

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """The draws of steps start .. stop-1, stacked."""
        first, last = start // STEPS_PER_BLOCK, (stop - 1) // STEPS_PER_BLOCK
        blocks = torch.cat([self._block(block) for block in range(first, last + 1)])
        offset = first * STEPS_PER_BLOCK
        return blocks[start - offset : stop - offset]


class StepSampler:
    """The indices of the batch of any training step, drawn from a fixed pool (on the CPU).

    Without ``weights`` it walks through random permutations of the pool (every example
    once per epoch, full batches only); with ``weights`` it draws with replacement in
    proportion to them (group- or class-balanced batches).
    """

    def __init__(self, pool: torch.Tensor, batch_size: int, seed: int, weights: torch.Tensor | None = None) -> None:
        if len(pool) == 0:
            raise ValueError("cannot draw batches from an empty training set")
        self.pool = pool.cpu()
        self.seed = seed
        self.batch_size = batch_size if weights is not None else min(batch_size, len(pool))
        self.batches_per_epoch = len(pool) // self.batch_size
        self._weighted = None
        if weights is not None:
            probabilities = weights.double().cpu() / weights.sum().cpu()
            self._weighted = _BlockDraws(seed, "weighted", lambda generator, steps: self.pool[torch.multinomial(
                probabilities, steps * self.batch_size, replacement=True, generator=generator)].view(steps, -1))
        self._epochs: dict[int, torch.Tensor] = {}

    def _epoch(self, epoch: int) -> torch.Tensor:
        """The batches of one epoch, [batches_per_epoch, batch_size]."""
        if epoch not in self._epochs:
            if len(self._epochs) > 4:
                self._epochs.clear()
            order = torch.randperm(len(self.pool), generator=_generator(self.seed, -1, epoch))
            usable = self.batches_per_epoch * self.batch_size
            self._epochs[epoch] = self.pool[order[:usable]].view(self.batches_per_epoch, self.batch_size)
        return self._epochs[epoch]

    def batches(self, start: int, stop: int) -> torch.Tensor:
        """The indices of steps start .. stop-1: a long tensor [stop - start, batch_size] on the CPU."""
        if self._weighted is not None:
            return self._weighted.rows(start, stop)
        first, last = start // self.batches_per_epoch, (stop - 1) // self.batches_per_epoch
        rows = torch.cat([self._epoch(epoch) for epoch in range(first, last + 1)])
        offset = first * self.batches_per_epoch
        return rows[start - offset : stop - offset]

    def batch(self, step: int) -> torch.Tensor:
        """The indices (a 1-D long tensor on the CPU) of training step ``step``."""
        return self.batches(step, step + 1)[0]


class StepUniforms:
    """``width`` uniform numbers in [0, 1) for every step, a pure function of (seed, step)
    (XRM's label flips draw from them)."""

    def __init__(self, seed: int, width: int) -> None:
        self._draws = _BlockDraws(seed, "uniform", lambda generator, steps: torch.rand(
            steps, width, generator=generator, dtype=torch.float64))

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """float64 [stop - start, width] on the CPU."""
        return self._draws.rows(start, stop)


def group_balancing_weights(groups: torch.Tensor) -> torch.Tensor:
    """Per-example weights 1 / |group|, so each group is drawn equally often."""
    _, inverse, counts = torch.unique(groups, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse].double()


def subsample_to_smallest_group(groups: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Indices of a random subset with as many examples of each group as the smallest has."""
    present, inverse, counts = torch.unique(groups, return_inverse=True, return_counts=True)
    smallest = int(counts.min().item())
    order = torch.randperm(len(groups), generator=generator, device=groups.device)
    kept = [order[inverse[order] == group][:smallest] for group in range(len(present))]
    return torch.sort(torch.cat(kept)).values


#: how an algorithm draws its training batches (Algorithm.sampling)
SAMPLINGS = ("uniform", "group_balanced", "group_subsampled")


def build_sampler(sampling: str, groups: torch.Tensor, batch_size: int, seed: int,
                  classes: torch.Tensor | None = None, pool: torch.Tensor | None = None) -> StepSampler:
    """The batch sampler of one run: ``sampling`` is one of SAMPLINGS; with ``classes`` (a
    dataset that wants class-balanced batches) uniform sampling draws every class equally often.
    ``pool`` (example ids) restricts the draws to those examples (None: every example)."""
    groups = groups.cpu()
    pool = torch.arange(len(groups)) if pool is None else pool.cpu()
    if sampling == "group_balanced":
        return StepSampler(pool, batch_size, seed, weights=group_balancing_weights(groups[pool]))
    if sampling == "group_subsampled":
        kept = subsample_to_smallest_group(groups[pool], torch.Generator().manual_seed(seed))
        return StepSampler(pool[kept], batch_size, seed)
    if sampling != "uniform":
        raise ValueError(f"unknown sampling {sampling!r}; choose from: {', '.join(SAMPLINGS)}")
    if classes is not None:
        return StepSampler(pool, batch_size, seed, weights=group_balancing_weights(classes.cpu()[pool]))
    return StepSampler(pool, batch_size, seed)

"""Mini-batch index draws as a pure function of the step: resuming needs no sampler state.

The batch of step ``t`` depends only on (seed, t), so a run resumed at step t draws exactly
the batches an uninterrupted run draws, and data-loader workers may prefetch ahead freely.
"""
import zlib

import torch


def _stream_seed(seed: int, *keys: int) -> int:
    return zlib.crc32(":".join(str(k) for k in (seed, *keys)).encode())


class StepSampler:
    """The indices of the batch of any training step, drawn from a fixed pool.

    Without ``weights`` it walks through random permutations of the pool (every example
    once per epoch, full batches only); with ``weights`` it draws with replacement in
    proportion to them (group- or class-balanced batches). Draws happen on the pool's
    device, without host synchronisation.
    """

    def __init__(self, pool: torch.Tensor, batch_size: int, seed: int, weights: torch.Tensor | None = None) -> None:
        if len(pool) == 0:
            raise ValueError("cannot draw batches from an empty training set")
        self.pool = pool
        self.seed = seed
        self.weights = None if weights is None else (weights.double() / weights.sum()).to(pool.device)
        self.batch_size = batch_size if weights is not None else min(batch_size, len(pool))
        self.batches_per_epoch = len(pool) // self.batch_size
        self._epoch = -1
        self._permutation = pool

    def _generator(self, *keys: int) -> torch.Generator:
        return torch.Generator(device=self.pool.device).manual_seed(_stream_seed(self.seed, *keys))

    def batch(self, step: int) -> torch.Tensor:
        """The indices (a 1-D long tensor on the pool's device) of training step ``step``."""
        if self.weights is not None:
            drawn = torch.multinomial(self.weights, self.batch_size, replacement=True, generator=self._generator(step))
            return self.pool[drawn]
        epoch, position = divmod(step, self.batches_per_epoch)
        if epoch != self._epoch:
            order = torch.randperm(len(self.pool), generator=self._generator(-1, epoch), device=self.pool.device)
            self._permutation, self._epoch = self.pool[order], epoch
        start = position * self.batch_size
        return self._permutation[start : start + self.batch_size]


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

"""Getting the inputs of a batch onto the device, for tensor inputs and for datasets read from disk.

Tensor inputs (features, tokens, small images) live on the device and are indexed there.
Inputs given as a ``torch.utils.data.Dataset`` (``dataset[i]`` -> input tensor of example
i, e.g. a decoded image) go through a DataLoader with workers and pinned memory, driven by
the same step-indexed sampler so that resuming stays exact.
"""
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from XRM.errors import unwrap_worker_errors
from XRM.sampling import StepSampler

Inputs = torch.Tensor | Dataset


class _StepBatches:
    """Index batches of steps start .. stop-1 on the CPU, as a DataLoader batch_sampler."""

    def __init__(self, sampler: StepSampler, start: int, stop: int) -> None:
        self.sampler, self.start, self.stop = sampler, start, stop

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            yield self.sampler.batch(step).cpu().tolist()

    def __len__(self) -> int:
        return self.stop - self.start


class _IndexedInputs(Dataset):
    """A dataset of (index, input) so the loader's output can be matched to its indices."""

    def __init__(self, inputs: Dataset) -> None:
        self.inputs = inputs

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor]:
        return index, self.inputs[index]


def _loader(inputs: Dataset, num_workers: int, device: torch.device, **kwargs) -> DataLoader:
    return DataLoader(
        _IndexedInputs(inputs),
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        **kwargs,
    )


def training_batches(
    inputs: Inputs, sampler: StepSampler, start: int, stop: int, device: torch.device, num_workers: int = 4
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(index, x) for every step from ``start`` to ``stop`` - 1, both on ``device``."""
    if isinstance(inputs, torch.Tensor):
        for step in range(start, stop):
            index = sampler.batch(step)
            yield index, inputs[index]
        return
    loader = _loader(inputs, num_workers, device, batch_sampler=_StepBatches(sampler, start, stop))
    for index, x in unwrap_worker_errors(loader):
        yield index.to(device, non_blocking=True), x.to(device, non_blocking=True)


def evaluation_batches(
    inputs: Inputs, batch_size: int, device: torch.device, num_workers: int = 4
) -> Iterator[torch.Tensor]:
    """The inputs of every example, in order, in batches on ``device``."""
    if isinstance(inputs, torch.Tensor):
        for start in range(0, len(inputs), batch_size):
            yield inputs[start : start + batch_size]
        return
    for _, x in unwrap_worker_errors(_loader(inputs, num_workers, device, batch_size=batch_size, shuffle=False)):
        yield x.to(device, non_blocking=True)


def input_shape(inputs: Inputs) -> tuple[int, ...]:
    """Shape of one example's input."""
    return tuple(inputs.shape[1:]) if isinstance(inputs, torch.Tensor) else tuple(inputs[0].shape)

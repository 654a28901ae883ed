"""Getting the inputs of a batch onto the device, for tensor inputs and for datasets read from disk.

Tensor inputs (features, tokens, small images) live on the device and are indexed there.
Inputs given as a ``torch.utils.data.Dataset`` (``dataset[i]`` -> input tensor of example
i, e.g. a decoded image) go through a DataLoader with workers and pinned memory, driven by
the same step-indexed sampler so that resuming stays exact.
"""
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from XRM.common.errors import unwrap_worker_errors
from XRM.common.sampling import StepSampler
from XRM.common.worker_counts import auto_workers
from XRM.data.loader_parts import LoaderParts

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


def worker_count(num_workers: int | None, device: torch.device) -> int:
    """``num_workers``, or when None (``--num_workers auto``) the machine's choice (XRM/common/worker_counts.py),
    made where the run executes."""
    return auto_workers(device.type == "cuda") if num_workers is None else num_workers


def _parts(inputs: Dataset, device: torch.device, num_workers: int) -> LoaderParts:
    """A dataset's own way to the device (images: ``loader_parts``), else its items collated and copied."""
    if hasattr(inputs, "loader_parts"):
        return inputs.loader_parts(device, num_workers)
    return LoaderParts(_IndexedInputs(inputs), default_collate)


def _batches(inputs: Dataset, num_workers: int | None, device: torch.device,
             **kwargs) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(indices on the CPU, inputs on ``device``) of every batch a DataLoader over ``inputs`` reads, with
    ``worker_count(num_workers, device)`` workers."""
    num_workers = worker_count(num_workers, device)
    parts = _parts(inputs, device, num_workers)
    loader = DataLoader(parts.dataset, num_workers=num_workers, pin_memory=device.type == "cuda",
                        persistent_workers=False, collate_fn=parts.collate, **kwargs)
    if parts.run_ahead and device.type == "cuda":
        yield from _run_ahead(unwrap_worker_errors(loader), parts, device)
        return
    for index, x in unwrap_worker_errors(loader):
        yield index, parts.to_device(x, index, device)


def _run_ahead(loaded: Iterator, parts: LoaderParts, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``parts.to_device`` of each loaded batch, run one batch ahead in a thread on a CUDA stream of its
    own: the next batch is decoded while the caller's stream trains on this one."""
    side, caller = torch.cuda.Stream(device), torch.cuda.current_stream(device)

    def prepare(index: torch.Tensor, raw) -> tuple[torch.Tensor, torch.Tensor, torch.cuda.Event]:
        with torch.cuda.stream(side):
            x = parts.to_device(raw, index, device)
            ready = torch.cuda.Event()
            ready.record(side)
        return index, x, ready

    def handed_over(index: torch.Tensor, x: torch.Tensor, ready: torch.cuda.Event) -> tuple[torch.Tensor, torch.Tensor]:
        caller.wait_event(ready)
        x.record_stream(caller)  # its memory is not reused before the caller's stream is done with it
        return index, x

    with ThreadPoolExecutor(max_workers=1) as thread:
        pending = None
        for index, raw in loaded:
            following = thread.submit(prepare, index, raw)
            if pending is not None:
                yield handed_over(*pending.result())
            pending = following
        if pending is not None:
            yield handed_over(*pending.result())


def training_batches(
    inputs: Inputs, sampler: StepSampler, start: int, stop: int, device: torch.device, num_workers: int | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(index, x) for every step from ``start`` to ``stop`` - 1, both on ``device``."""
    if isinstance(inputs, torch.Tensor):
        for step in range(start, stop):
            index = sampler.batch(step)
            yield index, inputs[index]
        return
    for index, x in _batches(inputs, num_workers, device, batch_sampler=_StepBatches(sampler, start, stop)):
        yield index.to(device, non_blocking=True), x


def evaluation_batches(
    inputs: Inputs, batch_size: int, device: torch.device, num_workers: int | None = None
) -> Iterator[torch.Tensor]:
    """The inputs of every example, in order, in batches on ``device``. A DataLoader's seed is drawn
    from a generator of its own, never the global one: whether a split is evaluated (see
    --test_every_evaluation) leaves training's random streams as they are."""
    if isinstance(inputs, torch.Tensor):
        for start in range(0, len(inputs), batch_size):
            yield inputs[start : start + batch_size]
        return
    for _, x in _batches(inputs, num_workers, device, batch_size=batch_size, shuffle=False,
                         generator=torch.Generator()):
        yield x


def input_shape(inputs: Inputs) -> tuple[int, ...]:
    """Shape of one example's input."""
    return tuple(inputs.shape[1:]) if isinstance(inputs, torch.Tensor) else tuple(inputs[0].shape)

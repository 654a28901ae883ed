"""How a Dataset of inputs reaches the device through a DataLoader: what the loader reads, how
its items are collated, and how a collated batch becomes input tensors on the device."""
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset


def copied_to_device(x: torch.Tensor, index: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A collated batch of tensors, copied to ``device`` (asynchronously from pinned memory)."""
    return x.to(device, non_blocking=True)


@dataclass
class LoaderParts:
    """What a DataLoader reads for a Dataset of inputs, and how a batch of it becomes input tensors."""

    dataset: Dataset  # items (index, something)
    collate: Callable
    #: (collated inputs, their indices on the CPU, device) -> the inputs [B, ...] on the device
    to_device: Callable[[object, torch.Tensor, torch.device], torch.Tensor] = copied_to_device
    #: whether ``to_device`` computes on the device (decoding): then, on CUDA, the next batch's is
    #: run ahead in a thread on a stream of its own while the caller trains on this one
    run_ahead: bool = False

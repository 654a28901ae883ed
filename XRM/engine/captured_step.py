"""A stack's training step recorded once as a CUDA graph and replayed: one launch per step.

A small stack's step is hundreds of tiny kernels whose launches, not their arithmetic,
take the time. The graph replays the same kernels on the same memory: the step's batch is
copied into static buffers first, and everything the step changes (parameters, optimiser
and algorithm state) is updated in place. (A backbone's passes: XRM/networks/graphed_passes.py.)
"""
from collections.abc import Callable
from dataclasses import fields, replace

import torch

from XRM.algorithms import Batch

#: eager steps before the capture, on a side stream (lazy initialisations happen there)
WARMUP_STEPS = 2


class CapturedStep:
    """``step(batch)`` recorded as a CUDA graph on its first call after ``WARMUP_STEPS`` eager ones."""

    def __init__(self, step: Callable[[Batch], None]) -> None:
        self.step = step
        self.eager_steps = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: Batch | None = None

    def __call__(self, batch: Batch) -> None:
        """Train one step on ``batch`` (tensors on the GPU)."""
        if self.graph is None and self.eager_steps < WARMUP_STEPS:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.step(batch)
            torch.cuda.current_stream().wait_stream(side)
            self.eager_steps += 1
            return
        if self.graph is None:
            self.static = replace(batch, **{f.name: getattr(batch, f.name).clone() for f in fields(batch)
                                            if isinstance(getattr(batch, f.name), torch.Tensor)})
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.step(self.static)
        for f in fields(batch):
            value = getattr(batch, f.name)
            if isinstance(value, torch.Tensor):
                getattr(self.static, f.name).copy_(value, non_blocking=True)
        self.graph.replay()

"""A backbone's forward and backward passes recorded as CUDA graphs and replayed, one pair per input shape.

A backbone's pass on a batch is hundreds of kernels whose launches, not their arithmetic,
can take the time (a BERT-base pass on short texts). ``torch.cuda.make_graphed_callables``
records the forward and backward passes for one set of input shapes; the loss, the
optimiser and the learning-rate schedule stay eager. (A small stack's whole step:
XRM/engine/captured_step.py.)

A capture forbids CUDA calls from other threads while it runs (PyTorch's global capture
mode; make_graphed_callables takes no other mode in PyTorch 2.11): captured at the first batch
for inputs already on the device (token tensors), never beside a DataLoader's pinning thread;
images, whose batches a loader's threads bring, are captured before any loader runs
(``capture``, at a run's set-up: their shape is known then).

``compiled``: the passes are compiled by ``torch.compile`` (fused kernels; a ResNet-50's step at
batch 128 trains about 1.4x the images a second on an H100) before they are captured, so the
compilation's cost (once per capture; not yet timed) buys replays of faster kernels. Where
compilation fails (no compiler for Triton's kernels, an unsupported torch), the uncompiled passes are
captured instead, with one warning line.
"""
import sys
from collections.abc import Hashable

import torch
from torch import nn


class GraphedPasses:
    """The forward and backward passes of ``module`` replayed from CUDA graphs, one pair per key.

    ``passes(key, inputs)`` returns ``module(*inputs)`` in bf16 autocast (float32 out), as the
    backbones run on CUDA; the first call with a key captures the pass with those inputs'
    shapes (the caller's key must say everything a capture depends on: the shapes, and the
    module's training mode). Captures change nothing the run holds: the random number
    generators and the module's buffers (e.g. batch-norm statistics) are put back as they
    were before the warm-up passes, so dropout during
    replays draws from the generator as the eager pass does and a resumed run, which
    captures at other steps, continues exactly. The graphs of one module share a memory
    pool: its forward and backward passes must run back to back, as in a training step.
    """

    def __init__(self, module: nn.Module, compiled: bool = False, pool=None) -> None:
        self.module = module
        self.compiled = compiled
        self.graphed: dict[Hashable, nn.Module] = {}
        self.pool = pool  # a graph memory pool to share with other GraphedPasses (made at the first capture if None)

    @property
    def captures(self) -> int:
        """How many keys have been captured so far."""
        return len(self.graphed)

    def capture(self, key: Hashable, inputs: tuple[torch.Tensor, ...]) -> None:
        """Capture the passes for ``key`` now, on ``inputs``' shapes, unless they are captured already."""
        if key not in self.graphed:
            self.graphed[key] = self._capture(inputs)

    def replays(self, key: Hashable) -> bool:
        """Whether the passes for ``key`` are captured."""
        return key in self.graphed

    def __call__(self, key: Hashable, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """``module(*inputs)``, replayed (captured first when ``key`` is new)."""
        self.capture(key, inputs)
        return self.graphed[key](*inputs)

    def _capture(self, inputs: tuple[torch.Tensor, ...]) -> nn.Module:
        """The passes on ``inputs``' shapes as a graphed callable (compiled first where asked and the compiler
        works); the module's buffers and the random number generators as they were before the warm-up passes
        (also where the capture fails)."""
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        buffers = [buffer.clone() for buffer in self.module.buffers()]
        try:
            graphed, self.compiled = compiled_or_not((self.module,), (inputs,), self.pool, self.compiled,
                                                     "--compile_backbone")
            return graphed[0]
        finally:
            with torch.no_grad():
                for buffer, saved in zip(self.module.buffers(), buffers):
                    buffer.copy_(saved)


def compiled_or_not(modules: tuple[nn.Module, ...], inputs: tuple[tuple[torch.Tensor, ...], ...], pool,
                    compiled: bool, option: str) -> tuple[tuple[nn.Module, ...], bool]:
    """``graphed_callables`` of ``modules``, each compiled by ``torch.compile`` first where ``compiled``; where
    compilation fails (no compiler for Triton's kernels, an unsupported torch), one warning line (``option``:
    what asked for it) and the uncompiled modules captured. Also whether the captures are compiled. The
    compiler's caches are dropped after the capture: the replays need none, and the next capture starts clean
    (no limit on recompilations is met however many shapes a process captures)."""
    if compiled:
        # only here: importing the compiler takes time a run without it need not spend (bound to its own name:
        # ``import torch._dynamo`` would make ``torch`` a local name of this whole function)
        import torch._dynamo as dynamo

        try:
            return graphed_callables(tuple(torch.compile(module) for module in modules), inputs, pool), True
        except Exception as error:  # noqa: BLE001 - any compiler failure: the uncompiled passes instead
            reason = (str(error).strip().splitlines() or [""])[0]
            print(f"warning: torch.compile failed here ({type(error).__name__}: {reason[:200]}); the passes "
                  f"are captured uncompiled (without {option} no attempt is made)", file=sys.stderr)
        finally:
            dynamo.reset()
    return graphed_callables(modules, inputs, pool), False


def graphed_callables(modules: tuple[nn.Module, ...], inputs: tuple[tuple[torch.Tensor, ...], ...],
                      pool) -> tuple[nn.Module, ...]:
    """The forward and backward passes of ``modules`` (each run in bf16 autocast: AutocastPass) captured together
    on static copies of ``inputs`` (one tuple per module) in the memory pool ``pool``: their forward passes are
    to be replayed in the modules' order, their backward passes in the reverse order, as a chain of them runs.
    The random number generators are as they were before the capture's warm-up passes."""
    if hasattr(torch.autograd.graph, "set_warn_on_accumulate_grad_stream_mismatch"):
        # the parameters' gradient accumulators are made on the capture's side stream; the
        # replays' gradients arrive on the caller's (recent PyTorch warns of that at every step)
        torch.autograd.graph.set_warn_on_accumulate_grad_stream_mismatch(False)
    # the graphs' own input buffers: leaves, whatever computed the inputs
    static = tuple(tuple(tensor.detach().clone().requires_grad_(tensor.requires_grad) for tensor in each)
                   for each in inputs)
    with torch.random.fork_rng(devices=[static[0][0].device]):
        graphed = torch.cuda.make_graphed_callables(tuple(AutocastPass(module) for module in modules), static,
                                                    allow_unused_input=True, pool=pool)
    return graphed if isinstance(graphed, tuple) else (graphed,)


class AutocastPass(nn.Module):
    """``module`` in bf16 autocast on CUDA (without its cast cache, which a graphed pass cannot keep), float32 out
    (float64 stays; a module giving several outputs gives them as they are); a module of its own, whose forward a
    graphed callable replaces (not the wrapped module's)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.training = module.training

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """The wrapped module's output, in float32 or wider (several outputs: as they are)."""
        on_cuda = bool(inputs) and inputs[0].is_cuda
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False, enabled=on_cuda):
            output = self.module(*inputs)
        if isinstance(output, torch.Tensor):
            return output.to(torch.promote_types(output.dtype, torch.float32))
        return output

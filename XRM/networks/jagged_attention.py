"""Self-attention of texts laid end to end (packed tokens), each text attending only to its own tokens.

A batch of texts of CivilComments' lengths (median 50 tokens, up to 220) padded to one width
spends most of its attention on padding: the cost grows with the width squared, and the padded
queries, keys and values are copied out of and back into the packed rows. Here the texts stay
packed. On a GPU, flash attention's variable-length kernel takes them as they are (dropout
included, drawn from the device's default generator), called directly: the same kernel that
``scaled_dot_product_attention`` reaches through nested tensors of jagged layout (torch.nested),
without those tensors' per-call work on the host (a stack makes one call per run and layer).
Elsewhere, and where the kernel's trial fails, ``scaled_dot_product_attention`` over nested
tensors: on the CPU, the reference arithmetic text by text.
"""
import functools
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# the CPU's reference arithmetic passes through torch's strided nested tensors, which warn that their API is a
# prototype at every first use: the jagged layout used here is the one that warning recommends
warnings.filterwarnings("ignore", message="The PyTorch API of nested tensors is in prototype stage")


@dataclass
class Segments:
    """Consecutive rows cut into segments (texts): segment s is rows ``offsets[s]`` to ``offsets[s + 1] - 1``."""

    offsets: torch.Tensor  # int64 [segments + 1] on the rows' device, from 0 to the rows' count
    kernel_offsets: torch.Tensor  # the same in int32, as flash attention's kernel takes them
    shortest: int  # the shortest segment's length (host)
    longest: int  # the longest segment's length (host)

    @classmethod
    def of(cls, lengths: torch.Tensor, host_lengths: list[int]) -> "Segments":
        """Segments of ``lengths`` rows (on the device; ``host_lengths``: the same on the host), in order."""
        offsets = F.pad(lengths.to(torch.int64).cumsum(0), (1, 0))
        return cls(offsets, offsets.to(torch.int32), min(host_lengths), max(host_lengths))


def jagged_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, segments: Segments,
                     dropout_p: float = 0.0) -> torch.Tensor:
    """Each segment's rows attending to that segment's rows: query, key, value [rows, heads, head_size]
    -> [rows, heads, head_size] (scaled dot products, softmax, attention dropout ``dropout_p``)."""
    if query.is_cuda and flash_kernel_runs(query.device, query.dtype):
        return _FlashKernel.apply(query, key, value, segments.kernel_offsets, segments.longest, dropout_p)
    return _nested_attention(query, key, value, segments, dropout_p)


def _nested_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, segments: Segments,
                      dropout_p: float) -> torch.Tensor:
    """jagged_attention by ``scaled_dot_product_attention`` over nested tensors of jagged layout."""

    def nested(rows: torch.Tensor) -> torch.Tensor:
        jagged = torch.nested.nested_tensor_from_jagged(rows.contiguous(), segments.offsets,
                                                        min_seqlen=segments.shortest, max_seqlen=segments.longest)
        return jagged.transpose(1, 2)

    context = F.scaled_dot_product_attention(nested(query), nested(key), nested(value), dropout_p=dropout_p)
    return _GradientCopied.apply(context.transpose(1, 2).values())


class _FlashKernel(torch.autograd.Function):
    """jagged_attention by flash attention's variable-length kernel (torch's own binding of it, positional
    arguments: its keywords and the names of its random state's outputs changed between releases). The
    forward pass returns the state its dropout drew from, which the backward pass draws the same masks by."""

    @staticmethod
    def forward(ctx, query, key, value, offsets: torch.Tensor, longest: int, dropout_p: float) -> torch.Tensor:
        context, logsumexp, state, more_state, _ = torch.ops.aten._flash_attention_forward(
            query, key, value, offsets, offsets, longest, longest, dropout_p, False, False)
        ctx.save_for_backward(query, key, value, context, logsumexp, offsets, state, more_state)
        ctx.longest, ctx.dropout_p = longest, dropout_p
        return context

    @staticmethod
    def backward(ctx, gradient: torch.Tensor):
        query, key, value, context, logsumexp, offsets, state, more_state = ctx.saved_tensors
        gradients = torch.ops.aten._flash_attention_backward(
            gradient.contiguous(), query, key, value, context, logsumexp, offsets, offsets, ctx.longest, ctx.longest,
            ctx.dropout_p, False, state, more_state)
        return *gradients[:3], None, None, None


class _GradientCopied(torch.autograd.Function):
    """The identity, whose backward pass hands on a copy of its gradient: a nested tensor's ``values()``
    takes its gradient's storage as it is, which is wrong for a gradient that starts inside its storage (a
    part of torch.cat's gradient, say: each part's but the first came back as another part's rows)."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor) -> torch.Tensor:
        return rows.view_as(rows)

    @staticmethod
    def backward(ctx, gradient: torch.Tensor) -> torch.Tensor:
        return gradient.clone(memory_format=torch.contiguous_format)


@functools.cache
def jagged_attention_runs(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether a stack should attend its packed ``dtype`` rows on ``device`` by ``jagged_attention``: where it
    gives each segment's dense attention, outputs and gradients (a trial of two segments, run with gradients
    and without autocast whatever the caller's modes: an evaluation under inference mode may ask first), and,
    on a GPU, only through flash attention's kernel called directly. Nested tensors of jagged layout are a
    prototype, absent or partial in older releases, and on a GPU their host work at every call made one
    stacked BERT-base run of batch 32 train at 8.0k real tokens a second (H100, torch 2.11), against 58.9k
    with its texts spread to rows."""
    return flash_kernel_runs(device, dtype) if device.type == "cuda" else _trial(jagged_attention, device, dtype)


@functools.cache
def flash_kernel_runs(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether flash attention's variable-length kernel, called directly, attends jagged ``dtype`` rows on
    ``device`` as dense attention does (the same trial): it runs on recent GPUs, in 16-bit dtypes only."""

    def attend(query, key, value, segments: Segments) -> torch.Tensor:
        return _FlashKernel.apply(query, key, value, segments.kernel_offsets, segments.longest, 0.0)

    return device.type == "cuda" and _trial(attend, device, dtype)


def _trial(attend, device: torch.device, dtype: torch.dtype) -> bool:
    """``attend``'s packed attention of two segments against each one's dense attention, outputs and gradients,
    with gradients and without autocast (to 2% and 0.02: the kernel's bf16 gradients, a few units large,
    differed from dense attention's by 1/32 on an H100)."""
    try:
        with torch.inference_mode(False), torch.enable_grad(), torch.autocast(device.type, enabled=False):
            rows = torch.linspace(-1, 1, 5 * 2 * 8, device=device).reshape(5, 2, 8).to(dtype)
            weights = torch.linspace(1, 2, rows.numel(), device=device).reshape(rows.shape).to(dtype)
            jagged, dense = rows.clone().requires_grad_(True), rows.clone().requires_grad_(True)
            context = attend(jagged, jagged, jagged, Segments.of(torch.tensor([2, 3], device=device), [2, 3]))
            expected = torch.cat([F.scaled_dot_product_attention(*[part.transpose(0, 1)] * 3).transpose(0, 1)
                                  for part in dense.split([2, 3])])
            (context * weights).float().sum().backward()
            (expected * weights).float().sum().backward()
        return all(torch.allclose(a.float(), b.float(), rtol=2e-2, atol=2e-2)
                   for a, b in [(context.detach(), expected.detach()), (jagged.grad, dense.grad)])
    except (RuntimeError, NotImplementedError, TypeError, ValueError, AttributeError, AssertionError):
        return False

"""BERT's training pass on packed tokens, replayed from CUDA graphs: one pair per token count.

A BERT-base step on a batch of short texts is a thousand small kernels whose launches, not
their arithmetic, take the time; and every new shape costs more kernel choices. Here a
batch's real tokens are packed (``XRM/networks/packed_bert.py``) into a layout of ``bucket_size``
tokens (the next multiple of ``TOKEN_BUCKET``; fillers sit apart, in a spare attention
row, and change nothing) over attention rows as wide as the token cache, so a run meets
only a few shapes; each one's forward and backward pass is captured the first time a
batch needs it and replayed after that (``XRM/networks/graphed_passes.py``).

Used on CUDA, in training (gradients on), for a BERT encoder in ``pack`` mode; evaluation
and every other case run the eager pass.
"""
import torch
from torch import nn

from XRM.networks.graphed_passes import GraphedPasses
from XRM.networks.packed_bert import encode_packed, layout_tensors
from XRM.networks.token_batches import TokenBatch

#: packed token counts are rounded up to a multiple of this; each multiple a run meets is one capture
TOKEN_BUCKET = 256


def bucket_size(real_tokens: int, rows: int, width: int) -> int:
    """The fixed number of packed tokens for ``real_tokens`` of ``rows`` rows of at most ``width``."""
    rounded = -(-max(real_tokens, 1) // TOKEN_BUCKET) * TOKEN_BUCKET
    return min(rounded, rows * width)


class _PackedPass(nn.Module):
    """The encoder's packed pass on a fixed-size layout (attention rows as wide as its key mask)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, tokens, gather, positions, starts, key_mask) -> torch.Tensor:
        """Pooled outputs [rows, hidden]."""
        return encode_packed(self.encoder, tokens, gather, positions, starts, key_mask, key_mask.shape[-1])


class PackedGraphs:
    """The pooled outputs of ``encoder`` on token batches, replayed from a captured graph per shape."""

    def __init__(self, encoder: nn.Module) -> None:
        self.encoder = encoder
        self.passes = GraphedPasses(_PackedPass(encoder))

    @property
    def captures(self) -> int:
        """How many shapes have been captured so far."""
        return self.passes.captures

    def __call__(self, batch: TokenBatch) -> torch.Tensor:
        """Pooled outputs [B, hidden] (float32) of ``batch`` (right-padded rows on a CUDA device)."""
        rows, width = len(batch.lengths), batch.tokens.shape[1]
        layout = batch.fixed_layout(width, bucket_size(batch.real_tokens, rows, width))
        key = (rows, width, len(layout.gather), self.encoder.training)
        return self.passes(key, layout_tensors(batch, layout))

"""Where the real tokens of H runs' batches go when the runs share one stacked BERT pass.

Each run's batch is packed as one run alone packs it (``PackedLayout``, XRM/networks/token_batches.py):
its real tokens end to end, then filler tokens up to its own ``bucket_size`` (a multiple of
``TOKEN_BUCKET``, never past its padded batch). The stack's token count T is the largest of
the runs' counts: run h's [T_h] tokens are followed by T - T_h more fillers, and the linear
layers see [H, T, hidden]. Attention sees every run's rows one after another, each run with
its own spare row for its fillers, over one width (the stack's longest text): one call.

What padding to the largest run costs: a run of batch b holds about b x (mean length) real
tokens, so a stack whose batch sizes differ computes ``H x max(T_h)`` token rows for
``sum(T_h)`` useful ones. ``StackedTokens.waste`` says how much for a given stack;
``benchmarks/stacked_text_training.py`` prints it for stacks drawn at the paper's batch sizes.
"""
from dataclasses import dataclass

import torch

from XRM.networks.packed_bert_graphs import bucket_size
from XRM.networks.token_batches import PackedLayout, TokenBatch

#: the pooler's rows per run are the largest batch rounded up to a multiple of this: a run's pooler
#: and head then see one shape in stacks of similar batches (small matrix products change their
#: order of summation with their shape on the CPU)
POOLED_ROWS_MULTIPLE = 16


@dataclass
class StackedTokens:
    """H runs' batches packed for one stacked pass (see the module docstring)."""

    tokens: torch.Tensor  # int64 [H, T, 3]: ids, mask, token types; fillers are zeros
    positions: torch.Tensor  # int64 [H, T]: each token's position in its text
    gather: torch.Tensor  # int64 [H * T]: token (h, t)'s place in the attention rows flattened [rows * width]
    key_mask: torch.Tensor  # bool [rows, 1, 1, width]: which keys of each attention row are real
    starts: torch.Tensor  # int64 [H, B]: flat index (h * T + t) of each text's first token; unused rows: h * T
    # (B: the largest batch rounded up to POOLED_ROWS_MULTIPLE)
    run_tokens: list[int]  # T_h: each run's own packed count (what its dropout masks are drawn for)
    run_rows: list[int]  # each run's batch size
    cache_widths: list[int]  # each run's token rows' width (the token cache's)
    width: int  # the attention rows' width

    @classmethod
    def of(cls, batches: list[TokenBatch]) -> "StackedTokens":
        """The stacked layout of ``batches`` (one per run, right-padded rows, on one device)."""
        if not all(batch.right_padded for batch in batches):
            raise ValueError("only right-padded rows can be stacked")
        width = max(max(batch.width for batch in batches), 1)
        run_tokens = [bucket_size(batch.real_tokens, len(batch.lengths), batch.tokens.shape[1]) for batch in batches]
        size, rows = max(run_tokens), max(len(batch.lengths) for batch in batches)
        rows = -(-rows // POOLED_ROWS_MULTIPLE) * POOLED_ROWS_MULTIPLE
        tokens, positions, gathers, masks, starts = [], [], [], [], []
        first_row = 0
        for run, batch in enumerate(batches):
            layout = PackedLayout.of(batch.lengths, batch.device_lengths, width, size)
            tokens.append(batch.packed(layout).long())
            positions.append(layout.positions)
            gathers.append(layout.gather + first_row * width)
            masks.append(layout.key_mask())
            starts.append(torch.nn.functional.pad(layout.starts, (0, rows - layout.rows)) + run * size)
            first_row += layout.attention_rows
        return cls(torch.stack(tokens), torch.stack(positions), torch.cat(gathers), torch.cat(masks),
                   torch.stack(starts), run_tokens, [len(batch.lengths) for batch in batches],
                   [batch.tokens.shape[1] for batch in batches], width)

    @property
    def attention_rows(self) -> int:
        """How many rows attention sees (every run's texts and spare row)."""
        return self.key_mask.shape[0]

    @property
    def waste(self) -> float:
        """The fraction of the stack's token rows [H, T] beyond the runs' own packed counts."""
        return 1 - sum(self.run_tokens) / (len(self.run_tokens) * self.tokens.shape[1])

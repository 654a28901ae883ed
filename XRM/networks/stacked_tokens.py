"""Where the real tokens of H runs' batches go when the runs share one stacked BERT pass.

Each run's batch is packed as one run alone packs it (``PackedLayout``, XRM/networks/token_batches.py):
its real tokens end to end, then filler tokens up to a multiple of ``GROUP_ALIGNMENT`` (what a
grouped matrix product wants of each group's rows). The runs' packed tokens follow one another
([N, 3], N = the runs' counts together: no run is padded to another's size, whatever their
batch sizes), and every linear layer multiplies each run's rows by its own weights (a grouped
matrix product, XRM/networks/stacked_bert.py). Attention sees every run's texts one after
another, each run's fillers as one more text of its own (``segments``: packed, as jagged attention
takes them; or, where that does not run, spread to rows of one width, the token cache's, each run
with its own spare row for its fillers): a run's attention dropout masks then have one shape
whatever its stack. A run's pooled rows (its texts' first tokens) are laid out [H, B]: B, the largest batch
rounded up to ``POOLED_ROWS_MULTIPLE``, so each run's rows start at a multiple of the alignment.
"""
import functools
import itertools
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from XRM.networks.jagged_attention import Segments
from XRM.networks.token_batches import PackedLayout, TokenBatch

#: each run's packed tokens are rounded up to a multiple of this (grouped matrix products in bf16
#: want 16-aligned groups)
GROUP_ALIGNMENT = 16
#: the pooler's rows per run are the largest batch rounded up to a multiple of this: a run's pooler
#: and head then see one shape in stacks of similar batches (small matrix products change their
#: order of summation with their shape on the CPU)
POOLED_ROWS_MULTIPLE = 16


def _round_up(value: int, multiple: int) -> int:
    return -(-max(value, 1) // multiple) * multiple


def packed_count(real_tokens: int) -> int:
    """How many tokens a run's batch of ``real_tokens`` real ones takes in a stack (fillers included)."""
    return _round_up(real_tokens, GROUP_ALIGNMENT)


@dataclass
class RowGroups:
    """Consecutive rows of H runs: run h owns rows ``ends[h - 1]`` to ``ends[h] - 1``."""

    ends: list[int]  # on the host
    offsets: torch.Tensor  # int32 [H]: the same, on the device (a grouped matrix product's group ends)
    run_of_row: torch.Tensor  # int64 [rows]: each row's run, on the device
    _one_hots: dict = field(default_factory=dict, repr=False, compare=False)  # one_hot's, by dtype

    @classmethod
    def of(cls, counts: list[int], device: torch.device) -> "RowGroups":
        """Groups of ``counts`` rows, in order. Built on the device by fills, not copied from the host (a
        copy from pageable memory can wait for the device)."""
        ends = torch.tensor(counts).cumsum(0).tolist()
        offsets = torch.cat([torch.full((1,), end, dtype=torch.int32, device=device) for end in ends])
        runs = torch.cat([torch.full((count,), run, device=device) for run, count in enumerate(counts)])
        return cls(ends, offsets, runs)

    def one_hot(self, dtype: torch.dtype) -> torch.Tensor:
        """[runs, rows] in ``dtype``: 1 where the row is the run's, else 0 (made once per dtype)."""
        if dtype not in self._one_hots:
            runs = torch.arange(len(self.ends), device=self.run_of_row.device)
            self._one_hots[dtype] = (runs[:, None] == self.run_of_row[None]).to(dtype)
        return self._one_hots[dtype]

    def slices(self) -> list[slice]:
        """Each run's rows."""
        return [slice(end - count, end) for end, count in zip(self.ends, self.counts)]

    @property
    def counts(self) -> list[int]:
        """Each run's number of rows."""
        return [end - start for start, end in zip([0, *self.ends[:-1]], self.ends)]


def _segment_lengths(batch: TokenBatch, count: int) -> tuple[torch.Tensor, list[int]]:
    """The lengths of a run's segments of its ``count`` packed tokens (its texts, then its fillers as one
    more where it has any), on the device and on the host."""
    fillers = count - batch.real_tokens
    if not fillers:
        return batch.device_lengths, batch.lengths.tolist()
    filler = torch.full((1,), fillers, dtype=batch.device_lengths.dtype, device=batch.device_lengths.device)
    return torch.cat([batch.device_lengths, filler]), [*batch.lengths.tolist(), fillers]


@dataclass
class StackedTokens:
    """H runs' batches packed for one stacked pass (see the module docstring)."""

    tokens: torch.Tensor  # int64 [N, 3]: ids, mask, token types of every run's packed tokens; fillers are zeros
    positions: torch.Tensor  # int64 [N]: each token's position in its text
    groups: RowGroups  # which of the N tokens are whose
    layouts: list[PackedLayout]  # each run's packed layout (fixed size: its count, rows of ``width``)
    starts: torch.Tensor  # int64 [H * B]: each text's first token (unused rows: the run's first token)
    pooled_groups: RowGroups  # the H * B pooled rows: B per run
    real_tokens: list[int]  # each run's real tokens
    run_rows: list[int]  # each run's batch size
    width: int  # the attention rows' width: the token cache's
    segment_lengths: list[tuple[torch.Tensor, list[int]]]  # each run's texts' lengths, then its fillers' (if
    # any): on the device and on the host

    @classmethod
    def of(cls, batches: list[TokenBatch]) -> "StackedTokens":
        """The stacked layout of ``batches`` (one per run, right-padded rows, on one device)."""
        if not all(batch.right_padded for batch in batches):
            raise ValueError("only right-padded rows can be stacked")
        device = batches[0].tokens.device
        width = max(batch.tokens.shape[1] for batch in batches)
        counts = [packed_count(batch.real_tokens) for batch in batches]
        rows = _round_up(max(len(batch.lengths) for batch in batches), POOLED_ROWS_MULTIPLE)
        layouts = [PackedLayout.of(batch.lengths, batch.device_lengths, width, count)
                   for batch, count in zip(batches, counts)]
        tokens = [batch.packed(layout).long() for batch, layout in zip(batches, layouts)]
        first_tokens = itertools.accumulate(counts[:-1], initial=0)
        starts = [F.pad(layout.starts, (0, rows - layout.rows)) + first for layout, first in zip(layouts, first_tokens)]
        segment_lengths = [_segment_lengths(batch, count) for batch, count in zip(batches, counts)]
        return cls(torch.cat(tokens), torch.cat([layout.positions for layout in layouts]), RowGroups.of(counts, device),
                   layouts, torch.cat(starts), RowGroups.of([rows] * len(batches), device),
                   [batch.real_tokens for batch in batches], [len(batch.lengths) for batch in batches], width,
                   segment_lengths)

    @property
    def shortest_segment(self) -> int:
        """The shortest text (or run's fillers) of the stack, from the host's lengths."""
        return min(length for _, lengths in self.segment_lengths for length in lengths)

    @functools.cached_property
    def segments(self) -> Segments:
        """The N tokens cut into texts: each run's texts, then its fillers (if any) as one more (attention of all
        runs in one call, made where it runs: without dropout)."""
        return Segments.of(torch.cat([lengths for lengths, _ in self.segment_lengths]),
                           [length for _, lengths in self.segment_lengths for length in lengths])

    @functools.cached_property
    def run_segments(self) -> list[Segments]:
        """The same, for each run's own tokens alone (attention a run at a time, made where it runs: with
        dropout)."""
        return [Segments.of(*lengths) for lengths in self.segment_lengths]

    @functools.cached_property
    def gather(self) -> torch.Tensor:
        """int64 [N]: each token's place in the attention rows flattened [rows * width] (spread attention's,
        made where it runs: jagged attention needs no rows)."""
        first_rows = itertools.accumulate(self.run_attention_rows(), initial=0)
        return torch.cat([layout.gather + first * self.width for layout, first in zip(self.layouts, first_rows)])

    @functools.cached_property
    def key_mask(self) -> torch.Tensor:
        """bool [rows, 1, 1, width]: which keys of each attention row are real (spread attention's)."""
        return torch.cat([layout.key_mask() for layout in self.layouts])

    @property
    def attention_rows(self) -> int:
        """How many rows attention sees (every run's texts and spare row)."""
        return sum(self.run_attention_rows())

    def run_attention_rows(self) -> list[int]:
        """How many attention rows each run has (its texts and its spare row), in order."""
        return [rows + 1 for rows in self.run_rows]

    @property
    def fillers(self) -> float:
        """The share of the packed tokens that are fillers (each run's count rounded up)."""
        return 1 - sum(self.real_tokens) / len(self.positions)

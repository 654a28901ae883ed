"""Batches of token rows that know, on the host, how many of each row's tokens are real.

Token tensors keep their cached format: int32 [n, L, 3] (input ids, attention mask, token
type ids), every text padded to the dataset's maximum length. A ``TokenBatch`` adds each
row's real length, held on the CPU, so that a text network can skip the padding without
asking the device (no synchronisation inside a training step):

- ``TokenBatch.trimmed()``: the rows cut to the batch's longest real sequence;
- ``TokenBatch.layout()``: where every real token goes when the rows are packed end to end
  with no padding at all (``PackedLayout``), for encoders that run on packed tokens.

Lengths come from the attention mask: a row's length is one past its last real token. Rows
whose mask is a prefix of ones (right padding, what every tokenizer here writes) can be
packed; any other mask is still trimmed exactly, and attention keeps using the mask.
"""
from dataclasses import dataclass, field

import torch

from XRM.common.errors import UserError


def measure_rows(tokens: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Each row's length (one past its last real token; int64 [n], on the tokens' device) and
    whether every row is right-padded (its real tokens are exactly the first ``length``).
    One synchronisation."""
    if tokens.ndim != 3 or tokens.shape[-1] != 3:
        raise UserError(f"token inputs must be [n, length, 3] (ids, attention mask, token type ids); got "
                        f"{list(tokens.shape)}: delete the token cache so that it is rebuilt")
    real = tokens[..., 1] != 0
    positions = torch.arange(1, tokens.shape[1] + 1, device=tokens.device)
    lengths = (real * positions).amax(dim=1) if tokens.shape[1] else real.sum(dim=1)
    right_padded = bool((real.sum(dim=1) == lengths).all()) if len(tokens) else True
    return lengths, right_padded


@dataclass
class PackedLayout:
    """Where the real tokens of a batch of rows go when packed end to end: row r's tokens are
    packed positions ``starts[r]`` .. ``starts[r] + lengths[r] - 1``, in order.

    Attention needs the rows apart: ``gather`` indexes the attention rows cut to ``width``
    and flattened ([attention_rows * width]): packed token t is flattened position
    ``gather[t]``; ``positions[t]`` is its position in its row.

    A layout of fixed size (``PackedLayout.of(..., width=L, size=S)``, for a captured CUDA
    graph, whose shapes never change) always has S packed tokens and one attention row
    more than the batch: the ``filler`` tokens after the real ones ([PAD], position 0) all
    sit at position 0 of that spare row, apart from every real text; nothing reads them.

    Built on the device from the lengths held there, with its sizes read from the copy on the
    host: no copy between host and device (a copy from pageable memory can wait for the device).
    """

    gather: torch.Tensor  # int64 [T] on the device
    positions: torch.Tensor  # int64 [T] on the device
    starts: torch.Tensor  # int64 [rows] on the device
    lengths: torch.Tensor  # int64 [rows] on the CPU
    device_lengths: torch.Tensor  # the same, on the device
    width: int  # the longest row, or the fixed width asked for
    filler: int = 0  # packed tokens after the real ones (fixed-size layouts)
    spare_row: bool = False  # whether attention has a row more than the batch (fixed-size layouts)

    @classmethod
    def of(cls, lengths: torch.Tensor, device_lengths: torch.Tensor, width: int | None = None,
           size: int | None = None) -> "PackedLayout":
        """The layout of rows of ``lengths`` (on the CPU, and ``device_lengths`` on the device); with
        ``width`` and ``size``, one of those fixed shapes (``size`` at least the real tokens)."""
        rows, device = len(lengths), device_lengths.device
        real = int(lengths.sum()) if rows else 0
        longest = int(lengths.max()) if rows else 0
        width = longest if width is None else width
        if longest > width or (size is not None and size < real):
            raise ValueError(f"rows of up to {longest} tokens ({real} in all) do not fit width {width}, size {size}")
        starts = device_lengths.cumsum(0) - device_lengths
        row_of = torch.repeat_interleave(torch.arange(rows, device=device), device_lengths, output_size=real)
        positions = torch.arange(real, device=device) - starts[row_of]
        gather = row_of * width + positions
        if size is None:
            return cls(gather, positions, starts, lengths, device_lengths, width)
        filler = size - real
        gather = torch.cat([gather, torch.full((filler,), rows * width, dtype=gather.dtype, device=device)])
        positions = torch.cat([positions, torch.zeros(filler, dtype=positions.dtype, device=device)])
        return cls(gather, positions, starts, lengths, device_lengths, width, filler, spare_row=True)

    @property
    def rows(self) -> int:
        """How many rows the batch has."""
        return len(self.lengths)

    @property
    def attention_rows(self) -> int:
        """How many rows attention sees: the batch's, and the spare row of a fixed-size layout."""
        return self.rows + int(self.spare_row)

    @property
    def full(self) -> bool:
        """Whether every row is ``width`` long (packing then leaves nothing out)."""
        return not self.spare_row and bool((self.lengths == self.width).all())

    def key_mask(self) -> torch.Tensor | None:
        """[attention_rows, 1, 1, width] bool: which keys of the rows cut to ``width`` are real (None: all
        are); the spare row's first key is its only one."""
        if self.full:
            return None
        lengths = self.device_lengths
        if self.spare_row:
            lengths = torch.cat([lengths, torch.ones(1, dtype=lengths.dtype, device=lengths.device)])
        mask = torch.arange(self.width, device=lengths.device)[None, :] < lengths[:, None]
        return mask[:, None, None, :]


@dataclass
class TokenBatch:
    """Token rows [B, L, 3] on the device with their real lengths on the host (see the module docstring)."""

    tokens: torch.Tensor
    lengths: torch.Tensor  # int64 [B] on the CPU
    device_lengths: torch.Tensor  # the same, on the tokens' device
    right_padded: bool
    _layout: PackedLayout | None = field(default=None, repr=False)

    @classmethod
    def measured(cls, tokens: torch.Tensor) -> "TokenBatch":
        """A batch of ``tokens`` whose lengths are read from its attention mask (one synchronisation)."""
        lengths, right_padded = measure_rows(tokens)
        return cls(tokens, lengths.cpu(), lengths, right_padded)

    @property
    def width(self) -> int:
        """The longest real sequence of the batch."""
        return int(self.lengths.max()) if len(self.lengths) else 0

    @property
    def real_tokens(self) -> int:
        """How many of the batch's tokens are real (not padding)."""
        return int(self.lengths.sum())

    def trimmed(self) -> torch.Tensor:
        """The rows cut to the batch's longest real sequence: [B, width, 3]."""
        return self.tokens[:, : max(self.width, 1)]

    def layout(self) -> PackedLayout:
        """Where each real token goes when the rows are packed (built once per batch)."""
        if self._layout is None:
            self._layout = self.fixed_layout(None, None)
        return self._layout

    def fixed_layout(self, width: int | None, size: int | None) -> PackedLayout:
        """The packed layout of ``size`` tokens over attention rows of ``width`` (see PackedLayout)."""
        if not self.right_padded:
            raise ValueError("only right-padded rows can be packed")
        return PackedLayout.of(self.lengths, self.device_lengths, width, size)

    def packed(self, layout: PackedLayout | None = None) -> torch.Tensor:
        """The real tokens of every row end to end, then ``layout``'s filler tokens (zeros): [T, 3]."""
        layout = self.layout() if layout is None else layout
        real = len(layout.gather) - layout.filler
        tokens = self.tokens[:, : max(layout.width, 1)].reshape(-1, 3).index_select(0, layout.gather[:real])
        if not layout.filler:
            return tokens
        return torch.cat([tokens, tokens.new_zeros(layout.filler, 3)])


class TokenRows:
    """A token tensor [n, L, 3] on the device with every row's length measured once: batches of
    its rows as TokenBatch, with no synchronisation."""

    def __init__(self, tokens: torch.Tensor) -> None:
        self.tokens = tokens
        self.device_lengths, self.right_padded = measure_rows(tokens)
        self.lengths = self.device_lengths.cpu()

    def batch(self, index: torch.Tensor, host_index: torch.Tensor) -> TokenBatch:
        """Rows ``index`` (on the tokens' device), whose copy ``host_index`` is on the CPU."""
        return TokenBatch(self.tokens[index], self.lengths[host_index], self.device_lengths[index], self.right_padded)

"""A backbone's evaluation inputs, prepared once per stack instead of at every evaluation.

Today's path (``streamed``, XRM/engine/batches.py's ``evaluation_batches``) reads a split from
scratch at each evaluation: images are decoded from their files again, token rows run in
dataset order in batches of 256. ``prepared`` (the default) does that work once:

- images (a Dataset of uint8 tensors): decoded and shaped once, through the same loader as
  training (the same pixels: the evaluation geometry has no random part), into one uint8
  tensor kept on the device when it takes at most ``PREPARED_MEMORY_FRACTION`` of the
  device's free memory, else in pinned host memory (likewise), else streamed as before;
  each evaluation feeds it in large batches, normalised on the device by the network;
- token rows [n, L, 3]: ordered by real length once, cut into batches of at most a token
  budget of rows x longest row (similar lengths: little padding in attention), the logits
  put back in dataset order;
- other tensors (inputs already in memory): the same tensor in large batches.

Batch sizes follow the free memory. ``$XRM_EVALUATION_INPUTS`` chooses ``prepared`` or
``streamed``; both give the same logits (within rounding: the batches differ).
"""
import os
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from XRM.common.errors import UserError
from XRM.engine.batches import evaluation_batches
from XRM.engine.memory_budget import free_memory
from XRM.networks.classifiers import TextClassifier
from XRM.networks.token_batches import TokenBatch, measure_rows

EVALUATION_INPUTS_VARIABLE = "XRM_EVALUATION_INPUTS"
EVALUATION_INPUTS_MODES = ("prepared", "streamed")
#: the largest share of free memory (the device's, else the host's) one split's prepared images may take
PREPARED_MEMORY_FRACTION = 0.25
#: the share of free device memory an evaluation batch's activations may take
BATCH_MEMORY_FRACTION = 0.1
#: bytes of activations alive per input element of an image in an evaluation batch (ResNet-50 in bf16:
#: its largest feature maps have about 5.3 times the input's elements, a few of them alive at once)
IMAGE_ACTIVATION_BYTES = 64
#: the most images of one evaluation batch
IMAGE_BATCH_LIMIT = 1024
#: bytes of activations alive per token of a text batch (BERT-base in bf16: hidden, query-key-value and
#: feed-forward rows of 768 + 2304 + 3072 values, twice over)
TOKEN_ACTIVATION_BYTES = 24 * 1024
#: the most tokens (rows x longest row) of one text evaluation batch
TOKEN_BUDGET_LIMIT = 1 << 16
#: images per loader batch while a split is decoded once (small batches keep every worker busy from the start)
DECODING_BATCH = 256


def evaluation_inputs_mode() -> str:
    """``$XRM_EVALUATION_INPUTS`` (default prepared); a UserError for a value not in EVALUATION_INPUTS_MODES."""
    value = os.environ.get(EVALUATION_INPUTS_VARIABLE, "prepared") or "prepared"
    if value not in EVALUATION_INPUTS_MODES:
        raise UserError(f"{EVALUATION_INPUTS_VARIABLE}={value}: use prepared (the default) or streamed")
    return value


def _budget(device: torch.device, per_item: int, limit: int) -> int:
    """How many items of ``per_item`` bytes an evaluation batch on ``device`` holds: at most ``limit``."""
    return int(max(1, min(limit, free_memory(device) * BATCH_MEMORY_FRACTION // max(per_item, 1))))


def image_batch_size(example_elements: int, device: torch.device) -> int:
    """Images per evaluation batch for examples of ``example_elements`` values each, from the free memory."""
    return _budget(device, example_elements * IMAGE_ACTIVATION_BYTES, IMAGE_BATCH_LIMIT)


def token_budget(device: torch.device) -> int:
    """Tokens (rows x longest row) per text evaluation batch, from the free memory."""
    return _budget(device, TOKEN_ACTIVATION_BYTES, TOKEN_BUDGET_LIMIT)


def length_batches(lengths: np.ndarray, budget: int) -> list[np.ndarray]:
    """Rows ordered by length (stable), cut into consecutive batches whose rows x longest row stay within
    ``budget`` (a row longer than the budget is a batch of its own)."""
    order = np.argsort(lengths, kind="stable")
    batches, start = [], 0
    for end in range(1, len(order) + 1):
        # ascending lengths: the batch's longest row is its last
        if end - start > 1 and (end - start) * max(int(lengths[order[end - 1]]), 1) > budget:
            batches.append(order[start : end - 1])
            start = end - 1
    if start < len(order):
        batches.append(order[start:])
    return batches


class InMemoryRows:
    """Inputs held in one tensor (images decoded once, or a tensor split), fed in batches."""

    def __init__(self, rows: torch.Tensor, batch_size: int) -> None:
        self.rows, self.batch_size = rows, batch_size

    def batches(self, device: torch.device) -> Iterator[torch.Tensor]:
        """The rows in order, in batches on ``device`` (copied from pinned memory without waiting)."""
        for start in range(0, len(self.rows), self.batch_size):
            yield self.rows[start : start + self.batch_size].to(device, non_blocking=True)

    def predict(self, network: nn.Module, device: torch.device) -> torch.Tensor:
        """``network``'s float32 outputs on every row, in order."""
        return torch.cat([network(x).float() for x in self.batches(device)])


class LengthSortedTokens:
    """Token rows ordered by length once and batched by a token budget; logits come back in dataset order."""

    def __init__(self, tokens: torch.Tensor, budget: int) -> None:
        self.tokens = tokens
        device_lengths, self.right_padded = measure_rows(tokens)  # one synchronisation, once
        lengths = device_lengths.cpu()
        self.batches = [(torch.from_numpy(rows).to(tokens.device), lengths[rows])
                        for rows in length_batches(lengths.numpy(), budget)]
        order = torch.cat([index for index, _ in self.batches]) if self.batches else device_lengths.new_zeros(0)
        self.restore = torch.argsort(order)  # position in the sorted order of each row of the split
        self.device_lengths = device_lengths

    def predict(self, network: nn.Module, device: torch.device) -> torch.Tensor:
        """``network``'s float32 outputs on every row, in dataset order."""
        outputs = [network(TokenBatch(self.tokens[index], host_lengths, self.device_lengths[index], self.right_padded))
                   .float() for index, host_lengths in self.batches]
        return torch.cat(outputs)[self.restore]


Prepared = InMemoryRows | LengthSortedTokens


class TokenNetwork(nn.Module):
    """A network of token rows that is no TextClassifier (XRM/engine/text_stack.py's runs together): its
    inputs are prepared as a TextClassifier's are."""


def _decoded_once(inputs: Dataset, device: torch.device, num_workers: int | None) -> torch.Tensor | None:
    """Every input of ``inputs`` in one tensor, decoded by the loader training uses: on ``device`` when it
    fits there, else in pinned host memory; None when neither has room."""
    first = inputs[0]
    size = len(inputs) * first.numel() * first.element_size()
    if size <= free_memory(device) * PREPARED_MEMORY_FRACTION:
        rows = torch.empty((len(inputs), *first.shape), dtype=first.dtype, device=device)
    elif device.type == "cuda" and size <= free_memory(torch.device("cpu")) * PREPARED_MEMORY_FRACTION:
        rows = torch.empty((len(inputs), *first.shape), dtype=first.dtype, pin_memory=True)
    else:
        return None
    start = 0
    for x in evaluation_batches(inputs, DECODING_BATCH, device, num_workers):
        rows[start : start + len(x)].copy_(x, non_blocking=True)
        start += len(x)
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()  # every copy into pinned memory is done
    return rows


def prepare(inputs: torch.Tensor | Dataset, network: nn.Module, device: torch.device,
            num_workers: int | None) -> Prepared | None:
    """``inputs`` made ready for many evaluations of ``network`` (see the module docstring); None: stream them."""
    if len(inputs) == 0:
        return None
    if isinstance(inputs, torch.Tensor):
        if any(isinstance(module, (TextClassifier, TokenNetwork)) for module in network.modules()):
            return LengthSortedTokens(inputs, token_budget(device))
        return InMemoryRows(inputs, image_batch_size(inputs[0].numel(), device))
    rows = _decoded_once(inputs, device, num_workers)
    return None if rows is None else InMemoryRows(rows, image_batch_size(rows[0].numel(), device))


class EvaluationInputs:
    """Each split's prepared inputs, made at its first evaluation and kept (by the identity of the split's inputs)."""

    def __init__(self, device: torch.device, num_workers: int | None, mode: str | None = None) -> None:
        """``mode``: one of EVALUATION_INPUTS_MODES, default ``$XRM_EVALUATION_INPUTS``'s."""
        self.device, self.num_workers = device, num_workers
        self.mode = evaluation_inputs_mode() if mode is None else mode
        self.prepared: dict[int, tuple[object, Prepared | None]] = {}

    def predict(self, inputs: torch.Tensor | Dataset, network: nn.Module, batch_size: int,
                once: bool = False) -> torch.Tensor:
        """``network``'s float32 outputs on every example of ``inputs``, in order: from the prepared inputs, or
        streamed in batches of ``batch_size`` (``streamed``, when they fit nowhere, or with ``once``: inputs read
        this one time, such as phase 1's training split at its end, are decoded into memory for nothing)."""
        prepared = None
        if self.mode == "prepared":
            if id(inputs) not in self.prepared and not (once and isinstance(inputs, Dataset)):
                # the inputs are kept alive with it: their id stays theirs
                self.prepared[id(inputs)] = (inputs, prepare(inputs, network, self.device, self.num_workers))
            prepared = self.prepared.get(id(inputs), (None, None))[1]
        if prepared is not None:
            return prepared.predict(network, self.device)
        return torch.cat([network(x).float()
                          for x in evaluation_batches(inputs, batch_size, self.device, self.num_workers)])

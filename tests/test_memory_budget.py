"""The engine's memory estimate of a text run: packed batches planned at their real tokens, not full rows."""
import math

import pytest
import torch

from stacked_bert_fixtures import tiny_classifier
from XRM.engine import memory_budget
from XRM.engine.memory_budget import (ATTENTION_POSITION_VALUES, PACKED_TOKEN_VALUES, PARAMETER_COPIES,
                                      TEXT_ACTIVATION_VALUES, TOKEN_SPREAD, activation_dtype, network_bytes,
                                      packed_tokens_bound)

WIDTH = 100


def _rows(lengths: list[int]) -> torch.Tensor:
    """Token rows [n, WIDTH, 3] whose masks hold ``lengths`` real tokens."""
    mask = (torch.arange(WIDTH)[None] < torch.tensor(lengths)[:, None]).long()
    return torch.stack([mask * 7, mask, torch.zeros_like(mask)], dim=-1)


def test_a_batch_is_planned_at_its_mean_tokens_plus_six_deviations_of_their_sum():
    rows = _rows([10, 20, 30, 40])  # mean 25, sample standard deviation sqrt(500 / 3)
    expected = 4 * 25 + TOKEN_SPREAD * 2 * math.sqrt(500 / 3)  # batch 4: sqrt(4) = 2
    assert packed_tokens_bound(rows, 4) == int(expected) + 1 == 255
    assert packed_tokens_bound(rows, 1) == WIDTH  # never more than full rows: 25 + 6 x 12.9 > 100
    assert packed_tokens_bound(_rows([12] * 5), 3) == 37  # no spread: 3 x 12, plus one


def test_a_stacked_text_run_is_estimated_on_real_tokens_and_spread_attention_rows_only_where_jagged_cannot_run(
        monkeypatch):
    rows, cpu = _rows([10, 20, 30, 40]), torch.device("cpu")
    network = tiny_classifier(0, layers=2, dtype=torch.float32)  # hidden 32, 2 layers
    parameters = sum(p.numel() for p in network.parameters())
    assert network.packs and memory_budget.jagged_attention_runs(cpu, torch.float32)
    packed = network_bytes(network, 1, 4, rows, torch.float32, cpu)  # jagged attention: real tokens only
    assert packed == 4 * (parameters * PARAMETER_COPIES + 255 * PACKED_TOKEN_VALUES * 32 * 2)
    monkeypatch.setattr(memory_budget, "jagged_attention_runs", lambda device, dtype: False)
    spread = network_bytes(network, 1, 4, rows, torch.float32, cpu)
    per_layer = 255 * PACKED_TOKEN_VALUES + 5 * WIDTH * ATTENTION_POSITION_VALUES  # 4 texts and the spare row
    assert spread == 4 * (parameters * PARAMETER_COPIES + per_layer * 32 * 2)
    network.packs = False  # padded batches: every position of the full rows
    padded = network_bytes(network, 1, 4, rows, torch.float32, cpu)
    assert padded == 4 * (parameters * PARAMETER_COPIES + 4 * WIDTH * TEXT_ACTIVATION_VALUES * 32 * 2)
    assert network_bytes(network, 2, 4, rows, torch.float64, cpu) == pytest.approx(4 * padded, rel=1e-12)  # twins


def test_a_text_backbone_keeps_its_activations_in_bf16_on_cuda_and_in_the_run_dtype_elsewhere():
    text, small = tiny_classifier(0, layers=1, dtype=torch.float32), torch.nn.Linear(3, 2)
    assert activation_dtype(text, torch.device("cuda"), torch.float32) == torch.bfloat16  # bf16 autocast there
    assert activation_dtype(text, torch.device("cpu"), torch.float32) == torch.float32
    assert activation_dtype(small, torch.device("cuda"), torch.float64) == torch.float64  # no autocast

"""Attention of packed texts (jagged layout): each text's outputs and gradients are those of its own dense attention."""
import torch
import torch.nn.functional as F

from XRM.networks.jagged_attention import Segments, jagged_attention, jagged_attention_runs
from XRM.networks.stacked_tokens import StackedTokens
from stacked_bert_fixtures import RUN_LENGTHS, token_batch

HEADS, HEAD_SIZE = 2, 4


def _dense(rows: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """Each text's own attention (queries, keys and values: its rows), texts one after another."""
    return torch.cat([F.scaled_dot_product_attention(*[text.transpose(0, 1)] * 3).transpose(0, 1)
                      for text in rows.split(lengths)])


def test_jagged_attention_is_each_texts_dense_attention_alone_or_joined_to_others():
    generator = torch.Generator().manual_seed(0)
    runs = [[3, 7, 1], [5, 2]]  # two runs' texts, attended in calls of their own and joined, as a stack does
    inputs = [torch.randn(sum(lengths), HEADS, HEAD_SIZE, generator=generator, dtype=torch.float64)
              for lengths in runs]
    weights = torch.randn(sum(map(sum, runs)), HEADS, HEAD_SIZE, generator=generator, dtype=torch.float64)
    jagged = [rows.clone().requires_grad_(True) for rows in inputs]
    dense = [rows.clone().requires_grad_(True) for rows in inputs]
    joined = torch.cat([jagged_attention(rows, rows, rows, Segments.of(torch.tensor(lengths), lengths))
                        for rows, lengths in zip(jagged, runs)])
    expected = torch.cat([_dense(rows, lengths) for rows, lengths in zip(dense, runs)])
    assert joined.shape == (18, HEADS, HEAD_SIZE) and (joined - expected).abs().max() < 1e-12
    (joined * weights).sum().backward()
    (expected * weights).sum().backward()
    for run in range(2):  # the second run's gradient too: torch.cat hands it a part of its own gradient
        assert dense[run].grad.abs().max() > 1e-3 and (jagged[run].grad - dense[run].grad).abs().max() < 1e-12


def test_a_texts_attention_dropout_is_drawn_from_the_default_generator_and_kept_for_the_backward_pass():
    rows = torch.randn(10, HEADS, HEAD_SIZE, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    segments = Segments.of(torch.tensor([4, 6]), [4, 6])
    draws = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        leaf = rows.clone().requires_grad_(True)
        context = jagged_attention(leaf, leaf, leaf, segments, dropout_p=0.5)
        torch.rand(100)  # draws between the passes change nothing of the gradient
        context.sum().backward()
        draws.append((context.detach(), leaf.grad))
    assert torch.equal(draws[0][0], draws[1][0]) and torch.equal(draws[0][1], draws[1][1])
    assert (draws[0][0] - draws[2][0]).abs().max() > 1e-2  # another seed, other masks
    assert (draws[0][0] - _dense(rows, [4, 6])).abs().max() > 1e-2  # dropout on


def test_a_stacks_segments_are_each_runs_texts_then_its_fillers():
    tokens = StackedTokens.of([token_batch(lengths, seed) for seed, lengths in enumerate(RUN_LENGTHS)])
    # runs of 257, 49 and 46 real tokens packed into 272, 64 and 48: fillers 15, 15 and 2 as one more segment
    assert [s.offsets.tolist() for s in tokens.run_segments] == [
        [0, 5, 45, 105, 107, 140, 197, 257, 272], [0, 12, 19, 49, 64], [0, 1, 23, 32, 46, 48]]
    assert tokens.segments.offsets.tolist() == [0, 5, 45, 105, 107, 140, 197, 257, 272, 284, 291, 321, 336,
                                                337, 359, 368, 382, 384]
    assert (tokens.segments.shortest, tokens.segments.longest) == (1, 60)
    assert [(s.shortest, s.longest) for s in tokens.run_segments] == [(2, 60), (7, 30), (1, 22)]


def test_the_trial_says_jagged_attention_runs_here_even_when_first_asked_in_an_evaluation():
    jagged_attention_runs.cache_clear()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):  # no gradients, autocast on
        answers = [jagged_attention_runs(torch.device("cpu"), dtype) for dtype in (torch.float64, torch.float32)]
    assert answers == [True, True]

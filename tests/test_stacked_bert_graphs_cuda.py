"""A stack's training pass replayed from CUDA graphs (XRM/networks/stacked_bert_graphs.py) trains as the eager
pass does, draws each run's dropout from its own generator, and meets new layouts (and outgrows its buffers)
as its token counts change. Needs a GPU where grouped products run (H100, H200): skipped elsewhere."""
import pytest
import torch

from stacked_bert_fixtures import STEP_LENGTHS, labels, stacked_loss, tiny_classifier, token_batch
from XRM.engine.text_stack import TextStack
from XRM.networks import stacked_bert_graphs
from XRM.networks.per_run_ops import grouped_products_run
from XRM.networks.token_batches import TokenBatch

CUDA = torch.device("cuda")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available() or not grouped_products_run(CUDA, torch.bfloat16),
                                reason="needs a GPU where grouped products run")
HPARAMS = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-2, "num_steps": 9, "lr_schedule": "text"}


def _batches(step: int, runs: list[int]) -> tuple[list[TokenBatch], list[torch.Tensor]]:
    lengths = STEP_LENGTHS[step % len(STEP_LENGTHS)]
    batches = [TokenBatch.measured(token_batch(lengths[run], 10 * step + run).tokens.cuda()) for run in runs]
    return batches, [labels(len(lengths[run]), 10 * step + run).cuda() for run in runs]


def _stack(runs: list[int], graphs: bool, seeds: list[int] | None = None) -> TextStack:
    classifiers = [tiny_classifier(run, dropout=0.2, dtype=torch.float32) for run in runs]
    return TextStack(classifiers, [HPARAMS] * len(runs), seeds or [5 + run for run in runs], CUDA, cuda_graphs=graphs)


def test_a_graphed_stack_trains_as_the_eager_stack(monkeypatch):
    """Six steps of three runs with dropout, on layouts of 80-row buckets (320 and 400 rows; the second outgrows
    the buffers made for the first): the logits of every step and the weights after them agree within bf16's
    rounding (both passes run the same kernels on the same masks; the fillers change only how sums are cut), and
    so do the weights' updates."""
    monkeypatch.setattr(stacked_bert_graphs, "STACK_TOKEN_BUCKET", 80)
    monkeypatch.setattr(stacked_bert_graphs, "SPARE_ROWS", 1.0)
    stacks = {graphs: _stack([0, 1, 2], graphs) for graphs in (True, False)}
    assert stacks[True].graphs is not None and stacks[False].graphs is None
    initial = torch.cat([parameter.detach().flatten().clone() for parameter in stacks[False].model.parameters.values()])
    for step in range(6):
        batches, y = _batches(step, [0, 1, 2])
        logits = {graphs: stack.forward(batches) for graphs, stack in stacks.items()}
        for graphs, stack in stacks.items():
            stack.step(stacked_loss(logits[graphs], y))
        real = [slice(0, len(batch.lengths)) for batch in batches]
        for run, rows in enumerate(real):
            assert (logits[True][run, rows] - logits[False][run, rows]).abs().max() < 2e-2, (step, run)
        assert logits[True].abs().max() > 0.1
    assert stacks[True].graphs.captures == 2 and sorted(stacks[True].graphs.layouts) == [320, 400]
    # the weights' updates agree (AdamW's steps are the learning rate's size wherever a gradient is tiny, so a
    # single weight may differ by that much: the whole update is compared, not each weight)
    moved = {graphs: torch.cat([p.detach().flatten() for p in stack.model.parameters.values()]) - initial
             for graphs, stack in stacks.items()}
    assert moved[False].norm() > 0 and (moved[True] - moved[False]).norm() < 0.05 * moved[False].norm()


def test_a_graphed_runs_dropout_is_its_own_in_any_stack():
    """Run 1 trained three steps in a graphed stack of three and in one of its own, from the same generator seed,
    has the same logits (within bf16's rounding); from another seed, other logits."""

    def run_one(runs: list[int], seed: int = 7) -> list[torch.Tensor]:
        stack = _stack(runs, True, [seed if run == 1 else 100 + run for run in runs])
        logits = []
        for step in range(3):
            batches, y = _batches(step, runs)
            out = stack.forward(batches)
            stack.step(stacked_loss(out, y))
            logits.append(out[runs.index(1), : len(batches[runs.index(1)].lengths)].detach())
        return logits

    in_three, alone, other = run_one([0, 1, 2]), run_one([1]), run_one([1], seed=8)
    for step in range(3):
        assert (in_three[step] - alone[step]).abs().max() < 1e-2, step
        assert (other[step] - alone[step]).abs().max() > 5e-2, step

"""The fixed layouts a stacked BERT pass is replayed on (XRM/networks/stacked_bert_graphs.py), checked on the
CPU: the same stages run eagerly on a layout of more rows than the runs' tokens (the last run's fillers after
them) give the eager pass's logits, gradients and dropout draws, across layouts of several sizes and a regrowth
of the shared buffers. (The replays themselves: tests/test_stacked_bert_graphs_cuda.py, on a GPU.)"""
import pytest
import torch

from stacked_bert_fixtures import RUN_LENGTHS, STEP_LENGTHS, labels as labels_of, stacked_loss, tiny_classifier, token_batch
from XRM.networks import graphed_passes, stacked_bert_graphs
from XRM.networks.stacked_bert import StackedBert
from XRM.networks.graphed_passes import AutocastPass
from XRM.networks.stacked_bert_graphs import StackedGraphs, layout_rows
from XRM.networks.stacked_tokens import StackedTokens

def _steps(forward, stack: StackedBert, generators: list[torch.Generator], capacities: list | None = None
           ) -> list[tuple[torch.Tensor, dict]]:
    """Each step's logits and gradients (and the layout buffers' rows after it, in ``capacities``)."""
    results = []
    for step, run_lengths in enumerate(STEP_LENGTHS):
        batches = [token_batch(lengths, 10 * step + run) for run, lengths in enumerate(run_lengths)]
        logits = forward(StackedTokens.of(batches), generators)
        stacked_loss(logits, [labels_of(len(lengths), run) for run, lengths in enumerate(run_lengths)]).backward()
        results.append((logits.detach(), {name: p.grad for name, p in stack.parameters.items()}))
        if capacities is not None:
            capacities.append(forward.buffers.capacity)
        for parameter in stack.parameters.values():
            parameter.grad = None
    return results


@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("bucket", [80, 1024])
def test_stages_on_a_fixed_layout_give_the_eager_pass(monkeypatch, dropout, bucket):
    """Buckets of 80 rows: layouts of 320, 400, 400 and 320 rows (16 to 32 fillers; the second layout is larger than
    the buffers made for the first, so they are made again); of 1024: one layout, mostly fillers."""
    monkeypatch.setattr(stacked_bert_graphs, "STACK_TOKEN_BUCKET", bucket)
    monkeypatch.setattr(stacked_bert_graphs, "SPARE_ROWS", 1.0)
    classifiers = [tiny_classifier(seed, dropout=dropout) for seed in range(3)]
    eager_stack, fixed_stack = StackedBert(classifiers), StackedBert(classifiers)
    fixed = StackedGraphs(fixed_stack, replay=False)
    eager = _steps(eager_stack, eager_stack, [torch.Generator().manual_seed(10 + run) for run in range(3)])
    capacities = []
    on_layouts = _steps(fixed, fixed_stack, [torch.Generator().manual_seed(10 + run) for run in range(3)], capacities)
    assert layout_rows(288) == {80: 320, 1024: 1024}[bucket]
    assert capacities == {80: [320, 400, 400, 400], 1024: [1024] * 4}[bucket]
    assert sorted(fixed.layouts) == {80: [320, 400], 1024: [1024]}[bucket]
    for (logits, gradients), (expected, expected_gradients) in zip(on_layouts, eager):
        assert logits.abs().max() > 0.1 and torch.equal(logits, expected)
        for name, gradient in gradients.items():
            assert expected_gradients[name].abs().max() > 0, name
            assert (gradient - expected_gradients[name]).abs().max() < 1e-12, name


def test_the_layouts_fillers_belong_to_the_last_run_and_attend_to_nothing():
    classifiers = [tiny_classifier(seed) for seed in range(3)]
    fixed = StackedGraphs(StackedBert(classifiers), replay=False)
    tokens = StackedTokens.of([token_batch(lengths, run) for run, lengths in enumerate(RUN_LENGTHS)])
    fixed(tokens)
    layout = fixed.layouts[1024]
    assert layout.groups.offsets.tolist() == [272, 336, 1024] and layout.groups.ends == [272, 336, 1024]
    assert layout.groups.run_of_row[336:].unique().tolist() == [2] and layout.groups.run_of_row[:272].eq(0).all()
    one_hot = layout.groups.one_hot(torch.float64)
    assert one_hot.shape == (3, 1024) and one_hot.sum(1).tolist() == [272, 64, 688]
    qkv = torch.randn(1024, 3 * 32, dtype=torch.float64)
    context = fixed.model.attention(qkv, tokens, None)
    assert context.shape == (1024, 32) and context[384:].eq(0).all() and context[:384].abs().min() > 0


@pytest.mark.parametrize("pending, captured", [(2, [400, 320]), (1, [400])])
def test_a_layout_is_captured_at_its_second_pass_from_its_first_passs_inputs(monkeypatch, pending, captured):
    """Layouts of 320, 400, 400 and 320 rows: each is recorded at its first pass and captured at its second
    (the capture replaced by the eager stages, run once on what it was given, as its warm-up passes run: on the
    layout as the step has loaded it, never the last step's); with room for one pending layout,
    the 400-row one pushes out the 320-row one, which is recorded again at its next pass."""
    monkeypatch.setattr(stacked_bert_graphs, "STACK_TOKEN_BUCKET", 80)
    monkeypatch.setattr(stacked_bert_graphs, "PENDING_LAYOUTS", pending)
    captures = []

    def capture(modules, inputs, pool):
        captures.append((modules[0].rows.groups.run_of_row.shape[0], [tuple(x.shape for x in each) for each in inputs]))
        for module, each in zip(modules, inputs):  # as a capture's warm-up passes, on the layout as it is now
            outputs = module(*each)
            outputs = outputs if isinstance(outputs, tuple) else (outputs,)
            surface = [x for x in (*each, *module.parameters()) if x.requires_grad]
            torch.autograd.grad(outputs, surface, [torch.ones_like(o) for o in outputs], allow_unused=True)
        return tuple(AutocastPass(module) for module in modules)

    monkeypatch.setattr(graphed_passes, "graphed_callables", capture)
    classifiers = [tiny_classifier(seed, dropout=0.3) for seed in range(3)]
    eager_stack, fixed_stack = StackedBert(classifiers), StackedBert(classifiers)
    fixed = StackedGraphs(fixed_stack)
    eager = _steps(eager_stack, eager_stack, [torch.Generator().manual_seed(10 + run) for run in range(3)])
    replayed = _steps(fixed, fixed_stack, [torch.Generator().manual_seed(10 + run) for run in range(3)])
    assert [rows for rows, _ in captures] == captured and fixed.captures == len(captured)
    for rows, shapes in captures:  # the tokens and positions, then each layer's context and hidden states
        assert shapes == [((rows, 3), (rows,))] + [((rows, 32), (rows, 32))] * 2
    assert list(fixed.samples) == ([] if pending == 2 else [320])
    for (logits, gradients), (expected, expected_gradients) in zip(replayed, eager):
        assert torch.equal(logits, expected)
        assert all((gradients[name] - expected_gradients[name]).abs().max() < 1e-12 for name in gradients)


def test_compiled_stages_give_the_eager_pass(monkeypatch, capsys):
    """``compiled``: each stage compiled by torch.compile (on the CPU here: Inductor's C++ kernels) before the
    capture (replaced by the compiled stages themselves): three steps of three runs with dropout in float64 give the
    eager pass's logits and gradients to 1e-10; a compiler that fails leaves one warning and the eager stages."""
    monkeypatch.setattr(graphed_passes, "graphed_callables", lambda modules, inputs, pool: tuple(
        AutocastPass(module) for module in modules))
    classifiers = [tiny_classifier(seed, dropout=0.3) for seed in range(3)]
    eager_stack = StackedBert(classifiers)
    eager = _steps(eager_stack, eager_stack, [torch.Generator().manual_seed(10 + run) for run in range(3)])
    for compiler_works in (True, False):
        if not compiler_works:
            monkeypatch.setattr(torch, "compile", lambda module: (_ for _ in ()).throw(RuntimeError("no compiler")))
        stack = StackedBert(classifiers)
        graphs = StackedGraphs(stack, compiled=True)
        replayed = _steps(graphs, stack, [torch.Generator().manual_seed(10 + run) for run in range(3)])
        assert graphs.captures == 1 and graphs.compiled == compiler_works
        warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
        assert len(warnings) == (not compiler_works) and all("--compile_stack" in line for line in warnings)
        for (logits, gradients), (expected, expected_gradients) in zip(replayed, eager):
            assert (logits - expected).abs().max() < 1e-10
            assert all((gradients[name] - expected_gradients[name]).abs().max() < 1e-10 for name in gradients)

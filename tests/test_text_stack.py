"""H text runs trained as one TextStack: each run trains as it does alone and resumes exactly."""
import torch
import torch.nn.functional as F

from stacked_bert_fixtures import RUN_LENGTHS, labels, stacked_loss, tiny_classifier, token_batch
from XRM.engine.model_stacks import ModuleStack
from XRM.engine.text_stack import TextStack

CPU = torch.device("cpu")
#: three runs' own hyper-parameters: the reference's text schedule, AdamW, each its lr and weight decay
HPARAMS = [{"optimizer": "adamw", "lr": lr, "weight_decay": decay, "num_steps": 9, "lr_schedule": "text"}
           for lr, decay in ((1e-3, 1e-4), (3e-3, 1e-2), (2e-3, 0.0))]


def _step_batches(step: int, runs: list[int]):
    """Each run's batch and labels at ``step`` (run r: RUN_LENGTHS[r]'s sizes, texts drawn from (step, r))."""
    batches = [token_batch(RUN_LENGTHS[run], 10 * step + run) for run in runs]
    return batches, [labels(len(RUN_LENGTHS[run]), 10 * step + run) for run in runs]


def _train(stack: TextStack, runs: list[int], steps: range) -> None:
    for step in steps:
        batches, y = _step_batches(step, runs)
        stack.step(stacked_loss(stack.forward(batches), y))


def test_each_stacked_run_trains_as_it_does_alone_in_float64():
    """No dropout: the stack's runs after three steps of AdamW and the text schedule are the runs trained
    one per ModuleStack, with the same learning rates and optimiser states (a checkpoint's layout). To
    float32's precision: a TextClassifier alone gives float32 logits, whatever its parameters' dtype."""
    stack = TextStack([tiny_classifier(seed) for seed in range(3)], HPARAMS, [0, 1, 2], CPU)
    _train(stack, [0, 1, 2], range(3))
    for run in range(3):
        alone = ModuleStack(tiny_classifier(run), HPARAMS[run], CPU, 0)
        for step in range(3):
            batches, y = _step_batches(step, [run])
            alone.step(F.cross_entropy(alone.forward(batches[0])[0], y[0]))
        assert stack.learning_rates()[run] == alone.learning_rates()[0] != HPARAMS[run]["lr"]
        mine, theirs = stack.model_state(run), alone.model_state(0)
        assert list(mine) == list(theirs)
        moved = max((theirs[name] - value).abs().max() for name, value in tiny_classifier(run).state_dict().items())
        assert moved > 1e-4 and all((mine[name] - theirs[name]).abs().max() < 1e-6 for name in theirs)
        saved, expected = stack.optimizer_state(run), alone.optimizer_state(0)
        assert saved["lr_scheduler"] == expected["lr_scheduler"]
        for index, state in expected["optimizer"]["state"].items():
            for key in ("exp_avg", "exp_avg_sq"):
                assert (saved["optimizer"]["state"][index][key] - state[key]).abs().max() < 1e-6


def test_a_killed_stack_resumes_exactly_with_dropout():
    """Two steps, the runs' states saved, a fresh stack (other weights, other seeds) loaded from them, two
    more steps: bitwise the stack trained four steps without a break (dropout draws included)."""
    runs = [0, 1]
    unbroken = TextStack([tiny_classifier(seed, dropout=0.2) for seed in runs], HPARAMS[:2], [5, 6], CPU)
    _train(unbroken, runs, range(4))
    first = TextStack([tiny_classifier(seed, dropout=0.2) for seed in runs], HPARAMS[:2], [5, 6], CPU)
    _train(first, runs, range(2))
    first.keep_best(torch.tensor([True, False]))
    saved = [(first.model_state(r), first.optimizer_state(r), first.best_model_state(r)) for r in runs]
    resumed = TextStack([tiny_classifier(9, dropout=0.2) for _ in runs], HPARAMS[:2], [7, 8], CPU)
    for run, (model, optimizer, best) in enumerate(saved):
        resumed.load_member(run, model, optimizer, best)
    _train(resumed, runs, range(2, 4))
    for run in runs:
        assert all(torch.equal(value, unbroken.model_state(run)[name]) for name, value in resumed.model_state(run).items())
    assert resumed.learning_rates() == unbroken.learning_rates()
    # run 0's best is its model after step 2; run 1 never improved: its best is its initial model
    assert all(torch.equal(value, saved[0][0][name]) for name, value in resumed.best_model_state(0).items())
    assert all(torch.equal(value, tiny_classifier(1, dropout=0.2).state_dict()[name])
               for name, value in resumed.best_model_state(1).items())


def test_a_run_with_dropout_trains_alike_alone_and_stacked():
    """Its dropout draws come from its own generator: run 1 in a stack of 3 and in a stack of 1 (same seed)
    ends two steps with the same weights (up to the order of sums over the stack's tokens)."""
    models = []
    for runs in ([0, 1, 2], [1]):
        stack = TextStack([tiny_classifier(seed, dropout=0.3) for seed in runs], [HPARAMS[r] for r in runs],
                          [40 + r for r in runs], CPU)
        _train(stack, runs, range(2))
        models.append(stack.model_state(runs.index(1)))
    initial = tiny_classifier(1, dropout=0.3).state_dict()
    assert max((models[1][name] - value).abs().max() for name, value in initial.items()) > 1e-4
    assert max((models[0][name] - value).abs().max() for name, value in models[1].items()) < 1e-12


def test_predictions_are_each_runs_on_the_same_texts_without_dropout():
    """What evaluation passes (a split's token rows, prepared once: ordered by length, in batches) gives every
    run's logits in the rows' order, as the run alone gives them."""
    stack = TextStack([tiny_classifier(seed, dropout=0.3) for seed in range(2)], HPARAMS[:2], [0, 1], CPU)
    batches = [token_batch([4, 9, 30], 0), token_batch([12, 1], 1)]
    logits = stack.predict(torch.cat([batch.tokens for batch in batches]))
    assert logits.shape == (2, 5, 3)
    with torch.no_grad():
        for run in range(2):
            alone = tiny_classifier(run, dropout=0.3).eval()
            expected = torch.cat([alone(batch) for batch in batches])
            assert (logits[run] - expected).abs().max() < 1e-6  # alone: float32 logits


def test_fused_adamw_updates_with_handed_over_gradients_as_its_own_step_does(monkeypatch):
    """With fused AdamW (on CUDA; forced here on the CPU), a stack's runs update through fused_adamw_step
    from their second step on, resume included, and end bitwise where torch's own step() takes them."""
    from XRM.engine import optimizers, text_stack

    monkeypatch.setattr(optimizers, "_fused", lambda optimizer_class, parameters: {"fused": True})
    handed = []
    fast = text_stack.fused_adamw_step
    monkeypatch.setattr(text_stack, "fused_adamw_step", lambda *args: handed.append(fast(*args)) or handed[-1])
    ours = TextStack([tiny_classifier(seed) for seed in range(3)], HPARAMS, [0, 1, 2], CPU)
    _train(ours, [0, 1, 2], range(2))
    resumed = TextStack([tiny_classifier(9) for _ in range(3)], HPARAMS, [0, 1, 2], CPU)
    for run in range(3):
        resumed.load_member(run, ours.model_state(run), ours.optimizer_state(run), None)
    _train(resumed, [0, 1, 2], range(2, 4))
    assert handed == [False] * 3 + [True] * 9  # step 0: no state yet; then every run, after the resume too
    monkeypatch.setattr(text_stack, "fused_adamw_step", lambda *args: False)
    theirs = TextStack([tiny_classifier(seed) for seed in range(3)], HPARAMS, [0, 1, 2], CPU)
    _train(theirs, [0, 1, 2], range(4))
    for run in range(3):
        assert all(torch.equal(value, theirs.model_state(run)[name]) for name, value in resumed.model_state(run).items())
        saved, expected = resumed.optimizer_state(run), theirs.optimizer_state(run)
        assert saved["lr_scheduler"] == expected["lr_scheduler"]
        for index, state in expected["optimizer"]["state"].items():
            assert all(torch.equal(saved["optimizer"]["state"][index][key], value) for key, value in state.items())

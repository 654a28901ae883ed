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


def _twin_loss(logits: torch.Tensor, y: list[torch.Tensor]) -> torch.Tensor:
    """Both twins' mean cross-entropies of each run (logits [H, B, classes, 2])."""
    return sum(stacked_loss(logits[..., twin], y) for twin in range(2))


def test_a_twin_run_trains_its_two_networks_as_two_runs_of_their_own_with_dropout():
    """XRM's twins: two runs of two networks each pass each run's batch through both twins, with the logits of
    a stack of four one-network runs holding the same classifiers on the runs' batches twice over (twin t of
    the run of seed s drawing its dropout from seed s + t x 2^32), bitwise; after three steps of AdamW their
    weights are those runs' (the run's one optimiser over both twins updates each parameter as theirs do)."""
    from XRM.engine.text_stack import TWIN_SEED_STRIDE

    classifiers = lambda: [tiny_classifier(seed, dropout=0.2) for seed in range(4)]  # noqa: E731
    twins = TextStack(classifiers(), HPARAMS[:2], [5, 6], CPU, networks_per_run=2)
    singles = TextStack(classifiers(), [HPARAMS[0], HPARAMS[0], HPARAMS[1], HPARAMS[1]],
                        [5, 5 + TWIN_SEED_STRIDE, 6, 6 + TWIN_SEED_STRIDE], CPU)
    for step in range(3):
        batches, y = _step_batches(step, [0, 1])
        paired, alone = twins.forward(batches), singles.forward([batch for batch in batches for _ in range(2)])
        assert paired.shape == (2, 7, 3, 2)
        for network in range(4):
            assert torch.equal(paired[network // 2, ..., network % 2], alone[network])
        twins.step(_twin_loss(paired, y))
        singles.step(stacked_loss(alone, [labels for labels in y for _ in range(2)]))
    assert twins.learning_rates() == singles.learning_rates()[::2]
    for run in range(2):
        state = twins.model_state(run)
        for twin in range(2):
            theirs = singles.model_state(2 * run + twin)
            assert max((state[f"twins.{twin}.{name}"] - value).abs().max() for name, value in theirs.items()) < 1e-12
        assert len(state) == 2 * len(singles.model_state(0))


def test_a_twin_run_keeps_a_twin_network_alones_checkpoint_layout():
    """Without dropout a twin run trains as a TwinNetwork in a ModuleStack (to float32's precision: a classifier
    alone gives float32 logits), and each reads the other's checkpoint: the same model keys, and an optimiser
    state_dict of the same groups over the same parameters' order; predictions are [H, n, classes, 2]."""
    from XRM.networks.classifiers import TwinNetwork

    twins = TextStack([tiny_classifier(seed) for seed in (0, 1)], HPARAMS[:1], [5], CPU, networks_per_run=2)
    alone = ModuleStack(TwinNetwork(tiny_classifier(0), tiny_classifier(1)), HPARAMS[0], CPU, 0)
    for step in range(3):
        batches, y = _step_batches(step, [0])
        twins.step(_twin_loss(twins.forward(batches), y))
        logits = alone.forward(batches[0])
        alone.step(sum(F.cross_entropy(logits[0, ..., twin], y[0]) for twin in range(2)))
    mine, theirs = twins.model_state(0), alone.model_state(0)
    assert list(mine) == list(theirs) and all((mine[name] - theirs[name]).abs().max() < 1e-6 for name in theirs)
    initial = tiny_classifier(1).state_dict()  # twin 1 moved, so the agreement says something
    assert max((theirs[f"twins.1.{name}"] - value).abs().max() for name, value in initial.items()) > 1e-4
    saved, expected = twins.optimizer_state(0), alone.optimizer_state(0)
    assert [group["params"] for group in saved["optimizer"]["param_groups"]] == [
        group["params"] for group in expected["optimizer"]["param_groups"]]
    assert len(saved["dropout_generator"]) == 2  # one state per twin
    resumed = TextStack([tiny_classifier(9) for _ in (0, 1)], HPARAMS[:1], [7], CPU, networks_per_run=2)
    resumed.load_member(0, theirs, expected, None)  # the ModuleStack's checkpoint
    assert all(torch.equal(value, theirs[name]) for name, value in resumed.model_state(0).items())
    back = ModuleStack(TwinNetwork(tiny_classifier(9), tiny_classifier(9)), HPARAMS[0], CPU, 0)
    back.load_member(0, mine, {key: value for key, value in saved.items() if key != "dropout_generator"}, None)
    assert all(torch.equal(value, mine[name]) for name, value in back.model_state(0).items())
    texts = torch.cat([token_batch([4, 9, 30], 0).tokens, token_batch([12, 1], 1).tokens])
    predicted, reference = twins.predict(texts), alone.predict(texts)
    assert predicted.shape == reference.shape == (1, 5, 3, 2) and (predicted - reference).abs().max() < 1e-5

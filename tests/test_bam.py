"""BAM and its ClassDiff selection rule: the auxiliary-logit step and the error-set weights on
hand-computed numbers, stacked runs against runs alone, BAM against ERM on spurious data, bad
input, and ClassDiff choosing steps and combinations on hand-built records."""
import json
import math

import pytest
import torch

from conftest import comparable
from test_two_networks import _features, _results, _sweep
from XRM.algorithms import Batch, RunData, get_algorithm_class
from XRM.algorithms.bam import amplified_logits, auxiliary_gradient, auxiliary_step
from XRM.common.errors import UserError
from XRM.data.base import SplitTensors
from XRM.engine.evaluation import StackEvaluator, class_difference
from XRM.read_results import get_args_parser
from XRM.results import records
from XRM.results.collect import collect_runs
from XRM.results.selection import best_hparams_comb, selected_record
from XRM.results.records import read_results
from XRM.runs.hparams import check_hparams, random_hparams
from XRM.runs.train import StackTrainer

LOG = math.log
F64 = torch.float64


def _hparams(amplification: float, up: float, lr: float) -> dict:
    return {name: torch.tensor([value], dtype=F64)
            for name, value in (("bam_lambda", amplification), ("bam_mu", up), ("lr", lr))}


def test_the_auxiliary_step_is_the_gradient_of_the_amplified_loss():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 3, generator=generator, dtype=F64)
    auxiliary = torch.randn(2, 5, 3, generator=generator, dtype=F64, requires_grad=True)
    y, amplification = torch.tensor([[0, 1, 2, 0, 1], [2, 2, 1, 0, 0]]), torch.tensor([3.0, 0.5], dtype=F64)
    mask = torch.tensor([[1.0, 1, 1, 1, 0], [1, 1, 0, 0, 0]], dtype=F64)
    amplified = amplified_logits(logits, auxiliary, amplification)
    losses = torch.nn.functional.cross_entropy(amplified.flatten(0, 1), y.flatten(), reduction="none").view(2, 5)
    ((losses * mask).sum(dim=1) / mask.sum(dim=1)).sum().backward()
    assert torch.allclose(auxiliary_gradient(amplified, y, mask, amplification), auxiliary.grad, atol=1e-15)
    table = torch.zeros(1, 3, 2, dtype=F64)  # a repeated row adds both gradients
    stepped = auxiliary_step(table, torch.tensor([[1, 1]]), torch.tensor([[[1.0, 2.0], [3.0, 4.0]]], dtype=F64),
                             torch.tensor([0.5], dtype=F64))
    assert stepped[0].tolist() == [[0.0, 0.0], [-2.0, -3.0], [0.0, 0.0]]


def _two_examples(stage_2: str):
    """BAM, its state and the logits of two examples and a padded position (row n = 2), T = 2 of 8 steps."""
    bam = get_algorithm_class("BAM")(2)
    run = RunData(torch.tensor([0, 1]), torch.tensor([0, 1]), 2, 2, 1, seed=0,
                  hparams={"num_steps": 8, "bam_T_fraction": 0.25, "bam_stage_2": stage_2})
    state = {key: value[None] for key, value in bam.initial_state(run).items()}
    assert state["switch_step"].tolist() == [2] and state["auxiliary"][0].tolist() == [[0.0, 0.0]] * 3
    biased = [[LOG(3), 0.0], [LOG(3), 0.0], [5.0, -5.0]]  # f predicts class 0 on both: example 1 is its error
    final = [[0.0, LOG(3)], [0.0, 0.0], [9.0, 0.0]]
    logits = torch.stack([torch.tensor(biased, dtype=F64), torch.tensor(final, dtype=F64)], dim=-1)[None]
    return bam, state, logits


def batch(step):
    """The two examples (labels 0 and 1) and the padding, at ``step``."""
    y = torch.tensor([[0, 1, 0]])
    return Batch(torch.tensor([[0, 1, 2]]), y, y, torch.tensor([[1.0, 1.0, 0.0]], dtype=F64), None, step)


def test_bam_amplifies_in_stage_1_and_up_weights_the_errors_of_f_alone_in_stage_2():
    """Two-M: two examples and a padded position (row n = 2); lambda 2, lr 0.5, mu 5, T = 2 of 8 steps."""
    bam, state, logits = _two_examples("Two-M")
    hparams = _hparams(2.0, 5.0, 0.5)

    loss, state = bam.loss(logits, batch(0), state, hparams)
    assert loss.item() == pytest.approx((LOG(4 / 3) + LOG(4)) / 2)
    # softmax(f) = [0.75, 0.25]: b_0 = -0.5 * 2 * [-0.25, 0.25] / 2, b_1 = -0.5 * 2 * [0.75, -0.75] / 2
    assert state["auxiliary"][0].tolist() == [[0.125, -0.125], [-0.375, 0.375], [0.0, 0.0]]
    loss, state = bam.loss(logits, batch(1), state, hparams)  # f + 2 b: [log 3 + 0.25, -0.25], [log 3 - 0.75, 0.75]
    expected = (LOG(1 + math.exp(-LOG(3) - 0.5)) + LOG(1 + math.exp(LOG(3) - 1.5))) / 2
    assert loss.item() == pytest.approx(expected)
    frozen = state["auxiliary"].clone()
    loss, state = bam.loss(logits, batch(2), state, hparams)
    assert loss.item() == pytest.approx((LOG(4) + 5 * LOG(2)) / 6)  # example 1, f's error, weighs mu = 5
    assert torch.equal(state["auxiliary"], frozen)  # b is stage 1's alone
    assert bam.network_updates(torch.tensor(1), state, hparams).tolist() == [[True, False]]
    assert bam.network_updates(torch.tensor(2), state, hparams).tolist() == [[False, True]]


def test_one_m_trains_both_copies_in_stage_1_and_the_copy_alone_in_stage_2():
    """One-M: before T the loss adds network 1's amplified cross-entropy (with the same b) to network 0's,
    and both networks train; b moves by network 0's gradient alone; from T on, as Two-M."""
    bam, state, logits = _two_examples("One-M")
    hparams = _hparams(2.0, 5.0, 0.5)
    assert state["one_m"].tolist() == [True] and bam.shares_initialisation({"bam_stage_2": "One-M"})
    assert not bam.shares_initialisation({"bam_stage_2": "Two-M"})
    loss, state = bam.loss(logits, batch(0), state, hparams)
    # network 0: (log 4/3 + log 4) / 2 as in Two-M; network 1 (b = 0): [0, log 3] on label 0, [0, 0] on label 1
    assert loss.item() == pytest.approx((LOG(4 / 3) + LOG(4)) / 2 + (LOG(4) + LOG(2)) / 2)
    assert state["auxiliary"][0].tolist() == [[0.125, -0.125], [-0.375, 0.375], [0.0, 0.0]]
    assert bam.network_updates(torch.tensor(1), state, hparams).tolist() == [[True, True]]
    assert bam.network_updates(torch.tensor(2), state, hparams).tolist() == [[False, True]]
    loss, state = bam.loss(logits, batch(2), state, hparams)
    assert loss.item() == pytest.approx((LOG(4) + 5 * LOG(2)) / 6)


@pytest.mark.parametrize("stage_2", ["One-M", "Two-M"])
def test_at_the_switch_one_m_continues_the_stage_1_model_and_two_m_starts_afresh(tmp_path, monkeypatch, stage_2):
    """The checkpoint of step 9's evaluation holds the weights after steps 0 .. 9, the whole of stage 1
    (T = 10 of 41 steps): One-M's network 1 is network 0, weight for weight, after ten updates each;
    Two-M's network 1 has not moved from its own initialisation (a different draw)."""
    features = _features(tmp_path, noise_dim=8)
    evaluate = StackTrainer._evaluate

    def stop_after_the_switch(trainer, step):
        if step == 18:
            raise RuntimeError("stopped")
        evaluate(trainer, step)

    monkeypatch.setattr(StackTrainer, "_evaluate", stop_after_the_switch)
    with pytest.raises(RuntimeError, match="stopped"):
        _sweep(features, tmp_path / "out", ["BAM"], {"num_steps": 41, "eval_every": 9, "bam_T_fraction": 0.25,
                                                     "bam_stage_2": stage_2}, dtype="float64", checkpoint_seconds=0.0)
    [path] = (tmp_path / "out").rglob("ckpt_*.pt")
    checkpoint = torch.load(path)
    assert checkpoint["step"] == 9
    assert checkpoint["optimizer"]["network_steps"].tolist() == [10.0, 10.0 if stage_2 == "One-M" else 0.0]
    model = checkpoint["model"]
    same = all(torch.equal(model[f"twins.0.{name}"], model[f"twins.1.{name}"]) for name in ("weight", "bias"))
    assert same == (stage_2 == "One-M")
    assert not torch.equal(model["twins.0.weight"], torch.zeros_like(model["twins.0.weight"]))


def test_draws_stay_in_range_and_a_bad_value_is_one_line():
    for comb in range(30):
        check_hparams(random_hparams("features", "BAM", comb))
    assert random_hparams("features", "BAM", 3)["bam_stage_2"] == "One-M"  # the paper's default
    with pytest.raises(UserError, match=r"^hyper-parameter bam_stage_2 = 'One': it must be one of One-M, Two-M$"):
        check_hparams({"bam_stage_2": "One"})
    with pytest.raises(UserError, match=r"^hyper-parameter bam_lambda = 0: it must be a finite number > 0$"):
        check_hparams({"bam_lambda": 0})
    strictly = r"^hyper-parameter bam_T_fraction = 1.0: it must be a number strictly between 0 and 1$"
    with pytest.raises(UserError, match=strictly):
        check_hparams({"bam_T_fraction": 1.0})


def test_stacked_runs_equal_the_runs_alone_in_float64(tmp_path):
    features = _features(tmp_path, noise_dim=28)
    for mode, stack_size in (("stacked", None), ("alone", 1)):
        _sweep(features, tmp_path / mode, ["BAM"], {"num_steps": 61, "eval_every": 20}, dtype="float64",
               num_hparams_combs=3, stack_size=stack_size, group_labels="no")
    stacked, alone = _results(tmp_path / "stacked"), _results(tmp_path / "alone")
    assert len(stacked) == 3 and comparable(stacked) == comparable(alone)
    assert all("va_neg_class_diff" in rows[-1] for rows in stacked.values())


def test_bam_beats_erm_on_spurious_data(tmp_path):
    """ERM memorises the minority through 398 noise dimensions. Measured te_wga at the step va_wga
    selects (float32, a CPU): ERM 6.5%, BAM (One-M, the default) 94.5%, BAM Two-M 92.7% (JTT with T and
    the up-weight alike: 92.7%; at the step ClassDiff selects: ERM 0.0%, One-M 34.5%, Two-M 83.6%)."""
    features = _features(tmp_path, noise_dim=398)
    shared = {"num_steps": 601, "eval_every": 50, "lr": 1e-3, "batch_size": 32, "weight_decay": 1e-4}
    chosen = {}
    for algorithm, extra in {"ERM": {}, "BAM": {"bam_T_fraction": 0.05, "bam_lambda": 50.0, "bam_mu": 100.0}}.items():
        _sweep(features, tmp_path / algorithm, [algorithm], {**shared, **extra})
        (run_records,) = _results(tmp_path / algorithm).values()
        chosen[algorithm] = selected_record(run_records, "va_wga")["te_wga"]
    assert chosen["ERM"] < 0.2, chosen
    assert chosen["BAM"] > chosen["ERM"] + 0.4, chosen


# ---------------------------------------------------------------------------- ClassDiff

def test_class_difference_and_the_evaluators_record():
    per_class = torch.tensor([[0.9, 0.5], [0.7, 0.7], [1.0, 0.5]])
    assert class_difference(per_class[:2]).tolist() == pytest.approx([0.4, 0.0])
    assert class_difference(torch.tensor([[1.0, 0.5, 0.8]])).tolist() == pytest.approx([1.0 / 3])  # (.5 + .2 + .3) / 3
    assert class_difference(torch.tensor([[0.6]])).tolist() == [0.0]
    y = torch.tensor([0, 0, 0, 0, 1, 1])
    split = SplitTensors(torch.zeros(6, 1), y, torch.tensor([0, 1, 0, 1, 0, 1]))
    prediction = torch.tensor([0, 0, 0, 1, 0, 1])  # class 0: 3/4, class 1: 1/2
    evaluator = StackEvaluator(split, split, [torch.zeros(6, dtype=torch.long)], [None])
    metrics = evaluator(lambda x: torch.nn.functional.one_hot(prediction, 2).float()[None])
    assert metrics["va_neg_class_diff"].tolist() == pytest.approx([-0.25])


def _record(step, class_diff, va_wga=0.5, va_avg=0.8):
    return {"step": step, "va_wga": va_wga, "va_avg_acc": va_avg, "va_neg_class_diff": -class_diff,
            "te_wga": 0.1 * step / 50, "te_avg_acc": 0.8}


def test_class_diff_picks_the_step_and_the_combination_with_the_smallest_difference(tmp_path):
    run_0 = [_record(0, 0.0), _record(50, 0.3), _record(100, 0.05, va_wga=0.1), _record(150, 0.2, va_wga=0.9)]
    run_1 = [_record(0, 0.0), _record(50, 0.02, va_wga=0.2), _record(100, 0.4, va_wga=0.95)]
    assert selected_record(run_0, "va_neg_class_diff")["step"] == 100  # step 0's 0 is the untrained model
    assert selected_record(run_0, "va_wga")["step"] == 150
    for comb, rows in enumerate((run_0, run_1)):
        lines = [json.dumps({"hparams": {"lr": 0.1}})] + [json.dumps(row) for row in rows]
        (tmp_path / f"results_hpcomb_{comb}_seed0.json").write_text("\n".join(lines) + "\n")
        (tmp_path / f"done_hpcomb_{comb}_seed0").write_text("")
    runs = collect_runs(tmp_path)
    assert best_hparams_comb(runs, "va_neg_class_diff") == 1 and best_hparams_comb(runs, "va_wga") == 1
    runs[1].records[1]["va_neg_class_diff"] = -0.06  # now combination 0's 0.05 is the smallest
    assert best_hparams_comb(runs, "va_neg_class_diff") == 0
    assert records.VA_NEG_CLASS_DIFF in records.SELECTION_METRICS
    assert get_args_parser().parse_args(["--dir", "x", "--selection_criterion", "va_neg_class_diff"])


def test_bam_runs_read_back_with_class_diff_selection(tmp_path):
    """A BAM sweep's records carry the ClassDiff key, which selects a step after T."""
    features = _features(tmp_path, noise_dim=8)
    _sweep(features, tmp_path, ["BAM"], {"num_steps": 41, "eval_every": 10, "bam_T_fraction": 0.25},
           group_labels="no")
    (path,) = tmp_path.rglob("results_*.json")
    header, rows = read_results(path)
    assert [row["step"] for row in rows] == [10, 20, 30, 40]  # T = 10
    assert all(-1.0 <= row["va_neg_class_diff"] <= 0.0 for row in rows)
    assert selected_record(rows, "va_neg_class_diff")["step"] >= 10

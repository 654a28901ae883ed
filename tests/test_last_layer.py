"""Last-layer retraining (DFR, AFR): their defining steps on hand-computed numbers, what they train
and report on, their margin over ERM on a small spurious dataset, exact resume, and the order of runs."""
import math
from pathlib import Path

import pytest
from conftest import comparable, training_losses, without_training_loss
import torch
from spurious_features import write_spurious_features

from XRM.algorithms import Batch, RunData
from XRM.algorithms.last_layer import (AFR, DFR, afr_weights, balanced_subset, base_model_part, reweighting_part,
                                       validation_halves)
from XRM.common.errors import UserError
from XRM.common.sampling import build_sampler
from XRM.data.feature_file import load_features_file
from XRM.engine.model_stacks import ParameterStack
from XRM.networks.classifiers import LinearHead
from XRM.results.collect import collect_runs
from XRM.results.records import read_results
from XRM.results.selection import best_hparams_comb, selected_record
from XRM.runs.inputs import load_inputs
from XRM.runs.sweep import SweepSpec, make_runs, plan_stacks
from XRM.runs.members import member_of
from XRM.runs.train import StackTrainer, train_stack

STEPS = 201


@pytest.fixture(scope="module")
def features(tmp_path_factory) -> Path:
    """A small spurious features file: 400 training examples (10% minority), 200 validation and test
    examples (50%), 30 dimensions; ERM with the features' learning rates learns the spurious one."""
    return write_spurious_features(tmp_path_factory.mktemp("data") / "spurious.pt")


def sweep(features: Path, out: Path, phase: int, algorithms: list[str], group_labels: str, combs: int = 4,
          dtype: str = "float32", stack_size: int | None = None, hparams: dict | None = None, **options) -> None:
    """Train a sweep in this process, as main.py does (stacks of at most ``stack_size`` runs)."""
    spec = SweepSpec(phase=phase, datasets=[str(features)], algorithms=algorithms, group_labels=group_labels,
                     data_path=str(out), out_dir=str(out), num_hparams_combs=combs, device="cpu", dtype=dtype,
                     hparams_overrides={"num_steps": STEPS, "eval_every": 20, **(hparams or {})}, **options)
    for stack in plan_stacks(make_runs(spec), stack_size):
        train_stack(stack)


def selected(out: Path, algorithm: str, folder: str, metric: str = "va_wga") -> dict:
    """The selected record of the best combination of ``algorithm``'s runs."""
    runs = collect_runs(out / algorithm / "spurious" / folder)
    best = best_hparams_comb(runs, metric)
    return selected_record(next(run for run in runs if run.hparams_comb == best).records, metric)


# ------------------------------------------------------------------------------------------- DFR

def test_dfr_trains_on_a_balanced_subset_of_the_groups_drawn_from_its_seed():
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 3])  # smallest group: 2 examples
    subset = balanced_subset(groups, seed=0)
    assert len(subset) == 8 and torch.bincount(groups[subset]).tolist() == [2, 2, 2, 2]
    assert len(set(subset.tolist())) == 8
    assert torch.equal(balanced_subset(groups, seed=0), subset)  # a pure function of the seed
    assert any(not torch.equal(balanced_subset(groups, seed=s), subset) for s in range(1, 6))
    run = RunData(torch.zeros(12, dtype=torch.long), groups, 2, 4, 2, seed=0, hparams={"dfr_c": 0.5})
    assert torch.equal(DFR(2).training_pool(run), subset)  # what the engine's sampler draws from
    assert DFR(2).initial_state(run)["inverse_size"].item() == 1 / 8  # L1 weight 1 / (C n) = 1 / (0.5 * 8)
    drawn = build_sampler("uniform", groups, 3, 0, pool=subset).batches(0, 40)
    assert set(drawn.flatten().tolist()) == set(subset.tolist())


def test_validation_halves_are_fixed_disjoint_and_cover_the_validation_set():
    first, second = validation_halves(13)
    assert (len(first), len(second)) == (6, 7)
    assert set(first.tolist()).isdisjoint(second.tolist()) and set(first.tolist()) | set(second.tolist()) == set(range(13))
    assert all(torch.equal(a, b) for a, b in zip(validation_halves(13), (first, second)))
    assert [len(half) for half in validation_halves(1199)] == [599, 600]  # Waterbirds' validation set


def test_dfr_l1_penalty_by_hand():
    stack = ParameterStack([[LinearHead(2, 2)]], [{"optimizer": "sgd", "lr": 0.1, "weight_decay": 0.0}],
                           torch.float64, torch.device("cpu"))
    with torch.no_grad():
        stack.weights[0][0, 0] = torch.tensor([[1.0, -2.0], [0.5, 0.0]])
        stack.biases[0][0, 0] = torch.tensor([3.0, -3.0])  # not penalised
    state = {"inverse_size": torch.tensor([1 / 8], dtype=torch.float64)}
    penalty = DFR(2).last_layer_penalty(stack, slice(0, 1), state, {"dfr_c": torch.tensor([0.5], dtype=torch.float64)})
    assert penalty.tolist() == pytest.approx([3.5 / (0.5 * 8)])


def test_dfr_reports_validation_metrics_on_the_half_it_did_not_train_on(features, tmp_path):
    # a head still far from its optimum (accuracies below 1), so that the halves' accuracies differ
    sweep(features, tmp_path, 2, ["DFR"], "yes", combs=1, dtype="float64",
          hparams={"lr": 1e-5, "num_steps": 3, "eval_every": 1})  # measured: 0.97 / 0.98 on the halves
    directory = tmp_path / "DFR" / "spurious" / "group_labels_yes"
    best = torch.load(directory / "best_hpcomb_0_seed0.pt")
    _, run_records = read_results(directory / "results_hpcomb_0_seed0.json")
    record = next(r for r in run_records if r["step"] == best["step"])
    splits = load_features_file(features, "")
    mean, std = splits["tr"].x.double().mean(dim=0), splits["tr"].x.double().std(dim=0)
    def accuracy(x, y):
        logits = ((x.double() - mean) / std) @ best["model"]["weight"].T + best["model"]["bias"]
        return (logits.argmax(dim=1) == y).double().mean().item()
    training_half, selection_half = validation_halves(200)
    validation = splits["va"]
    on_selection_half = accuracy(validation.x[selection_half], validation.y[selection_half])
    assert record["va_avg_acc"] == pytest.approx(on_selection_half)
    assert accuracy(validation.x, validation.y) != pytest.approx(on_selection_half)  # not the whole set
    assert accuracy(validation.x[training_half], validation.y[training_half]) != pytest.approx(on_selection_half)
    assert record["te_avg_acc"] == pytest.approx(accuracy(splits["te"].x, splits["te"].y))
    assert len(training_half) == 100 and len(selection_half) == 100


# ------------------------------------------------------------------------------------------- AFR

def test_afr_weights_by_hand():
    logits = torch.tensor([[0.0, 0.0], [math.log(3), 0.0], [0.0, math.log(3)]])
    y = torch.tensor([0, 0, 1])  # true-class probabilities 0.5, 0.75, 0.75
    weights = afr_weights(logits, y, gamma=2.0)
    # exp(-2 p): e^-1, e^-1.5, e^-1.5; times n / n_y: 3/2, 3/2, 3; normalised
    raw = [1.5 * math.exp(-1.0), 1.5 * math.exp(-1.5), 3 * math.exp(-1.5)]
    assert weights.tolist() == pytest.approx([w / sum(raw) for w in raw])
    assert weights.tolist() == pytest.approx([0.354661, 0.215113, 0.430226], abs=1e-6)
    assert afr_weights(logits, y, gamma=0.0).tolist() == pytest.approx([0.25, 0.25, 0.5])  # classes balanced


def test_afr_loss_and_pull_towards_the_base_head_by_hand():
    y = torch.tensor([0, 0, 1, 1, 0, 1, 0, 1, 1, 0])
    base = {"weight": torch.tensor([[1.0, 0.0], [0.0, 1.0]]), "bias": torch.tensor([0.5, -0.5])}
    run = RunData(y, y, 2, 2, 1, seed=0, hparams={"afr_gamma": 2.0}, held_out_logits=torch.randn(10, 2),
                  base_model=base)
    afr = AFR(2)
    part = afr.training_pool(run)
    assert torch.equal(part, reweighting_part(10)) and len(part) == 2
    state = {key: value[None] for key, value in afr.initial_state(run).items()}
    expected = afr_weights(run.held_out_logits[part], y[part], 2.0) * 2
    assert state["weights"][0, part].tolist() == pytest.approx(expected.tolist())
    assert state["weights"][0].sum().item() == pytest.approx(2.0)  # zero outside the part and on padding
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0]]])
    batch_y = y[part][None]
    loss, _ = afr.loss(logits, Batch(part[None], batch_y, batch_y, torch.ones(1, 2), None, 0), state, {})
    ce = torch.nn.functional.cross_entropy(logits[0], batch_y[0], reduction="none")
    assert loss.item() == pytest.approx((expected * ce).mean().item())
    stack = ParameterStack([[LinearHead(2, 2)]], [{"optimizer": "sgd", "lr": 0.1, "weight_decay": 0.0}],
                           torch.float64, torch.device("cpu"))  # a zero head: distance 1 + 1 + 0.25 + 0.25
    penalty = afr.last_layer_penalty(stack, slice(0, 1), state, {"afr_lambda": torch.tensor([0.2], dtype=torch.float64)})
    assert penalty.tolist() == pytest.approx([0.2 * 2.5])


def test_afr_reweights_a_part_of_the_training_set_its_base_never_trained_on():
    for n, held_out in ((10, 2), (4795, 959)):  # 20%; Waterbirds' training set
        part, rest = reweighting_part(n), base_model_part(n)
        assert len(part) == held_out and len(rest) == n - held_out
        assert set(part.tolist()).isdisjoint(rest.tolist()) and len(set(part.tolist()) | set(rest.tolist())) == n


# ------------------------------------------------------------------------------------- end to end

def test_dfr_and_afr_beat_erm_on_a_spurious_dataset(features, tmp_path):
    sweep(features, tmp_path, 2, ["ERM", "DFR", "AFRBase"], "yes")
    sweep(features, tmp_path, 2, ["AFR"], "yes")
    erm, dfr, afr = (selected(tmp_path, name, "group_labels_yes")["te_wga"] for name in ("ERM", "DFR", "AFR"))
    # measured: ERM 0.0 (it learns the spurious feature), DFR 1.0, AFR 1.0 (seed 0, 4 combinations)
    assert erm <= 0.1
    assert dfr >= erm + 0.5 and afr >= erm + 0.5


def test_dfr_with_xrm_inferred_validation_groups(features, tmp_path):
    sweep(features, tmp_path, 1, ["XRM"], "no", combs=2)
    sweep(features, tmp_path, 2, ["ERM", "DFR"], str(tmp_path / "XRM"))
    erm, dfr = (selected(tmp_path, name, "group_labels_inferred", "va_gi_wga") for name in ("ERM", "DFR"))
    # measured: ERM 0.0, DFR 1.0 (XRM's cross-mistakes find the validation minority exactly here)
    assert dfr["te_wga"] >= erm["te_wga"] + 0.5 and "va_gi_wga" in dfr


def test_stacked_runs_write_what_they_write_alone(features, tmp_path):
    outputs = []
    for mode, stack_size in (("stacked", None), ("alone", 1)):
        out = tmp_path / mode
        sweep(features, out, 2, ["AFRBase"], "yes", combs=2, dtype="float64", stack_size=stack_size)
        sweep(features, out, 2, ["ERM", "AFR", "DFR"], "yes", combs=2, dtype="float64", stack_size=stack_size)
        outputs.append({str(path.relative_to(out)): read_results(path)[1] for path in sorted(out.rglob("results_*"))})
    assert len(outputs[0]) == 8 and without_training_loss(outputs[0]) == without_training_loss(outputs[1])
    assert training_losses(outputs[0]) == pytest.approx(training_losses(outputs[1]), rel=1e-12)


class _Stopped(Exception):
    pass


def test_interrupted_then_resumed_equals_unbroken(features, tmp_path, monkeypatch):
    for out in (tmp_path / "a", tmp_path / "b"):
        sweep(features, out, 2, ["AFRBase"], "yes", combs=1, dtype="float64")
    sweep(features, tmp_path / "a", 2, ["DFR", "AFR"], "yes", combs=2, dtype="float64", checkpoint_seconds=0)
    evaluate = StackTrainer._evaluate

    def stop_at_step_100(self, step):
        if step == 100:  # after the checkpoints of step 80; records of steps 0 .. 80 written
            raise _Stopped
        evaluate(self, step)

    monkeypatch.setattr(StackTrainer, "_evaluate", stop_at_step_100)
    with pytest.raises(_Stopped):
        sweep(features, tmp_path / "b", 2, ["DFR"], "yes", combs=2, dtype="float64", checkpoint_seconds=0)
    with pytest.raises(_Stopped):
        sweep(features, tmp_path / "b", 2, ["AFR"], "yes", combs=2, dtype="float64", checkpoint_seconds=0)
    monkeypatch.setattr(StackTrainer, "_evaluate", evaluate)
    assert [path for path in (tmp_path / "b").rglob("done_*") if "AFRBase" not in str(path)] == []
    sweep(features, tmp_path / "b", 2, ["DFR", "AFR"], "yes", combs=2, dtype="float64", checkpoint_seconds=0,
          resume=True)
    for algorithm in ("DFR", "AFR"):
        for comb in range(2):
            name = Path(algorithm, "spurious", "group_labels_yes", f"results_hpcomb_{comb}_seed0.json")
            unbroken, resumed = (read_results(out / name)[1] for out in (tmp_path / "a", tmp_path / "b"))
            assert comparable(resumed) == comparable(unbroken) and len(unbroken) == 11
            final = [torch.load(out / name.parent / f"ckpt_hpcomb_{comb}_seed0.pt") for out in (tmp_path / "a", tmp_path / "b")]
            assert all(torch.equal(final[0]["model"][key], final[1]["model"][key]) for key in final[0]["model"])


def _one_line_error(result, *fragments: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert all(fragment in lines[0] for fragment in fragments), lines[0]


def test_afr_before_its_base_model_is_one_line(script, features, tmp_path):
    out = tmp_path / "out"
    result = script("main.py", "--phase", "2", "--datasets", str(features), "--algorithms", "AFR",
                    "--group_labels", "yes", "--out_dir", str(out))
    _one_line_error(result, "no finished AFRBase run", f"python main.py --phase 2 --datasets {features} "
                    f"--algorithms AFRBase --group_labels yes --num_hparams_combs 10 --out_dir {out}")
    assert not out.exists()


def test_dfr_without_validation_groups_is_refused(features, tmp_path):
    with pytest.raises(UserError, match="^DFR does not take --group_labels no: use yes or a phase-1 folder$"):
        sweep(features, tmp_path / "out", 2, ["DFR"], "no")
    assert not (tmp_path / "out").exists()


def test_afr_draws_uniformly_where_the_dataset_balances_classes(tmp_path):
    content = torch.load(write_spurious_features(tmp_path / "spurious.pt"))
    train = content["tr"]
    kept = (train["y"][:, 0] == 0) | (torch.arange(len(train["y"])) % 4 == 0)  # class 1: about a fifth
    content["tr"] = {key: value[kept] for key, value in train.items()}
    torch.save(content, tmp_path / "imbalanced.pt")
    features = tmp_path / "imbalanced.pt"
    sweep(features, tmp_path, 2, ["AFRBase"], "yes", combs=1)
    spec = SweepSpec(phase=2, datasets=[str(features)], algorithms=["ERM", "AFR"], group_labels="yes",
                     data_path=str(tmp_path), out_dir=str(tmp_path), device="cpu",
                     hparams_overrides={"num_steps": STEPS, "eval_every": 20})
    shares = {}
    for stack in plan_stacks(make_runs(spec)):
        data, setups = load_inputs(stack, torch.device("cpu"))
        data.balanced_batches = True  # as CivilComments
        trainer = StackTrainer([member_of(setup, data) for setup in setups], data, torch.device("cpu"), torch.float32)
        y = data.splits["tr"].y
        part = reweighting_part(len(y))
        for member in trainer.members:
            drawn = member.sampler.batches(0, 200).flatten()
            shares[member.spec.algorithm] = y[drawn].float().mean().item()
            if member.spec.algorithm == "AFR":
                assert set(drawn.tolist()) <= set(part.tolist())
                assert abs(shares["AFR"] - y[part].float().mean().item()) < 0.05  # uniform over its part
    assert abs(shares["ERM"] - 0.5) < 0.05 and shares["AFR"] < 0.35  # ERM's draws balance the classes

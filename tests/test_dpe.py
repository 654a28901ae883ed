"""DPE (diverse prototypical ensembles): its prototype logits, ensemble rule, losses and diversity
penalty on hand-computed numbers, the members' balanced subsets, stacked runs against runs alone,
exact resume, its margin over ERM on a spurious features set, Table 1's published numbers, bad input."""
import math
from pathlib import Path

import backbone_fixtures as fx
import pytest
import torch
from conftest import comparable, training_losses, without_training_loss
from spurious_features import write_spurious_features
from test_last_layer import selected, sweep
from test_last_layer_backbones import SHORT, _write_mnist

from XRM.algorithms import Batch, RunData, get_algorithm_class
from XRM.algorithms.dpe import (ENSEMBLE_SIZE, diversity_penalty,
                                ensemble_logits, member_losses, member_subsets,
                                prototype_logits, prototype_size_penalty)
from XRM.common.errors import UserError
from XRM.results.published_numbers import published
from XRM.results.records import read_results
from XRM.results.table1_settings import (NO_GROUP_LABELS,
                                         VALIDATION_GROUPS_KNOWN, source_kind)
from XRM.runs.hparams import check_hparams, default_hparams, random_hparams
from XRM.runs.train import StackTrainer

F64 = torch.float64


@pytest.fixture(scope="module")
def features(tmp_path_factory) -> Path:
    """400 training examples (10% minority), 200 validation and test examples (50%), 30 dimensions."""
    return write_spurious_features(tmp_path_factory.mktemp("data") / "spurious.pt")


# --------------------------------------------------------------------------- the defining step

def test_prototype_logits_by_hand():
    """x = [2, 0, 1] centred and normalised is z = [1, -1, 0] / sqrt 2; prototypes [3, 0, 0] and
    [0, 0, 2] point along e1 and e3 (cosines 1 / sqrt 2 and 0); distance scale |-2| = 2."""
    x = torch.tensor([[2.0, 0.0, 1.0]], dtype=F64)
    prototypes = torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.0, 2.0]], dtype=F64)[None, None]  # [H=1, M=1, K=2, D=3]
    bias = torch.tensor([[[-2.0, 5.0]]], dtype=F64)  # only the first entry is the scale
    expected = [-2 * math.sqrt(2 - math.sqrt(2)), -2 * math.sqrt(2)]
    shared = prototype_logits(x, prototypes, bias)
    assert shared.shape == (1, 1, 1, 2) and shared.flatten().tolist() == pytest.approx(expected, abs=1e-12)
    per_run = prototype_logits(x[None], prototypes, bias)  # [H, B, D]: each run its own batch
    assert per_run.flatten().tolist() == pytest.approx(expected, abs=1e-12)
    shifted = prototype_logits(x + 7.0, 4 * prototypes, bias)  # per-example centring; prototypes' lengths do not count
    assert shifted.flatten().tolist() == pytest.approx(expected, abs=1e-12)


def test_the_ensemble_averages_the_members_probabilities():
    """Members with probabilities [0.45, 0.55], [0.45, 0.55] and [0.95, 0.05]: two of three vote class 1,
    but the mean probability, [0.6167, 0.3833], picks class 0."""
    probabilities = torch.tensor([[0.45, 0.55], [0.45, 0.55], [0.95, 0.05]], dtype=F64)
    logits = (probabilities.log() + torch.tensor([[0.3], [-1.0], [2.0]], dtype=F64)).T[None, None]  # [1, 1, K, M]
    ensemble = ensemble_logits(logits)
    assert ensemble.shape == (1, 1, 2)
    assert ensemble.exp().flatten().tolist() == pytest.approx([1.85 / 3, 1.15 / 3], abs=1e-12)
    assert ensemble.argmax(dim=-1).item() == 0


def test_member_losses_use_each_members_subset_and_the_entropic_scale():
    """Entropic scale 2 turns logits [0, log(3) / 2] into [0, log 3]: softmax [1/4, 3/4]. Member 0
    trains on examples 0 and 1, member 1 on example 1 only; position 2 is padding."""
    half = math.log(3) / 2
    member_logits = torch.tensor([[0.0, half], [0.0, half], [9.0, 0.0]], dtype=F64)
    logits = torch.stack([member_logits, member_logits.flip(-1)], dim=-1)[None]  # [1, B=3, K=2, M=2]
    y = torch.tensor([[1, 0, 0]])
    membership = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [1.0, 1.0]]], dtype=F64)
    mask = torch.tensor([[1.0, 1.0, 0.0]], dtype=F64)
    losses = member_losses(logits, y, membership, mask, torch.tensor([2.0], dtype=F64))
    # member 0: example 0 (class 1, p = 3/4) and example 1 (class 0, p = 1/4); member 1: example 1, p = 3/4
    assert losses.tolist() == [pytest.approx([(math.log(4 / 3) + math.log(4)) / 2, math.log(4 / 3)], abs=1e-12)]


def test_dpe_loss_sums_its_members_and_penalties_follow_the_prototypes():
    dpe = get_algorithm_class("DPE")(2)
    n = 4
    run = RunData.from_labels(torch.tensor([0, 0, 1, 1]), torch.zeros(n, dtype=torch.long), 2, seed=0, hparams={})
    state = {key: value[None] for key, value in dpe.initial_state(run).items()}
    assert state["membership"].shape == (1, n + 1, ENSEMBLE_SIZE) and state["membership"][0, n].sum() == 0
    logits = torch.zeros(1, 2, 2, ENSEMBLE_SIZE, dtype=F64)
    batch = Batch(torch.tensor([[0, 2]]), torch.tensor([[0, 1]]), torch.tensor([[0, 1]]),
                  torch.ones(1, 2, dtype=F64), None, 0)
    hparams = {name: torch.tensor([value], dtype=F64) for name, value in (
        ("dpe_entropic_scale", 30.0), ("dpe_diversity", 0.0), ("dpe_diversity_decay", 0.05),
        ("dpe_prototype_decay", 10.0))}
    loss, _ = dpe.loss(logits, batch, state, hparams)
    assert loss.item() == pytest.approx(ENSEMBLE_SIZE * math.log(2))  # every member sees both of its examples
    prototypes = torch.zeros(1, 2, 2, 3, dtype=F64)
    prototypes[0, 0, 0] = torch.tensor([1.0, 2.0, 2.0], dtype=F64)  # length^2 9; the others 0
    # w times each member's mean squared length over the K = 2 classes, summed: 10 * 9 / 2
    assert prototype_size_penalty(prototypes, hparams["dpe_prototype_decay"]).item() == pytest.approx(45.0)


def test_diversity_penalty_by_hand_and_only_later_members_move():
    """D = 3 (D - 1 = 2), one class; p0 = [1, 0, 0], p1 = [2, 1, 0], p2 = [1, 1, 1]; c = 2, alpha = 0.5.
    Member 1: |<p1, p0>| / 2 / 2 = 0.5, weight c = 2; member 2: (<p2, p0> + <p2, p1>) / 2 / 3 = 2/3,
    weight c / (1 + alpha) = 4/3: 1 + 8/9."""
    prototypes = torch.tensor([[1.0, 0.0, 0.0], [2.0, 1.0, 0.0], [1.0, 1.0, 1.0]], dtype=F64)[None, :, None]
    prototypes.requires_grad_(True)
    penalty = diversity_penalty(prototypes, torch.tensor([2.0], dtype=F64), torch.tensor([0.5], dtype=F64))
    assert penalty.item() == pytest.approx(1 + 8 / 9)
    penalty.sum().backward()
    # the earlier members are held fixed in a later member's term: member 0 gets no gradient;
    # member 1: 2 * p0 / (2 * 2); member 2: (4/3) (p0 + p1) / (2 * 3)
    assert prototypes.grad[0, 0, 0].tolist() == [0.0, 0.0, 0.0]
    assert prototypes.grad[0, 1, 0].tolist() == pytest.approx([0.5, 0.0, 0.0])
    assert prototypes.grad[0, 2, 0].tolist() == pytest.approx([2 / 3, 2 / 9, 0.0])
    # the absolute value is taken of the mean over classes, as the authors' code does: opposite
    # similarities of two classes cancel
    opposite = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, -1.0]]], dtype=F64)[None]  # [1, M=2, K=2, D=2]
    assert diversity_penalty(opposite, torch.tensor([1.0], dtype=F64), torch.tensor([0.0], dtype=F64)).item() == 0.0


def test_each_member_trains_on_its_own_balanced_subset():
    groups = torch.tensor([0] * 10 + [1] * 3 + [2] * 6 + [3] * 4)
    membership = member_subsets(groups, seed=5)
    assert membership.shape == (len(groups), ENSEMBLE_SIZE)
    for member in range(ENSEMBLE_SIZE):
        chosen = groups[membership[:, member] == 1]
        assert torch.bincount(chosen, minlength=4).tolist() == [3, 3, 3, 3]  # the smallest group's size
    assert len({tuple(column.tolist()) for column in membership.T}) > 1  # the subsets differ
    assert torch.equal(membership, member_subsets(groups, seed=5))
    assert not torch.equal(membership, member_subsets(groups, seed=6))
    dpe = get_algorithm_class("DPE")(2)
    run = RunData(groups % 2, groups, 2, 4, 2, seed=5, hparams={})
    assert dpe.training_pool(run).tolist() == membership.sum(dim=1).nonzero().flatten().tolist()


def test_initial_prototypes_and_distance_scales():
    dpe = get_algorithm_class("DPE")(2)
    torch.manual_seed(0)
    networks = [torch.nn.Linear(2000, 2) for _ in range(ENSEMBLE_SIZE)]
    dpe.initialise_networks(networks, {})
    weights = torch.stack([network.weight for network in networks])
    assert weights.std().item() == pytest.approx(0.01, rel=0.05)
    assert all(network.bias.tolist() == [1.0, 0.0] for network in networks)


# ------------------------------------------------------------------------------------- end to end

def test_dpe_beats_erm_on_a_spurious_dataset_with_and_without_validation_groups(features, tmp_path):
    """Measured te_wga at the step va_wga selects (float32, one combination): ERM 0.0 (it learns the
    spurious feature), DPE 1.0 with validation groups and 1.0 with the classes alone."""
    sweep(features, tmp_path, 2, ["ERM"], "yes", combs=1)
    sweep(features, tmp_path, 2, ["DPE"], "yes", combs=1)
    sweep(features, tmp_path, 2, ["DPE"], "no", combs=1)
    erm = selected(tmp_path, "ERM", "group_labels_yes")["te_wga"]
    with_groups = selected(tmp_path, "DPE", "group_labels_yes")["te_wga"]
    classes_only = selected(tmp_path, "DPE", "group_labels_no")["te_wga"]
    assert erm <= 0.1
    assert with_groups >= erm + 0.6 and classes_only >= erm + 0.6, (erm, with_groups, classes_only)


def test_stacked_runs_write_what_they_write_alone(features, tmp_path):
    outputs = []
    for mode, stack_size in (("stacked", None), ("alone", 1)):
        out = tmp_path / mode
        sweep(features, out, 2, ["DPE"], "yes", combs=2, dtype="float64", stack_size=stack_size,
              hparams={"num_steps": 41})
        outputs.append({str(path.relative_to(out)): read_results(path)[1] for path in sorted(out.rglob("results_*"))})
    assert len(outputs[0]) == 2 and without_training_loss(outputs[0]) == without_training_loss(outputs[1])
    assert training_losses(outputs[0]) == pytest.approx(training_losses(outputs[1]), rel=1e-12)
    best = torch.load(next((tmp_path / "stacked").rglob("best_hpcomb_0_seed0.pt")))["model"]
    assert best[f"twins.{ENSEMBLE_SIZE - 1}.weight"].shape == (2, 30)  # M members of K prototypes each


class _Stopped(Exception):
    pass


def test_interrupted_then_resumed_equals_unbroken(features, tmp_path, monkeypatch):
    options = {"combs": 1, "dtype": "float64", "checkpoint_seconds": 0, "hparams": {"num_steps": 81}}
    sweep(features, tmp_path / "a", 2, ["DPE"], "yes", **options)
    evaluate = StackTrainer._evaluate

    def stop_at_step_60(self, step):
        if step == 60:  # after the checkpoint of step 40
            raise _Stopped
        evaluate(self, step)

    monkeypatch.setattr(StackTrainer, "_evaluate", stop_at_step_60)
    with pytest.raises(_Stopped):
        sweep(features, tmp_path / "b", 2, ["DPE"], "yes", **options)
    monkeypatch.setattr(StackTrainer, "_evaluate", evaluate)
    sweep(features, tmp_path / "b", 2, ["DPE"], "yes", resume=True, **options)
    name = Path("DPE", "spurious", "group_labels_yes", "results_hpcomb_0_seed0.json")
    unbroken, resumed = (comparable(read_results(out / name)[1]) for out in (tmp_path / "a", tmp_path / "b"))
    assert resumed == unbroken and len(unbroken) == 5
    final = [torch.load(out / name.parent / "ckpt_hpcomb_0_seed0.pt")["model"] for out in (tmp_path / "a", tmp_path / "b")]
    assert all(torch.equal(final[0][key], final[1][key]) for key in final[0])


def test_dpe_on_the_embeddings_of_a_trained_colormnist_mlp(tmp_path):
    _write_mnist(tmp_path / "data")
    out = tmp_path / "out"
    common = ["--phase", "2", "--datasets", "ColorMNIST", "--data_path", str(tmp_path / "data"), "--out_dir", str(out),
              "--group_labels", "yes", "--device", "cpu", "--hparams", SHORT]
    assert fx.run_main([*common, "--algorithms", "ERM"]) == 0
    assert fx.run_main([*common, "--algorithms", "DPE"]) == 0
    folder = out / "DPE" / "ColorMNIST" / "group_labels_yes"
    header, rows = fx.records(folder / "results_hpcomb_0_seed0.json")
    assert header["inputs_used"] == "embeddings" and [r["step"] for r in rows] == [0, 2, 4]
    assert all(abs(r["va_avg_acc"] * 50 - round(r["va_avg_acc"] * 50)) < 1e-4 for r in rows)  # the selection half: 50
    best = torch.load(folder / "best_hpcomb_0_seed0.pt")["model"]
    assert sorted(best) == sorted(f"twins.{m}.{name}" for m in range(ENSEMBLE_SIZE) for name in ("weight", "bias"))
    assert best["twins.0.weight"].shape == (2, 390)  # the MLP's hidden layer


# ------------------------------------------------------------------------------- protocol, input

def test_table_1_serves_and_prints_dpe_in_both_settings():
    dpe = get_algorithm_class("DPE")
    assert source_kind(dpe, VALIDATION_GROUPS_KNOWN, true_groups=False) == "yes"
    assert source_kind(dpe, NO_GROUP_LABELS, true_groups=False) == "inferred"
    assert published("DPE", VALIDATION_GROUPS_KNOWN, "CelebA", "yes").worst_group == 90.3
    assert published("DPE", NO_GROUP_LABELS, "Waterbirds", "inferred").worst_group == 94.1
    assert published("DPE", NO_GROUP_LABELS, "CivilComments", "no").worst_group == 68.9
    assert published("DPE", VALIDATION_GROUPS_KNOWN, "CelebA", "no") is None


def test_defaults_draws_and_a_bad_value_is_one_line():
    defaults = default_hparams("features", "DPE")
    assert (defaults["dpe_entropic_scale"], defaults["dpe_diversity"], defaults["lr"], defaults["weight_decay"]) == (
        30.0, 5e4, 1e-3, 0.0)
    for comb in range(30):
        check_hparams(random_hparams("features", "DPE", comb))
    with pytest.raises(UserError, match=r"^hyper-parameter dpe_entropic_scale = 0: it must be a finite number > 0$"):
        check_hparams({"dpe_entropic_scale": 0})
    with pytest.raises(UserError, match=r"^hyper-parameter dpe_diversity = -1: it must be a finite number >= 0$"):
        check_hparams({"dpe_diversity": -1})

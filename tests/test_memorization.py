"""Memorisation scores (mat/memorization.py, mat/memorization_study.py) and memorization_analysis.py."""
import json
import re

import backbone_fixtures as fx
import memorization_fixtures as data
import pytest
import torch
from PIL import Image

from mat.cli import memorization_command as analysis
from mat.figures.memorization_figure import BIN_WIDTH, MARGIN, memorization_figure
from mat.memorization import group_members, memorization_scores, random_halves, summarise_by_group, train_on_halves
from XRM.api import infer_groups
from XRM.cli.entry_point import call_main
from XRM.common.errors import UserError
from XRM.data.metadata_table import table_from_rows, write_metadata_csv
from XRM.networks.classifiers import LinearHead
from XRM.runs.hparams import default_hparams

#: short runs that still fit every half: 300 steps of SGD at lr 0.01 on 100 examples of 402 dimensions
SHORT = {"num_steps": 300, "lr": 0.01}


def test_a_hand_checked_four_example_case():
    # models 0 and 1 hold complementary halves, and so do models 2 and 3
    held_in = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 1, 0], [0, 1, 0, 1]], dtype=torch.bool)
    correct = torch.tensor([[1, 0, 1, 1], [0, 1, 1, 1], [1, 0, 1, 1], [0, 1, 1, 0]], dtype=torch.bool)
    result = memorization_scores(correct, held_in)
    # example 0: held in by models 0, 2 (both right), held out by 1, 3 (both wrong): 1 - 0
    # example 1: in 0, 3 (wrong, right), out 1, 2 (right, wrong): 0.5 - 0.5
    # example 2: right everywhere: 1 - 1; example 3: in 1, 3 (right, wrong), out 0, 2 (right): 0.5 - 1
    assert result.held_in_acc.tolist() == [1.0, 0.5, 1.0, 0.5]
    assert result.held_out_acc.tolist() == [0.0, 0.5, 1.0, 1.0]
    assert result.scores.tolist() == [1.0, 0.0, 0.0, -0.5]
    # an example no model held out has no score
    assert memorization_scores(correct[:1, :1], held_in[:1, :1]).scores.isnan().all()


def test_halves_come_in_complementary_pairs():
    halves = random_halves(7, 6, seed=3)
    assert halves.shape == (6, 7)
    assert (halves[0::2] ^ halves[1::2]).all()  # rows 2k and 2k + 1 never share an example
    assert halves[0::2].sum(dim=1).tolist() == [3, 3, 3]
    assert halves.sum(dim=0).tolist() == [3] * 7  # every example is held in by M / 2 models
    assert not torch.equal(halves[0], halves[2])
    assert torch.equal(halves, random_halves(7, 6, seed=3))
    for bad in (0, 3):
        with pytest.raises(UserError, match=f"the number of models is {bad}: give an even number >= 2"):
            random_halves(7, bad, seed=0)


@pytest.mark.parametrize("seed", [0, 1])
def test_erm_memorises_the_minority_and_mat_less(seed):
    train = data.spurious_splits(seed)["tr"]
    minority = train.a != train.y
    halves = random_halves(len(train), 8, seed)
    held_out = infer_groups(train.x, train.y, hparams={"lr": 0.01}, num_steps=300, seed=seed).held_out_logits
    means = {}
    for algorithm in ("ERM", "MAT"):
        hparams = {**default_hparams("synthetic", algorithm), **SHORT}
        result = train_on_halves(algorithm, train.x, train.y, halves, lambda: [LinearHead(402, 2)], hparams, seed, 2,
                                 held_out if algorithm == "MAT" else None)
        assert result.held_in_acc.min() == 1.0  # every model fits its half, minority included
        means[algorithm] = (result.scores[minority].mean().item(), result.scores[~minority].mean().item())
    # measured over seeds 0-4: ERM minority 0.96-1.00, majority 0.00; MAT minority 0.56-0.84, majority <= 0.006
    assert means["ERM"][0] >= means["ERM"][1] + 0.8
    assert means["ERM"][1] <= 0.02 and means["MAT"][1] <= 0.02
    assert means["MAT"][0] <= means["ERM"][0] - 0.1


def test_diverged_models_are_a_user_error():
    train = data.spurious_splits(seed=0, n=40, noise_dim=4)["tr"]
    hparams = {**default_hparams("synthetic", "ERM"), "num_steps": 20, "lr": 1e30, "batch_size": 8}
    with pytest.raises(UserError, match=re.escape("ERM: model(s) 0, 1 diverged (weights no longer finite); lower")):
        train_on_halves("ERM", train.x, train.y, random_halves(40, 2, 0), lambda: [LinearHead(6, 2)], hparams, 0, 2)


def test_group_summaries_use_y_a_keys_and_the_halfway_median():
    y, a = torch.tensor([0, 0, 1, 1, 0, 0]), torch.tensor([0, 1, 0, 0, 0, 0])
    values = torch.tensor([0.0, 1.0, 0.5, 0.25, 0.2, 0.4])
    assert list(group_members(y, a)) == ["y0_a0", "y0_a1", "y1_a0"]
    summary = summarise_by_group(values, y, a)
    assert summary["y0_a0"] == pytest.approx({"mean": 0.2, "median": 0.2, "n": 3})
    assert summary["y1_a0"] == pytest.approx({"mean": 0.375, "median": 0.375, "n": 2})
    assert summary["y0_a1"] == {"mean": 1.0, "median": 1.0, "n": 1}


def _phase_1(tmp_path, features):
    hparams = '{"num_steps": 300, "eval_every": 100, "lr": 0.01}'
    assert fx.run_main(fx.main_args("--phase", "1", "--datasets", str(features), "--out_dir", str(tmp_path / "out"),
                                    "--hparams", hparams)) == 0
    return tmp_path / "out" / "XRM"


def test_cli_writes_scores_json_and_figure_for_erm_and_mat(script, tmp_path):
    splits = data.spurious_splits(seed=0, n=100, noise_dim=200)
    features = data.write_features_file(tmp_path / "mine.pt", splits)
    out_dir = tmp_path / "memo"
    result = script("memorization_analysis.py", "--dataset", str(features), "--phase_1_dir", str(_phase_1(tmp_path, features)),
                    "--num_models", "4", "--hparams", json.dumps({**SHORT, "batch_size": 32}), "--device", "cpu", "--out_dir", str(out_dir))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == ["memorization.json", "memorization.png", "scores.pt"]
    summary = json.loads((out_dir / "memorization.json").read_text())
    assert list(summary) == ["ERM", "MAT"]
    train = splits["tr"]
    counts = {key: int(members.sum()) for key, members in group_members(train.y, train.a).items()}
    assert set(counts) == {"y0_a0", "y0_a1", "y1_a0", "y1_a1"} and sum(counts.values()) == 100
    for entry in summary.values():
        assert set(entry) == {"per_group", "held_in_acc", "held_out_acc", "hparams"}
        assert {key: value["n"] for key, value in entry["per_group"].items()} == counts
        assert set(entry["held_in_acc"]) == set(entry["held_out_acc"]) == set(counts)
        assert all(set(value) == {"mean", "median", "n"} for value in entry["per_group"].values())
        assert entry["hparams"]["num_steps"] == 300 and entry["hparams"]["lr"] == 0.01
    assert summary["MAT"]["hparams"]["tau"] == 0.1  # the family's defaults, then the overrides
    scores = torch.load(out_dir / "scores.pt")
    assert set(scores["scores"]) == {"ERM", "MAT"} and scores["scores"]["ERM"].shape == (100,)
    assert torch.equal(scores["y"], train.y) and torch.equal(scores["a"], train.a)
    for group, members in group_members(train.y, train.a).items():  # the JSON summarises scores.pt
        assert summary["ERM"]["per_group"][group]["mean"] == pytest.approx(scores["scores"]["ERM"][members].mean().item())
    minority = ["y0_a1", "y1_a0"]
    assert min(summary["ERM"]["per_group"][g]["mean"] for g in minority) >= 0.5
    with Image.open(out_dir / "memorization.png") as png:
        assert png.format == "PNG" and png.width > png.height
    table = result.stdout.splitlines()
    assert table[1].split() == ["group", "n", "ERM", "mean", "median", "held-in", "held-out",
                                "MAT", "mean", "median", "held-in", "held-out"]
    assert [line.split()[0] for line in table[2:6]] == ["y0_a0", "y0_a1", "y1_a0", "y1_a1"]


def test_the_figure_gives_each_group_its_own_panel_and_fits_the_axis_to_the_scores():
    # two majorities (scores 0) and two minorities (ERM near 1, MAT spread), sizes 6, 3, 2, 5
    y = torch.tensor([0] * 6 + [0] * 3 + [1] * 2 + [1] * 5)
    a = torch.tensor([0] * 6 + [1] * 3 + [0] * 2 + [1] * 5)
    erm = torch.tensor([0.0] * 6 + [1.0, 0.9, 1.0] + [1.0, 0.8] + [0.0] * 4 + [-0.1])
    mat = torch.tensor([0.0] * 6 + [0.2, 0.5, 0.3] + [0.6, 0.4] + [0.0] * 5)
    figure = memorization_figure({"ERM": erm, "MAT": mat}, y, a)
    axes = figure.get_axes()
    assert len(axes) == 2 * 4  # a row per algorithm, a column per group: no group drawn over another
    sizes = {"y0_a0": 6, "y0_a1": 3, "y1_a0": 2, "y1_a1": 5}
    for row, (algorithm, scores) in enumerate((("ERM", erm), ("MAT", mat))):
        for column, (group, size) in enumerate(sizes.items()):
            axis = axes[4 * row + column]
            labels = [text.get_text() for text in axis.get_legend().get_texts()]
            members = ((y == int(group[1])) & (a == int(group[-1])))
            assert labels == [f"{group}: n = {size}, mean {scores[members].mean().item():.2f}"]
            assert axis.get_title() == f"{algorithm}, {group}"
            heights = [patch.get_height() for patch in axis.patches]
            assert sum(heights) == pytest.approx(1.0)  # every example of the group falls in a bin, as a fraction
    low, high = axes[0].get_xlim()  # shared: the scores' range, -0.1 .. 1.0, plus half a bin and the margin
    assert low == pytest.approx(-0.1 - BIN_WIDTH / 2 - MARGIN) and high == pytest.approx(1.0 + BIN_WIDTH / 2 + MARGIN)
    assert all(axis.get_xlim() == (low, high) for axis in axes)
    only_positive = memorization_figure({"MAT": mat}, y, a).get_axes()[0].get_xlim()
    assert only_positive == pytest.approx((-BIN_WIDTH / 2 - MARGIN, 0.6 + BIN_WIDTH / 2 + MARGIN))  # no empty half


def test_cli_on_the_builtin_synthetic_dataset(capsys, tmp_path):
    args = analysis.get_args_parser().parse_args(["--dataset", "Synthetic", "--algorithms", "ERM", "--num_models", "2",
                                                  "--hparams", '{"num_steps": 5}', "--device", "cpu",
                                                  "--out_dir", str(tmp_path)])
    assert call_main(analysis.main, args) == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "memorization.json").read_text())
    assert list(summary) == ["ERM"]
    # the built-in training split: 1000 examples, 10% minority
    assert {k: v["n"] for k, v in summary["ERM"]["per_group"].items()} == {
        "y0_a0": 438, "y0_a1": 58, "y1_a0": 42, "y1_a1": 462}


@pytest.mark.parametrize("options, message", [
    (["--dataset", "Synthetic", "--num_models", "3"], "the number of models is 3: give an even number >= 2"),
    (["--dataset", "Synthetic"], "MAT trains on phase-1 held-out logits: pass --phase_1_dir"),
    (["--dataset", "Nope", "--algorithms", "ERM"], "unknown dataset 'Nope'"),
    (["--dataset", "Synthetic", "--phase_1_dir", "{tmp}/none"], "no phase-1 results in"),
    (["--dataset", "Synthetic", "--algorithms", "ERM", "--hparams", '{"learning_rate": 1}'],
     "unknown hyper-parameter(s) learning_rate"),
    (["--dataset", "Synthetic", "--algorithms", "ERM", "--hparams", '{"lr": -1}'], "hyper-parameter lr = -1"),
    (["--dataset", "Synthetic", "--algorithms", "ERM", "--hparams", "[1]"], "--hparams must be a JSON object"),
    (["--dataset", "Synthetic", "--seed", "-1"], "--seed -1: give an integer from 0 to 2**63 - 1"),
    (["--dataset", "Synthetic", "--seed", str(2**64)], f"--seed {2**64}: give an integer from 0 to 2**63 - 1"),
    (["--dataset", "Synthetic", "--algorithms", "ERM", "--hparams", '{"tau": 0.01}'],
     "unknown hyper-parameter(s) tau; valid: batch_size, eval_every, lr, num_steps, optimizer, sgd_momentum"),
    (["--dataset", "Synthetic", "--algorithms", "ERM", "--hparams", '{"num_steps": 1}'],
     "hyper-parameter num_steps = 1: it must be an integer >= 2"),
    (["--dataset", "Synthetic", "--algorithms", "ERM", "--hparams", '{"batch_size": 501}'],
     "batch_size = 501 is larger than a half of the training set (500 examples), which each model trains on; "
     "lower it with --hparams '{\"batch_size\": 500}'"),
])
def test_bad_input_gets_one_line_and_writes_nothing(capsys, tmp_path, options, message):
    out_dir = tmp_path / "memo"
    options = [option.replace("{tmp}", str(tmp_path)) for option in options]
    args = analysis.get_args_parser().parse_args([*options, "--device", "cpu", "--out_dir", str(out_dir)])
    assert call_main(analysis.main, args) == 2  # what run_cli exits with
    stderr = capsys.readouterr().err
    assert len(stderr.splitlines()) == 1 and stderr.startswith("error: ")
    assert message in stderr
    assert not out_dir.exists()


def test_the_exit_status_of_bad_input_is_2(script, tmp_path):
    result = script("memorization_analysis.py", "--dataset", "Synthetic", "--num_models", "0", "--out_dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: the number of models is 0: give an even number >= 2 (complementary halves)"]


def test_a_dataset_that_fine_tunes_a_backbone_is_refused(capsys, tmp_path):
    names = [f"pics/{i}.jpg" for i in range(len(fx.IMAGE_ROWS))]
    fx.write_jpegs(tmp_path / "mine", names)
    csv = tmp_path / "mine" / "mine.csv"
    write_metadata_csv(table_from_rows(list(range(len(names))), names, *zip(*fx.IMAGE_ROWS)), csv)
    args = analysis.get_args_parser().parse_args(["--dataset", str(csv), "--algorithms", "ERM", "--device", "cpu",
                                                  "--out_dir", str(tmp_path / "memo")])
    assert call_main(analysis.main, args) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: {csv} trains a backbone on images here; memorisation scores train many small models: pass "
        "--inputs features (a features.pt under --data_path)"]


def test_a_registered_features_dataset_reads_its_features_file(capsys, tmp_path):
    splits = data.spurious_splits(seed=0, n=140, noise_dim=6)
    data.write_features_file(tmp_path / "data" / "waterbirds" / "features.pt", splits)
    args = analysis.get_args_parser().parse_args([
        "--dataset", "Waterbirds", "--algorithms", "ERM", "--num_models", "2", "--data_path", str(tmp_path / "data"),
        "--hparams", '{"num_steps": 5}', "--device", "cpu", "--out_dir", str(tmp_path / "memo")])
    assert call_main(analysis.main, args) == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "memo" / "memorization.json").read_text())["ERM"]
    assert summary["hparams"]["optimizer"] == "sgd" and summary["hparams"]["lr"] == 1e-3  # the features defaults
    train = splits["tr"]
    assert {k: v["n"] for k, v in summary["per_group"].items()} == {
        key: int(members.sum()) for key, members in group_members(train.y, train.a).items()}


def test_colormnist_trains_its_mlps_as_one_stack(capsys, tmp_path):
    from test_colormnist import _write_mnist  # tiny MNIST files in the real IDX format

    _write_mnist(tmp_path / "data", n_train=240, n_test=100)
    out_dir = tmp_path / "memo"
    args = analysis.get_args_parser().parse_args([
        "--dataset", "ColorMNIST", "--algorithms", "ERM", "--num_models", "2", "--data_path", str(tmp_path / "data"),
        "--hparams", '{"num_steps": 5}', "--device", "cpu", "--out_dir", str(out_dir)])
    assert call_main(analysis.main, args) == 0, capsys.readouterr().err
    summary = json.loads((out_dir / "memorization.json").read_text())["ERM"]
    assert summary["hparams"]["optimizer"] == "adam"  # the MLP family's defaults
    # 200 training images: 100 per environment (the attribute), split by label
    counts = {key: value["n"] for key, value in summary["per_group"].items()}
    assert sum(counts.values()) == 200 and counts["y0_a0"] + counts["y1_a0"] == 100
    assert torch.load(out_dir / "scores.pt")["scores"]["ERM"].shape == (200,)

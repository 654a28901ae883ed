"""Figure 1's experiment (mat/figures/interpretable.py, mat/figures/interpretable_figure.py) and its CLI."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import refusal_line
from PIL import Image

from mat.cli import figure1_command as script
from mat.figures.interpretable import (ACCURACY_KEYS, RUNS, FullBatchRun, GroupCorrect, InterpretableConfig,
                                       make_splits, run, sgd_hparams, total_epochs)
from mat.figures.interpretable_figure import boundary_line, class_one_probability, plane_grid
from XRM.common.devices import resolve_device
from XRM.common.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
#: a shortened experiment: fewer examples, noise dimensions and epochs (d still > n, so
#: ERM can memorise); measured minority test accuracy over seeds 0-2: ERM sigma = 0
#: 0.99-1.00, ERM sigma = 0.5 0.00-0.03, MAT sigma = 0.5 0.95-0.97
SHORT = {"n": 200, "noise_dim": 400, "epochs": 300, "xrm_epochs": 300}


def test_splits_have_the_paper_minorities_and_share_features_across_sigma():
    config = InterpretableConfig(n=200, noise_dim=5)
    noisy_train, noisy_test = make_splits(config, sigma=0.5)
    clean_train, _ = make_splits(config, sigma=0.0)
    assert noisy_train.x.shape == (200, 7) and noisy_test.x.shape == (200, 7)
    assert (noisy_train.a != noisy_train.y).sum().item() == 20  # 10% minority
    assert (noisy_test.a != noisy_test.y).sum().item() == 100  # 50% minority
    assert torch.equal(noisy_train.x[:, :2], clean_train.x[:, :2])
    assert torch.equal(noisy_train.y, clean_train.y)
    assert torch.count_nonzero(clean_train.x[:, 2:]) == 0
    # the spurious feature x_a points to class a: positive for a = 0, negative for a = 1
    assert torch.equal(noisy_train.x[:, 1] > 0, noisy_train.a == 0)


def test_group_correct_counts_majority_and_minority_hits():
    config = InterpretableConfig(n=20, noise_dim=1)
    train, _ = make_splits(config, sigma=0.0)
    # predict the class x_a points to: every majority example right, every minority one wrong
    logits = torch.stack([train.x[:, 1], -train.x[:, 1]], dim=1)
    counter = GroupCorrect(train)
    assert counter(logits).tolist() == [18.0, 0.0]
    assert counter.sizes().tolist() == [18.0, 2.0]


@pytest.mark.parametrize("seed", [0, 1])
def test_memorisation_hurts_erm_and_mat_recovers_the_minority(seed):
    config = InterpretableConfig(seed=seed, **SHORT)
    results = {}
    for name in RUNS:
        result, twins = run(name, config, CPU)
        results[name] = result.metrics()
        assert result.accuracies.shape == (config.epochs + 1, 4)
        assert result.plane_weights.shape == (config.epochs + 1, 2, 2)
        # every run fits its training set, minority included (ERM_sigma by memorising it)
        assert results[name]["maj_tr"] >= 0.95 and results[name]["min_tr"] >= 0.95
    assert results["ERM_sigma0"]["min_te"] >= 0.95
    assert results["ERM_sigma"]["min_te"] <= 0.2
    assert results["MAT_sigma"]["min_te"] >= results["ERM_sigma"]["min_te"] + 0.6
    # the twins' cross-mistakes are the minority: what MAT's shift is built from
    assert twins.recall >= 0.9 and twins.precision >= 0.9


def test_one_full_batch_erm_step_is_plain_sgd_from_zero():
    config = InterpretableConfig(n=20, noise_dim=3)
    train, _ = make_splits(config, config.sigma)
    erm = FullBatchRun("ERM", train, sgd_hparams(lr=0.5, tau=0.1), seed=0)
    erm.step(0)
    # zero weights: p = (1/2, 1/2) for every example, so the mean cross-entropy's gradient
    # for class k is mean_i (1/2 - [y_i = k]) x_i, and one SGD step (no momentum) is -lr times it
    one_hot = torch.nn.functional.one_hot(train.y, 2).float()
    expected = -0.5 * ((0.5 - one_hot).T @ train.x) / len(train)
    logits = erm.predict(train.x)
    assert logits.shape == (20, 2)
    assert torch.allclose(logits, train.x @ expected.T, atol=1e-6)
    assert torch.allclose(erm.plane_weights(), expected[:, :2], atol=1e-7)


def test_the_initial_model_predicts_class_zero_everywhere():
    config = InterpretableConfig(epochs=1, n=40, noise_dim=2)
    result, twins = run("ERM_sigma", config, CPU)
    assert twins is None
    assert torch.count_nonzero(result.plane_weights[0]) == 0
    train, test = make_splits(config, config.sigma)
    # zero logits: argmax is class 0, so a group's accuracy is its share of class 0
    expected = []
    for split in (train, test):
        for in_majority in (True, False):
            members = (split.a == split.y) == in_majority
            expected.append((split.y[members] == 0).double().mean().item())
    assert result.accuracies[0].tolist() == pytest.approx(expected)


def test_boundary_line_lies_where_the_logits_are_equal():
    weights = torch.tensor([[0.5, 1.0], [-1.5, 0.5]])
    xs, ys = boundary_line(weights)
    points = torch.tensor([xs, ys]).T
    logits = points @ weights.T
    assert torch.allclose(logits[:, 0], logits[:, 1], atol=1e-3)
    assert (points[0] - points[1]).norm() > 100  # spans the whole plot
    assert boundary_line(torch.zeros(2, 2)) == ([], [])


def test_background_is_the_class_one_probability_on_the_plane():
    grid = plane_grid()
    assert grid[0].tolist() == [-2.0, -10.0] and grid[-1].tolist() == [2.0, 10.0]
    # class 1 logit = -x_y: p(y = 1) = sigmoid(-x_y), so x_y = -2 (first column) gives 0.881
    image = class_one_probability(torch.tensor([[0.0, 0.0], [-1.0, 0.0]]), grid)
    assert image[0, 0].item() == pytest.approx(0.8808, abs=1e-4)
    assert image[:, 0].max() == image[:, 0].min()  # x_a has no weight: rows are equal


def test_config_check_names_the_bad_setting():
    with pytest.raises(UserError, match=re.escape("sigma = 0.0: it must be a finite number > 0 (the sigma = 0 run is always included)")):
        InterpretableConfig(sigma=0.0).check()
    with pytest.raises(UserError, match="tau = -1: it must be a finite number > 0"):
        InterpretableConfig(tau=-1).check()
    with pytest.raises(UserError, match="n = 10: it must be an integer >= 20"):
        InterpretableConfig(n=10).check()
    assert total_epochs(InterpretableConfig(epochs=10, xrm_epochs=7)) == 37


def test_cuda_asked_for_without_cuda_is_a_user_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == CPU
    with pytest.raises(UserError, match="--device cpu"):
        resolve_device("cuda")


def run_cli(*options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "interpretable_experiment.py", *options],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)


def test_cli_writes_metrics_figure_and_gif(tmp_path):
    out_dir = tmp_path / "figs"
    result = run_cli("--out_dir", str(out_dir), "--epochs", "30", "--xrm_epochs", "30",
                     "--n", "100", "--noise_dim", "200", "--sigma", "1")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert set(metrics) == set(RUNS) == {"ERM_sigma0", "ERM_sigma", "MAT_sigma"}
    for name, values in metrics.items():
        assert set(values) == {"sigma", *ACCURACY_KEYS}
        assert values["sigma"] == (0.0 if name == "ERM_sigma0" else 1.0)
        assert all(0.0 <= values[key] <= 1.0 for key in ACCURACY_KEYS)
        # 90 majority / 10 minority training examples: accuracies are multiples of 1/90, 1/10
        assert values["min_tr"] * 10 == pytest.approx(round(values["min_tr"] * 10))
    with Image.open(out_dir / "interpretable.png") as png:
        assert png.format == "PNG" and png.width > png.height
    with Image.open(out_dir / "interpretable.gif") as gif:
        assert gif.n_frames == 31  # epochs 0 to 30: fewer than the 60-frame cap
    assert sorted(path.name for path in out_dir.iterdir()) == sorted(
        ["metrics.json", "interpretable.png", "interpretable.gif"])
    assert "MAT_sigma (sigma 1)" in result.stdout


def test_cli_rejects_a_negative_sigma_with_one_line_and_writes_nothing(tmp_path):
    out_dir = tmp_path / "figs"
    result = run_cli("--out_dir", str(out_dir), "--sigma", "-1")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: sigma = -1.0: it must be a finite number > 0 (the sigma = 0 run is always included)"]
    assert not out_dir.exists()


@pytest.mark.parametrize("options, message", [
    (["--sigma", "inf"], "sigma = inf: it must be a finite number > 0 (the sigma = 0 run is always included)"),
    (["--sigma", "nan"], "sigma = nan: it must be a finite number > 0 (the sigma = 0 run is always included)"),
    (["--lr", "inf"], "lr = inf: it must be a finite number > 0"),
    (["--lr_sigma0", "nan"], "lr_sigma0 = nan: it must be a finite number > 0"),
    (["--tau", "inf"], "tau = inf: it must be a finite number > 0"),
    (["--tau", "0"], "tau = 0.0: it must be a finite number > 0"),
    (["--epochs", "0"], "epochs = 0: it must be an integer >= 1"),
    (["--xrm_epochs", "-3"], "xrm_epochs = -3: it must be an integer >= 1"),
    (["--noise_dim", "0"], "noise_dim = 0: it must be an integer >= 1"),
    (["--seed", "-2"], "seed -2: give an integer from 0 to 2**63 - 1"),
    (["--sigmas", "0.5", "inf"], "--sigmas has inf: every sigma must be a finite number >= 0"),
])
def test_numeric_options_that_cannot_run_are_one_line_and_nothing_is_written(capsys, tmp_path, options, message):
    assert refusal_line(script, ["--out_dir", str(tmp_path / "figs"), *options], capsys) == f"error: {message}"
    assert not (tmp_path / "figs").exists()


def test_default_output_folder_is_figure1s_own():
    # not ./figures itself: Figure 3 writes its metrics.json to ./figures/figure3
    assert script.get_args_parser().parse_args([]).out_dir == "./figures/figure1"

"""The toy regression of Figure 3 (mat/figures/toy_regression.py, mat/figures/full_batch_fit.py) and its CLI."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import refusal_line
from PIL import Image

from mat.cli import figure3_command as script
from mat.figures.full_batch_fit import fit_full_batch
from mat.figures.toy_regression import (DEFAULT_SIGMAS, MSE_GRID_POINTS, ExperimentConfig, grid_inputs, make_mlp,
                                        make_training_set, run_case, snapshot_mse, target_function)
from XRM.cli.entry_point import call_main
from XRM.common.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def test_target_function_matches_hand_computed_values():
    x = torch.tensor([0.0, 1.0, -1.0, 0.2], dtype=torch.float64)
    # tanh(1) = 0.7615942, tanh(5) = 0.9999092, tanh(0.2) = 0.1973753
    expected = [0.0, 0.7615942 - 0.5 * 0.9999092, -(0.7615942 - 0.5 * 0.9999092),
                0.1973753 - 0.5 * 0.7615942]
    assert target_function(x).tolist() == pytest.approx(expected, abs=1e-6)


def test_training_set_shapes_and_positions():
    data = make_training_set(n_train=20, eps_dim=30, sigma=1e-3, noise_std=0.08, seed=0)
    assert data.inputs.shape == (20, 31) and data.targets.shape == (20, 1)
    assert data.x[0].item() == -1.5 and data.x[-1].item() == 1.5
    assert torch.allclose(data.x.diff(), torch.full((19,), 3 / 19))
    # Label noise of std 0.08 on 20 points: the residual std is within a factor 2 of it.
    residual_std = (data.targets[:, 0] - target_function(data.x)).std().item()
    assert 0.04 < residual_std < 0.16


def test_cases_share_label_noise_and_differ_only_in_the_scale_of_eps():
    small = make_training_set(20, 30, sigma=1e-4, noise_std=0.08, seed=3)
    large = make_training_set(20, 30, sigma=1e-3, noise_std=0.08, seed=3)
    none = make_training_set(20, 30, sigma=0.0, noise_std=0.08, seed=3)
    assert torch.equal(small.targets, large.targets) and torch.equal(small.x, none.x)
    assert torch.allclose(large.inputs[:, 1:], 10 * small.inputs[:, 1:])
    assert torch.count_nonzero(none.inputs[:, 1:]) == 0
    assert torch.count_nonzero(small.inputs[:, 1:]) == 20 * 30


def test_eps_is_zero_on_the_evaluation_grid():
    grid = grid_inputs(-1.2, 1.2, MSE_GRID_POINTS, eps_dim=30)
    assert grid.shape == (241, 31)
    assert torch.count_nonzero(grid[:, 1:]) == 0
    assert grid[0, 0].item() == pytest.approx(-1.2) and grid[-1, 0].item() == pytest.approx(1.2)


def test_fit_stops_at_the_first_check_below_the_threshold_and_restores_threads():
    threads = torch.get_num_threads()
    data = make_training_set(8, 3, sigma=1e-3, noise_std=0.08, seed=0)
    model = make_mlp(4, hidden=16, seed=0)
    fit = fit_full_batch(model, data.inputs, data.targets, data.inputs, lr=1e-3,
                         max_epochs=100, loss_threshold=10.0, check_every=5)
    assert fit.epochs == 5 and fit.snapshot_epochs == [0, 5]
    assert fit.snapshots.shape == (2, 8)
    assert torch.get_num_threads() == threads


def test_fit_records_the_last_epoch_when_it_is_not_a_check():
    data = make_training_set(8, 3, sigma=1e-3, noise_std=0.08, seed=0)
    model = make_mlp(4, hidden=16, seed=0)
    fit = fit_full_batch(model, data.inputs, data.targets, data.inputs, lr=1e-3,
                         max_epochs=7, loss_threshold=0.0, check_every=5)
    assert fit.epochs == 7 and fit.snapshot_epochs == [0, 5, 7]
    # The last snapshot is the final model, and train_loss is its loss on the data.
    final = model(data.inputs).squeeze(-1).detach()
    assert torch.allclose(fit.snapshots[-1], final)
    assert fit.train_loss == pytest.approx((final - data.targets[:, 0]).square().mean().item())


@pytest.mark.parametrize("seed", [0, 1])
def test_good_memorisation_generalises_better_than_bad_on_a_short_run(seed):
    # 600 epochs: bad (sigma 1e-3) has memorised through eps and left f(x) nearly straight;
    # good (sigma 1e-4) has fitted the bumps. Seeds 0-5 give ratios from 5x to 20x.
    config = ExperimentConfig(epochs=600, check_every=100, seed=seed)
    good = run_case(config, DEFAULT_SIGMAS["good"], CPU).metrics
    bad = run_case(config, DEFAULT_SIGMAS["bad"], CPU).metrics
    assert bad.mse > 3 * good.mse
    assert bad.train_loss < good.train_loss  # bad memorises its training set faster
    assert good.epochs == bad.epochs == 600


def test_mse_read_from_the_final_snapshot_equals_the_model_mse():
    config = ExperimentConfig(epochs=100, check_every=50, hidden=32)
    case = run_case(config, 1e-4, CPU)
    assert snapshot_mse(case.fit.snapshots[-1]) == pytest.approx(case.metrics.mse, rel=1e-4)


def test_config_check_names_the_bad_setting():
    with pytest.raises(UserError, match="epochs = 0: it must be an integer >= 1"):
        ExperimentConfig(epochs=0).check()
    with pytest.raises(UserError, match="sigma of 'bad' = -0.1: it must be a finite number >= 0"):
        ExperimentConfig(sigmas={"good": 0.0, "bad": -0.1}).check()
    with pytest.raises(UserError, match="lr = nan: it must be a finite number > 0"):
        ExperimentConfig(lr=math.nan).check()


def run_cli(*options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "good_bad_ugly_memorization.py", *options],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)


def test_cli_writes_metrics_figure_and_gif(tmp_path):
    out_dir = tmp_path / "figs"
    result = run_cli("--out_dir", str(out_dir), "--epochs", "40", "--check_every", "10")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert set(metrics) == {"good", "bad", "ugly"}
    for name, sigma in DEFAULT_SIGMAS.items():
        assert set(metrics[name]) == {"sigma", "epochs", "train_loss", "mse"}
        assert metrics[name]["sigma"] == sigma and metrics[name]["epochs"] == 40
        assert 0 < metrics[name]["mse"] < 1 and 0 < metrics[name]["train_loss"] < 1
    # The same network and data up to eps: sigma 0 and 1e-4 barely differ after 40 steps.
    assert metrics["good"]["mse"] == pytest.approx(metrics["ugly"]["mse"], rel=0.05)
    with Image.open(out_dir / "good_bad_ugly.png") as png:
        assert png.format == "PNG" and png.width > png.height
    with Image.open(out_dir / "good_bad_ugly.gif") as gif:
        assert gif.n_frames == 5  # epochs 0, 10, 20, 30, 40
    assert sorted(path.name for path in out_dir.iterdir()) == sorted(
        ["metrics.json", "good_bad_ugly.png", "good_bad_ugly.gif"])


def test_cli_rejects_negative_epochs_with_one_line_and_writes_nothing(tmp_path):
    out_dir = tmp_path / "figs"
    result = run_cli("--out_dir", str(out_dir), "--epochs", "-5")
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["error: epochs = -5: it must be an integer >= 1"]
    assert not out_dir.exists()


@pytest.mark.parametrize("options, message", [
    (["--sigmas", "1e-4", "inf", "0"], "sigma of 'bad' = inf: it must be a finite number >= 0"),
    (["--sigmas", "nan", "1e-3", "0"], "sigma of 'good' = nan: it must be a finite number >= 0"),
    (["--sigmas", "1e-4", "1e-3", "-1"], "sigma of 'ugly' = -1.0: it must be a finite number >= 0"),
    (["--lr", "inf"], "lr = inf: it must be a finite number > 0"),
    (["--lr", "0"], "lr = 0.0: it must be a finite number > 0"),
    (["--noise_std", "nan"], "noise_std = nan: it must be a finite number >= 0"),
    (["--loss_threshold", "inf"], "loss_threshold = inf: it must be a finite number >= 0"),
    (["--n_train", "1"], "n_train = 1: it must be an integer >= 2"),
    (["--eps_dim", "0"], "eps_dim = 0: it must be an integer >= 1"),
    (["--check_every", "0"], "check_every = 0: it must be an integer >= 1"),
    (["--seed", "-1"], "seed -1: give an integer from 0 to 2**63 - 1"),
    (["--seed", str(2**64)], f"seed {2**64}: give an integer from 0 to 2**63 - 1"),
])
def test_numeric_options_that_cannot_run_are_one_line_and_nothing_is_written(capsys, tmp_path, options, message):
    assert refusal_line(script, ["--out_dir", str(tmp_path / "figs"), *options], capsys) == f"error: {message}"
    assert not (tmp_path / "figs").exists()


def test_main_rejects_a_file_as_out_dir(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("keep me")
    args = script.get_args_parser().parse_args(["--out_dir", str(target), "--no_gif"])
    assert call_main(script.main, args) == 2
    assert capsys.readouterr().err.startswith("error: --out_dir")
    assert target.read_text() == "keep me"


def test_default_output_folder_is_figure3s_own():
    # not ./figures itself: Figure 1 writes its metrics.json to ./figures/figure1
    assert script.get_args_parser().parse_args([]).out_dir == "./figures/figure3"

"""interpretable_experiment.py --sigmas: ERM and MAT of Figure 1 at several noise scales."""
import json

import pytest
import torch
from PIL import Image

from mat.figures.interpretable import ACCURACY_KEYS, InterpretableConfig, run
from mat.figures.sigma_sweep import run_sigma_sweep, sweep_epochs

CPU = torch.device("cpu")
TINY = ["--epochs", "30", "--xrm_epochs", "30", "--n", "100", "--noise_dim", "200"]


def test_cli_writes_the_sweep_json_and_png_only(script, tmp_path):
    out_dir = tmp_path / "sweep"
    result = script("interpretable_experiment.py", "--out_dir", str(out_dir), "--sigmas", "0", "0.5", "2", *TINY)
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in out_dir.iterdir()) == ["sigma_sweep.json", "sigma_sweep.png"]
    sweep = json.loads((out_dir / "sigma_sweep.json").read_text())
    assert set(sweep) == {"ERM", "MAT"}
    for algorithm, entries in sweep.items():
        assert [entry["sigma"] for entry in entries] == [0.0, 0.5, 2.0]
        extra = {"xrm_flip_rate", "xrm_precision", "xrm_recall"} if algorithm == "MAT" else set()
        for entry in entries:
            assert set(entry) == {"sigma", *ACCURACY_KEYS, *extra}
            assert all(0.0 <= entry[key] <= 1.0 for key in ACCURACY_KEYS)
            # 10 training minority examples of 100: their accuracy is a multiple of 1/10
            assert entry["min_tr"] * 10 == pytest.approx(round(entry["min_tr"] * 10))
    with Image.open(out_dir / "sigma_sweep.png") as png:
        assert png.format == "PNG" and png.width > png.height
    assert "MAT minority test accuracy: sigma 0: " in result.stdout


def test_each_sweep_point_is_figure_1s_run_at_that_sigma():
    config = InterpretableConfig(n=100, noise_dim=200, epochs=30, xrm_epochs=30)
    steps = []
    sweep = run_sigma_sweep(config, [0.0, 0.5], CPU, on_step=lambda: steps.append(1))
    assert len(steps) == sweep_epochs(config, [0.0, 0.5]) == 2 * (30 + 30 + 30)
    # sigma = 0: ERM at lr_sigma0 is Figure 1's ERM without noise
    assert sweep["ERM"][0] == run("ERM_sigma0", config, CPU)[0].metrics()
    erm, _ = run("ERM_sigma", config, CPU)  # config.sigma is 0.5
    mat, twins = run("MAT_sigma", config, CPU)
    assert sweep["ERM"][1] == erm.metrics()
    assert sweep["MAT"][1] == {**mat.metrics(), "xrm_flip_rate": twins.flip_rate,
                               "xrm_precision": twins.precision, "xrm_recall": twins.recall}


@pytest.mark.parametrize("options, message", [
    (["--sigmas", "0.5", "-1"], "error: --sigmas has -1.0: every sigma must be a finite number >= 0"),
    (["--sigmas", "0.5", "nan"], "error: --sigmas has nan: every sigma must be a finite number >= 0"),
    (["--sigmas", "1", "1"], "error: --sigmas 1 1 repeats a value: give each sigma once"),
    (["--sigmas", "1", "--epochs", "0"], "error: epochs = 0: it must be an integer >= 1"),
])
def test_bad_sigmas_get_one_line_and_nothing_is_written(script, tmp_path, options, message):
    out_dir = tmp_path / "sweep"
    result = script("interpretable_experiment.py", "--out_dir", str(out_dir), *options)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [message]
    assert not out_dir.exists()


def test_sigma_and_sigmas_together_are_a_usage_error(script, tmp_path):
    result = script("interpretable_experiment.py", "--out_dir", str(tmp_path / "x"), "--sigma", "1", "--sigmas", "0", "1")
    assert result.returncode == 2 and "not allowed with argument" in result.stderr
    assert not (tmp_path / "x").exists()

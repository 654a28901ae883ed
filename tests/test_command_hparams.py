"""--hparams in a command of several algorithms: each algorithm takes the overrides of its own space."""
import json

from test_reproduce import make_features, reproduce_here

SHORT = {"num_steps": 101, "eval_every": 50}


def _hparams(out, algorithm: str, source: str) -> dict:
    results = out / algorithm / "Synthetic" / f"group_labels_{source}" / "results_hpcomb_0_seed0.json"
    return json.loads(results.read_text().splitlines()[0])["hparams"]


def _one_line(result, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert all(fragment in lines[0] for fragment in fragments), lines[0]


def test_main_gives_tau_to_mat_and_not_to_erm(script, tmp_path):
    out = tmp_path / "out"
    assert script("main.py", "--phase", "1", "--datasets", "Synthetic", "--hparams", json.dumps(SHORT),
                  "--out_dir", str(out)).returncode == 0
    phase_2 = ["main.py", "--phase", "2", "--datasets", "Synthetic", "--algorithms", "ERM", "MAT", "--group_labels",
               "no", "--out_dir", str(out), "--hparams"]
    result = script(*phase_2, json.dumps({**SHORT, "tau": 0.01}))
    assert result.returncode == 0, result.stderr
    assert _hparams(out, "MAT", "no")["tau"] == 0.01 and _hparams(out, "MAT", "no")["num_steps"] == 101
    assert "tau" not in _hparams(out, "ERM", "no") and _hparams(out, "ERM", "no")["num_steps"] == 101
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    # the finished MAT run asked for another tau: refused; ERM's settings did not change, so it is not
    _one_line(script(*phase_2, json.dumps({**SHORT, "tau": 0.1})),
              "MAT/Synthetic/group_labels_no/hpcomb_0_seed0 finished as another run: its results record tau 0.01 -> 0.1")
    # a name no algorithm of the command has: one line listing the valid ones (MAT's tau among them)
    _one_line(script(*phase_2, json.dumps({**SHORT, "taux": 0.1})),
              "unknown hyper-parameter(s) taux; valid: batch_size, eval_every, lr, num_steps, optimizer, "
              "sgd_momentum, tau, weight_decay")
    _one_line(script(*phase_2[:7], *phase_2[8:], json.dumps({**SHORT, "tau": 0.01})),
              "unknown hyper-parameter(s) tau; valid: batch_size, eval_every, lr, num_steps, optimizer, "
              "sgd_momentum, weight_decay")
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before


def test_reproduce_gives_tau_to_mat_only(tmp_path, capsys):
    data = make_features(tmp_path / "tiny.pt", n=(120, 60, 60), noise_dims=4)
    out = tmp_path / "out"
    args = ["reproduce.py", "--datasets", str(data), "--algorithms", "MAT", "ERM", "--num_hparams_combs", "1",
            "--num_seeds", "1", "--out_dir", str(out), "--checkpoint_seconds", "0", "--hparams",
            json.dumps({"num_steps": 41, "eval_every": 20, "lr": 0.01, "tau": 0.01})]
    assert reproduce_here(args) == 0, capsys.readouterr().err
    headers = {path.relative_to(out).parts[0]: json.loads(path.read_text().splitlines()[0])["hparams"]
               for path in out.rglob("results_hpcomb_0_seed0.json")}
    assert set(headers) == {"XRM", "MAT", "ERM"}
    assert headers["MAT"]["tau"] == 0.01 and "tau" not in headers["ERM"] and "tau" not in headers["XRM"]
    assert all(hparams["num_steps"] == 41 for hparams in headers.values())
    assert reproduce_here([*args[:4], "ERM", *args[6:]]) == 2  # ERM alone: tau belongs to no algorithm of it
    assert "unknown hyper-parameter(s) tau" in capsys.readouterr().err

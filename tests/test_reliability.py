"""Nothing silent: bad inputs refused before anything is written, diverged runs never done, one process
per run, signals and full disks that end in one line with nothing lost."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, comparable

from XRM.common.errors import RunsFailed
from XRM.data.synthetic import SpuriousDataSpec, make_spurious_splits
from XRM.results.collect import collect_runs, format_table
from XRM.results.records import RunFiles, read_results
from XRM.runs.spec import RunSpec
from XRM.runs.train import train_stack


def _assert_one_line(result, code: int, *fragments: str) -> None:
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _features(n: int = 60) -> dict:
    splits = make_spurious_splits(0, SpuriousDataSpec(n=n, noise_dim=6), SpuriousDataSpec(n=n, noise_dim=6))
    return {name: {"x": split.x, "y": split.y[:, None], "m": split.a[:, None]} for name, split in splits.items()}


def _with(content: dict, split: str, key: str, value) -> dict:
    return {**content, split: {**content[split], key: value}}


BAD_CONTENTS = {
    "float labels": (lambda c: _with(c, "tr", "y", c["tr"]["y"].float()), "tr.y must be long [60, 1], got torch.float32"),
    "1-D labels": (lambda c: _with(c, "va", "y", c["va"]["y"][:, 0]), "va.y must be long [60, 1], got torch.int64 (60,)"),
    "negative label": (lambda c: _with(c, "te", "y", c["te"]["y"] - 1), "te.y has negative values"),
    "empty split": (lambda c: {**c, "te": {k: v[:0] for k, v in c["te"].items()}}, "split 'te' is empty"),
    "one class": (lambda c: _with(c, "va", "y", torch.zeros_like(c["va"]["y"])), "split 'va' holds one class (y = 0)"),
    "widths differ": (lambda c: _with(c, "te", "x", c["te"]["x"][:, :5]), "feature widths differ between splits"),
    "not a dict": (lambda c: [c["tr"]["x"]], "is not a features file: expected a dict with splits"),
    "NaN inputs": (lambda c: _with(c, "tr", "x", c["tr"]["x"].index_fill(0, torch.tensor([3, 5]), float("nan"))),
                   "tr.x has 16 non-finite values (NaN or Inf)"),
}


@pytest.mark.parametrize("case", BAD_CONTENTS)
def test_bad_features_content_is_one_line_naming_file_and_split(script, tmp_path, case):
    change, message = BAD_CONTENTS[case]
    path = tmp_path / "mine.pt"
    torch.save(change(_features()), path)
    result = script("main.py", "--phase", "1", "--datasets", str(path), "--out_dir", str(tmp_path / "out"))
    _assert_one_line(result, 2, f"features file {path}", message)
    assert not (tmp_path / "out").exists()


def test_garbage_features_file_says_nothing_of_torch_internals(script, tmp_path):
    path = tmp_path / "mine.pt"
    path.write_bytes(b"not a torch file at all")
    result = script("main.py", "--phase", "1", "--datasets", str(path), "--out_dir", str(tmp_path / "out"))
    _assert_one_line(result, 2, f"cannot read features file {path}: not a torch file of tensors")
    assert "weights_only" not in result.stderr


def test_non_finite_held_out_logits_are_refused(script, tmp_path):
    path, groups = tmp_path / "mine.pt", tmp_path / "groups.pt"
    torch.save(_features(), path)
    torch.save({"tr": torch.zeros(60, dtype=torch.long), "va": torch.zeros(60, dtype=torch.long),
                "tr_ho": torch.full((60, 2), float("inf"))}, groups)
    result = script("main.py", "--phase", "2", "--datasets", str(path), "--algorithms", "GroupDRO",
                    "--group_labels", str(groups), "--out_dir", str(tmp_path / "out"))
    _assert_one_line(result, 2, f"phase-1 file {groups}: 'tr_ho' has 120 non-finite values")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags, message", [
    (["--num_hparams_combs", "0"], "--num_hparams_combs 0: give a number >= 1"),
    (["--num_hparams_combs", "-1"], "--num_hparams_combs -1: give a number >= 1"),
    (["--seed", "-1"], "--seed -1: give an integer from 0 to 2**63 - 1"),
    (["--seed", str(2**64)], f"--seed {2**64}: give an integer from 0 to 2**63 - 1"),
    (["--num_seeds", "0"], "--num_seeds 0: give a number >= 1"),
    (["--hparams", '{"batch_size": 1001}'], "batch_size = 1001 is larger than the training set (1000 examples)"),
])
def test_counts_that_cannot_describe_a_sweep(script, tmp_path, flags, message):
    result = script("main.py", "--phase", "1", "--datasets", "Synthetic", *flags, "--out_dir", str(tmp_path / "out"))
    _assert_one_line(result, 2, message)
    assert not (tmp_path / "out").exists()


def test_out_dir_that_is_a_file(script, tmp_path):
    (tmp_path / "file").write_text("")
    result = script("main.py", "--phase", "1", "--datasets", "Synthetic", "--out_dir", str(tmp_path / "file" / "out"))
    _assert_one_line(result, 2, "is a file, so the folder cannot be made")


SHORT = ["--hparams", '{"num_steps": 41, "eval_every": 20}']


def test_a_finished_run_asked_for_other_hyper_parameters_is_refused(script, tmp_path):
    common = ["main.py", "--phase", "1", "--datasets", "Synthetic", "--out_dir", str(tmp_path)]
    assert script(*common, *SHORT).returncode == 0
    results = tmp_path / "XRM" / "Synthetic" / "group_labels_no" / "results_hpcomb_0_seed0.json"
    before = results.read_text()
    result = script(*common, "--hparams", '{"num_steps": 61, "eval_every": 20}')
    _assert_one_line(result, 2, "finished as another run: its results record num_steps 41 -> 61", "another --out_dir")
    assert results.read_text() == before
    assert script(*common, *SHORT).returncode == 0  # the same settings: skipped as done


def _spec(out: Path, comb: int, lr: float) -> RunSpec:
    return RunSpec(phase=2, dataset="Synthetic", algorithm="ERM", hparams_comb=comb, seed=0, out_dir=str(out),
                   group_labels="yes", device="cpu", hparams_overrides={"num_steps": 61, "eval_every": 20, "lr": lr})


def test_a_diverged_run_is_failed_never_done_and_never_selected(tmp_path):
    with pytest.raises(RunsFailed) as failure:
        train_stack([_spec(tmp_path, 0, 0.01), _spec(tmp_path, 1, 1e30)])
    name = _spec(tmp_path, 1, 1e30).run_name
    assert list(failure.value.reasons) == [name]
    assert failure.value.reasons[name].startswith("diverged at step ")
    assert RunFiles(tmp_path, 0, 0).done.exists() and not RunFiles(tmp_path, 1, 0).done.exists()
    _, diverged = read_results(RunFiles(tmp_path, 1, 0).results)
    assert all(value == value for record in diverged for value in record.values())  # no NaN recorded
    table = format_table(collect_runs(tmp_path), "va_wga")
    assert "best hpcomb 0 by va_wga" in table
    assert table.splitlines()[-2:] == ["not selected (1):",
                                       "  hpcomb_1_seed0: no done file: unfinished, failed or still running"]


def test_the_cli_reports_a_diverged_run_failed(script, tmp_path):
    result = script("main.py", "--phase", "2", "--datasets", "Synthetic", "--algorithms", "ERM", "--group_labels", "yes",
                    "--hparams", '{"num_steps": 41, "eval_every": 20, "lr": 1e30}', "--out_dir", str(tmp_path))
    assert result.returncode == 1
    assert "failed: 1 of 1" in result.stdout and "diverged at step" in result.stdout
    assert not list(tmp_path.rglob("done_*"))


def test_read_results_flags_records_that_repeat_steps(script, tmp_path):
    directory = tmp_path / "ERM" / "Synthetic" / "group_labels_yes"
    directory.mkdir(parents=True)
    record = {"va_avg_acc": 0.9, "va_wga": 0.9, "te_avg_acc": 0.9, "te_wga": 0.9}
    lines = [{"hparams": {}}, {"step": 50, **record}, {"step": 50, **record}]  # two processes wrote it
    (directory / "results_hpcomb_0_seed0.json").write_text("".join(json.dumps(line) + "\n" for line in lines))
    good = [{"hparams": {}}, {"step": 50, **record, "va_wga": 0.5}]
    (directory / "results_hpcomb_1_seed0.json").write_text("".join(json.dumps(line) + "\n" for line in good))
    result = script("XRM/read_results.py", "--dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "best hpcomb 1 by va_wga" in result.stdout
    assert result.stdout.splitlines()[-1] == "  hpcomb_0_seed0: its records repeat steps"


def _long_run(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "main.py", "--phase", "2", "--datasets", "Synthetic", "--algorithms", "GroupDRO",
            "--group_labels", "yes", "--out_dir", str(out), "--hparams", '{"num_steps": 4001, "eval_every": 100}',
            *extra]


def _wait_for(path: Path, process: subprocess.Popen, lines: int = 1) -> None:
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if path.exists() and len(path.read_text().splitlines()) > lines:
            return
        time.sleep(0.01)
    raise AssertionError(f"{path} never got {lines} records")


def test_a_second_launcher_skips_the_run_the_first_is_training(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # long enough to be still training when the second launcher starts, on any machine; stopped by SIGTERM
    endless = ["--hparams", '{"num_steps": 10000001, "eval_every": 100}']
    first = subprocess.Popen(_long_run(tmp_path)[:-2] + endless, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    results = tmp_path / "GroupDRO" / "Synthetic" / "group_labels_yes" / "results_hpcomb_0_seed0.json"
    _wait_for(results, first)
    second = subprocess.run(_long_run(tmp_path)[:-2] + endless, cwd=ROOT, env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    assert "running in another process; skipped" in second.stderr
    assert "1 skipped (running in another process)" in second.stdout
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=120) == 128 + signal.SIGTERM
    steps = [record["step"] for record in read_results(results)[1]]
    assert len(steps) >= 2 and steps == list(range(0, 100 * len(steps), 100))  # each once, none interleaved


def test_sigterm_saves_checkpoints_and_the_resumed_run_equals_an_unbroken_one(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    unbroken = subprocess.run(_long_run(tmp_path / "a"), cwd=ROOT, env=env, capture_output=True, text=True)
    assert unbroken.returncode == 0, unbroken.stderr
    run_dir = tmp_path / "b" / "GroupDRO" / "Synthetic" / "group_labels_yes"
    process = subprocess.Popen(_long_run(tmp_path / "b", "--checkpoint_seconds", "3600"), cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(run_dir / "results_hpcomb_0_seed0.json", process, lines=3)
    stale = run_dir / ".ckpt_hpcomb_0_seed0.pt.leftover.tmp"  # as a kill during a checkpoint write leaves
    stale.write_bytes(b"partial")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "checkpoints saved" in stderr and "--resume" in stderr
    stopped_at = torch.load(run_dir / "ckpt_hpcomb_0_seed0.pt")["step"]
    assert 200 <= stopped_at < 4000
    resumed = subprocess.run(_long_run(tmp_path / "b", "--resume"), cwd=ROOT, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"from step {stopped_at + 1}" in resumed.stderr
    assert not stale.exists()
    name = "GroupDRO/Synthetic/group_labels_yes/results_hpcomb_0_seed0.json"
    assert comparable(read_results(tmp_path / "b" / name)[1]) == comparable(read_results(tmp_path / "a" / name)[1])


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1100 kB tmpfs (root only; 1 MiB free is what main.py asks for up front); skipped where the
    machine cannot mount one."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1100k", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_disk_that_fills_up_says_so_in_one_line(script, tiny_disk):
    result = script("main.py", "--phase", "1", "--datasets", "Synthetic", "--num_hparams_combs", "16",
                    "--out_dir", str(tiny_disk / "out"), *SHORT)
    _assert_one_line(result, 2, "no space left on", "--resume")


def test_a_full_disk_is_refused_before_anything_is_written(script, tiny_disk):
    try:
        with open(tiny_disk / "filler", "wb") as handle:
            while True:
                handle.write(b"\0" * 4096)
                handle.flush()
    except OSError:  # full
        pass
    result = script("main.py", "--phase", "1", "--datasets", "Synthetic", "--out_dir", str(tiny_disk / "out"))
    _assert_one_line(result, 2, f"no space left on {tiny_disk}")
    assert not (tiny_disk / "out").exists()

"""A run killed part-way and resumed writes the same records and model as an uninterrupted one."""
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT, comparable, train_until_stopped
from XRM.results.records import RunFiles, read_results
from XRM.runs.spec import RunSpec
from XRM.runs.members import records_problem
from XRM.runs.train import train_stack

ARGS = ["main.py", "--phase", "2", "--datasets", "Synthetic", "--algorithms", "GroupDRO", "--group_labels", "yes",
        "--hparams", '{"num_steps": 4001, "eval_every": 100}', "--checkpoint_seconds", "0"]


def _run_dir(out: Path) -> Path:
    return out / "GroupDRO" / "Synthetic" / "group_labels_yes"


def test_killed_then_resumed_equals_unbroken(tmp_path, script):
    unbroken = script(*ARGS, "--out_dir", str(tmp_path / "a"))
    assert unbroken.returncode == 0, unbroken.stderr

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, *ARGS, "--out_dir", str(tmp_path / "b")], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = _run_dir(tmp_path / "b") / "ckpt_hpcomb_0_seed0.pt"
    deadline = time.time() + 120
    while not checkpoint.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.005)
    time.sleep(0.3)  # let it get somewhere between two checkpoints
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (_run_dir(tmp_path / "b") / "done_hpcomb_0_seed0").exists(), "the run finished before it was killed"
    killed_at = torch.load(checkpoint)["step"]
    assert 0 <= killed_at < 4000

    resumed = script(*ARGS, "--out_dir", str(tmp_path / "b"), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    results = "results_hpcomb_0_seed0.json"
    lines_a = (_run_dir(tmp_path / "a") / results).read_text().splitlines()
    lines_b = (_run_dir(tmp_path / "b") / results).read_text().splitlines()
    assert len(lines_a) == 1 + 41  # header + evaluations at steps 0, 100, ..., 4000
    # the same records, none lost or repeated (their timing aside)
    assert comparable([json.loads(line) for line in lines_b[1:]]) == comparable([json.loads(line) for line in lines_a[1:]])
    assert json.loads(lines_b[0])["hparams"] == json.loads(lines_a[0])["hparams"]
    final_a = torch.load(_run_dir(tmp_path / "a") / "ckpt_hpcomb_0_seed0.pt")
    final_b = torch.load(_run_dir(tmp_path / "b") / "ckpt_hpcomb_0_seed0.pt")
    for part in ("model", "algorithm_state"):  # weights and GroupDRO's q alike
        for key, value in final_a[part].items():
            assert torch.equal(value, final_b[part][key]), key


def test_corrupt_checkpoint_with_resume_is_a_user_error(tmp_path, script):
    directory = _run_dir(tmp_path / "c")
    directory.mkdir(parents=True)
    (directory / "ckpt_hpcomb_0_seed0.pt").write_bytes(b"\x00garbage")
    result = script(*ARGS, "--out_dir", str(tmp_path / "c"), "--resume")
    assert result.returncode == 2
    assert "checkpoint" in result.stderr and "delete it" in result.stderr
    assert sorted(p.name for p in directory.iterdir()) == ["ckpt_hpcomb_0_seed0.pt"]


def test_a_corrupt_pending_checkpoint_is_a_user_error_that_keeps_the_last_one(tmp_path, script):
    """A stack's checkpoint written but not moved into place, unreadable (damaged on disk: it is written
    atomically): one line saying that deleting it resumes the run from its last checkpoint; nothing changed."""
    assert script(*SHORT, "--out_dir", str(tmp_path)).returncode == 0
    directory = tmp_path / RUN.rsplit("/", 1)[0]
    (directory / "done_hpcomb_0_seed0").unlink()  # unfinished again, with a pending checkpoint beside its last one
    (directory / "pending_ckpt_hpcomb_0_seed0.pt").write_bytes(b"\x00garbage")
    before = {path.name: path.read_bytes() for path in directory.iterdir()}
    result = script(*SHORT, "--out_dir", str(tmp_path), "--resume")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    pending = re.escape(str(directory / "pending_ckpt_hpcomb_0_seed0.pt"))
    assert re.fullmatch(f"error: pending checkpoint {pending} is unreadable \\(\\w+Error\\); delete it to resume the run "
                        "from its last checkpoint\n", result.stderr), result.stderr
    assert {path.name: path.read_bytes() for path in directory.iterdir()} == before


SHORT = ["main.py", "--phase", "2", "--datasets", "Synthetic", "--algorithms", "GroupDRO", "--group_labels", "yes",
         "--hparams", '{"num_steps": 41, "eval_every": 20}', "--checkpoint_seconds", "0"]
RUN = "GroupDRO/Synthetic/group_labels_yes/hpcomb_0_seed0"


def _lose_records(results: Path, how: str) -> str:
    """Damage a finished run's results file as ``how`` says; the problem resuming must name."""
    if how == "deleted":
        results.unlink()
        return f"its results file {results} is missing"
    if how == "emptied":
        results.write_text("")
        return f"its results file {results} has no header line"
    results.write_text(results.read_text().splitlines()[0] + "\n")  # header only
    return f"its results file {results} holds no record up to step 40"


@pytest.mark.parametrize("how", ["deleted", "emptied", "cut to its header"])
def test_resuming_a_run_whose_records_are_gone_restarts_it_from_step_0(tmp_path, script, how):
    out = tmp_path / "out"
    assert script(*SHORT, "--out_dir", str(out)).returncode == 0
    files = RunFiles(_run_dir(out), 0, 0)
    unbroken = read_results(files.results)
    files.done.unlink()  # killed after its last checkpoint, before its done file
    problem = _lose_records(files.results, how)
    resumed = script(*SHORT, "--out_dir", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert [line for line in resumed.stderr.splitlines() if "warning" in line or "resuming" in line] == [
        f"warning: {RUN}: {problem}, so its checkpoint cannot be trusted; restarting it from step 0"]
    header, run_records = read_results(files.results)
    assert comparable(run_records) == comparable(unbroken[1]) and [r["step"] for r in run_records] == [0, 20, 40]
    assert header["hparams"] == unbroken[0]["hparams"] and header["resume"] is True
    assert files.done.exists()


def test_records_problem_names_what_a_checkpoint_lacks(tmp_path):
    files = RunFiles(tmp_path, 0, 0)
    assert records_problem(files, 40, 0) == f"its results file {files.results} is missing"
    files.results.write_text('{"hparams": {}}\n{"step": 0, "va_wga": 0.5}\nbroken\n{"step": 20, "va_wga": 0.5}\n')
    assert records_problem(files, 40, 0) == f"its results file is unreadable ({files.results}: line 3 is not JSON)"
    files.results.write_text('{"hparams": {}}\n')
    assert records_problem(files, 19, 20) is None  # nothing to record before step 20 (JTT's second network, say)
    assert records_problem(files, 20, 20) == f"its results file {files.results} holds no record up to step 20"
    files.results.write_text('{"hparams": {}}\n{"step": 20, "va_wga": 0.5}\n')
    assert records_problem(files, 40, 20) is None


def test_a_stop_at_an_evaluation_step_keeps_its_record(tmp_path):
    # eval_every 1: every step is evaluated, so SIGTERM always stops the run at a step whose evaluation is due
    spec = RunSpec(phase=2, dataset="Synthetic", algorithm="ERM", hparams_comb=0, seed=0, out_dir=str(tmp_path),
                   group_labels="yes", device="cpu", hparams_overrides={"num_steps": 301, "eval_every": 1})
    results = spec.files.results
    train_until_stopped(spec, 3)
    stopped_at = torch.load(spec.files.checkpoint)["step"]
    assert 2 <= stopped_at < 300
    assert [record["step"] for record in read_results(results)[1]] == list(range(stopped_at + 1))
    train_stack([dataclasses.replace(spec, resume=True)])
    assert [record["step"] for record in read_results(results)[1]] == list(range(301))


def test_resuming_over_lines_that_are_no_records_drops_them_with_a_warning(tmp_path, script):
    out = tmp_path / "out"
    assert script(*SHORT, "--out_dir", str(out)).returncode == 0
    files = RunFiles(_run_dir(out), 0, 0)
    unbroken = read_results(files.results)[1]
    files.done.unlink()
    lines = files.results.read_text().splitlines()
    files.results.write_text("\n".join([lines[0], "42", lines[1], '{"step": null}', '{"step": 30, "va_wga": "high"}',
                                        *lines[2:]]) + "\n")
    resumed = script(*SHORT, "--out_dir", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert [line for line in resumed.stderr.splitlines() if line.startswith(("warning", "resuming"))] == [
        f"warning: skipping line 2 of {files.results}: 42 is not a record (a JSON object)",
        f"warning: skipping line 4 of {files.results}: its step null is not a whole number",
        f"warning: skipping line 5 of {files.results}: its va_wga \"high\" is not a number",
        f"resuming {RUN} from step 41"]
    assert comparable(read_results(files.results)[1]) == comparable(unbroken) and files.done.exists()

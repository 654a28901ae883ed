"""The stacked engine: a run trained in a stack writes what it writes alone; resuming a killed stack is exact."""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, comparable, training_losses, without_training_loss
from spurious_features import write_spurious_features

import mat  # noqa: F401  (registers MAT, as a user's import does)
from XRM.results.records import read_results
from XRM.results.selection import selected_record
from XRM.runs.sweep import SweepSpec, make_runs, plan_stacks
from XRM.runs.train import StackTrainer, train_stack

PHASE_2 = ["ERM", "GroupDRO", "IRM", "RWG", "SUBG", "MAT"]


@pytest.fixture(scope="module")
def features(tmp_path_factory) -> Path:
    """A small spurious features file (custom dataset): 400 training examples, 30 dimensions."""
    return write_spurious_features(tmp_path_factory.mktemp("data") / "spurious.pt")


def sweep(features: Path, out: Path, phase: int, algorithms: list[str], dtype: str, stack_size: int | None,
          combs: int = 3, group_labels: str = "no") -> None:
    """Train a sweep in this process, as main.py does, in stacks of at most ``stack_size``."""
    spec = SweepSpec(phase=phase, datasets=[str(features)], algorithms=algorithms, group_labels=group_labels,
                     data_path=str(out), out_dir=str(out), num_hparams_combs=combs, device="cpu", dtype=dtype,
                     hparams_overrides={"num_steps": 121, "eval_every": 20})
    for stack in plan_stacks(make_runs(spec), stack_size):
        train_stack(stack)


def results(out: Path) -> dict[str, list[dict]]:
    """Every run's evaluation records, by results file."""
    return {str(path.relative_to(out)): read_results(path)[1] for path in sorted(out.rglob("results_*.json"))}


@pytest.fixture(scope="module")
def float64_sweeps(features, tmp_path_factory):
    """Phase 1 and every phase-2 algorithm in float64, stacked and one run at a time."""
    outs = {}
    for mode, stack_size in (("stacked", None), ("alone", 1)):
        out = tmp_path_factory.mktemp(mode)
        sweep(features, out, 1, ["XRM"], "float64", stack_size)
        sweep(features, out, 2, PHASE_2, "float64", stack_size, group_labels=str(out / "XRM"))
        outs[mode] = out
    return outs


def test_stacked_runs_write_the_records_they_write_alone_in_float64(float64_sweeps):
    stacked, alone = results(float64_sweeps["stacked"]), results(float64_sweeps["alone"])
    assert len(stacked) == 3 + 3 * len(PHASE_2)
    assert without_training_loss(stacked) == without_training_loss(alone)
    assert training_losses(stacked) == pytest.approx(training_losses(alone), rel=1e-12)
    assert all([r["step"] for r in records][:7] == list(range(0, 121, 20)) for records in stacked.values())


def test_stacked_phase_1_files_equal_the_runs_alone(float64_sweeps):
    for comb in range(3):
        name = Path("XRM/spurious/group_labels_no") / f"inferred_hpcomb_{comb}_seed0.pt"
        stacked, alone = (torch.load(float64_sweeps[mode] / name) for mode in ("stacked", "alone"))
        assert torch.equal(stacked["tr"], alone["tr"]) and torch.equal(stacked["va"], alone["va"])
        assert torch.allclose(stacked["tr_ho"], alone["tr_ho"], atol=1e-5)


def test_best_checkpoints_hold_the_selected_step(float64_sweeps):
    directory = float64_sweeps["stacked"] / "MAT" / "spurious" / "group_labels_inferred"
    for comb in range(3):
        best = torch.load(directory / f"best_hpcomb_{comb}_seed0.pt")
        _, run_records = read_results(directory / f"results_hpcomb_{comb}_seed0.json")
        assert best["metric"] == "va_gi_wga"  # the run has inferred validation groups
        assert best["step"] == selected_record(run_records, "va_gi_wga")["step"]
        assert set(best["model"]) == {"weight", "bias"} and best["model"]["weight"].shape == (2, 30)


def test_float32_stacks_select_within_half_a_point_of_the_runs_alone(features, tmp_path):
    outs = {}
    for mode, stack_size in (("stacked", None), ("alone", 1)):
        outs[mode] = tmp_path / mode
        sweep(features, outs[mode], 1, ["XRM"], "float32", stack_size, combs=2)
        sweep(features, outs[mode], 2, ["ERM", "GroupDRO", "MAT"], "float32", stack_size, combs=2,
              group_labels=str(outs[mode] / "XRM"))
    stacked, alone = results(outs["stacked"]), results(outs["alone"])
    phase_2 = [name for name in stacked if not name.startswith("XRM")]
    assert len(phase_2) == 6
    for name in phase_2:
        chosen = [selected_record(runs[name], "va_wga")["te_wga"] for runs in (stacked, alone)]
        assert abs(chosen[0] - chosen[1]) <= 0.005, name


def _main(out: Path, *extra: str, combs: int = 2) -> list[str]:
    return [sys.executable, "main.py", "--phase", "2", "--datasets", "Synthetic", "--algorithms", "GroupDRO", "ERM",
            "--group_labels", "yes", "--num_hparams_combs", str(combs), "--out_dir", str(out), "--checkpoint_seconds", "0",
            "--hparams", '{"num_steps": 3001, "eval_every": 100}', *extra]


def test_a_killed_stack_resumes_to_the_records_of_an_unbroken_one(tmp_path, script):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    unbroken = subprocess.run(_main(tmp_path / "a"), cwd=ROOT, env=env, capture_output=True, text=True)
    assert unbroken.returncode == 0, unbroken.stderr
    assert "launched 4 runs in 1 stacks" in unbroken.stdout
    process = subprocess.Popen(_main(tmp_path / "b"), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "b" / "ERM" / "Synthetic" / "group_labels_yes" / "ckpt_hpcomb_1_seed0.pt"
    deadline = time.time() + 300
    while not checkpoint.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.005)
    time.sleep(0.5)  # somewhere between two checkpoints
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = list((tmp_path / "b").rglob("done_*"))
    assert done == [], "the stack finished before it was killed"
    status = script(*_main(tmp_path / "b")[1:], "--status").stdout.splitlines()
    assert status[-1] == "0 done, 0 running, 0 pending, 0 failed, 4 stopped, 0 not launched (4 runs; unfinished ones in 1 stacks)"
    assert all(line.startswith("stopped") and line.endswith("started, not finished, and no process trains it; run its "
                                                            "command again to resume it") for line in status[:-1])
    steps = {int(re.search(r"\(last evaluation at step (\d+) of 3001\)", line).group(1)) for line in status[:-1]}
    assert steps and all(step % 100 == 0 for step in steps)  # evaluated every 100 steps: where each got to
    resumed = subprocess.run(_main(tmp_path / "b", "--resume"), cwd=ROOT, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stderr.count("resuming ") == 4
    assert comparable(results(tmp_path / "b")) == comparable(results(tmp_path / "a"))
    assert all(len(records) == 31 for records in results(tmp_path / "a").values())


class Killed(BaseException):
    """A SIGKILL, raised where a test chooses."""


@pytest.mark.parametrize("phase", ["written", "moved"])
@pytest.mark.parametrize("saved", [1, 2, 3])
def test_a_stack_killed_between_two_of_its_checkpoints_resumes_as_one(features, tmp_path, monkeypatch, phase, saved):
    """Killed after ``saved`` of its 4 runs' checkpoints at step 40 were written (or moved into place), a stack
    resumes every run from one step, in one stack, so to the records of an unbroken one (train_loss included:
    runs resumed in smaller stacks pad their batches otherwise)."""
    from XRM.runs import checkpoints

    def train(out: Path, resume: bool = False) -> None:
        spec = SweepSpec(phase=2, datasets=[str(features)], algorithms=["GroupDRO", "ERM"], group_labels="yes",
                         data_path=str(out), out_dir=str(out), num_hparams_combs=2, device="cpu",
                         checkpoint_seconds=0.0, resume=resume, hparams_overrides={"num_steps": 101, "eval_every": 20})
        for stack in plan_stacks(make_runs(spec), None):
            train_stack(stack)

    train(tmp_path / "a")
    step = {"now": -1}
    counted = []
    evaluate = StackTrainer._evaluate

    def evaluating(trainer, at):
        step["now"] = at
        evaluate(trainer, at)

    def count(name: str) -> None:
        if step["now"] == 40 and name.startswith("pending_ckpt_"):
            counted.append(name)
            if len(counted) == saved:
                raise Killed

    save, replace = checkpoints.atomic_torch_save, os.replace
    with monkeypatch.context() as patch:
        patch.setattr(StackTrainer, "_evaluate", evaluating)
        if phase == "written":
            patch.setattr(checkpoints, "atomic_torch_save", lambda obj, path: (save(obj, path), count(Path(path).name)))
        else:
            patch.setattr(os, "replace", lambda source, target: (replace(source, target), count(Path(source).name)))
        with pytest.raises(Killed):
            train(tmp_path / "b")
    steps = sorted(torch.load(path)["step"] for path in (tmp_path / "b").rglob("*ckpt_*.pt"))
    assert steps == ([20] * 4 + [40] * saved if phase == "written" else [20] * (4 - saved) + [40] * 4)
    train(tmp_path / "b", resume=True)
    assert sorted(path.name for path in (tmp_path / "b").rglob("pending_*")) == []
    assert comparable(results(tmp_path / "b")) == comparable(results(tmp_path / "a"))


def test_a_relaunch_skips_finished_runs_and_stacks_the_others(tmp_path, script):
    first = script(*_main(tmp_path)[1:])
    assert first.returncode == 0, first.stderr
    before = {path: path.read_bytes() for path in tmp_path.rglob("results_*.json")}
    wider = _main(tmp_path, combs=3)[1:]
    status = script(*wider, "--status").stdout.splitlines()
    assert [line.split()[-2:] for line in status if line.startswith("not launched")] == [["(stack", "0)"]] * 2
    assert status[-1] == "4 done, 0 running, 0 pending, 0 failed, 0 stopped, 2 not launched (6 runs; unfinished ones in 1 stacks)"
    dry = script(*wider, "--dry_run")
    assert dry.stdout.splitlines()[0] == "dry run: 2 runs would be launched in 1 stacks, 4 skipped (done)"
    second = script(*wider)
    assert second.returncode == 0, second.stderr
    assert "launched 2 runs in 1 stacks, 4 skipped (done)" in second.stdout
    assert all(path.read_bytes() == content for path, content in before.items())
    assert len(list(tmp_path.rglob("done_*"))) == 6

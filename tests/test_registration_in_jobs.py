"""MAT lives in the `mat` package and registers itself into XRM's algorithm registry on import: the
registration holds in the fresh interpreter of every job a launcher starts (submitit local jobs here,
as --local_gpus starts them; tests/slurm runs MAT sweeps through a real SLURM)."""
import json
import pickle
import subprocess
import sys

import pytest
from conftest import ROOT, comparable, run_script

import mat  # noqa: F401  (registers MAT here, as main.py's import does)
from XRM.cli.sweep_options import check_and_launch
from XRM.launch import launchers
from XRM.launch.launchers import LaunchOptions
from XRM.launch.stack_job import StackJob
from XRM.runs.spec import RunSpec
from XRM.runs.sweep import SweepSpec, make_runs
from XRM.runs.train import train_stack

SHORT = {"num_steps": 101, "eval_every": 50}


def _records(run) -> list[dict]:
    return [json.loads(line) for line in run.files.results.read_text().splitlines()[1:]]


@pytest.fixture(scope="module")
def phase_1(tmp_path_factory):
    out = tmp_path_factory.mktemp("jobs") / "out"
    result = run_script("main.py", "--phase", "1", "--datasets", "Synthetic", "--out_dir", str(out),
                        "--hparams", json.dumps(SHORT))
    assert result.returncode == 0, result.stderr
    return out


def _mat_runs(out, tmp_path, folder):
    spec = SweepSpec(phase=2, datasets=["Synthetic"], algorithms=["MAT"], group_labels="no", out_dir=str(tmp_path / folder),
                     phase_1_dir=str(out / "XRM"), num_seeds=2, hparams_overrides=SHORT, device="cpu")
    return make_runs(spec)


def test_xrm_imports_no_mat_and_mat_registers_on_import():
    code = ("import sys; import XRM.algorithms, XRM.runs.train, XRM.cli.reproduction; "
            "from XRM.algorithms import ALGORITHMS; "
            "print(any(m == 'mat' or m.startswith('mat.') for m in sys.modules), 'MAT' in ALGORITHMS); "
            "import mat; print('MAT' in ALGORITHMS, ALGORITHMS['MAT'].__module__)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False", "True", "mat.algorithm"]


def test_a_mat_sweep_through_local_gpu_jobs_writes_the_records_of_this_process(phase_1, tmp_path, monkeypatch):
    here = _mat_runs(phase_1, tmp_path, "here")
    assert check_and_launch(here, None, "local", LaunchOptions()).failures == []
    jobs = _mat_runs(phase_1, tmp_path, "jobs")
    assert {module for run in jobs for module in run.registering_modules()} >= {"mat.algorithm"}
    monkeypatch.setattr(launchers, "visible_gpu_count", lambda: 2)  # two submitit local jobs, fresh interpreters
    report = check_and_launch(jobs, None, "local_gpus", LaunchOptions(slurm_dir=str(tmp_path / "submitit")))
    assert report.failures == [] and len(report.job_ids) == 2
    for alone, launched in zip(here, jobs):
        assert launched.files.done.exists()
        assert comparable(_records(launched)) == comparable(_records(alone))


def test_a_job_that_imports_nothing_does_not_know_mat(phase_1, tmp_path, monkeypatch):
    """What the carried imports prevent: the same job without them fails on the unknown name."""
    import submitit

    run = _mat_runs(phase_1, tmp_path, "bare")[0]
    executor = submitit.LocalExecutor(folder=tmp_path / "submitit")
    executor.update_parameters(timeout_min=5, setup=[f"export PYTHONPATH={ROOT}${{PYTHONPATH:+:$PYTHONPATH}}"])
    job = executor.submit(StackJob(train_stack, [run], imports=[]))
    with pytest.raises(submitit.core.utils.FailedJobError, match="unknown algorithm 'MAT'"):
        job.result()
    assert not run.files.done.exists()


def test_a_run_of_a_command_with_mat_registers_mat_in_its_job(tmp_path):
    """An ERM run of `--algorithms ERM MAT` sets MAT's own hyper-parameters aside, which needs MAT registered."""
    erm = RunSpec(phase=2, dataset="Synthetic", algorithm="ERM", hparams_comb=0, seed=0, out_dir=str(tmp_path),
                  group_labels="yes", hparams_overrides={**SHORT, "tau": 0.01}, command_algorithms=("ERM", "MAT"))
    assert "mat.algorithm" in erm.registering_modules()
    # a job's fresh interpreter: the modules named by the launching process, then the run's hyper-parameters
    code = ("import importlib, pickle, sys; from XRM.runs.inputs import resolve_hparams; "
            "[importlib.import_module(module) for module in sys.argv[1:]]; "
            "print(sorted(resolve_hparams(pickle.loads(sys.stdin.buffer.read()), 'synthetic', 1001, 50)))")
    done = subprocess.run([sys.executable, "-c", code, *erm.registering_modules()], cwd=ROOT, capture_output=True,
                          input=pickle.dumps(erm))
    assert done.returncode == 0, done.stderr.decode()
    assert "tau" not in done.stdout.decode() and "num_steps" in done.stdout.decode()

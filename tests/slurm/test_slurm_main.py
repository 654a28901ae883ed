"""main.py through --slurm_partition on a real cluster: the same results as local runs, and resuming.

Run inside tests/slurm/cluster.sh (``make test-slurm``); see test_slurm_launch.py.
"""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT

from XRM.results.records import without_timing

TIMEOUT_S = 240


def main_py(*args: str, status: int = 0) -> subprocess.CompletedProcess:
    """Run main.py with ``args``; a failure unless it exits with ``status``."""
    # One thread everywhere, so that local and SLURM runs compute bit-identical results.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    result = subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=TIMEOUT_S)
    assert result.returncode == status, result.stdout + result.stderr
    return result


def slurm_args(tmp_path: Path) -> list[str]:
    return ["--slurm_partition", "debug", "--slurm_dir", str(tmp_path / "submitit"), "--slurm_gpus_per_node", "0",
            "--slurm_cpus_per_task", "1", "--slurm_time", "10"]


def records_by_file(out: Path) -> dict[str, list[dict]]:
    """Every results file under ``out``: its evaluation records (the header names paths, which differ), less
    their timings (records.TIMING_KEYS: how fast a machine trained, not what it trained)."""
    return {str(p.relative_to(out)): [without_timing(json.loads(line)) for line in p.read_text().splitlines()[1:]]
            for p in sorted(out.rglob("results_*.json"))}


def test_phase_1_then_mat_sweeps_on_slurm_equal_local_sweeps(tmp_path):
    common = ["--datasets", "Synthetic", "--num_hparams_combs", "2", "--hparams", '{"num_steps": 201}']
    phases = [["--phase", "1"], ["--phase", "2", "--algorithms", "MAT", "--group_labels", "no"]]
    for phase in phases:
        result = main_py(*phase, *common, "--out_dir", str(tmp_path / "slurm"), *slurm_args(tmp_path), "--wait")
        assert "slurm: launched 2 runs in 1 stacks, 0 skipped (done)" in result.stdout
        assert "failed: 0 of 2" in result.stdout
        main_py(*phase, *common, "--out_dir", str(tmp_path / "local"))
    on_slurm, local = records_by_file(tmp_path / "slurm"), records_by_file(tmp_path / "local")
    assert len(on_slurm) == 4 and on_slurm == local
    for comb in (0, 1):
        name = Path("XRM/Synthetic/group_labels_no") / f"inferred_hpcomb_{comb}_seed0.pt"
        slurm_inferred, local_inferred = torch.load(tmp_path / "slurm" / name), torch.load(tmp_path / "local" / name)
        assert all(torch.equal(slurm_inferred[k], local_inferred[k]) for k in ("tr", "va", "tr_ho"))
    again = main_py(*phases[1], *common, "--out_dir", str(tmp_path / "slurm"), *slurm_args(tmp_path))
    assert "slurm: launched 0 runs, 2 skipped (done)" in again.stdout


def _checkpoint_step(path: Path) -> int:
    try:
        return torch.load(path)["step"]
    except (OSError, RuntimeError, EOFError):  # not written yet
        return -1


def test_a_requeued_run_resumes_from_its_checkpoint(tmp_path):
    run = ["--phase", "2", "--datasets", "Synthetic", "--algorithms", "GroupDRO", "--group_labels", "yes",
           "--hparams", '{"num_steps": 30001, "eval_every": 250}', "--checkpoint_seconds", "0"]
    submitted = main_py(*run, "--out_dir", str(tmp_path / "slurm"), *slurm_args(tmp_path))
    job_id = re.search(r"job ids: (\S+)", submitted.stdout).group(1)
    run_dir = tmp_path / "slurm" / "GroupDRO" / "Synthetic" / "group_labels_yes"
    deadline = time.monotonic() + TIMEOUT_S
    while _checkpoint_step(run_dir / "ckpt_hpcomb_0_seed0.pt") < 500:
        assert time.monotonic() < deadline, "the job never reached step 500"
        time.sleep(0.1)
    assert not (run_dir / "done_hpcomb_0_seed0").exists(), "the run finished before it could be requeued"
    subprocess.run(["scontrol", "requeue", job_id], check=True)
    while not (run_dir / "done_hpcomb_0_seed0").exists():
        assert time.monotonic() < deadline + TIMEOUT_S, "the requeued job never finished"
        time.sleep(0.5)
    logs = "".join(p.read_text() for p in (tmp_path / "submitit").rglob("*_log.err"))
    resumed_at = [int(step) for step in re.findall(r"resuming \S+ from step (\d+)", logs)]
    assert len(resumed_at) == 1 and resumed_at[0] > 500, logs[-2000:]
    main_py(*run, "--out_dir", str(tmp_path / "local"))
    assert records_by_file(tmp_path / "slurm") == records_by_file(tmp_path / "local")


def queued_job_ids() -> list[str]:
    return subprocess.run(["squeue", "--noheader", "--format=%i"], capture_output=True, text=True,
                          check=True).stdout.split()


# A request no node of the partition meets (the default --slurm_cpus_per_task 8 on a 2-core
# node) would pend for ever: main.py refuses it, names the option to lower, submits nothing.
@pytest.mark.parametrize("option, unit", [("slurm_cpus_per_task", "CPUs"), ("slurm_gpus_per_node", "GPUs")])
def test_a_job_no_node_can_run_is_refused_and_nothing_is_submitted(tmp_path, node_cpus, option, unit):
    most = {"CPUs": node_cpus, "GPUs": 0}[unit]  # the test cluster's node has no GPU
    before = queued_job_ids()
    refused = main_py("--phase", "1", "--datasets", "Synthetic", "--num_hparams_combs", "2", "--out_dir",
                      str(tmp_path / "out"), *slurm_args(tmp_path), f"--{option}", str(most + 1), status=2)
    assert refused.stderr.splitlines() == [
        f"error: --{option} {most + 1} is more than any node of partition 'debug' has ({most} {unit} at most): "
        f"lower --{option} to {most} or choose another partition"]
    assert set(queued_job_ids()) <= set(before)  # no new job (an earlier test's may be ending)
    assert not (tmp_path / "submitit" / "runs_index.json").exists()


def test_an_unknown_partition_is_refused_with_the_partitions_there_are(tmp_path):
    args = slurm_args(tmp_path)
    args[args.index("debug")] = "gpu"
    refused = main_py("--phase", "1", "--datasets", "Synthetic", "--out_dir", str(tmp_path / "out"), *args, status=2)
    assert refused.stderr.splitlines() == [
        "error: --slurm_partition gpu: sinfo knows no partition 'gpu' (or it has no nodes); partitions: debug"]
    assert not (tmp_path / "submitit" / "runs_index.json").exists()


def test_reproduce_on_slurm_writes_the_table_of_a_local_protocol(tmp_path):
    """The whole Table 1 protocol through --slurm_partition (each stage waits for its job arrays):
    the same table1.csv as the protocol run in this process's machine; meanwhile --status shows the
    protocol running and its runs' jobs as SLURM reports them, and at the end every run done."""
    common = ["--datasets", "Synthetic", "--algorithms", "MAT", "ERM", "--num_hparams_combs", "2", "--num_seeds", "2",
              "--hparams", '{"num_steps": 101, "eval_every": 50}']
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    tables, seen = {}, set()
    for where, extra in (("slurm", slurm_args(tmp_path)), ("local", [])):
        out = tmp_path / where
        command = [sys.executable, "reproduce.py", *common, "--out_dir", str(out), *extra]
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while where == "slurm" and process.poll() is None:
            status = subprocess.run([*command, "--status"], cwd=ROOT, env=env, capture_output=True, text=True,
                                    timeout=TIMEOUT_S)
            assert status.returncode == 0, status.stderr
            lines = status.stdout.splitlines()
            if lines and lines[0] == f"a reproduce command is running on {out}":
                seen |= {line.split()[0] for line in lines[1:] if line.startswith("  ")}  # running, pending
        stdout, stderr = process.communicate(timeout=4 * TIMEOUT_S)
        assert process.returncode == 0, stdout + stderr
        assert stdout.count("stage ") >= 4
        tables[where] = (out / "table1.csv").read_text()
    assert tables["slurm"] == tables["local"] and len(tables["local"].splitlines()) == 1 + 4  # 2 algorithms x 2 settings
    assert seen and seen <= {"running", "pending"}, seen  # jobs seen queued or running, none failed or stopped
    final = subprocess.run([sys.executable, "reproduce.py", *common, "--out_dir", str(tmp_path / "slurm"),
                            *slurm_args(tmp_path), "--status"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert final.stdout.splitlines()[0] == f"no reproduce command is running on {tmp_path / 'slurm'}"
    assert all(", 0 running, 0 pending, 0 failed, 0 stopped, 0 not launched" in line
               for line in final.stdout.splitlines()[1:4])

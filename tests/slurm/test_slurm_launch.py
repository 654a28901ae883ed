"""The SLURM launcher on a real cluster: job arrays, failures, status, and a requeued job.

Run inside tests/slurm/cluster.sh (``make test-slurm``), which exports SLURM_CONF. Without
it these tests are skipped, unless XRM_REQUIRE_SLURM is set: then a skip would hide that
nothing was tested, so they fail instead.
"""
import dataclasses
import json
import re
import subprocess
import time
from pathlib import Path

import pytest
from launch_toy import make_runs, outputs, singles, starts, toy_run, toy_stack

from XRM.launch import status
from XRM.launch.launchers import LaunchOptions, launch, wait_for

# Waiting longer than this for a run to reach a step means the cluster is stuck.
STEP_TIMEOUT_S = 120


def slurm_options(tmp_path: Path, **changes) -> LaunchOptions:
    """Options for this one-node cluster: no GPU, one core and a few minutes per job."""
    return LaunchOptions(slurm_dir=str(tmp_path / "submitit"), slurm_gpus_per_node=0,
                         slurm_cpus_per_task=1, slurm_time=10, **changes)


def test_a_job_array_matches_the_local_launcher_and_reports_its_failure(tmp_path):
    runs = make_runs(tmp_path / "slurm", 4)
    runs[3].fail_at_step = 2
    report = launch(singles(runs), toy_stack, "slurm", slurm_options(tmp_path, wait=True))
    array_ids = {job_id.split("_")[0] for job_id in report.job_ids}
    assert len(report.job_ids) == 4 and len(array_ids) == 1
    assert report.failures == [status.RunState("toy/seed3", "failed", "ValueError: toy failure at step 2")]

    local_runs = make_runs(tmp_path / "local", 3)
    launch(singles(local_runs), toy_stack, "local")
    assert [outputs(run) for run in runs[:3]] == [outputs(run) for run in local_runs]

    states = status.sweep_status(runs, tmp_path / "submitit")
    assert [state.state for state in states] == ["done", "done", "done", "failed"]
    assert states[3].last_error_line == "ValueError: toy failure at step 2"
    again = launch(singles(runs), toy_stack, "slurm", slurm_options(tmp_path))
    assert (again.launched, again.skipped_done) == (["toy/seed3"], ["toy/seed0", "toy/seed1", "toy/seed2"])
    assert wait_for(again).failures[0].last_error_line == "ValueError: toy failure at step 2"


def wait_for_step(run, step: int) -> None:
    checkpoint = Path(run.out_dir) / "checkpoint.json"
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while not (checkpoint.exists() and json.loads(checkpoint.read_text())["step"] >= step):
        assert time.monotonic() < deadline, f"{run.run_name} never reached step {step}"
        time.sleep(0.2)


def wait_for_state(run, slurm_dir: str, state: str) -> None:
    """Poll --status until the run is in ``state`` (accounting records a job's start with a lag)."""
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while status.sweep_status([run], slurm_dir)[0].state != state:
        assert time.monotonic() < deadline, f"{run.run_name} never got to be {state}"
        time.sleep(0.5)


# Two ways a cluster stops a job that should go on: the admin requeues it, or SLURM sends
# the preemption / time-out signal (USR2) and submitit checkpoints and requeues the job.
# With 10-minute jobs submitit counts any USR2 as a time-out, which only a job with a
# checkpoint() survives: this case goes through RunJob.checkpoint.
INTERRUPTIONS = {"scontrol requeue": ["scontrol", "requeue"], "preemption signal": ["scancel", "--signal=USR2"]}


@pytest.mark.parametrize("interruption", INTERRUPTIONS)
def test_an_interrupted_job_resumes_from_its_checkpoint(tmp_path, interruption):
    unbroken = make_runs(tmp_path / "local", 1, n_steps=40)[0]
    toy_run(unbroken)
    run = make_runs(tmp_path / "slurm", 1, n_steps=40, step_seconds=0.25)[0]
    options = slurm_options(tmp_path)
    report = launch([[run]], toy_stack, "slurm", options)
    wait_for_state(run, options.slurm_dir, "running")
    wait_for_step(run, 5)
    second = launch([[run]], toy_stack, "slurm", options)
    assert (second.launched, second.skipped_queued) == ([], ["toy/seed0"])

    subprocess.run(INTERRUPTIONS[interruption] + [report.job_ids[0]], check=True)
    assert wait_for(report).failures == []
    attempts = starts(run)
    assert [attempt["slurm_restart_count"] for attempt in attempts] == [0, 1]
    assert attempts[0]["step"] == 0 and attempts[1]["step"] >= 5
    assert outputs(run) == outputs(unbroken)


def test_a_cancelled_job_is_reported_failed_with_slurms_reason(tmp_path):
    run = make_runs(tmp_path / "slurm", 1, n_steps=40, step_seconds=0.25)[0]
    options = slurm_options(tmp_path)
    report = launch([[run]], toy_stack, "slurm", options)
    wait_for_step(run, 2)
    subprocess.run(["scancel", report.job_ids[0]], check=True)
    # No result file: the end is seen through accounting, the reason read from the job's log.
    # slurmstepd logs the step's end, then the job's: either may be the last line yet.
    said_cancelled = rf"^slurmstepd\S*: error: \*\*\* (JOB|STEP) {report.job_ids[0]}(\.0)? ON \S+ CANCELLED AT \S+ \*\*\*$"
    [failure] = wait_for(report).failures
    assert failure.state == "failed"
    assert re.match(said_cancelled, failure.last_error_line)
    [state] = status.sweep_status([run], options.slurm_dir)
    assert state.state == "failed" and re.match(said_cancelled, state.last_error_line)


def wait_for_reason(run, slurm_dir: str, reason: str) -> status.RunState:
    """Poll --status until the run's job waits for ``reason`` (the scheduler gives one within seconds)."""
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while (state := status.sweep_status([run], slurm_dir)[0]).pending_reason != reason:
        assert time.monotonic() < deadline, f"{run.run_name} never waited for {reason}: {state}"
        time.sleep(0.5)
    return state


def test_status_shows_why_a_pending_job_waits(tmp_path, node_cpus):
    blocker, waiting = make_runs(tmp_path / "slurm", 2, n_steps=400, step_seconds=0.25)
    options = slurm_options(tmp_path)
    # The first job takes every CPU of the node, so the second must wait for resources.
    first = launch([[blocker]], toy_stack, "slurm", dataclasses.replace(options, slurm_cpus_per_task=node_cpus))
    job_ids = list(first.job_ids)
    try:
        wait_for_state(blocker, options.slurm_dir, "running")
        second = launch([[waiting]], toy_stack, "slurm", options)
        job_ids += second.job_ids
        state = wait_for_reason(waiting, options.slurm_dir, "Resources")
        assert state == status.RunState("toy/seed1", "pending", "", "Resources")
        assert status.format_status([state]).splitlines()[0] == "pending  toy/seed1  (Resources)"
        subprocess.run(["scontrol", "hold", second.job_ids[0]], check=True)
        wait_for_reason(waiting, options.slurm_dir, "JobHeldAdmin")  # held by root, the tests' user
        [running] = status.sweep_status([blocker], options.slurm_dir)
        assert running == status.RunState("toy/seed0", "running", "")  # other states carry no reason
    finally:
        subprocess.run(["scancel", *job_ids], check=True)

"""Launchers without a cluster: registry, dry run, serial and local-GPU runs, resubmission."""
import dataclasses
from pathlib import Path

import pytest
import submitit
from launch_toy import (SUBMISSION_FAILED, ToyPreemption, make_runs, offline_slurm, outputs, read_jsonl, singles,
                        starts, toy_run, toy_stack)

from XRM.common.errors import UserError
from XRM.launch import launchers as launch_module
from XRM.launch import slurm_launcher
from XRM.launch import slurm_resources, status
from XRM.launch.launchers import (LaunchOptions, LaunchReport, format_report, get_launcher, launch, register_launcher,
                                  spread_over)
from XRM.launch.stack_job import StackJob

# The toy recurrence v <- (31 v + 7) mod 1009 from v = seed, worked out by hand.
SEED0_VALUES = [7, 224, 897, 571, 555, 59]
SEED1_VALUES = [38, 176, 418, 857, 340, 457]


def values(run):
    return [record["value"] for record in outputs(run)]


def test_unknown_launcher_lists_the_valid_ones():
    with pytest.raises(UserError, match="unknown launcher 'nope'; choose from: dry_run, local, local_gpus, slurm"):
        get_launcher("nope")
    with pytest.raises(UserError, match="choose from: dry_run"):
        launch([], toy_stack, "nope")


def test_a_launcher_name_is_registered_once():
    before = dict(launch_module.LAUNCHERS)
    with pytest.raises(ValueError, match="launcher 'local' is registered twice"):
        register_launcher("local")(lambda runs, run_fn, options: None)
    assert launch_module.LAUNCHERS == before


def test_runs_need_a_unique_name(tmp_path):
    runs = make_runs(tmp_path, 2)
    with pytest.raises(ValueError, match="repeated: toy/seed0"):
        launch([[runs[0]], [runs[0], runs[1]]], toy_stack, "local")


def test_dry_run_lists_the_runs_and_runs_nothing(tmp_path):
    runs = make_runs(tmp_path, 3)
    Path(runs[0].done_path).parent.mkdir(parents=True)
    Path(runs[0].done_path).touch()
    report = launch(singles(runs), toy_stack, "dry_run")
    assert report.launched == ["toy/seed1", "toy/seed2"]
    assert report.skipped_done == ["toy/seed0"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["seed0"]
    assert format_report(report) == (
        "dry run: 2 runs would be launched, 1 skipped (done)\n  toy/seed1\n  toy/seed2")


def test_local_runs_every_run_then_skips_the_done_ones(tmp_path):
    runs = make_runs(tmp_path, 2)
    report = launch(singles(runs), toy_stack, "local")
    assert (report.launched, report.skipped_done, report.failures) == (["toy/seed0", "toy/seed1"], [], [])
    assert values(runs[0]) == SEED0_VALUES
    assert values(runs[1]) == SEED1_VALUES
    again = launch(singles(runs), toy_stack, "local")
    assert (again.launched, again.skipped_done) == ([], ["toy/seed0", "toy/seed1"])
    assert [len(starts(run)) for run in runs] == [1, 1]


def test_local_reports_a_failed_run_by_its_last_error_line_and_goes_on(tmp_path):
    runs = make_runs(tmp_path, 3)
    runs[1].fail_at_step = 2
    report = launch(singles(runs), toy_stack, "local")
    assert report.failures == [status.RunState("toy/seed1", "failed", "ValueError: toy failure at step 2")]
    assert [Path(run.done_path).exists() for run in runs] == [True, False, True]
    assert format_report(report) == (
        "local: launched 3 runs, 0 skipped (done)\n"
        "failed: 1 of 3\n"
        "  toy/seed1: ValueError: toy failure at step 2")


def test_a_run_that_forgets_its_done_file_is_a_failure(tmp_path):
    runs = make_runs(tmp_path, 1)
    report = launch(singles(runs), lambda stack: None, "local")
    assert report.failures == [status.RunState("toy/seed0", "failed", status.NO_DONE_FILE)]


def test_checkpoint_resubmits_the_same_run_which_resumes(tmp_path):
    unbroken, interrupted = make_runs(tmp_path / "unbroken", 1) + make_runs(tmp_path / "interrupted", 1)
    toy_run(unbroken)
    job = StackJob(toy_stack, [dataclasses.replace(interrupted, preempt_at_step=3)])
    with pytest.raises(ToyPreemption):
        job()
    resubmission = job.checkpoint()
    assert isinstance(resubmission, submitit.helpers.DelayedSubmission)
    assert resubmission.function.run_fn is toy_stack
    assert resubmission.function.runs == [dataclasses.replace(job.runs[0], resume=True)]  # the same runs, told to resume
    resubmission.result()
    assert [start["step"] for start in starts(interrupted)] == [0, 3]
    assert outputs(interrupted) == outputs(unbroken)


def test_submitit_debug_executor_runs_a_run_job(tmp_path):
    run = make_runs(tmp_path / "out", 1)[0]
    job = submitit.DebugExecutor(folder=tmp_path / "jobs").submit(StackJob(toy_stack, [run]))
    assert job.result() is None
    assert values(run) == SEED0_VALUES


@pytest.fixture(scope="module")
def two_gpu_sweep(tmp_path_factory):
    """Four runs (one failing) through local_gpus as if this machine had 2 GPUs, plus one not launched.

    Each run is a stack of its own, a submitit local job (a fresh Python); CUDA_VISIBLE_DEVICES
    names the GPU it got.
    """
    tmp = tmp_path_factory.mktemp("two_gpus")
    runs = make_runs(tmp / "out", 5, n_steps=4, step_seconds=0.05)
    runs[2].fail_at_step = 1
    options = LaunchOptions(slurm_dir=str(tmp / "submitit"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(launch_module, "visible_gpu_count", lambda: 2)
        report = launch(singles(runs[:4]), toy_stack, "local_gpus", options)
    return runs, options, report


def test_local_gpus_runs_one_run_per_gpu_at_a_time(two_gpu_sweep):
    runs, _, report = two_gpu_sweep
    assert report.launched == ["toy/seed0", "toy/seed1", "toy/seed2", "toy/seed3"]
    assert len(set(report.job_ids)) == 4
    assert report.failures == [status.RunState("toy/seed2", "failed", "ValueError: toy failure at step 1")]
    assert values(runs[0]) == SEED0_VALUES[:4]
    spans = {}
    for run in runs[:4]:
        events = read_jsonl(Path(run.out_dir) / "events.jsonl")
        assert events[0]["gpus"] in ("0", "1")
        spans.setdefault(events[0]["gpus"], []).append((events[0]["time"], events[-1]["time"]))
    # Runs given the same GPU never overlap in time.
    for gpu_spans in spans.values():
        gpu_spans.sort()
        assert all(end <= next_start for (_, end), (next_start, _) in zip(gpu_spans, gpu_spans[1:]))


def test_status_reads_states_back_from_disk_and_the_index(two_gpu_sweep):
    runs, options, _ = two_gpu_sweep
    states = status.sweep_status(runs, options.slurm_dir)
    assert [(state.run_name, state.state, state.last_error_line) for state in states] == [
        ("toy/seed0", "done", ""),
        ("toy/seed1", "done", ""),
        ("toy/seed2", "failed", "ValueError: toy failure at step 1"),
        ("toy/seed3", "done", ""),
        ("toy/seed4", "not launched", ""),
    ]
    assert status.format_status(states).splitlines() == [
        "done          toy/seed0",
        "done          toy/seed1",
        "failed        toy/seed2  ValueError: toy failure at step 1",
        "done          toy/seed3",
        "not launched  toy/seed4",
        "3 done, 0 running, 0 pending, 1 failed, 0 stopped, 1 not launched (5 runs)",
    ]


def test_local_gpus_on_a_cpu_machine_runs_serially_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(launch_module, "visible_gpu_count", lambda: 0)
    runs = make_runs(tmp_path / "out", 2)
    report = launch(singles(runs), toy_stack, "local_gpus", LaunchOptions(slurm_dir=str(tmp_path / "submitit")))
    assert report.notes == ["no GPU visible: the runs ran one after another in this process"]
    assert report.failures == [] and report.job_ids == []
    assert values(runs[1]) == SEED1_VALUES
    assert format_report(report).splitlines()[1] == "note: no GPU visible: the runs ran one after another in this process"


def test_stacks_are_split_until_every_gpu_has_one():
    assert spread_over([[1, 2, 3, 4, 5]], 2) == [[1, 2], [3, 4, 5]]
    assert spread_over([[1, 2, 3], [4]], 4) == [[1], [2], [3], [4]]
    assert spread_over([[1], [2]], 4) == [[1], [2]]  # single runs cannot be split further


def test_a_failed_stack_fails_its_unfinished_runs_only(tmp_path):
    runs = make_runs(tmp_path, 3)
    runs[1].fail_at_step = 2
    report = launch([runs], toy_stack, "local")
    assert report.launched == ["toy/seed0", "toy/seed1", "toy/seed2"] and report.stacks == [report.launched]
    assert [failure.run_name for failure in report.failures] == ["toy/seed1", "toy/seed2"]
    assert [Path(run.done_path).exists() for run in runs] == [True, False, False]
    assert format_report(report).splitlines()[0] == "local: launched 3 runs in 1 stacks, 0 skipped (done)"


def test_slurm_without_sbatch_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setattr(slurm_launcher.shutil, "which", lambda name: None)
    runs = make_runs(tmp_path / "out", 1)
    with pytest.raises(launch_module.UserError, match="sbatch not found"):
        launch(singles(runs), toy_stack, "slurm", LaunchOptions(slurm_dir=str(tmp_path / "submitit")))


def test_sbatch_that_fails_is_one_line_and_leaves_no_job_files(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", f"{offline_slurm(tmp_path / 'bin')}:/usr/bin:/bin")
    kept = tmp_path / "submitit" / "41" / "41_0_log.out"  # an earlier job's log stays
    kept.parent.mkdir(parents=True)
    kept.write_text("earlier job\n")
    for slurm_dir in (tmp_path / "submitit", tmp_path / "new" / "logs"):
        options = LaunchOptions(slurm_partition="gpu", slurm_dir=str(slurm_dir))
        with pytest.raises(UserError) as refused:
            launch(singles(make_runs(tmp_path / "out", 2)), toy_stack, "slurm", options)
        assert str(refused.value) == SUBMISSION_FAILED
    assert "sbatch:" not in capsys.readouterr().err
    assert [path.relative_to(tmp_path).as_posix() for path in (tmp_path / "submitit").rglob("*")] == [
        "submitit/41", "submitit/41/41_0_log.out"]
    assert not (tmp_path / "new").exists()


def test_report_lists_job_ids_and_logs():
    report = LaunchReport("slurm", ["a", "b"], skipped_done=["c"], skipped_queued=["d"],
                          job_ids=["7_0", "7_1"], log_dir="/x/submitit")
    assert format_report(report) == (
        "slurm: launched 2 runs, 1 skipped (done), 1 skipped (already queued)\n"
        "job ids: 7_0 7_1\n"
        "logs: /x/submitit/<job id>/")


# sinfo's answer to slurm_resources.SINFO_COMMAND on real one-node clusters (SLURM 22.05,
# 2 cores, 24105 MB): the test cluster of tests/slurm/cluster.sh, and the same node given
# GPUs of two types (gres.conf with Cores=) and two more partitions, one of them hidden.
SINFO_NO_GPU = "debug*|2|24105|(null)\n"
SINFO_GPUS = ("debug*|2|24105|gpu:a100:2(S:0),gpu:v100:1(S:0)\n"
              "secret|2|24105|gpu:a100:2(S:0),gpu:v100:1(S:0)\n"
              "big|2|24105|gpu:a100:2(S:0),gpu:v100:1(S:0)\n")


def test_sinfo_lines_give_each_partitions_nodes_and_the_default():
    assert slurm_resources.parse_sinfo(SINFO_NO_GPU) == ({"debug": [(2, 24105, 0)]}, "debug")
    partitions = slurm_resources.parse_sinfo(SINFO_GPUS)
    assert partitions.default == "debug" and list(partitions.nodes) == ["debug", "secret", "big"]
    assert partitions.nodes["big"] == [slurm_resources.NodeSize(cpus=2, mem_mb=24105, gpus=3)]
    assert [slurm_resources.gpu_count(gres) for gres in ("(null)", "gpu:8", "gpu:a100:2,gpu:v100:1", "gpu:h100:4(S:0-1)")] \
        == [0, 8, 3, 4]
    with pytest.raises(ValueError, match="unexpected sinfo line 'debug\\*|2'"):
        slurm_resources.parse_sinfo("debug*|2\n")


def refusal(sinfo_text: str, partition: str | None, cpus: int = 1, gpus: int = 0, mem_gb: int | None = None) -> str:
    """The one line with which check_fits refuses the request (a failure if it accepts it)."""
    request = slurm_resources.Request(cpus, gpus, mem_gb)
    with pytest.raises(UserError) as error:
        slurm_resources.check_fits(request, slurm_resources.parse_sinfo(sinfo_text), partition)
    return str(error.value)


def test_a_request_larger_than_every_node_names_the_option_and_the_most_there_is():
    assert refusal(SINFO_NO_GPU, "debug", cpus=8) == (
        "--slurm_cpus_per_task 8 is more than any node of partition 'debug' has (2 CPUs at most): "
        "lower --slurm_cpus_per_task to 2 or choose another partition")
    assert refusal(SINFO_NO_GPU, None, gpus=1) == (  # None: the default partition
        "--slurm_gpus_per_node 1 is more than any node of partition 'debug' has (0 GPUs at most): "
        "lower --slurm_gpus_per_node to 0 or choose another partition")
    assert refusal(SINFO_GPUS, "big", gpus=4).endswith("(3 GPUs at most): lower --slurm_gpus_per_node to 3 or choose another partition")
    assert refusal(SINFO_GPUS, "big", mem_gb=24).startswith(  # 24105 MB is 23.5 GB
        "--slurm_mem_gb 24 is more than any node of partition 'big' has (23 GB of memory at most)")
    assert refusal(SINFO_GPUS, "gpu") == (
        "--slurm_partition gpu: sinfo knows no partition 'gpu' (or it has no nodes); partitions: debug, secret, big")
    assert refusal(SINFO_GPUS, "big,gpu").startswith("--slurm_partition big,gpu: sinfo knows no partition 'gpu'")


def test_a_request_that_some_node_meets_is_accepted():
    partitions = slurm_resources.parse_sinfo(SINFO_GPUS)
    for partition in ("debug", "secret", "big,debug", None):
        slurm_resources.check_fits(slurm_resources.Request(2, 3, 23), partitions, partition)
    # No default partition and none named: sbatch refuses such a job itself.
    slurm_resources.check_fits(slurm_resources.Request(64, 8, None), slurm_resources.parse_sinfo("a|2|1|(null)\n"), None)


def test_a_request_split_between_two_kinds_of_node_is_refused():
    # The lines above, combined by hand: a 2-core node with 3 GPUs and a 64-core one without.
    two_kinds = "gpu|2|24105|gpu:a100:2(S:0),gpu:v100:1(S:0)\ngpu|64|515000|(null)\n"
    slurm_resources.check_fits(slurm_resources.Request(64, 0, 500), slurm_resources.parse_sinfo(two_kinds), "gpu")
    assert refusal(two_kinds, "gpu", cpus=8, gpus=1) == (
        "no node of partition 'gpu' has --slurm_cpus_per_task 8, --slurm_gpus_per_node 1 at once "
        "(each alone fits some node): lower one of them, or choose another partition")


def test_slurm_refuses_a_job_no_node_can_run_before_submitting_it(tmp_path, monkeypatch):
    monkeypatch.setattr(slurm_launcher.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(slurm_resources, "read_partitions", lambda: slurm_resources.parse_sinfo(SINFO_NO_GPU))
    options = LaunchOptions(slurm_partition="debug", slurm_dir=str(tmp_path / "submitit"), slurm_gpus_per_node=0)
    with pytest.raises(UserError, match="^--slurm_cpus_per_task 8 is more than any node of partition 'debug' has"):
        launch(singles(make_runs(tmp_path / "out", 2)), toy_stack, "slurm", options)
    assert not status.index_path(options.slurm_dir).exists()


def test_without_sinfo_the_request_is_not_checked_and_a_note_says_so(monkeypatch):
    monkeypatch.setattr(slurm_resources.shutil, "which", lambda name: None)
    assert slurm_resources.check_request(slurm_resources.Request(8, 1, None), "debug") == [
        "sinfo not found: the job's CPUs, GPUs and memory were not compared with the partition's nodes"]


def test_status_shows_why_a_pending_slurm_job_waits(tmp_path, monkeypatch):
    # A stand-in squeue answering with lines a real one printed (array 1: task 0 running,
    # task 2 waiting; job 3 asking for a node that is down).
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "squeue").write_text(
        "#!/bin/sh\necho \"$@\" > \"$(dirname \"$0\")/args\"\n"
        "printf '1_2|Resources\\n1_0|None\\n"
        "3|Nodes required for job are DOWN, DRAINED or reserved for jobs in higher priority partitions\\n'\n")
    (fake_bin / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}:/usr/bin:/bin")
    assert status.pending_reasons(["1_2", "1_0", "3", "5_0"]) == {
        "1_2": "Resources", "3": "Nodes required for job are DOWN, DRAINED or reserved for jobs in higher priority partitions"}
    assert (fake_bin / "args").read_text().split() == ["--noheader", "--array", "--jobs=1,3,5", "--format=%i|%r"]
    states = [status.RunState("toy/seed0", "pending", "", "Resources"),
              status.RunState("toy/seed1", "pending", ""),
              status.RunState("toy/seed2", "done", "")]
    assert status.format_status(states, {"toy/seed0": 0, "toy/seed1": 1}).splitlines() == [
        "pending  toy/seed0  (stack 0)  (Resources)",
        "pending  toy/seed1  (stack 1)",
        "done     toy/seed2",
        "1 done, 0 running, 2 pending, 0 failed, 0 stopped, 0 not launched (3 runs; unfinished ones in 2 stacks)",
    ]


def test_sbatch_without_srun_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setattr(slurm_launcher.shutil, "which", lambda name: None if name == "srun" else f"/usr/bin/{name}")
    with pytest.raises(launch_module.UserError, match="^srun not found: launch SLURM sweeps from a cluster's login node"):
        launch(singles(make_runs(tmp_path / "out", 1)), toy_stack, "slurm", LaunchOptions(slurm_dir=str(tmp_path / "s")))
    assert not (tmp_path / "s").exists()

"""Launchers: hand a sweep's runs to this process, this machine's GPUs, or SLURM.

A run is a picklable dict of arguments with two keys the launchers read: ``run_name``
(short, unique) and ``done_path`` (a file that exists iff the run finished). ``run_fn``
trains one run; it must be a top-level function that returns at once on a finished run
and resumes an interrupted one from its checkpoint, so every launcher may simply call it
again: after a failure, a preemption or a time-out.
"""
import dataclasses
import os
import shlex
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import submitit
import torch

from XRM import sweep_status
from XRM.errors import UserError
from XRM.registry import Registry

RunArgs = dict[str, Any]
RunFn = Callable[[RunArgs], None]

# How often a waiting launcher looks at its jobs; finished jobs are seen by their result file.
POLL_SECONDS = 1.0


@dataclasses.dataclass(frozen=True)
class LaunchOptions:
    """How to launch a sweep. The ``slurm_*`` fields are read by the submitit launchers only.

    The defaults fit one-GPU runs: a day per job (the reference code's ``time=60*60`` asked
    for 60 hours), 1 GPU and 8 CPU cores per job, the cluster's default memory.
    """

    slurm_partition: str | None = None
    slurm_dir: str = "submitit"  # job logs and the run -> job index
    slurm_time: int = 24 * 60  # minutes per job; also the time limit of a local_gpus job
    slurm_gpus_per_node: int = 1  # 0: ask for no GPU
    slurm_cpus_per_task: int = 8
    slurm_mem_gb: int | None = None  # None: the cluster's default
    constraint: str | None = None
    slurm_account: str | None = None
    slurm_qos: str | None = None
    array_parallelism: int = 256  # at most this many jobs of one array run at once
    wait: bool = False  # block until the jobs end, then report the failed runs
    local_gpus: int | None = None  # local_gpus: use at most this many GPUs (None: every visible one)


@dataclasses.dataclass(frozen=True)
class LaunchReport:
    """What a launch did. ``failures`` is None until the launched runs have ended."""

    launcher: str
    launched: list[str]  # run names handed to the launcher (for dry_run: that would be)
    skipped_done: list[str] = dataclasses.field(default_factory=list)
    skipped_queued: list[str] = dataclasses.field(default_factory=list)  # a live job has them
    job_ids: list[str] = dataclasses.field(default_factory=list)
    log_dir: str | None = None
    dry_run: bool = False
    failures: list[sweep_status.RunState] | None = None
    notes: list[str] = dataclasses.field(default_factory=list)
    # The submitted runs with their jobs, for wait_for; not part of the printed report.
    jobs: list[tuple[RunArgs, submitit.Job]] = dataclasses.field(default_factory=list, repr=False)


Launcher = Callable[[list[RunArgs], RunFn, LaunchOptions], LaunchReport]
LAUNCHERS: Registry[Launcher] = Registry("launcher")


def register_launcher(name: str) -> Callable[[Launcher], Launcher]:
    """Decorator adding a launcher under ``name``; a name can be registered once."""
    return LAUNCHERS.register(name)


def get_launcher(name: str) -> Launcher:
    """The launcher registered under ``name``; a UserError listing the valid names otherwise."""
    return LAUNCHERS.lookup(name)


class RunJob(submitit.helpers.Checkpointable):
    """One run as a submitit job.

    On preemption or time-out submitit calls ``checkpoint``, which resubmits the same run;
    ``run_fn`` then resumes it from the checkpoint it keeps on disk. A job that SLURM
    requeues by itself (``scontrol requeue``, node failure) restarts the same way.
    """

    def __init__(self, run_fn: RunFn, run_args: RunArgs) -> None:
        self.run_fn = run_fn
        self.run_args = run_args

    def __call__(self) -> None:
        # A job SLURM restarts (requeue, node failure) continues the run it had started.
        restarted = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0
        self.run_fn({**self.run_args, "resume": True} if restarted else self.run_args)

    def checkpoint(self) -> submitit.helpers.DelayedSubmission:  # type: ignore[override]
        """A resubmission of the same run, told to resume from the checkpoint it keeps on disk."""
        return submitit.helpers.DelayedSubmission(RunJob(self.run_fn, {**self.run_args, "resume": True}))


def launch(runs: list[RunArgs], run_fn: RunFn, launcher: str,
           options: LaunchOptions = LaunchOptions()) -> LaunchReport:
    """Launch the runs that are not done yet with the named launcher.

    Runs whose ``done_path`` exists are skipped. With ``options.wait`` (always, for the
    local launchers) the call returns once every launched run has ended, and the report
    lists the failed runs with the last line of their error.
    """
    launch_runs = get_launcher(launcher)
    _check_runs(runs)
    done = [run for run in runs if Path(run["done_path"]).exists()]
    todo = [run for run in runs if not Path(run["done_path"]).exists()]
    report = launch_runs(todo, run_fn, options)
    report = dataclasses.replace(report, skipped_done=[run["run_name"] for run in done])
    if options.wait and report.failures is None:
        report = wait_for(report)
    return report


def wait_for(report: LaunchReport) -> LaunchReport:
    """Block until every job of ``report`` has ended; the same report with its failures."""
    for _, job in report.jobs:
        job.wait()
    states = [sweep_status.run_state(run, job) for run, job in report.jobs]
    return dataclasses.replace(report, failures=[state for state in states if state.state != sweep_status.DONE])


def _check_runs(runs: list[RunArgs]) -> None:
    names = [run.get("run_name") for run in runs]
    missing = [i for i, run in enumerate(runs) if "run_name" not in run or "done_path" not in run]
    if missing:
        raise ValueError(f"runs {missing} lack 'run_name' or 'done_path'; every run needs both")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"run names must be unique; repeated: {', '.join(repeated)}")


def _import_path_setup(run_fn: RunFn) -> list[str]:
    """A shell line that lets a job's fresh Python import ``run_fn`` as this process did.

    Jobs start in a new interpreter (on SLURM, maybe in another folder): put the folder
    above ``run_fn``'s top-level package (or its script's folder) first on PYTHONPATH.
    """
    module_file = getattr(sys.modules[run_fn.__module__], "__file__", None)
    if module_file is None:  # defined at an interactive prompt: cloudpickle sends it by value
        return []
    path = Path(module_file).resolve()
    depth = run_fn.__module__.count(".") + (path.name == "__init__.py")
    root = path.parents[depth] if run_fn.__module__ != "__main__" else path.parent
    return [f"export PYTHONPATH={shlex.quote(str(root))}${{PYTHONPATH:+:$PYTHONPATH}}"]


def _failure_of(run: RunArgs, error: BaseException) -> sweep_status.RunState:
    lines = "".join(traceback.format_exception_only(type(error), error))
    return sweep_status.RunState(run["run_name"], sweep_status.FAILED, sweep_status.last_line(lines))


@register_launcher("local")
def _run_in_this_process(runs: list[RunArgs], run_fn: RunFn, options: LaunchOptions) -> LaunchReport:
    """Run one run after another here; a failed run is reported and the sweep goes on."""
    failures = []
    for run in runs:
        try:
            run_fn(run)
        except UserError:
            raise  # the user's mistake (a corrupt checkpoint, say) stops the sweep with its one line
        except Exception as error:  # one bad run must not stop the others; it is reported
            failures.append(_failure_of(run, error))
            continue
        if not Path(run["done_path"]).exists():
            failures.append(sweep_status.RunState(run["run_name"], sweep_status.FAILED,
                                                  sweep_status.NO_DONE_FILE))
    return LaunchReport("local", [run["run_name"] for run in runs], failures=failures)


def visible_gpu_count() -> int:
    """How many GPUs this process sees (CUDA_VISIBLE_DEVICES applies)."""
    return torch.cuda.device_count()


@register_launcher("local_gpus")
def _run_on_local_gpus(runs: list[RunArgs], run_fn: RunFn, options: LaunchOptions) -> LaunchReport:
    """One run per visible GPU at a time, each a submitit local job; blocks until all end.

    Without a GPU it runs the sweep serially in this process instead, and says so.
    """
    gpus = visible_gpu_count()
    if options.local_gpus is not None:
        gpus = min(gpus, options.local_gpus)
    if gpus == 0:
        report = _run_in_this_process(runs, run_fn, options)
        note = "no GPU visible: the runs ran one after another in this process"
        return dataclasses.replace(report, launcher="local_gpus", notes=[note])
    folder = Path(options.slurm_dir).resolve() / "%j"
    executor = submitit.LocalExecutor(folder=folder)
    executor.update_parameters(timeout_min=options.slurm_time, gpus_per_node=1,
                               setup=_import_path_setup(run_fn))
    free_gpus, running, jobs = list(range(gpus)), {}, []
    queue = list(runs)
    try:
        while queue or running:
            while queue and free_gpus:
                gpu = free_gpus.pop(0)
                executor.update_parameters(visible_gpus=[gpu])
                run = queue.pop(0)
                job = executor.submit(RunJob(run_fn, run))
                running[job.job_id] = (job, gpu)
                jobs.append((run, job))
                sweep_status.record_jobs(options.slurm_dir, {
                    run["run_name"]: sweep_status.JobEntry("local", job.job_id, str(folder))})
            time.sleep(POLL_SECONDS)
            for job_id, (job, gpu) in list(running.items()):
                if job.done():
                    del running[job_id]
                    free_gpus.append(gpu)
    except BaseException:
        # Interrupted (Ctrl-C): stop the jobs we started rather than leave them orphaned.
        for job, _ in running.values():
            job.cancel()
        raise
    report = LaunchReport("local_gpus", [run["run_name"] for run in runs],
                          job_ids=[job.job_id for _, job in jobs], log_dir=str(folder.parent), jobs=jobs)
    return wait_for(report)


def _slurm_executor(options: LaunchOptions, run_fn: RunFn) -> submitit.AutoExecutor:
    if shutil.which("sbatch") is None:
        raise UserError("sbatch not found: launch SLURM sweeps from a cluster's login node, "
                        "or use the local or local_gpus launcher")
    executor = submitit.AutoExecutor(folder=Path(options.slurm_dir).resolve() / "%j", cluster="slurm")
    optional = {
        "slurm_partition": options.slurm_partition,
        "slurm_constraint": options.constraint,
        "slurm_account": options.slurm_account,
        "slurm_qos": options.slurm_qos,
        "mem_gb": options.slurm_mem_gb,
        # --gpus-per-node=0 is refused by clusters without GPUs: ask for none by omitting it.
        "gpus_per_node": options.slurm_gpus_per_node or None,
    }
    executor.update_parameters(
        name="xrm",
        timeout_min=options.slurm_time,
        cpus_per_task=options.slurm_cpus_per_task,
        slurm_array_parallelism=options.array_parallelism,
        slurm_setup=_import_path_setup(run_fn),
        **{key: value for key, value in optional.items() if value is not None},
    )
    return executor


@register_launcher("slurm")
def _submit_to_slurm(runs: list[RunArgs], run_fn: RunFn, options: LaunchOptions) -> LaunchReport:
    """Submit the runs as one SLURM job array; runs whose job is still queued are not resubmitted."""
    live = {sweep_status.PENDING, sweep_status.RUNNING}
    states = sweep_status.sweep_status(runs, options.slurm_dir)
    queued = [run for run, state in zip(runs, states) if state.state in live]
    to_submit = [run for run, state in zip(runs, states) if state.state not in live]
    executor = _slurm_executor(options, run_fn)
    try:
        array = executor.submit_array([RunJob(run_fn, run) for run in to_submit]) if to_submit else []
    except submitit.core.utils.FailedJobError as error:
        reason = sweep_status.last_line(str(error))
        raise UserError(f"sbatch refused the job array ({reason}); check --slurm_partition and the cluster") from None
    folder = str(executor.folder)
    sweep_status.record_jobs(options.slurm_dir, {
        run["run_name"]: sweep_status.JobEntry("slurm", job.job_id, folder) for run, job in zip(to_submit, array)})
    return LaunchReport("slurm", [run["run_name"] for run in to_submit],
                        skipped_queued=[run["run_name"] for run in queued],
                        job_ids=[job.job_id for job in array], log_dir=str(Path(folder).parent),
                        jobs=list(zip(to_submit, array)))


@register_launcher("dry_run")
def _list_runs(runs: list[RunArgs], run_fn: RunFn, options: LaunchOptions) -> LaunchReport:
    """Submit nothing; report the runs that would be launched."""
    return LaunchReport("dry_run", [run["run_name"] for run in runs], dry_run=True, failures=[])


def format_report(report: LaunchReport, max_listed: int = 20) -> str:
    """The report as a few lines of text for the terminal."""
    skipped = f"{len(report.skipped_done)} skipped (done)"
    if report.skipped_queued:
        skipped += f", {len(report.skipped_queued)} skipped (already queued)"
    if report.dry_run:
        lines = [f"dry run: {len(report.launched)} runs would be launched, {skipped}"]
        lines += [f"  {name}" for name in report.launched[:max_listed]]
        if len(report.launched) > max_listed:
            lines.append(f"  ... and {len(report.launched) - max_listed} more")
        return "\n".join(lines)
    lines = [f"{report.launcher}: launched {len(report.launched)} runs, {skipped}"]
    lines += [f"note: {note}" for note in report.notes]
    if report.job_ids:
        shown = " ".join(report.job_ids[:max_listed])
        more = f" ... ({len(report.job_ids)} jobs)" if len(report.job_ids) > max_listed else ""
        lines.append(f"job ids: {shown}{more}")
    if report.log_dir:
        lines.append(f"logs: {report.log_dir}/<job id>/")
    if report.failures is not None:
        lines.append(f"failed: {len(report.failures)} of {len(report.launched)}")
        lines += [f"  {failure.run_name}: {failure.last_error_line}" for failure in report.failures]
    return "\n".join(lines)

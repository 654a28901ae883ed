"""Launchers: hand a sweep's stacks of runs to this process, this machine's GPUs, or SLURM (the last in
XRM/launch/slurm_launcher.py, registered here through ``register_launcher``).

A run is a picklable dataclass (a RunSpec) with three fields the launchers read:
``run_name`` (short, unique), ``done_path`` (a file that exists iff the run finished) and
``resume``, and optionally a method ``running_elsewhere()`` (another process trains it). A stack is a list of runs trained together by one call of ``run_fn``: one job
(one SLURM array task, one local GPU). ``run_fn`` must be a top-level function that skips
finished runs and resumes interrupted ones from their checkpoints, so every launcher may
simply call it again: after a failure, a preemption or a time-out.
"""
import dataclasses
import shlex
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from XRM.common.errors import RunsFailed, UserError
from XRM.common.registry import Registry
from XRM.common.worker_counts import auto_workers
from XRM.launch import status

Run = Any  # a dataclass with run_name, done_path and resume (a RunSpec)
Stack = list[Run]
RunFn = Callable[[Stack], None]

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
    skipped_running: list[str] = dataclasses.field(default_factory=list)  # another process trains them
    job_ids: list[str] = dataclasses.field(default_factory=list)
    log_dir: str | None = None
    dry_run: bool = False
    failures: list[status.RunState] | None = None
    notes: list[str] = dataclasses.field(default_factory=list)
    # The submitted runs with their jobs, for wait_for; not part of the printed report.
    jobs: list[tuple[Run, Any]] = dataclasses.field(default_factory=list, repr=False)
    stacks: list[list[str]] = dataclasses.field(default_factory=list)  # run names of each stack launched


Launcher = Callable[[list[Stack], RunFn, LaunchOptions], LaunchReport]
LAUNCHERS: Registry[Launcher] = Registry("launcher")


def register_launcher(name: str) -> Callable[[Launcher], Launcher]:
    """Decorator adding a launcher under ``name``; a name can be registered once."""
    return LAUNCHERS.register(name)


def get_launcher(name: str) -> Launcher:
    """The launcher registered under ``name``; a UserError listing the valid names otherwise."""
    return LAUNCHERS.lookup(name)


def launch(stacks: list[Stack], run_fn: RunFn, launcher: str,
           options: LaunchOptions = LaunchOptions()) -> LaunchReport:
    """Launch the stacks' runs that are not done yet with the named launcher.

    Finished runs (their ``done_path`` exists) are left out of their stack, and emptied
    stacks dropped. With ``options.wait`` (always, for the local launchers) the call returns
    once every launched run has ended, and the report lists the failed runs with the last
    line of their error.
    """
    launch_stacks = get_launcher(launcher)
    runs = [run for stack in stacks for run in stack]
    _check_runs(runs)
    done = [run.run_name for run in runs if _is_done(run)]
    todo = [[run for run in stack if not _is_done(run)] for stack in stacks]
    todo = [stack for stack in todo if stack]
    report = launch_stacks(todo, run_fn, options)
    report = dataclasses.replace(report, skipped_done=done,
                                 stacks=[[run.run_name for run in stack] for stack in todo])
    if options.wait and report.failures is None:
        report = wait_for(report)
    return report


def _is_done(run: Run) -> bool:
    return Path(run.done_path).exists()


def run_names(stacks: list[Stack]) -> list[str]:
    """The names of the stacks' runs, stack after stack."""
    return [run.run_name for stack in stacks for run in stack]


def wait_for(report: LaunchReport) -> LaunchReport:
    """Block until every job of ``report`` has ended; the same report with its failures."""
    for _, job in report.jobs:
        job.wait()
    states = [status.run_state(run, job) for run, job in report.jobs]
    return dataclasses.replace(report, failures=[state for state in states if state.state != status.DONE])


def _check_runs(runs: list[Run]) -> None:
    names = [run.run_name for run in runs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"run names must be unique; repeated: {', '.join(repeated)}")


def import_path_setup(run_fn: RunFn) -> list[str]:
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


def _failure_of(run: Run, error: BaseException) -> status.RunState:
    if isinstance(error, RunsFailed) and run.run_name in error.reasons:
        return status.RunState(run.run_name, status.FAILED, error.reasons[run.run_name])
    lines = "".join(traceback.format_exception_only(type(error), error))
    return status.RunState(run.run_name, status.FAILED, status.last_line(lines))


@register_launcher("local")
def _run_in_this_process(stacks: list[Stack], run_fn: RunFn, options: LaunchOptions) -> LaunchReport:
    """Run one stack after another here; a failed stack is reported and the sweep goes on."""
    failures, running = [], []
    for stack in stacks:
        try:
            run_fn(stack)
        except UserError:
            raise  # the user's mistake (a corrupt checkpoint, say) stops the sweep with its one line
        except Exception as error:  # one bad stack must not stop the others; its unfinished runs are reported
            failures += [_failure_of(run, error) for run in stack if not _is_done(run)]
            continue
        for run in stack:
            if _is_done(run):
                continue
            if status.running_elsewhere(run):
                running.append(run.run_name)
            else:
                failures.append(status.RunState(run.run_name, status.FAILED, status.NO_DONE_FILE))
    return LaunchReport("local", run_names(stacks), failures=failures, skipped_running=running)


def visible_gpu_count() -> int:
    """How many GPUs this process sees (CUDA_VISIBLE_DEVICES applies)."""
    import torch

    return torch.cuda.device_count()


def spread_over(stacks: list[Stack], workers: int) -> list[Stack]:
    """The stacks, the largest halved until there are at least ``workers`` (or every stack is one run)."""
    stacks = [list(stack) for stack in stacks]
    while len(stacks) < workers:
        largest = max(range(len(stacks)), key=lambda i: len(stacks[i]), default=None)
        if largest is None or len(stacks[largest]) < 2:
            break
        stack = stacks.pop(largest)
        stacks[largest:largest] = [stack[: len(stack) // 2], stack[len(stack) // 2 :]]
    return stacks


@register_launcher("local_gpus")
def _run_on_local_gpus(stacks: list[Stack], run_fn: RunFn, options: LaunchOptions) -> LaunchReport:
    """One stack per visible GPU at a time, each a submitit local job; blocks until all end.

    Stacks are split so that every GPU gets work. Without a GPU it runs the stacks one
    after another in this process instead, and says so.
    """
    gpus = visible_gpu_count()
    if options.local_gpus is not None:
        gpus = min(gpus, options.local_gpus)
    if gpus == 0:
        report = _run_in_this_process(stacks, run_fn, options)
        note = "no GPU visible: the runs ran one after another in this process"
        return dataclasses.replace(report, launcher="local_gpus", notes=[note])
    import submitit

    from XRM.launch.stack_job import StackJob

    folder = Path(options.slurm_dir).resolve() / "%j"
    executor = submitit.LocalExecutor(folder=folder)
    executor.update_parameters(timeout_min=options.slurm_time, gpus_per_node=1,
                               setup=import_path_setup(run_fn))
    free_gpus, running, jobs = list(range(gpus)), {}, []
    queue = spread_over(stacks, gpus)
    try:
        while queue or running:
            while queue and free_gpus:
                gpu = free_gpus.pop(0)
                executor.update_parameters(visible_gpus=[gpu])
                stack = queue.pop(0)
                job = executor.submit(StackJob(run_fn, _sharing_cores(stack, gpus)))
                running[job.job_id] = (job, gpu)
                jobs += [(run, job) for run in stack]
                status.record_jobs(options.slurm_dir, {
                    run.run_name: status.JobEntry("local", job.job_id, str(folder)) for run in stack})
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
    job_ids = list(dict.fromkeys(job.job_id for _, job in jobs))
    report = LaunchReport("local_gpus", run_names(stacks), job_ids=job_ids, log_dir=str(folder.parent), jobs=jobs)
    return wait_for(report)


def _sharing_cores(stack: Stack, processes: int) -> Stack:
    """The stack's runs with ``--num_workers auto`` (None) resolved for ``processes`` training processes
    that share this machine's cores (XRM/common/worker_counts.py); other runs as they are."""
    workers = auto_workers(on_gpu=True, processes=processes)
    return [dataclasses.replace(run, num_workers=workers) if getattr(run, "num_workers", 0) is None else run
            for run in stack]


@register_launcher("dry_run")
def _list_runs(stacks: list[Stack], run_fn: RunFn, options: LaunchOptions) -> LaunchReport:
    """Submit nothing; report the runs that would be launched."""
    return LaunchReport("dry_run", run_names(stacks), dry_run=True, failures=[])


def format_report(report: LaunchReport, max_listed: int = 20) -> str:
    """The report as a few lines of text for the terminal."""
    skipped = f"{len(report.skipped_done)} skipped (done)"
    if report.skipped_queued:
        skipped += f", {len(report.skipped_queued)} skipped (already queued)"
    if report.skipped_running:
        skipped += f", {len(report.skipped_running)} skipped (running in another process)"
    in_stacks = f" in {len(report.stacks)} stacks" if 0 < len(report.stacks) < len(report.launched) else ""
    if report.dry_run:
        lines = [f"dry run: {len(report.launched)} runs would be launched{in_stacks}, {skipped}"]
        listed = 0
        for number, stack in enumerate(report.stacks or [[name] for name in report.launched]):
            for name in stack:
                if listed < max_listed:
                    lines.append(f"  {name}" + (f"  (stack {number})" if in_stacks else ""))
                listed += 1
        if len(report.launched) > max_listed:
            lines.append(f"  ... and {len(report.launched) - max_listed} more")
        return "\n".join(lines)
    lines = [f"{report.launcher}: launched {len(report.launched)} runs{in_stacks}, {skipped}"]
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

"""The "slurm" launcher: a sweep's stacks submitted as one SLURM job array through submitit (a task per stack),
runs whose job is still queued not submitted again, a request no node of the partition can meet refused before
anything is submitted, and a failed submission one line that leaves no file behind. Registered when
``XRM.launch`` is imported (its ``__init__``)."""
import contextlib
import io
import shutil
import sys
from pathlib import Path

from XRM.common.errors import UserError
from XRM.launch import slurm_resources, status
from XRM.launch.launchers import (LaunchOptions, LaunchReport, RunFn, Stack, import_path_setup, register_launcher,
                                  run_names)


def _slurm_executor(options: LaunchOptions, run_fn: RunFn):
    import submitit

    for command in ("sbatch", "srun"):  # submitit submits with the one, and its jobs run through the other
        if shutil.which(command) is None:
            raise UserError(f"{command} not found: launch SLURM sweeps from a cluster's login node, "
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
        slurm_setup=import_path_setup(run_fn),
        **{key: value for key, value in optional.items() if value is not None},
    )
    return executor


@register_launcher("slurm")
def _submit_to_slurm(stacks: list[Stack], run_fn: RunFn, options: LaunchOptions) -> LaunchReport:
    """Submit the stacks as one SLURM job array (a task per stack); runs whose job is still
    queued are not resubmitted. A request no node of the partition can meet is refused
    before anything is submitted."""
    from XRM.launch.stack_job import StackJob

    live = {status.PENDING, status.RUNNING}
    runs = [run for stack in stacks for run in stack]
    queued_names = {state.run_name for state in status.sweep_status(runs, options.slurm_dir)
                    if state.state in live}
    to_submit = [[run for run in stack if run.run_name not in queued_names] for stack in stacks]
    to_submit = [stack for stack in to_submit if stack]
    executor = _slurm_executor(options, run_fn)
    notes = _check_slurm_request(options) if to_submit else []
    array = _submit_array(executor, [StackJob(run_fn, stack) for stack in to_submit], options) if to_submit else []
    folder = str(executor.folder)
    jobs = [(run, job) for stack, job in zip(to_submit, array) for run in stack]
    status.record_jobs(options.slurm_dir, {
        run.run_name: status.JobEntry("slurm", job.job_id, folder) for run, job in jobs})
    return LaunchReport("slurm", run_names(to_submit),
                        skipped_queued=[run.run_name for run in runs if run.run_name in queued_names],
                        job_ids=[job.job_id for job in array], log_dir=str(Path(folder).parent), jobs=jobs,
                        notes=notes)


def _submit_array(executor, jobs: list, options: LaunchOptions) -> list:
    """``jobs`` submitted as one SLURM job array. When sbatch fails: one line (a UserError) saying so, that
    no job was submitted and what to check; sbatch's own lines held back; and none of the files the
    submission wrote (pickled jobs, the sbatch script) left in --slurm_dir."""
    import submitit

    folder = submitit.core.utils.JobPaths.get_first_id_independent_folder(executor.folder)
    before = set(folder.iterdir()) if folder.is_dir() else set()
    made = [path for path in (folder, *folder.parents) if not path.exists()]  # deepest first
    printed = io.StringIO()
    try:
        with contextlib.redirect_stderr(printed):  # submitit prints sbatch's error lines itself
            array = executor.submit_array(jobs)
    except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError) as error:
        _remove_new_files(folder, before, made)
        reason = status.last_line(str(error)) or "no message"
        raise UserError(f"sbatch could not submit the runs ({reason}): no job was submitted; check that the cluster "
                        f"answers from this machine (sinfo, squeue) and that --slurm_partition "
                        f"{options.slurm_partition} exists") from None
    sys.stderr.write(printed.getvalue())
    return array


def _remove_new_files(folder: Path, before: set[Path], made: list[Path]) -> None:
    """Remove what appeared in ``folder`` since it held ``before``, then the folders of ``made`` (they did
    not exist; deepest first) that are empty."""
    for path in set(folder.iterdir()) - before if folder.is_dir() else ():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    for path in made:
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def _check_slurm_request(options: LaunchOptions) -> list[str]:
    """A UserError if no node of the partition can run one job (it would pend for ever);
    else the notes for the report (sinfo unreadable: nothing was checked)."""
    request = slurm_resources.Request(options.slurm_cpus_per_task, options.slurm_gpus_per_node, options.slurm_mem_gb)
    return slurm_resources.check_request(request, options.slurm_partition)

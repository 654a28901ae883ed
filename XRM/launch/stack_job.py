"""A stack of runs as a submitit job, resubmitted (and resumed) on preemption or time-out."""
import dataclasses
import importlib
import os
from typing import Any, Callable

import submitit


def resuming(run: Any) -> Any:
    """The same run, told to resume from its checkpoint."""
    return dataclasses.replace(run, resume=True)


def registering_modules(runs: list) -> list[str]:
    """The modules that registered what the runs name (their ``registering_modules()``, where they
    have one), read in this process, where the registrations are."""
    modules = {module for run in runs for module in getattr(run, "registering_modules", lambda: ())()}
    return sorted(modules)


class StackJob(submitit.helpers.Checkpointable):
    """One stack of runs as a submitit job.

    A job starts in a fresh interpreter, where only what it unpickles is imported: it first
    imports the modules that registered its runs' algorithms and datasets in the launching
    process (importing the ``mat`` package registers MAT), so that they are known by name there too.
    On preemption or time-out submitit calls ``checkpoint``, which resubmits the same stack;
    ``run_fn`` then resumes its runs from the checkpoints they keep on disk. A job that
    SLURM requeues by itself (``scontrol requeue``, node failure) restarts the same way.
    """

    def __init__(self, run_fn: Callable[[list], None], runs: list, imports: list[str] | None = None) -> None:
        self.run_fn = run_fn
        self.runs = runs
        self.imports = registering_modules(runs) if imports is None else imports

    def __call__(self) -> None:
        for module in self.imports:
            importlib.import_module(module)
        # A job SLURM restarts (requeue, node failure) continues the runs it had started.
        restarted = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0
        self.run_fn([resuming(run) for run in self.runs] if restarted else self.runs)

    def checkpoint(self) -> submitit.helpers.DelayedSubmission:  # type: ignore[override]
        """A resubmission of the same stack, told to resume from the checkpoints on disk."""
        resubmitted = StackJob(self.run_fn, [resuming(run) for run in self.runs], self.imports)
        return submitit.helpers.DelayedSubmission(resubmitted)

"""A stack of runs as a submitit job, resubmitted (and resumed) on preemption or time-out."""
import dataclasses
import os
from typing import Any, Callable

import submitit


def resuming(run: Any) -> Any:
    """The same run, told to resume from its checkpoint."""
    return dataclasses.replace(run, resume=True)


class StackJob(submitit.helpers.Checkpointable):
    """One stack of runs as a submitit job.

    On preemption or time-out submitit calls ``checkpoint``, which resubmits the same stack;
    ``run_fn`` then resumes its runs from the checkpoints they keep on disk. A job that
    SLURM requeues by itself (``scontrol requeue``, node failure) restarts the same way.
    """

    def __init__(self, run_fn: Callable[[list], None], runs: list) -> None:
        self.run_fn = run_fn
        self.runs = runs

    def __call__(self) -> None:
        # A job SLURM restarts (requeue, node failure) continues the runs it had started.
        restarted = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0
        self.run_fn([resuming(run) for run in self.runs] if restarted else self.runs)

    def checkpoint(self) -> submitit.helpers.DelayedSubmission:  # type: ignore[override]
        """A resubmission of the same stack, told to resume from the checkpoints on disk."""
        return submitit.helpers.DelayedSubmission(StackJob(self.run_fn, [resuming(run) for run in self.runs]))

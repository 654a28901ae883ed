"""The one exception type for mistakes a user can fix."""
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


class UserError(Exception):
    """A problem with the user's input, reported as one line that says what to do.

    Command-line entry points catch it, print ``error: <message>`` to stderr and exit
    with status 2; nothing else should be written once it is raised.
    """


def unwrap_worker_errors(batches: Iterable[T]) -> Iterator[T]:
    """``batches`` (a DataLoader) as they come, with a UserError raised in a worker process
    turned back into its own one line.

    DataLoader re-raises a worker's exception in the main process with a message of several
    lines ("Caught UserError in DataLoader worker process 0. Original Traceback ..."); the
    user's line is the traceback's last.
    """
    try:
        yield from batches
    except UserError as error:
        lines = str(error).strip().splitlines()
        if len(lines) < 2:
            raise
        raise UserError(lines[-1].removeprefix(f"{UserError.__module__}.{UserError.__name__}: ")) from None


class RunsFailed(Exception):
    """Some runs of a stack failed while the others finished: ``reasons`` maps run names to one line each."""

    def __init__(self, reasons: dict[str, str]) -> None:
        super().__init__("; ".join(f"{name}: {reason}" for name, reason in reasons.items()))
        self.reasons = reasons


class Interrupted(KeyboardInterrupt):
    """Training stopped by a signal (Ctrl-C's SIGINT, or SIGTERM: a cluster's scancel, a shutdown)
    after its runs saved their checkpoints; ``signum`` is the signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum

"""One process per run: an exclusive lock on a lock file beside the run's files (fcntl).

The kernel drops a process's locks when it dies (even by SIGKILL), so a killed run is never
stuck. Two launchers started on one --out_dir: the second finds the lock held and skips the
run, saying it is running elsewhere. A lock file that is a symbolic link is refused with one
line naming it (opening it would create or lock whatever it points to).
"""
import fcntl
import os
from pathlib import Path

from XRM.common.fileio import open_no_follow


def try_lock(path: Path) -> int | None:
    """An open descriptor holding the exclusive lock on ``path`` (created if absent), or None
    when another process holds it; a UserError when ``path`` is a symbolic link."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open_no_follow(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(handle)
        return None
    return handle


def unlock(handle: int) -> None:
    """Release a lock taken by :func:`try_lock`."""
    os.close(handle)


def held_elsewhere(path: Path) -> bool:
    """Whether another process holds the lock on ``path`` now (a UserError when it is a symbolic link)."""
    if not (path.exists() or path.is_symlink()):
        return False
    handle = try_lock(path)
    if handle is None:
        return True
    unlock(handle)
    return False

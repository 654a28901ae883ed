"""Atomic file writes (a reader never sees a half-written file) and whole-line appends.

No write follows a symbolic link planted in a run's folder: temporaries are created with
O_CREAT | O_EXCL | O_NOFOLLOW (tempfile.mkstemp) and written through their descriptor, the
rename replaces a link at the destination rather than writing where it points, and files
opened in place (appended records, lock files) are opened with O_NOFOLLOW.
"""
import contextlib
import errno
import json
import os
import shlex
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Callable

from XRM.common.errors import UserError


def _mode_from_umask() -> int:
    # mkstemp creates files readable by their owner only; finished files get the usual 0666 & ~umask
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


MIN_FREE_BYTES = 1 << 20


def _disk_full(error: BaseException, folder: Path) -> bool:
    """Whether a failed write failed for lack of space (torch.save reports it as a RuntimeError
    without an errno, so the free space is looked at too)."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return True
    try:
        return shutil.disk_usage(folder).free < MIN_FREE_BYTES
    except OSError:
        return False


@contextlib.contextmanager
def space_errors(path: Path) -> Iterator[None]:
    """Turn a write that failed on a full disk into one UserError: ``no space left on <folder>``."""
    try:
        yield
    except (OSError, RuntimeError) as error:
        if _disk_full(error, path.parent):
            raise UserError(f"no space left on {path.parent} (writing {path.name}); free some space, then "
                            "relaunch with --resume") from None
        raise


def open_no_follow(path: Path, flags: int, mode: int = 0o644) -> int:
    """``os.open(path, flags)`` that never follows a symbolic link at ``path``: a UserError
    naming it when it is one (a link planted there would send the write elsewhere)."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UserError(f"{path} is a symbolic link, which is never followed: delete it "
                            f"(rm {shlex.quote(str(path))}) and run the command again") from None
        raise


def _atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Write through ``write`` into a fresh temporary beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with space_errors(path):
        # mkstemp: O_CREAT | O_EXCL | O_NOFOLLOW, so a name taken (by a planted link, say) is never reused
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        tmp = Path(name)
        try:
            with os.fdopen(handle, "wb") as stream:  # written through the descriptor, never reopened by name
                write(stream)
                os.fchmod(stream.fileno(), _mode_from_umask())
            os.replace(tmp, path)  # replaces a link at ``path`` itself, never what it points to
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """Save ``obj`` with ``torch.save`` to a temporary file beside ``path``, then rename it."""
    import torch  # here, not at the top: reading and writing JSON must not load torch

    _atomic_write(path, lambda stream: torch.save(obj, stream))


def atomic_write_bytes(data: bytes, path: str | os.PathLike) -> None:
    """Write ``data`` (an encoded image, say) to a temporary file beside ``path``, then rename it."""
    _atomic_write(path, lambda stream: stream.write(data))


def atomic_write_text(text: str, path: str | os.PathLike) -> None:
    """Write ``text`` (UTF-8) to a temporary file beside ``path``, then rename it."""
    atomic_write_bytes(text.encode("utf-8"), path)


def atomic_write_json(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", path)


def append_jsonl(path: str | os.PathLike, record: Any) -> None:
    """Append ``record`` as one JSON line to ``path``, safely beside other writers.

    The line goes out in a single ``write`` on a file opened with ``O_APPEND``: the
    kernel places each such write at the end of the file as a whole, so lines from
    several processes appending at once neither interleave nor overwrite each other.
    A symbolic link at ``path`` is refused (UserError), never written through.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    with space_errors(path):
        handle = open_no_follow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            written = os.write(handle, line)
        finally:
            os.close(handle)
    if written != len(line):
        # A second write could land after another process's line: report, never split a line.
        raise OSError(f"short write appending to {path}: {written} of {len(line)} bytes (disk full?)")

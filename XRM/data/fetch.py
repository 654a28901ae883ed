"""Getting one file into place: from its source or a mirror, checked, then renamed.

A download goes to a hidden ``.<name>.part`` beside its destination and is renamed only
once complete and verified, so an interrupted or failed download never looks finished;
a stale ``.part`` from a killed run is deleted and the download starts over.
"""
import contextlib
import hashlib
import os
import shutil
import socket
import sys
import urllib.error
from collections.abc import Iterator
from pathlib import Path

from XRM.common.errors import UserError
from XRM.data.sources import RemoteFile

# Seconds a stalled connection may stay silent before the download counts as failed.
DOWNLOAD_TIMEOUT_S = 120.0


def is_url(mirror: str) -> bool:
    """Whether ``--mirror`` names a web location rather than a local folder."""
    return "://" in mirror


def source_location(remote: RemoteFile, dataset: str, mirror: str | None) -> str:
    """The URL or local path ``remote`` is fetched from: ``<mirror>/<dataset>/<name>`` or its own URL."""
    if mirror is None:
        return remote.url
    if is_url(mirror):
        return f"{mirror.rstrip('/')}/{dataset}/{remote.name}"
    return str(Path(mirror) / dataset / remote.name)


def manual_copy_hint(location: str, destination: Path) -> str:
    """The end of every failed-download message: how to finish the job by hand."""
    return (f"download {location} by hand, save it as {destination}, "
            "and re-run without --download to prepare it")


def _digests(path: Path) -> dict[str, str]:
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    # git names a blob by the sha1 of a header plus the bytes.
    git_sha1 = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            for digest in (md5, sha256, git_sha1):
                digest.update(chunk)
    return {"md5": md5.hexdigest(), "sha256": sha256.hexdigest(), "git_sha1": git_sha1.hexdigest()}


def checksum_problem(path: Path, remote: RemoteFile) -> str | None:
    """Compare ``path`` with every checksum known for ``remote``.

    Returns a description of the first mismatch, or None when all known checksums
    agree. A mismatch with an unconfirmed checksum is printed as a warning only.
    """
    expected = {"md5": remote.md5, "sha256": remote.sha256, "git_sha1": remote.git_sha1}
    if not any(expected.values()) and remote.sha256_unconfirmed is None:
        return None
    actual = _digests(path)
    for kind, value in expected.items():
        if value is not None and actual[kind] != value:
            return f"{kind} {actual[kind]} where {value} was expected"
    if remote.sha256_unconfirmed is not None and actual["sha256"] != remote.sha256_unconfirmed:
        print(f"warning: {remote.name} has sha256 {actual['sha256']}, not the "
              f"{remote.sha256_unconfirmed} one unofficial source gives; continuing", file=sys.stderr)
    return None


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    # torchvision's downloads take no timeout: a silent server would hang forever.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _transfer(remote: RemoteFile, location: str, mirror: str | None, partial: Path) -> None:
    if mirror is not None and not is_url(mirror):
        if not Path(location).is_file():
            raise FileNotFoundError(f"no such file {location}")
        shutil.copyfile(location, partial)
        return
    # Imported here: download.py's other work (and its --help) must not wait for torchvision.
    from torchvision.datasets.utils import download_file_from_google_drive, download_url

    with _socket_timeout(DOWNLOAD_TIMEOUT_S):
        if mirror is None and remote.google_drive_id is not None:
            download_file_from_google_drive(remote.google_drive_id, partial.parent, partial.name)
        else:
            download_url(location, partial.parent, partial.name)


ACCEPT_UNOFFICIAL_FLAG = "--accept_unofficial"


def unofficial_warning(what: str, problem: str) -> str:
    """The warning printed when ``--accept_unofficial`` lets a file whose checksum differs through."""
    return f"warning: {what} has {problem} (not the official file): using it anyway ({ACCEPT_UNOFFICIAL_FLAG})"


def fetch(remote: RemoteFile, dataset: str, destination: Path, mirror: str | None = None,
          accept_unofficial: bool = False) -> None:
    """Download ``remote`` (or copy it from ``mirror``) to ``destination``, verified.

    Raises UserError, with the URL, the file expected and where to put a copy made by
    hand, when the transfer fails or a checksum disagrees; nothing is left behind then.
    With ``accept_unofficial`` a checksum that disagrees is a warning and the file stays.
    """
    location = source_location(remote, dataset, mirror)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(f".{destination.name}.part")
    partial.unlink(missing_ok=True)
    print(f"downloading {location} -> {destination}", file=sys.stderr)
    try:
        _transfer(remote, location, mirror, partial)
        if not partial.is_file():
            raise OSError("no file arrived")
        problem = checksum_problem(partial, remote)
        if problem is not None and accept_unofficial:
            print(unofficial_warning(f"{remote.name} from {location}", problem), file=sys.stderr)
        elif problem is not None and mirror is not None:
            # The mirror's copy is the user's: fetching it again, or placing it by hand, brings the same bytes.
            raise UserError(f"{remote.name} from {location} has {problem} (not the official file; deleted): "
                            f"re-run with {ACCEPT_UNOFFICIAL_FLAG} to use this copy anyway, or "
                            f"{manual_copy_hint(remote.url, destination)}")
        elif problem is not None:
            raise UserError(f"{remote.name} from {location} has {problem} (corrupted or incomplete "
                            f"download; deleted): re-run, or {manual_copy_hint(location, destination)}")
        os.replace(partial, destination)
    except (urllib.error.URLError, OSError, RuntimeError, EOFError) as error:
        # RuntimeError: torchvision's "File not found or corrupted." and gdown missing.
        reason = str(error).replace("\n", " ").strip() or type(error).__name__
        raise UserError(f"could not download {location} ({reason}): "
                        f"{manual_copy_hint(location, destination)}") from error
    finally:
        partial.unlink(missing_ok=True)

"""Safe unpacking of a downloaded archive into its place.

Every member is checked before it is written: a member that would land outside the
target (``../x``, an absolute path, a link pointing out, a device file) stops the whole
extraction. Members go to a hidden temporary folder inside the target; only when all
are out are the top-level entries renamed into place and a marker written, so a
damaged or malicious archive leaves nothing that looks extracted.
"""
import gzip
import os
import posixpath
import shutil
import sys
import tarfile
import zlib
import zipfile
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from XRM.errors import UserError

# Python's own tar member filter (3.11.4+), used on top of the checks made here.
_TAR_FILTER = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


class ArchiveError(UserError):
    """An archive that cannot be extracted safely: damaged, incomplete, or with a member
    that would land outside the target. ``problem`` says what, without advice."""

    def __init__(self, archive: Path, problem: str):
        super().__init__(f"{archive} {problem}: delete it and download it again")
        self.archive, self.problem = archive, problem


def extraction_marker(archive_name: str, target: Path) -> Path:
    """The file that records that ``archive_name`` was fully unpacked into ``target``."""
    return target / f".{archive_name}.extracted"


def is_extracted(archive_name: str, target: Path) -> bool:
    """Whether ``archive_name`` was fully unpacked into ``target`` by :func:`safe_extract`."""
    return extraction_marker(archive_name, target).is_file()


def _inside(name: str) -> bool:
    """Whether a member path, taken relative to the target, stays inside it."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or (name[1:2] == ":"):  # POSIX or Windows drive paths
        return False
    normal = posixpath.normpath(str(path))
    return normal != ".." and not normal.startswith("../")


def _check_tar_member(member: tarfile.TarInfo, archive: Path) -> None:
    problem = None
    if not _inside(member.name):
        problem = "would land outside the target"
    elif member.issym():
        # A symlink resolves relative to its own folder.
        if not _inside(posixpath.join(posixpath.dirname(member.name), member.linkname)):
            problem = f"is a link to {member.linkname!r}, outside the target"
    elif member.islnk():
        if not _inside(member.linkname):
            problem = f"is a hard link to {member.linkname!r}, outside the target"
    elif not (member.isfile() or member.isdir()):
        problem = "is a device or pipe"
    if problem is not None:
        raise ArchiveError(archive, f"has a member {member.name!r} that {problem}; refusing to extract it")


def _unpack_tar(archive: Path, workspace: Path) -> None:
    with tarfile.open(archive, "r:*") as tar:
        for member in tqdm(tar, desc=f"extracting {archive.name}", unit=" files"):
            _check_tar_member(member, archive)
            tar.extract(member, workspace, **_TAR_FILTER)


def _unpack_zip(archive: Path, workspace: Path) -> None:
    with zipfile.ZipFile(archive) as bundle:
        members = bundle.infolist()
        for member in members:
            # zipfile never creates links, so the member names are all there is to check.
            if not _inside(member.filename):
                raise ArchiveError(archive, f"has a member {member.filename!r} that would land outside "
                                            "the target; refusing to extract it")
        for member in tqdm(members, desc=f"extracting {archive.name}", unit=" files"):
            bundle.extract(member, workspace)


def _unpack_gzip(archive: Path, workspace: Path) -> None:
    with gzip.open(archive, "rb") as source, open(workspace / archive.name.removesuffix(".gz"), "wb") as sink:
        shutil.copyfileobj(source, sink, 1 << 20)


def _unpacker(archive: Path):
    name = archive.name
    if name.endswith((".tar.gz", ".tgz", ".tar")):
        return _unpack_tar
    if name.endswith(".zip"):
        return _unpack_zip
    if name.endswith(".gz"):
        return _unpack_gzip
    raise ValueError(f"unknown archive type: {name}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def safe_extract(archive: Path, target: Path) -> list[str]:
    """Unpack ``archive`` (.tar[.gz], .tgz, .zip or a single .gz file) into ``target``.

    Returns the top-level names it placed in ``target``. Raises UserError when a member
    would land outside ``target`` or the archive is damaged or incomplete; the target
    is then left as it was (ArchiveError, a UserError).
    """
    target.mkdir(parents=True, exist_ok=True)
    workspace = target / f".{archive.name}.extracting"
    if workspace.exists():  # left by an interrupted run
        shutil.rmtree(workspace)
    workspace.mkdir()
    try:
        _unpacker(archive)(archive, workspace)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error) as error:
        shutil.rmtree(workspace)
        raise ArchiveError(archive, f"is damaged or incomplete ({error})") from error
    except BaseException:
        shutil.rmtree(workspace)
        raise
    entries = sorted(os.listdir(workspace))
    for entry in entries:
        # Only an interrupted rename (or a copy unpacked by hand) leaves one already there.
        if (target / entry).exists() or (target / entry).is_symlink():
            print(f"replacing {target / entry} with the copy from {archive.name}", file=sys.stderr)
            _remove(target / entry)
        os.replace(workspace / entry, target / entry)
    workspace.rmdir()
    extraction_marker(archive.name, target).write_text("\n".join(entries) + "\n")
    return entries

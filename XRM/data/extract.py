"""Safe unpacking of a downloaded archive into its place.

The archive module's own checks decide, the same way on every Python >= 3.10: every
member's real destination is worked out before it is written, its path followed,
component by component, through the links already extracted, and so is a link's target.
A member that would land outside the target (``../x``, an absolute path, ``s/../x``
through a link ``s`` made earlier, a link pointing out, a device file) stops the whole
extraction with ``unsafe member <name>``. A member that passes is written exactly as the
archive has it: tarfile's extraction filters are not applied, as they differ between
Python releases (3.10 < 3.10.12 and 3.11 < 3.11.4 have none; the 2025 security releases
rewrite link targets, which turned a link refused here into another one). Owners, modes
and times stored in the archive are not applied.

Members go to a hidden temporary folder inside the target; only when all are out (and
every link there still leads inside) are the top-level entries renamed into place and a
marker written, so a damaged or malicious archive leaves nothing that looks extracted. A
link planted where that folder or the marker goes is removed, never followed.
"""
import gzip
import os
import posixpath
import shutil
import stat
import sys
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from XRM.common.errors import UserError

# Linux's own limit on the links followed while resolving one path.
MAX_LINK_HOPS = 40


class ArchiveError(UserError):
    """An archive that cannot be extracted safely: damaged, incomplete, or with a member
    that would land outside the target. ``problem`` says what, without advice; ``unsafe``
    tells a refused member (the same archive will always be refused) from a damaged file."""

    def __init__(self, archive: Path, problem: str, unsafe: bool = False):
        advice = "refusing to extract it" if unsafe else "delete it and download it again"
        super().__init__(f"{archive} {problem}: {advice}")
        self.archive, self.problem, self.unsafe = archive, problem, unsafe


class _UnsafeMember(Exception):
    """Why one member may not be extracted; :func:`safe_extract` turns it into an ArchiveError."""


def _unsafe(archive: Path, name: str, why: str) -> ArchiveError:
    # repr(): a member name may hold a newline, and the message stays one line.
    return ArchiveError(archive, f"has unsafe member {name!r} ({why})", unsafe=True)


def extraction_marker(archive_name: str, target: Path) -> Path:
    """The file that records that ``archive_name`` was fully unpacked into ``target``."""
    return target / f".{archive_name}.extracted"


def is_extracted(archive_name: str, target: Path) -> bool:
    """Whether ``archive_name`` was fully unpacked into ``target`` by :func:`safe_extract`."""
    return extraction_marker(archive_name, target).is_file()


def _inside(name: str) -> bool:
    """Whether a member path, taken relative to the target, stays inside it (by its letters alone)."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or (name[1:2] == ":"):  # POSIX or Windows drive paths
        return False
    normal = posixpath.normpath(str(path))
    return normal != ".." and not normal.startswith("../")


def _resolve_inside(root: Path, parts: list[str], follow_last: bool = True) -> list[str]:
    """The real location of ``root/parts``, as components below ``root``, with every link
    on disk followed (the last component's only when ``follow_last``).

    Components that do not exist yet count as plain folders, as they will be made.
    Raises _UnsafeMember when a step leads out of ``root``, through an absolute link,
    through more than MAX_LINK_HOPS links, or where the path cannot be read (too long:
    never guess past a failed lookup, as ``os.path.realpath`` does).
    """
    resolved: list[str] = []  # real folders (never links), then names not on disk yet
    on_disk = 0  # how many of them exist: below a missing one, nothing does
    pending = list(reversed(parts))  # a stack: the next component last
    hops = 0
    while pending:
        part = pending.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if not resolved:
                raise _UnsafeMember("it leads outside the target")
            resolved.pop()
            on_disk = min(on_disk, len(resolved))
            continue
        if on_disk < len(resolved) or (not pending and not follow_last):
            resolved.append(part)
            continue
        path = os.path.join(root, *resolved, part)
        try:
            mode = os.lstat(path).st_mode
        except (FileNotFoundError, NotADirectoryError):
            resolved.append(part)
            continue
        except OSError as error:
            raise _UnsafeMember(f"its path cannot be resolved: {error.strerror}") from error
        if not stat.S_ISLNK(mode):
            resolved.append(part)
            on_disk += 1
            continue
        hops += 1
        if hops > MAX_LINK_HOPS:
            raise _UnsafeMember("its path goes through too many links")
        link = os.readlink(path)
        if posixpath.isabs(link):
            raise _UnsafeMember(f"its path goes through the absolute link {os.path.join(*resolved, part)!r}")
        pending.extend(reversed(link.split("/")))
    return resolved


def _split(name: str) -> list[str]:
    return name.rstrip("/").split("/")


def _check_destination(root: Path, name: str, is_dir: bool) -> list[str]:
    """Check where member ``name`` really lands and make it writable without following a
    link; returns its real location below ``root`` (see :func:`_resolve_inside`)."""
    if not _inside(name):
        raise _UnsafeMember("it would land outside the target")
    try:
        # A folder may be an earlier link, which the folder's contents then go through.
        destination = _resolve_inside(root, _split(name), follow_last=is_dir)
    except _UnsafeMember as error:
        raise _UnsafeMember(f"through the links before it, {error}") from None
    if not destination and not is_dir:
        raise _UnsafeMember("it would replace the target itself")
    path = os.path.join(root, *destination)
    if not is_dir and os.path.islink(path):
        os.unlink(path)  # a file written here would be written where an earlier link points
    return destination


def _check_tar_member(member: tarfile.TarInfo, root: Path) -> None:
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise _UnsafeMember("it is a device, pipe or other special file")
    destination = _check_destination(root, member.name, member.isdir())
    if not (member.issym() or member.islnk()):
        return
    kind = "link" if member.issym() else "hard link"
    if posixpath.isabs(member.linkname):
        raise _UnsafeMember(f"it is a {kind} to {member.linkname!r}, outside the target")
    # A symbolic link resolves from its own folder; a hard link names a path from the archive's root.
    start = destination[:-1] if member.issym() else []
    try:
        _resolve_inside(root, start + member.linkname.split("/"))
    except _UnsafeMember as error:
        raise _UnsafeMember(f"it is a {kind} to {member.linkname!r}: {error}") from None


def _as_checked() -> dict:
    """tarfile.extract's arguments that write a member as it was checked: no owner, setuid bit or
    mode from the archive, and no extraction filter (where tarfile has them) to rewrite it."""
    trusted = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
    return {"set_attrs": False, **trusted}


def _links_below(root: Path) -> Iterator[Path]:
    """Every symbolic link under ``root``, not following any."""
    folders = [root]
    while folders:
        with os.scandir(folders.pop()) as entries:
            for entry in entries:
                if entry.is_symlink():
                    yield Path(entry.path)
                elif entry.is_dir():
                    folders.append(Path(entry.path))


def _check_links(archive: Path, root: Path) -> None:
    """Every link extracted still leads inside ``root``: a later member can redirect an
    earlier link's path (and tarfile makes a hard link to a link into a link)."""
    for link in _links_below(root):
        name = link.relative_to(root).as_posix()
        try:
            _resolve_inside(root, name.split("/"))
        except _UnsafeMember as error:
            raise _unsafe(archive, name, f"once extracted, it is a link and {error}") from None


def _unpack_tar(archive: Path, workspace: Path) -> None:
    has_links = False
    with tarfile.open(archive, "r:*") as tar:
        for member in tqdm(tar, desc=f"extracting {archive.name}", unit=" files"):
            try:
                _check_tar_member(member, workspace)
            except _UnsafeMember as error:
                raise _unsafe(archive, member.name, str(error)) from None
            tar.extract(member, workspace, **_as_checked())
            has_links = has_links or member.issym() or member.islnk()
    if has_links:
        _check_links(archive, workspace)


def _unpack_zip(archive: Path, workspace: Path) -> None:
    # zipfile writes link entries as plain files, so no link is ever made here; the
    # destinations are still resolved as a tar's are.
    with zipfile.ZipFile(archive) as bundle:
        for member in tqdm(bundle.infolist(), desc=f"extracting {archive.name}", unit=" files"):
            try:
                _check_destination(workspace, member.filename, member.is_dir())
            except _UnsafeMember as error:
                raise _unsafe(archive, member.filename, str(error)) from None
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

    Returns the top-level names it placed in ``target``. Raises ArchiveError (a
    UserError, one line) when a member would land outside ``target`` ("has unsafe member
    '<name>' (why)") or the archive is damaged or incomplete; the target is then left
    as it was.
    """
    target.mkdir(parents=True, exist_ok=True)
    workspace = target / f".{archive.name}.extracting"
    if workspace.exists() or workspace.is_symlink():  # left by an interrupted run (or planted)
        _remove(workspace)
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
    marker = workspace / "marker"  # written in the fresh folder, then renamed over whatever is in its place
    marker.write_text("\n".join(entries) + "\n")
    os.replace(marker, extraction_marker(archive.name, target))
    workspace.rmdir()
    return entries

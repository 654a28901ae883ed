"""Tar archives for the extraction tests, in the standard library alone (no pytest, no torch), so that
tests/extract_harness.py can run them under any Python the toolkit supports.

Each case is the archive's members, and either the member the extraction must refuse and why,
or (``KEPT``) the files it must leave. ``TARFILES`` are the tarfile modules of the Pythons that
differ: the one running, one without extraction filters (3.10 < 3.10.12, 3.11 < 3.11.4), and one
whose data filter rewrites link targets (the 2025 security releases: 3.12.11+, 3.13.4+, 3.14, and
distributions' backports such as Ubuntu's 3.12.3).
"""
import contextlib
import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path


def tar(path: Path, members: list) -> Path:
    """Write ``members`` ((TarInfo, bytes or None) pairs) as a .tar.gz at ``path``."""
    with tarfile.open(path, "w:gz") as bundle:
        for member, data in members:
            bundle.addfile(member, io.BytesIO(data) if data is not None else None)
    return path


def file(name: str, data: bytes = b"data", mode: int = 0o644) -> tuple:
    """A regular file member."""
    member = tarfile.TarInfo(name)
    member.size, member.mode = len(data), mode
    return member, data


def folder(name: str) -> tuple:
    """A directory member."""
    member = tarfile.TarInfo(name)
    member.type = tarfile.DIRTYPE
    return member, None


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple:
    """A symbolic (or, with ``kind=tarfile.LNKTYPE``, hard) link member."""
    member = tarfile.TarInfo(name)
    member.type, member.linkname = kind, target
    return member, None


def refusal(name: str, why: str) -> str:
    """What an ArchiveError's ``problem`` says of a refused member."""
    return f"has unsafe member {name!r} ({why})"


ONCE_EXTRACTED_OUT = "once extracted, it is a link and it leads outside the target"

# No member name leaves the target by its letters, yet s is the extraction folder once made,
# and s/../../../../x four levels above it.
THROUGH_A_LINKED_FOLDER = [folder("a/b/c"), link("a/b/c/s", "../../.."), file("a/b/c/s/../../../../x", b"escaped")]

# (members, refused member, why): each archive must be refused, whatever the tarfile.
REFUSED = [
    # a is checked while b does not exist; b then makes a lead two levels up.
    ([link("a", "b/c/../.."), link("b", ".")], "a", ONCE_EXTRACTED_OUT),
    # tarfile cannot hard-link a folder, so it copies the link l (to ..) as h, one level higher.
    ([folder("deep/d1/d2"), link("deep/d1/d2/l", ".."), link("h", "deep/d1/d2/l", kind=tarfile.LNKTYPE)], "h",
     ONCE_EXTRACTED_OUT),
    ([link("l1", "l2"), link("l2", "l1"), file("l1/x")], "l1/x",
     "through the links before it, its path goes through too many links"),
    ([link("top", "/tmp")], "top", "it is a link to '/tmp', outside the target"),
    ([file("top/a.txt"), link("top/b", "../../etc/passwd")], "top/b",
     "it is a link to '../../etc/passwd': it leads outside the target"),
    ([file("top/a.txt"), link("top/b", "../outside", kind=tarfile.LNKTYPE)], "top/b",
     "it is a hard link to '../outside': it leads outside the target"),
    ([file("../escaped")], "../escaped", "it would land outside the target"),
    ([file("/tmp/absolute")], "/tmp/absolute", "it would land outside the target"),
    # repr() keeps the message on one line.
    ([file("top/evil\nname/../../../x")], "top/evil\nname/../../../x", "it would land outside the target"),
    ([file("top/..")], "top/..", "it would replace the target itself"),
    (THROUGH_A_LINKED_FOLDER, "a/b/c/s/../../../../x", "through the links before it, it leads outside the target"),
]

# (members, what the target holds after): links that stay inside are kept as the archive has them.
KEPT = [
    ([file("top/a.txt", b"hello"), link("top/sub/b.txt", "../a.txt"), link("top/here", "."),
      file("top/here/c.txt", b"through a link")],
     ["top/", "top/a.txt: hello", "top/c.txt: through a link", "top/here -> .", "top/sub/", "top/sub/b.txt -> ../a.txt"]),
    # written as checked: a filter that normalises link targets must not make it 'a.txt'
    ([file("top/a.txt", b"hi"), link("top/l", "sub/../a.txt"), folder("top/sub")],
     ["top/", "top/a.txt: hi", "top/l -> sub/../a.txt", "top/sub/"]),
    # a file never written through an earlier link: it replaces the link
    ([file("top/a.txt", b"original"), link("top/l", "a.txt"), file("top/l", b"replaces the link")],
     ["top/", "top/a.txt: original", "top/l: replaces the link"]),
]


def tree(root: Path) -> list[str]:
    """Every entry below ``root`` (but the extraction marker): folders end in '/', links show their
    target, files their text."""
    entries = []
    for path in sorted(root.rglob("*")):
        name = path.relative_to(root).as_posix()
        if path.is_symlink():
            entries.append(f"{name} -> {os.readlink(path)}")
        elif path.is_dir():
            entries.append(f"{name}/")
        elif not name.endswith(".extracted"):
            entries.append(f"{name}: {path.read_bytes().decode()}")
    return entries


def _normalizing(data_filter):
    """``data_filter`` as the 2025 security releases ship it: link targets rewritten with normpath."""
    def filter_function(member: tarfile.TarInfo, dest_path: str) -> tarfile.TarInfo:
        filtered = data_filter(member, dest_path)
        if filtered.issym() or filtered.islnk():
            filtered = filtered.replace(linkname=os.path.normpath(filtered.linkname), deep=False)
        return filtered
    return filter_function


#: a patch's value that deletes the attribute
DELETE = object()


def tarfile_patches(variant: str) -> list[tuple[object, str, object]] | None:
    """(object, attribute, value or DELETE) triples that make this Python's tarfile the ``variant``
    of ``TARFILES``; None when this Python cannot be made so."""
    filters = hasattr(tarfile, "data_filter")
    if variant == "this Python's":
        return []
    if variant == "without filters":
        trusted = [(tarfile.TarFile, "extraction_filter", staticmethod(tarfile.fully_trusted_filter))] if filters else []
        return [(tarfile, "data_filter", DELETE)] * filters + trusted
    if not filters:
        return None
    rewriting = _normalizing(tarfile.data_filter)
    return [(tarfile, "data_filter", rewriting), (tarfile, "_NAMED_FILTERS", {**tarfile._NAMED_FILTERS, "data": rewriting}),
            (tarfile.TarFile, "extraction_filter", staticmethod(rewriting))]  # 3.14 filters with "data" by default


TARFILES = ["this Python's", "without filters", "link-normalizing"]


@contextlib.contextmanager
def tarfile_as(variant: str) -> Iterator[bool]:
    """Within the block, tarfile behaves as ``variant``; yields False (and changes nothing) when it cannot."""
    patches = tarfile_patches(variant)
    possible, patches = patches is not None, patches or []
    saved = [(owner, name, owner.__dict__.get(name, DELETE)) for owner, name, _ in patches]
    try:
        for owner, name, value in patches:
            _assign(owner, name, value)
        yield possible
    finally:
        for owner, name, value in reversed(saved):
            _assign(owner, name, value)


def _assign(owner: object, name: str, value: object) -> None:
    if value is not DELETE:
        setattr(owner, name, value)
    elif name in owner.__dict__:
        delattr(owner, name)

"""Safe extraction: links, zip members, markers, and leftovers of interrupted runs.

Every refusal is checked twice: with tarfile's ``data`` filter, and with tarfile as
Python 3.10 < 3.10.12 and 3.11 < 3.11.4 ship it (no ``data_filter``, nothing filtered),
so the archive module's own checks are what stops the member.
"""
import io
import os
import re
import stat
import tarfile
import zipfile

import pytest

import download_fixtures as fx
from XRM.data.extract import ArchiveError, is_extracted, safe_extract


@pytest.fixture(params=["data filter", "no data filter"])
def tar_filter(request, monkeypatch):
    """Run the test with this Python's tarfile, then with one that has no data filter."""
    if request.param == "data filter":
        if not hasattr(tarfile, "data_filter"):
            pytest.skip("this Python's tarfile has no data filter")
    else:
        fx.without_tar_data_filter(monkeypatch)
    return request.param


def _tar(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for member, data in members:
            tar.addfile(member, io.BytesIO(data) if data is not None else None)
    return path


def _file(name, data=b"data", mode=0o644):
    member = tarfile.TarInfo(name)
    member.size, member.mode = len(data), mode
    return member, data


def _dir(name):
    member = tarfile.TarInfo(name)
    member.type = tarfile.DIRTYPE
    return member, None


def _link(name, target, kind=tarfile.SYMTYPE):
    member = tarfile.TarInfo(name)
    member.type, member.linkname = kind, target
    return member, None


def _refusal(archive, member, why):
    return f"{archive} has unsafe member {member!r} ({why}): refusing to extract it"


def _tree(folder):
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*"))


def test_links_inside_are_kept(tmp_path, tar_filter):
    archive = _tar(tmp_path / "ok.tar.gz", [_file("top/a.txt", b"hello"), _link("top/sub/b.txt", "../a.txt"),
                                            _link("top/here", "."), _file("top/here/c.txt", b"through a link")])
    target = tmp_path / "target"
    assert safe_extract(archive, target) == ["top"]
    assert (target / "top/sub/b.txt").read_bytes() == b"hello"
    assert (target / "top/c.txt").read_bytes() == b"through a link"
    assert is_extracted("ok.tar.gz", target)
    assert sorted(p.name for p in target.iterdir()) == [".ok.tar.gz.extracted", "top"]


# The brief's escape: no member name leaves the target by its letters, yet s is the
# extraction folder once made, and s/../../../../x four levels above it.
SYMLINK_THROUGH_FOLDER = [_dir("a/b/c"), _link("a/b/c/s", "../../.."), _file("a/b/c/s/../../../../x", b"escaped")]


def test_old_tarfile_really_writes_through_the_link(tmp_path, monkeypatch):
    # What the checks below guard against: tarfile without its data filter follows s.
    fx.without_tar_data_filter(monkeypatch)
    archive = _tar(tmp_path / "evil.tar.gz", SYMLINK_THROUGH_FOLDER)
    raw = tmp_path / "t1" / "t2" / "t3" / "raw"
    raw.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(raw)
    assert (tmp_path / "x").read_bytes() == b"escaped"


def test_symlink_through_a_folder_is_refused(tmp_path, tar_filter):
    archive = _tar(tmp_path / "evil.tar.gz", SYMLINK_THROUGH_FOLDER)
    target = tmp_path / "t1" / "t2" / "target"  # the workspace's 4th parent is tmp_path
    with pytest.raises(ArchiveError) as caught:
        safe_extract(archive, target)
    assert str(caught.value) == _refusal(archive, "a/b/c/s/../../../../x",
                                         "through the links before it, it leads outside the target")
    assert caught.value.unsafe and "damaged" not in str(caught.value)
    assert not (tmp_path / "x").exists()
    assert _tree(tmp_path / "t1") == ["t2", "t2/target"]


@pytest.mark.parametrize("members, name, why", [
    # a is checked while b does not exist; b then makes a lead two levels up.
    ([_link("a", "b/c/../.."), _link("b", ".")], "a", "once extracted, it is a link and it leads outside the target"),
    # tarfile cannot hard-link a folder, so it copies the link l (to ..) as h, one level higher.
    ([_dir("deep/d1/d2"), _link("deep/d1/d2/l", ".."), _link("h", "deep/d1/d2/l", kind=tarfile.LNKTYPE)], "h",
     "once extracted, it is a link and it leads outside the target"),
    ([_link("l1", "l2"), _link("l2", "l1"), _file("l1/x")], "l1/x",
     "through the links before it, its path goes through too many links"),
    ([_link("top", "/tmp")], "top", "it is a link to '/tmp', outside the target"),
    ([_file("top/a.txt"), _link("top/b", "../../etc/passwd")], "top/b",
     "it is a link to '../../etc/passwd': it leads outside the target"),
    ([_file("top/a.txt"), _link("top/b", "../outside", kind=tarfile.LNKTYPE)], "top/b",
     "it is a hard link to '../outside': it leads outside the target"),
    ([_file("../escaped")], "../escaped", "it would land outside the target"),
    ([_file("/tmp/absolute")], "/tmp/absolute", "it would land outside the target"),
    # repr() keeps the message on one line.
    ([_file("top/evil\nname/../../../x")], "top/evil\nname/../../../x", "it would land outside the target"),
    ([_file("top/..")], "top/..", "it would replace the target itself"),
])
def test_members_leading_out_are_refused(tmp_path, tar_filter, members, name, why):
    archive = _tar(tmp_path / "bad.tar.gz", members)
    target = tmp_path / "target"
    with pytest.raises(ArchiveError) as caught:
        safe_extract(archive, target)
    assert str(caught.value) == _refusal(archive, name, why)
    assert "\n" not in str(caught.value)
    assert list(target.iterdir()) == []


def test_path_too_long_to_resolve_is_refused(tmp_path, tar_filter):
    # Short links to ever deeper 250-letter folders: the kernel follows them, but the real
    # path soon passes PATH_MAX. os.path.realpath then guesses; the check refuses.
    long = "d" * 250
    members = [_dir(long), _link("s0", long)]
    for k in range(1, 20):
        members += [_dir(f"s{k - 1}/{long}"), _link(f"s{k}", f"s{k - 1}/{long}")]
    archive = _tar(tmp_path / "long.tar.gz", members)
    with pytest.raises(ArchiveError) as caught:
        safe_extract(archive, tmp_path / "target")
    assert re.fullmatch(re.escape(f"{archive} has unsafe member '") + f"s1[0-9]/{long}" + re.escape(
        "' (through the links before it, its path cannot be resolved: File name too long): refusing to extract it"),
        str(caught.value))
    assert list((tmp_path / "target").iterdir()) == []


def test_file_never_written_through_an_earlier_link(tmp_path, tar_filter):
    archive = _tar(tmp_path / "twice.tar.gz", [_file("top/a.txt", b"original"), _link("top/l", "a.txt"),
                                               _file("top/l", b"replaces the link")])
    target = tmp_path / "target"
    safe_extract(archive, target)
    assert (target / "top/a.txt").read_bytes() == b"original"
    assert not (target / "top/l").is_symlink() and (target / "top/l").read_bytes() == b"replaces the link"


def test_modes_and_owners_of_the_archive_are_not_applied(tmp_path, tar_filter):
    member, data = _file("top/tool", b"#!/bin/sh\n", mode=0o6777)
    member.uid = member.gid = 4242
    target = tmp_path / "target"
    safe_extract(_tar(tmp_path / "modes.tar.gz", [(member, data)]), target)
    extracted = (target / "top/tool").stat()
    assert extracted.st_mode & (stat.S_ISUID | stat.S_ISGID) == 0
    assert extracted.st_uid == os.getuid()


@pytest.mark.skipif(not hasattr(tarfile, "data_filter"), reason="this Python's tarfile has no data filter")
def test_data_filter_refusal_is_an_unsafe_member_too(tmp_path, monkeypatch):
    # The filter is a second opinion: with the module's own checks switched off, its
    # refusal reads the same way, never as a damaged archive.
    from XRM.data import extract
    monkeypatch.setattr(extract, "_check_tar_member", lambda member, root: None)
    archive = _tar(tmp_path / "bad.tar.gz", [_file("../escaped")])
    with pytest.raises(ArchiveError) as caught:
        safe_extract(archive, tmp_path / "target")
    assert str(caught.value).startswith(f"{archive} has unsafe member '../escaped' (tarfile's data filter: ")
    assert caught.value.unsafe and not (tmp_path / "escaped").exists()


def test_device_member_is_refused(tmp_path, tar_filter):
    device = tarfile.TarInfo("top/dev")
    device.type = tarfile.CHRTYPE
    archive = _tar(tmp_path / "dev.tar.gz", [(device, None)])
    with pytest.raises(ArchiveError) as caught:
        safe_extract(archive, tmp_path / "target")
    assert str(caught.value) == _refusal(archive, "top/dev", "it is a device, pipe or other special file")


@pytest.mark.parametrize("name", ["../2.jpg", "img/../../2.jpg", "/2.jpg"])
def test_zip_member_climbing_out_is_refused(tmp_path, name):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("img/1.jpg", b"x")
        bundle.writestr(name, b"y")
    with pytest.raises(ArchiveError) as caught:
        safe_extract(archive, tmp_path / "target")
    assert str(caught.value) == _refusal(archive, name, "it would land outside the target")
    assert list((tmp_path / "target").iterdir()) == []
    assert not (tmp_path / "2.jpg").exists()


def test_zip_link_entries_become_plain_files(tmp_path):
    # zipfile makes no links on any Python, so s/../../x can never go through one.
    archive = tmp_path / "links.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        link = zipfile.ZipInfo("img/s")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        bundle.writestr(link, "../..")
        bundle.writestr("img/1.jpg", b"x")
    target = tmp_path / "target"
    assert safe_extract(archive, target) == ["img"]
    assert not (target / "img/s").is_symlink() and (target / "img/s").read_text() == "../.."


def test_corrupt_zip_member_is_detected(tmp_path):
    archive = tmp_path / "crc.zip"
    with zipfile.ZipFile(archive, "w") as bundle:  # stored, so a flipped byte survives to the CRC check
        bundle.writestr("img/1.jpg", b"abcdefgh" * 64)
    raw = bytearray(archive.read_bytes())
    raw[raw.index(b"abcdefgh") + 3] ^= 0xFF
    archive.write_bytes(bytes(raw))
    with pytest.raises(ArchiveError) as caught:
        safe_extract(archive, tmp_path / "target")
    assert str(caught.value) == (f"{archive} is damaged or incomplete (Bad CRC-32 for file 'img/1.jpg'): "
                                 "delete it and download it again")
    assert not caught.value.unsafe
    assert list((tmp_path / "target").iterdir()) == []


def test_rerun_replaces_leftovers_of_an_interrupted_run(tmp_path):
    archive = _tar(tmp_path / "x.tar.gz", [_file("top/new.txt", b"new")])
    target = tmp_path / "target"
    (target / ".x.tar.gz.extracting" / "junk").mkdir(parents=True)  # workspace of a killed run
    (target / "top").mkdir()
    (target / "top" / "stale.txt").write_text("half-renamed")
    (target / "other.txt").write_text("not the archive's")
    assert safe_extract(archive, target) == ["top"]
    assert sorted(p.name for p in (target / "top").iterdir()) == ["new.txt"]
    assert (target / "other.txt").read_text() == "not the archive's"
    assert not (target / ".x.tar.gz.extracting").exists()


def test_single_gzip_file(tmp_path):
    import gzip
    archive = tmp_path / "train-labels-idx1-ubyte.gz"
    archive.write_bytes(gzip.compress(b"\x00\x00\x08\x01labels"))
    assert safe_extract(archive, tmp_path / "raw") == ["train-labels-idx1-ubyte"]
    assert (tmp_path / "raw" / "train-labels-idx1-ubyte").read_bytes() == b"\x00\x00\x08\x01labels"

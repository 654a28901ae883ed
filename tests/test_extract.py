"""Safe extraction: links, zip members, markers, and leftovers of interrupted runs.

Every tar case runs under each tarfile of archive_cases.TARFILES: this Python's, one without
extraction filters (3.10 < 3.10.12, 3.11 < 3.11.4) and one whose data filter rewrites link
targets (the 2025 security releases), so that the archive module's own checks, never a
Python release's filter, are what refuses a member. tests/extract_harness.py runs the same
cases under the other Pythons installed here.
"""
import glob
import json
import os
import re
import shutil
import stat
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest
from archive_cases import KEPT, REFUSED, TARFILES, THROUGH_A_LINKED_FOLDER, file, folder, link, refusal, tar, tarfile_as
from archive_cases import tree as extracted_tree
from extract_harness import expected_outcomes, outcomes

from XRM.data.extract import ArchiveError, is_extracted, safe_extract

HARNESS = Path(__file__).resolve().parent / "extract_harness.py"


@pytest.fixture(params=TARFILES)
def tar_filter(request):
    """Run the test under each tarfile variant this Python can be made into."""
    with tarfile_as(request.param) as possible:
        if not possible:
            pytest.skip(f"this Python's tarfile cannot be made {request.param}")
        yield request.param


def _refusal(archive, member, why):
    return f"{archive} {refusal(member, why)}: refusing to extract it"


def _tree(folder):
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*"))


def test_links_inside_are_kept(tmp_path, tar_filter):
    members, entries = KEPT[0]
    archive = tar(tmp_path / "ok.tar.gz", members)
    target = tmp_path / "target"
    assert safe_extract(archive, target) == ["top"]
    assert extracted_tree(target) == entries
    assert (target / "top/sub/b.txt").read_bytes() == b"hello"
    assert (target / "top/c.txt").read_bytes() == b"through a link"
    assert is_extracted("ok.tar.gz", target)
    assert sorted(p.name for p in target.iterdir()) == [".ok.tar.gz.extracted", "top"]


def test_old_tarfile_really_writes_through_the_link(tmp_path):
    # What the checks below guard against: tarfile without its data filter follows s.
    archive = tar(tmp_path / "evil.tar.gz", THROUGH_A_LINKED_FOLDER)
    raw = tmp_path / "t1" / "t2" / "t3" / "raw"
    raw.mkdir(parents=True)
    with tarfile_as("without filters"), tarfile.open(archive) as bundle:
        bundle.extractall(raw)
    assert (tmp_path / "x").read_bytes() == b"escaped"


def test_symlink_through_a_folder_is_refused(tmp_path, tar_filter):
    archive = tar(tmp_path / "evil.tar.gz", THROUGH_A_LINKED_FOLDER)
    target = tmp_path / "t1" / "t2" / "target"  # the workspace's 4th parent is tmp_path
    with pytest.raises(ArchiveError) as caught:
        safe_extract(archive, target)
    assert str(caught.value) == _refusal(archive, "a/b/c/s/../../../../x",
                                         "through the links before it, it leads outside the target")
    assert caught.value.unsafe and "damaged" not in str(caught.value)
    assert not (tmp_path / "x").exists()
    assert _tree(tmp_path / "t1") == ["t2", "t2/target"]


@pytest.mark.parametrize("members, name, why", REFUSED)
def test_members_leading_out_are_refused(tmp_path, tar_filter, members, name, why):
    archive = tar(tmp_path / "bad.tar.gz", members)
    target = tmp_path / "target"
    with pytest.raises(ArchiveError) as caught:
        safe_extract(archive, target)
    assert str(caught.value) == _refusal(archive, name, why)
    assert "\n" not in str(caught.value)
    assert list(target.iterdir()) == []


@pytest.mark.parametrize("members, entries", KEPT[1:])
def test_members_are_written_as_the_archive_has_them(tmp_path, tar_filter, members, entries):
    # Never as a filter rewrote them: top/l stays a link to sub/../a.txt, and a file never
    # goes through an earlier link of its name.
    target = tmp_path / "target"
    safe_extract(tar(tmp_path / "kept.tar.gz", members), target)
    assert extracted_tree(target) == entries


def test_every_tarfile_here_gives_the_expected_outcomes(tmp_path):
    found = outcomes(tmp_path)
    assert found["this Python's"] == found["without filters"] == expected_outcomes()
    assert found["link-normalizing"] in (None, expected_outcomes())


def _other_pythons() -> dict[str, str]:
    """Version -> an interpreter of it, for the Pythons 3.10 and later found on PATH or under pyenv."""
    candidates = [shutil.which(f"python3.{minor}") for minor in range(10, 15)]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[0-9]*/bin/python3")))
    found = {}
    for python in filter(None, candidates):
        probe = subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"], capture_output=True,
                               text=True)
        if probe.returncode == 0 and probe.stdout.startswith("3.1"):
            found.setdefault(probe.stdout.strip(), python)
    return found


def test_other_pythons_refuse_the_same_members(tmp_path):
    pythons = _other_pythons()
    if not pythons:
        pytest.skip("no Python 3.10+ found but this one")
    for version, python in pythons.items():
        result = subprocess.run([python, str(HARNESS), str(tmp_path / version)], capture_output=True, text=True)
        assert result.returncode == 0, (python, result.stderr)
        report = json.loads(result.stdout)
        assert report["python"] == version
        for variant, found in report["outcomes"].items():
            assert found in ((None, expected_outcomes()) if variant == "link-normalizing" else (expected_outcomes(),)), (
                version, variant)


def test_path_too_long_to_resolve_is_refused(tmp_path, tar_filter):
    # Short links to ever deeper 250-letter folders: the kernel follows them, but the real
    # path soon passes PATH_MAX. os.path.realpath then guesses; the check refuses.
    long = "d" * 250
    members = [folder(long), link("s0", long)]
    for k in range(1, 20):
        members += [folder(f"s{k - 1}/{long}"), link(f"s{k}", f"s{k - 1}/{long}")]
    archive = tar(tmp_path / "long.tar.gz", members)
    with pytest.raises(ArchiveError) as caught:
        safe_extract(archive, tmp_path / "target")
    assert re.fullmatch(re.escape(f"{archive} has unsafe member '") + f"s1[0-9]/{long}" + re.escape(
        "' (through the links before it, its path cannot be resolved: File name too long): refusing to extract it"),
        str(caught.value))
    assert list((tmp_path / "target").iterdir()) == []


def test_modes_and_owners_of_the_archive_are_not_applied(tmp_path, tar_filter):
    member, data = file("top/tool", b"#!/bin/sh\n", mode=0o6777)
    member.uid = member.gid = 4242
    target = tmp_path / "target"
    safe_extract(tar(tmp_path / "modes.tar.gz", [(member, data)]), target)
    extracted = (target / "top/tool").stat()
    assert extracted.st_mode & (stat.S_ISUID | stat.S_ISGID) == 0
    assert extracted.st_uid == os.getuid()


def test_device_member_is_refused(tmp_path, tar_filter):
    device = tarfile.TarInfo("top/dev")
    device.type = tarfile.CHRTYPE
    archive = tar(tmp_path / "dev.tar.gz", [(device, None)])
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
    archive = tar(tmp_path / "x.tar.gz", [file("top/new.txt", b"new")])
    target = tmp_path / "target"
    (target / ".x.tar.gz.extracting" / "junk").mkdir(parents=True)  # workspace of a killed run
    (target / "top").mkdir()
    (target / "top" / "stale.txt").write_text("half-renamed")
    (target / "other.txt").write_text("not the archive's")
    assert safe_extract(archive, target) == ["top"]
    assert sorted(p.name for p in (target / "top").iterdir()) == ["new.txt"]
    assert (target / "other.txt").read_text() == "not the archive's"
    assert not (target / ".x.tar.gz.extracting").exists()


def test_single_gzipfile(tmp_path):
    import gzip
    archive = tmp_path / "train-labels-idx1-ubyte.gz"
    archive.write_bytes(gzip.compress(b"\x00\x00\x08\x01labels"))
    assert safe_extract(archive, tmp_path / "raw") == ["train-labels-idx1-ubyte"]
    assert (tmp_path / "raw" / "train-labels-idx1-ubyte").read_bytes() == b"\x00\x00\x08\x01labels"

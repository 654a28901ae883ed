"""Safe extraction: links, zip members, markers, and leftovers of interrupted runs."""
import io
import tarfile
import zipfile

import pytest

from XRM.data.extract import ArchiveError, is_extracted, safe_extract


def _tar(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for member, data in members:
            tar.addfile(member, io.BytesIO(data) if data is not None else None)
    return path


def _file(name, data=b"data"):
    member = tarfile.TarInfo(name)
    member.size = len(data)
    return member, data


def _link(name, target, kind=tarfile.SYMTYPE):
    member = tarfile.TarInfo(name)
    member.type, member.linkname = kind, target
    return member, None


def test_links_inside_are_kept(tmp_path):
    archive = _tar(tmp_path / "ok.tar.gz", [_file("top/a.txt", b"hello"), _link("top/sub/b.txt", "../a.txt")])
    target = tmp_path / "target"
    assert safe_extract(archive, target) == ["top"]
    assert (target / "top/sub/b.txt").read_bytes() == b"hello"
    assert is_extracted("ok.tar.gz", target)
    assert sorted(p.name for p in target.iterdir()) == [".ok.tar.gz.extracted", "top"]


@pytest.mark.parametrize("member", [
    _link("top/b", "../../etc/passwd"),
    _link("top/b", "/etc/passwd"),
    _link("top/b", "../outside", kind=tarfile.LNKTYPE),
])
def test_links_pointing_out_are_refused(tmp_path, member):
    archive = _tar(tmp_path / "bad.tar.gz", [_file("top/a.txt"), member])
    target = tmp_path / "target"
    with pytest.raises(ArchiveError, match="outside the target"):
        safe_extract(archive, target)
    assert list(target.iterdir()) == []


def test_device_member_is_refused(tmp_path):
    device = tarfile.TarInfo("top/dev")
    device.type = tarfile.CHRTYPE
    archive = _tar(tmp_path / "dev.tar.gz", [(device, None)])
    with pytest.raises(ArchiveError, match="device or pipe"):
        safe_extract(archive, tmp_path / "target")


def test_zip_member_climbing_out_is_refused(tmp_path):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("img/1.jpg", b"x")
        bundle.writestr("../2.jpg", b"y")
    with pytest.raises(ArchiveError, match="'../2.jpg' that would land outside"):
        safe_extract(archive, tmp_path / "target")
    assert list((tmp_path / "target").iterdir()) == []
    assert not (tmp_path / "2.jpg").exists()


def test_corrupt_zip_member_is_detected(tmp_path):
    archive = tmp_path / "crc.zip"
    with zipfile.ZipFile(archive, "w") as bundle:  # stored, so a flipped byte survives to the CRC check
        bundle.writestr("img/1.jpg", b"abcdefgh" * 64)
    raw = bytearray(archive.read_bytes())
    raw[raw.index(b"abcdefgh") + 3] ^= 0xFF
    archive.write_bytes(bytes(raw))
    with pytest.raises(ArchiveError, match="damaged or incomplete"):
        safe_extract(archive, tmp_path / "target")
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

"""download.py failures: one `error:` line, exit status 2, and a data folder left clean."""
import hashlib
import io
import shutil
import tarfile
from pathlib import Path

import download_fixtures as fx
import pytest

from XRM.common.errors import UserError
from XRM.data.sources import MNIST_FILES


def _assert_clean(data: Path, *save_into: Path) -> None:
    """Nothing that looks prepared or half-made (no marker, metadata, extraction or partial file): only
    the folders the error lines say to save files into, empty, and the folders above them."""
    kept = {folder for path in save_into for folder in (path, *path.parents) if data in folder.parents}
    leftovers = {path for path in data.rglob("*")}
    assert leftovers == kept, sorted(leftovers ^ kept)
    assert all(path.is_dir() and not path.is_symlink() for path in leftovers)


def _tar_with(archive: Path, members: list[tarfile.TarInfo]) -> None:
    """A tar.gz holding a good folder first, then ``members`` (regular files get 4 bytes)."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        good = tarfile.TarInfo("MetaShift-Cat-Dog-indoor-outdoor/ok.txt")
        good.size = 2
        tar.addfile(good, io.BytesIO(b"ok"))
        for member in members:
            tar.addfile(member, io.BytesIO(b"evil") if member.isfile() else None)


def _file_member(name: str) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.size = 4
    return member


def _by_hand(location, destination: Path) -> str:
    return f"download {location} by hand, save it as {destination}, and re-run without --download to prepare it"


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_checksum_mismatch_from_a_mirror(tmp_path, capsys):
    mirror, data = tmp_path / "mirror", tmp_path / "data"
    fx.make_mnist(mirror)  # stand-ins: their MD5s cannot be the real MNIST ones
    code, stderr = fx.run_main(["--download", "--mirror", str(mirror), "--data_path", str(data), "cmnist"], capsys)
    assert code == 2
    # Every file is tried: all four mismatches are listed, one line each. The way on is the
    # flag, or the official file: placing the mirror's copy by hand would be refused again.
    assert fx.error_lines(stderr) == [
        f"error: cmnist: {remote.name} from {mirror / 'cmnist' / remote.name} has md5 "
        f"{_md5(mirror / 'cmnist' / remote.name)} where {remote.md5} was expected "
        "(not the official file; deleted): re-run with --accept_unofficial to use this copy anyway, or "
        + _by_hand(remote.url, data / "mnist" / "MNIST" / "raw" / remote.name)
        for remote in MNIST_FILES]
    _assert_clean(data, data / "mnist" / "MNIST" / "raw")


def test_checksum_mismatch_from_a_mirror_accepted_with_a_warning(tmp_path, capsys):
    mirror, data = tmp_path / "mirror", tmp_path / "data"
    fx.make_mnist(mirror)
    code, stderr = fx.run_main(["--download", "--mirror", str(mirror), "--accept_unofficial", "--data_path",
                                str(data), "cmnist"], capsys)
    assert code == 0, stderr
    assert [line for line in stderr.splitlines() if line.startswith("warning:")] == [
        *(f"warning: {remote.name} from {mirror / 'cmnist' / remote.name} has md5 "
          f"{_md5(mirror / 'cmnist' / remote.name)} where {remote.md5} was expected (not the official file): "
          "using it anyway (--accept_unofficial)" for remote in MNIST_FILES),
        f"warning: MNIST under {data / 'mnist'}: the train split has 6 images, not the official 60000 "
        "(a partial or altered copy? it is used as it is)",
        f"warning: MNIST under {data / 'mnist'}: the test split has 4 images, not the official 10000 "
        "(a partial or altered copy? it is used as it is)"]
    assert (data / "mnist" / ".prepared").is_file()
    # Downloaded archives go once unpacked, as with official files.
    assert sorted(p.name for p in (data / "mnist" / "MNIST" / "raw").iterdir()) == [
        ".t10k-images-idx3-ubyte.gz.extracted", ".t10k-labels-idx1-ubyte.gz.extracted",
        ".train-images-idx3-ubyte.gz.extracted", ".train-labels-idx1-ubyte.gz.extracted",
        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "train-images-idx3-ubyte", "train-labels-idx1-ubyte"]


def test_truncated_archive(tmp_path, capsys):
    mirror, data = tmp_path / "mirror", tmp_path / "data"
    fx.make_civilcomments(mirror, tmp_path / "work")
    archive = mirror / "civilcomments" / "civilcomments_v1.0.tar.gz"
    archive.write_bytes(archive.read_bytes()[:-40])
    with fx.LocalMirror(mirror) as server:
        code, stderr = fx.run_main(["--download", "--mirror", server.url, "--data_path", str(data),
                                    "civilcomments"], capsys)
    assert code == 2
    [line] = fx.error_lines(stderr)
    url = f"{server.url}/civilcomments/civilcomments_v1.0.tar.gz"
    assert line.startswith(f"error: civilcomments: civilcomments_v1.0.tar.gz from {url} is damaged or incomplete (")
    assert line.endswith("(deleted): re-run, or " + _by_hand(url, data / "civilcomments" / "civilcomments_v1.0.tar.gz"))
    _assert_clean(data, data / "civilcomments")


def _refused_download(location: str, member: str, why: str, stored: Path) -> str:
    return (f"error: metashift: metashift.tar.gz from {location} has unsafe member {member!r} ({why}): refused it "
            f"and deleted it, nothing was extracted; save a trusted copy as {stored}, and re-run without "
            "--download to prepare it")


def test_member_climbing_out_of_the_target(tmp_path, capsys):
    mirror, data = tmp_path / "mirror", tmp_path / "data"
    _tar_with(mirror / "metashift" / "metashift.tar.gz", [_file_member("../../escaped.txt")])
    with fx.LocalMirror(mirror) as server:
        code, stderr = fx.run_main(["--download", "--mirror", server.url, "--data_path", str(data), "metashift"],
                                   capsys)
    assert code == 2
    assert fx.error_lines(stderr) == [_refused_download(
        f"{server.url}/metashift/metashift.tar.gz", "../../escaped.txt", "it would land outside the target",
        data / "metashift" / "metashift.tar.gz")]
    assert not (tmp_path / "escaped.txt").exists() and not (data / "escaped.txt").exists()
    _assert_clean(data, data / "metashift")


def test_symlink_through_a_folder_without_the_data_filter(tmp_path, monkeypatch, capsys):
    # As on Python 3.10 < 3.10.12 or 3.11 < 3.11.4: only download.py's own checks stand
    # between this archive and tmp_path/x (s is the extraction folder, x four levels above).
    fx.without_tar_data_filter(monkeypatch)
    mirror, data = tmp_path / "mirror", tmp_path / "nested" / "data"
    folder = tarfile.TarInfo("a/b/c")
    folder.type = tarfile.DIRTYPE
    link = tarfile.TarInfo("a/b/c/s")
    link.type, link.linkname = tarfile.SYMTYPE, "../../.."
    _tar_with(mirror / "metashift" / "metashift.tar.gz", [folder, link, _file_member("a/b/c/s/../../../../x")])
    with fx.LocalMirror(mirror) as server:
        code, stderr = fx.run_main(["--download", "--mirror", server.url, "--data_path", str(data), "metashift"],
                                   capsys)
    assert code == 2
    assert fx.error_lines(stderr) == [_refused_download(
        f"{server.url}/metashift/metashift.tar.gz", "a/b/c/s/../../../../x",
        "through the links before it, it leads outside the target", data / "metashift" / "metashift.tar.gz")]
    assert not (tmp_path / "x").exists()
    _assert_clean(data, data / "metashift")


def test_absolute_member(tmp_path, capsys):
    mirror, data = tmp_path / "mirror", tmp_path / "data"
    absolute = tmp_path / "absolute.txt"
    _tar_with(mirror / "metashift" / "metashift.tar.gz", [_file_member(str(absolute))])
    code, stderr = fx.run_main(["--download", "--mirror", str(mirror), "--data_path", str(data), "metashift"], capsys)
    assert code == 2
    assert fx.error_lines(stderr) == [_refused_download(
        mirror / "metashift" / "metashift.tar.gz", str(absolute), "it would land outside the target",
        data / "metashift" / "metashift.tar.gz")]
    assert not absolute.exists()
    _assert_clean(data, data / "metashift")


def test_hand_placed_bad_archive_is_kept_and_named(tmp_path, capsys):
    data = tmp_path / "data"
    link = tarfile.TarInfo("MetaShift-Cat-Dog-indoor-outdoor/link")
    link.type, link.linkname = tarfile.SYMTYPE, "../../outside"
    _tar_with(data / "metashift" / "metashift.tar.gz", [link])
    code, stderr = fx.run_main(["--data_path", str(data), "metashift"], capsys)
    assert code == 2
    assert fx.error_lines(stderr) == [
        f"error: metashift: {data / 'metashift' / 'metashift.tar.gz'} has unsafe member "
        "'MetaShift-Cat-Dog-indoor-outdoor/link' (it is a link to '../../outside': it leads outside the target): "
        "replace it with a good copy of https://www.dropbox.com/s/a7k65rlj4ownyr2/metashift.tar.gz?dl=1"]
    # The user's own file stays; nothing else appears beside it.
    assert sorted(p.relative_to(data).as_posix() for p in data.rglob("*")) == ["metashift", "metashift/metashift.tar.gz"]


def test_server_dropping_the_connection(tmp_path):
    mirror, data = tmp_path / "mirror", tmp_path / "data"
    fx.make_waterbirds(mirror, tmp_path / "work")
    with fx.LocalMirror(mirror, drop_connections=True) as server:
        result = fx.run_download(["--download", "--mirror", server.url, "--data_path", str(data), "waterbirds"])
    assert result.returncode == 2
    [line] = fx.error_lines(result.stderr)
    url = f"{server.url}/waterbirds/waterbird_complete95_forest2water2.tar.gz"
    # urllib takes the cut-off body as complete: extraction finds the end missing.
    assert line == (f"error: waterbirds: waterbird_complete95_forest2water2.tar.gz from {url} is damaged or "
                    "incomplete (Compressed file ended before the end-of-stream marker was reached) (deleted): "
                    "re-run, or " + _by_hand(url, data / "waterbirds" / "waterbird_complete95_forest2water2.tar.gz"))
    _assert_clean(data, data / "waterbirds")


def test_unreachable_server(tmp_path, capsys):
    data = tmp_path / "data"
    with fx.LocalMirror(tmp_path) as server:  # serves an empty folder: every file is a 404
        code, stderr = fx.run_main(["--download", "--mirror", server.url, "--data_path", str(data), "multinli"],
                                   capsys)
    assert code == 2
    features = f"{server.url}/multinli/multinli_bert_features.tar.gz"
    metadata = f"{server.url}/multinli/metadata_random.csv"
    assert fx.error_lines(stderr) == [
        f"error: multinli: could not download {features} (HTTP Error 404: File not found): "
        + _by_hand(features, data / "multinli" / "glue_data" / "MNLI" / "multinli_bert_features.tar.gz"),
        f"error: multinli: could not download {metadata} (HTTP Error 404: File not found): "
        + _by_hand(metadata, data / "multinli" / "data" / "metadata_random.csv")]
    _assert_clean(data, data / "multinli" / "glue_data" / "MNLI", data / "multinli" / "data")


def test_every_dataset_is_tried_and_every_failure_listed(tmp_path):
    # Offline (nothing answers): metashift, placed by hand, is prepared; the five files of
    # the other two are each listed at the end; the exit status is 2.
    data, offline = tmp_path / "data", fx.closed_port_url()
    fx.make_metashift(tmp_path / "mirror", tmp_path / "work")
    (data / "metashift").mkdir(parents=True)
    shutil.copy(tmp_path / "mirror" / "metashift" / "metashift.tar.gz", data / "metashift")
    result = fx.run_download(["--download", "--mirror", offline, "--data_path", str(data),
                              "waterbirds", "metashift", "cmnist"])
    assert result.returncode == 2
    refused = "<urlopen error [Errno 111] Connection refused>"
    waterbirds = f"{offline}/waterbirds/waterbird_complete95_forest2water2.tar.gz"
    assert result.stderr.splitlines()[-6:] == [
        "2 of 3 datasets failed (metashift prepared):",
        f"error: waterbirds: could not download {waterbirds} ({refused}): "
        + _by_hand(waterbirds, data / "waterbirds" / "waterbird_complete95_forest2water2.tar.gz"),
        *(f"error: cmnist: could not download {offline}/cmnist/{remote.name} ({refused}): "
          + _by_hand(f"{offline}/cmnist/{remote.name}", data / "mnist" / "MNIST" / "raw" / remote.name)
          for remote in MNIST_FILES)]
    assert len(fx.error_lines(result.stderr)) == 5
    assert sorted(p.name for p in data.iterdir()) == ["metashift", "mnist", "waterbirds"]  # the lines' folders
    assert not any((data / "waterbirds").iterdir()) and not any((data / "mnist" / "MNIST" / "raw").iterdir())
    assert (data / "metashift" / ".prepared").is_file()
    assert (data / "metashift" / "metadata_metashift.csv").is_file()


def test_offline_without_download_every_missing_file_is_named(tmp_path, capsys):
    data = tmp_path / "data"
    code, stderr = fx.run_main(["--data_path", str(data), "cmnist"], capsys)
    assert code == 2
    assert fx.error_lines(stderr) == [
        f"error: cmnist: missing {data / 'mnist' / 'MNIST' / 'raw' / remote.name}: run with --download, or "
        + _by_hand(remote.url, data / "mnist" / "MNIST" / "raw" / remote.name)
        for remote in MNIST_FILES]
    _assert_clean(data, data / "mnist" / "MNIST" / "raw")  # made, so that the files can be saved there


def test_files_that_arrived_stay_for_the_next_run(tmp_path, capsys):
    mirror, data = tmp_path / "mirror", tmp_path / "data"
    fx.make_imagenetbg(mirror, tmp_path / "work")
    missing = mirror / "imagenetbg" / "backgrounds_challenge_data.tar.gz"
    held_back = missing.rename(tmp_path / missing.name)
    code, stderr = fx.run_main(["--download", "--mirror", str(mirror), "--data_path", str(data), "imagenetbg"], capsys)
    assert code == 2
    [line] = fx.error_lines(stderr)
    assert line.startswith(f"error: imagenetbg: could not download {missing} (no such file {missing}): ")
    folder = data / "backgrounds_challenge"
    assert sorted(p.name for p in folder.iterdir()) == [".in9l.tar.gz.extracted", "in9l"]
    # The next run fetches only the file that failed.
    held_back.rename(missing)
    code, stderr = fx.run_main(["--download", "--mirror", str(mirror), "--data_path", str(data), "imagenetbg"], capsys)
    assert code == 0, stderr
    assert [line for line in stderr.splitlines() if line.startswith("downloading")] == [
        f"downloading {missing} -> {folder / missing.name}"]
    assert (folder / ".prepared").is_file()


def test_interrupted_download_starts_over(tmp_path, capsys):
    mirror, data = tmp_path / "mirror", tmp_path / "data"
    fx.make_metashift(mirror, tmp_path / "work")
    # A killed run leaves a partial file under the temporary name: never taken as the archive.
    partial = data / "metashift" / ".metashift.tar.gz.part"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"half an archive")
    code, stderr = fx.run_main(["--data_path", str(data), "metashift"], capsys)
    assert code == 2 and "missing" in fx.error_lines(stderr)[0]
    with fx.LocalMirror(mirror) as server:
        code, stderr = fx.run_main(["--download", "--mirror", server.url, "--data_path", str(data), "metashift"],
                                   capsys)
    assert code == 0, stderr
    assert not partial.exists()
    assert (data / "metashift" / ".prepared").is_file()


def _plain_file_recipe(monkeypatch, good: bytes):
    """A one-file dataset 'toy' whose notes.txt has a known MD5 (that of ``good``)."""
    from XRM.data import prepare
    from XRM.data.sources import RemoteFile

    remote = RemoteFile("notes.txt", "https://example.org/toy/notes.txt", provides=("notes.txt",),
                        md5=hashlib.md5(good).hexdigest())
    recipe = prepare.DatasetRecipe("toy", "toy", (remote,), lambda folder: None)
    monkeypatch.setattr(prepare, "get_recipe", lambda name: recipe)
    return prepare.prepare_dataset


def test_hand_placed_plain_file_with_wrong_content_is_not_trusted(tmp_path, monkeypatch, capsys):
    good, bad = b"the published bytes\n", b"something else\n"
    prepare_dataset = _plain_file_recipe(monkeypatch, good)
    placed = tmp_path / "data" / "toy" / "notes.txt"
    placed.parent.mkdir(parents=True)
    placed.write_bytes(bad)
    with pytest.raises(UserError) as caught:
        prepare_dataset("toy", tmp_path / "data")
    refusal = (f"toy: {placed} has md5 {hashlib.md5(bad).hexdigest()} where {hashlib.md5(good).hexdigest()} "
               "was expected (not the official file; left as it is): re-run with --accept_unofficial to use it "
               "anyway, or replace it with the official https://example.org/toy/notes.txt")
    assert str(caught.value) == refusal
    assert not (placed.parent / ".prepared").exists()
    # --download never deletes the user's copy to fetch another: the same refusal.
    mirror = tmp_path / "mirror" / "toy"
    mirror.mkdir(parents=True)
    (mirror / "notes.txt").write_bytes(good)
    with pytest.raises(UserError) as caught:
        prepare_dataset("toy", tmp_path / "data", download=True, mirror=str(tmp_path / "mirror"))
    assert str(caught.value) == refusal
    assert placed.read_bytes() == bad and not (placed.parent / ".prepared").exists()
    # The explicit way on: used as it is, with a warning.
    capsys.readouterr()
    prepare_dataset("toy", tmp_path / "data", accept_unofficial=True)
    assert placed.read_bytes() == bad and (placed.parent / ".prepared").is_file()
    assert capsys.readouterr().err.splitlines()[0] == (
        f"warning: {placed} has md5 {hashlib.md5(bad).hexdigest()} where {hashlib.md5(good).hexdigest()} "
        "was expected (not the official file): using it anyway (--accept_unofficial)")

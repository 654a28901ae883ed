"""MNIST placed by hand, as a user without internet does: download.py prepares what is there."""
import gzip
import hashlib
import shutil
from pathlib import Path

import pytest

import download_fixtures as fx
from XRM.data.sources import MNIST_FILES

NOT_OFFICIAL_SIZES = [
    "warning: MNIST under {mnist}: the train split has 6 images, not the official 60000 "
    "(a partial or altered copy? it is used as it is)",
    "warning: MNIST under {mnist}: the test split has 4 images, not the official 10000 "
    "(a partial or altered copy? it is used as it is)"]


@pytest.fixture
def placed(tmp_path) -> Path:
    """<data>/mnist/MNIST/raw holding the four fixture .gz files (6 train, 4 test digits), as
    the README says one may place them; returns that raw folder."""
    fx.make_mnist(tmp_path / "mirror")
    raw = tmp_path / "data" / "mnist" / "MNIST" / "raw"
    shutil.copytree(tmp_path / "mirror" / "cmnist", raw)
    return raw


def _unpack(raw: Path) -> None:
    for archive in raw.glob("*.gz"):
        (raw / archive.name.removesuffix(".gz")).write_bytes(gzip.decompress(archive.read_bytes()))


def _lines(stderr: str, prefix: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(prefix)]


def test_unofficial_archives_are_refused_with_a_way_on(placed):
    data = placed.parents[2]
    result = fx.run_download(["--data_path", str(data), "cmnist"])
    assert result.returncode == 2
    assert fx.error_lines(result.stderr) == [
        f"error: cmnist: {placed / remote.name} has md5 {hashlib.md5((placed / remote.name).read_bytes()).hexdigest()}"
        f" where {remote.md5} was expected (not the official file; left as it is): re-run with --accept_unofficial "
        f"to use it anyway, or replace it with the official {remote.url}"
        for remote in MNIST_FILES]
    assert "--download" not in result.stderr and "--mirror" not in result.stderr
    assert sorted(p.name for p in placed.iterdir()) == sorted(remote.name for remote in MNIST_FILES)
    assert not (data / "mnist" / ".prepared").exists()


def test_accept_unofficial_unpacks_the_placed_archives_and_keeps_them(placed):
    data = placed.parents[2]
    result = fx.run_download(["--accept_unofficial", "--data_path", str(data), "cmnist"])
    assert result.returncode == 0, result.stderr
    assert _lines(result.stderr, "warning:") == [
        *(f"warning: {placed / remote.name} has md5 {hashlib.md5((placed / remote.name).read_bytes()).hexdigest()} "
          f"where {remote.md5} was expected (not the official file): using it anyway (--accept_unofficial)"
          for remote in MNIST_FILES),
        *(line.format(mnist=data / "mnist") for line in NOT_OFFICIAL_SIZES)]
    assert _lines(result.stderr, " ") == ["       train       6", "        test       4"]
    # The user's archives stay beside what was unpacked from them.
    assert sorted(p.name for p in placed.iterdir() if not p.name.startswith(".")) == [
        "t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte", "t10k-labels-idx1-ubyte.gz",
        "train-images-idx3-ubyte", "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte",
        "train-labels-idx1-ubyte.gz"]
    assert (data / "mnist" / ".prepared").is_file()


def test_a_folder_holding_the_archives_and_the_unpacked_files_is_used(placed):
    # What training reads is all there: the (unofficial) archives beside it are not needed.
    data = placed.parents[2]
    _unpack(placed)
    before = {p.name: p.read_bytes() for p in placed.iterdir()}
    result = fx.run_download(["--data_path", str(data), "cmnist"])
    assert result.returncode == 0, result.stderr
    assert _lines(result.stderr, str(placed)) == [
        f"{placed / remote.provides[0].split('/')[-1]} already there: using it, {placed / remote.name} is not "
        "unpacked again" for remote in MNIST_FILES]
    assert _lines(result.stderr, "warning:") == [line.format(mnist=data / "mnist") for line in NOT_OFFICIAL_SIZES]
    assert {p.name: p.read_bytes() for p in placed.iterdir()} == before
    assert (data / "mnist" / ".prepared").is_file()


def test_unpacked_files_alone_are_used(placed):
    data = placed.parents[2]
    _unpack(placed)
    for archive in placed.glob("*.gz"):
        archive.unlink()
    result = fx.run_download(["--data_path", str(data), "cmnist"])
    assert result.returncode == 0, result.stderr
    assert "already there" not in result.stderr
    assert _lines(result.stderr, "warning:") == [line.format(mnist=data / "mnist") for line in NOT_OFFICIAL_SIZES]
    assert (data / "mnist" / ".prepared").is_file()


def test_a_cut_unpacked_file_is_named_with_a_way_on(placed):
    data = placed.parents[2]
    _unpack(placed)
    images = placed / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    result = fx.run_download(["--data_path", str(data), "cmnist"])
    assert result.returncode == 2
    [line] = fx.error_lines(result.stderr)
    assert line.startswith(f"error: cmnist: MNIST under {data / 'mnist'} is unreadable (")
    assert line.endswith(f"): replace the unpacked files in {placed} with good copies, or delete them to unpack "
                         "the .gz files there again")
    assert not (data / "mnist" / ".prepared").exists()

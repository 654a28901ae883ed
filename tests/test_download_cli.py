"""download.py end to end: tiny real-format datasets served from 127.0.0.1 to --mirror."""
import csv
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

import download_fixtures as fx
from XRM.data.metadata import IMAGENETBG_SPLIT_IDS
from XRM.data.metadata_table import group_counts, read_metadata_csv

ALL_DATASETS = ["waterbirds", "celeba", "civilcomments", "multinli", "metashift", "imagenetbg", "cmnist"]


@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> Path:
    """A mirror folder <mirror>/<dataset>/<file> holding every dataset's fixture files."""
    root = tmp_path_factory.mktemp("mirror")
    work = tmp_path_factory.mktemp("work")
    for name, make in (("waterbirds", fx.make_waterbirds), ("celeba", fx.make_celeba),
                       ("civilcomments", fx.make_civilcomments), ("multinli", fx.make_multinli),
                       ("metashift", fx.make_metashift), ("imagenetbg", fx.make_imagenetbg)):
        make(root, work / name)
    fx.make_mnist(root)
    return root


def _sha256_of_files(root: Path) -> str:
    return json.dumps({path.name: hashlib.sha256(path.read_bytes()).hexdigest()
                       for path in root.rglob("*") if path.is_file()})


@pytest.fixture(scope="module")
def prepared(mirror, tmp_path_factory):
    """Every dataset downloaded over HTTP from the mirror into a fresh data folder."""
    data = tmp_path_factory.mktemp("data")
    with fx.LocalMirror(mirror) as server:
        result = fx.run_download(["--download", "--mirror", server.url, "--data_path", str(data), *ALL_DATASETS],
                                 launcher=True, env={"XRM_TEST_SHA256": _sha256_of_files(mirror)})
    return data, result


def test_every_dataset_is_prepared(prepared):
    data, result = prepared
    assert result.returncode == 0, result.stderr
    for folder in ("waterbirds", "celeba", "civilcomments", "multinli", "metashift", "backgrounds_challenge", "mnist"):
        assert (data / folder / ".prepared").is_file()
    # Downloaded archives are deleted once extracted; plain files stay.
    assert sorted(p.name for p in data.rglob("*.tar.gz")) == []
    assert (data / "celeba" / "list_attr_celeba.txt").is_file()
    assert not list(data.rglob(".*.part")) and not list(data.rglob(".*.extracting"))


@pytest.mark.parametrize("csv_path, expected", [
    ("waterbirds/metadata_waterbirds.csv", fx.WATERBIRDS_GROUPS),
    ("celeba/metadata_celeba.csv", fx.CELEBA_GROUPS),
    ("civilcomments/metadata_civilcomments_coarse.csv", fx.CIVIL_GROUPS),
    ("multinli/metadata_multinli.csv", fx.MULTINLI_GROUPS),
])
def test_group_counts(prepared, csv_path, expected):
    table = read_metadata_csv(prepared[0] / csv_path)
    assert group_counts(table) == expected


def test_metadata_rows_follow_the_reference(prepared):
    data = prepared[0]
    waterbirds = read_metadata_csv(data / "waterbirds/metadata_waterbirds.csv")
    assert waterbirds.ids[:2] == ["1", "2"]
    assert waterbirds.filenames[0] == "001.Black_footed_Albatross/Black_footed_Albatross_0001.jpg"
    assert (data / "waterbirds/waterbird_complete95_forest2water2" / waterbirds.filenames[0]).is_file()
    celeba = read_metadata_csv(data / "celeba/metadata_celeba.csv")
    assert celeba.ids[0] == "1" and celeba.filenames[-1] == "000009.jpg"
    civil = read_metadata_csv(data / "civilcomments/metadata_civilcomments_coarse.csv")
    assert civil.filenames == [str(i) for i in range(9)]
    with open(data / "civilcomments/civilcomments_coarse.csv", newline="") as handle:
        texts = [row["comment_text"] for row in csv.DictReader(handle)]
    assert texts == fx.CIVIL_TEXTS


def test_metashift_split_and_groups(prepared):
    table = read_metadata_csv(prepared[0] / "metashift/metadata_metashift.csv")
    assert [int((table.split == s).sum()) for s in (0, 1, 2)] == [13, 2, 5]
    pooled = {}
    for counts in group_counts(table).values():
        for group, n in counts.items():
            pooled[group] = pooled.get(group, 0) + n
    assert pooled == {(0, 0): 7, (0, 1): 4, (1, 0): 3, (1, 1): 6}
    assert all((prepared[0] / "metashift" / name).is_file() for name in table.filenames)


def test_imagenetbg_splits(prepared):
    table = read_metadata_csv(prepared[0] / "backgrounds_challenge/metadata.csv", IMAGENETBG_SPLIT_IDS)
    # train, val, mixed_rand (test), original, only_fg; no_fg absent from the archive.
    assert [int((table.split == s).sum()) for s in range(6)] == [18, 9, 9, 9, 9, 0]
    assert sorted(set(table.y.tolist())) == list(range(9)) and set(table.a.tolist()) == {0}
    assert table.filenames[0] == "in9l/train/00_dog/n0_1.JPEG"


def test_mnist_is_readable_by_torchvision(prepared):
    from torchvision.datasets import MNIST
    train = MNIST(root=str(prepared[0] / "mnist"), train=True, download=False)
    test = MNIST(root=str(prepared[0] / "mnist"), train=False, download=False)
    assert tuple(train.data.shape) == (6, 28, 28) and train.targets.tolist() == [0, 1, 2, 3, 4, 5]
    assert tuple(test.data.shape) == (4, 28, 28)


def test_split_sizes_other_than_the_official_ones_are_warned_about(prepared):
    # The tiny fixtures are far from the published sizes README.md gives (Waterbirds,
    # CelebA, MNIST); the other datasets document none. The run still succeeds.
    data, result = prepared
    unofficial = "(a partial or altered copy? it is used as it is)"
    assert [line for line in result.stderr.splitlines() if line.startswith("warning:")] == [
        f"warning: waterbirds: the train split has 7 examples, not the official 4795 {unofficial}",
        f"warning: waterbirds: the val split has 2 examples, not the official 1199 {unofficial}",
        f"warning: waterbirds: the test split has 3 examples, not the official 5794 {unofficial}",
        f"warning: celeba: the train split has 5 examples, not the official 162770 {unofficial}",
        f"warning: celeba: the val split has 2 examples, not the official 19867 {unofficial}",
        f"warning: celeba: the test split has 2 examples, not the official 19962 {unofficial}",
        f"warning: MNIST under {data / 'mnist'}: the train split has 6 images, not the official 60000 {unofficial}",
        f"warning: MNIST under {data / 'mnist'}: the test split has 4 images, not the official 10000 {unofficial}"]


def test_official_split_sizes_give_no_warning():
    from XRM.data.metadata_table import size_warnings
    from XRM.data.prepare import WATERBIRDS_SIZES
    from XRM.data.sources import MNIST_SPLIT_SIZES

    assert size_warnings("MNIST", {"train": 60000, "test": 10000}, MNIST_SPLIT_SIZES) == []
    assert size_warnings("waterbirds", {"train": 4795, "val": 1199, "test": 5794},
                         {"train": WATERBIRDS_SIZES[0], "val": WATERBIRDS_SIZES[1], "test": WATERBIRDS_SIZES[2]}) == []
    assert size_warnings("MNIST", {"train": 59999}, {"train": 60000, "test": 10000}, "images") == [
        "warning: MNIST: the train split has 59999 images, not the official 60000 "
        "(a partial or altered copy? it is used as it is)",
        "warning: MNIST: the test split has 0 images, not the official 10000 "
        "(a partial or altered copy? it is used as it is)"]


def test_rerun_skips_prepared_datasets(prepared, capsys):
    data = prepared[0]
    before = (data / "waterbirds/metadata_waterbirds.csv").stat().st_mtime_ns
    code, stderr = fx.run_main(["--download", "--mirror", "http://127.0.0.1:9", "--data_path", str(data),
                                *ALL_DATASETS], capsys)
    assert code == 0, stderr
    assert stderr.count("already prepared") == len(ALL_DATASETS)
    assert "downloading" not in stderr
    assert (data / "waterbirds/metadata_waterbirds.csv").stat().st_mtime_ns == before


def test_local_folder_mirror_and_hand_placed_archive(mirror, tmp_path, capsys):
    data = tmp_path / "data"
    code, stderr = fx.run_main(["--download", "--mirror", str(mirror), "--data_path", str(data), "metashift"], capsys)
    assert code == 0, stderr
    assert len(read_metadata_csv(data / "metashift/metadata_metashift.csv")) == 20
    # An archive put in place by hand is prepared without --download, and kept.
    (data / "civilcomments").mkdir()
    shutil.copy(mirror / "civilcomments/civilcomments_v1.0.tar.gz", data / "civilcomments")
    code, stderr = fx.run_main(["--data_path", str(data), "civilcomments"], capsys)
    assert code == 0, stderr
    assert group_counts(read_metadata_csv(data / "civilcomments/metadata_civilcomments_coarse.csv")) == fx.CIVIL_GROUPS
    assert (data / "civilcomments/civilcomments_v1.0.tar.gz").is_file()


def test_missing_file_without_download_says_where_to_put_it(tmp_path, capsys):
    code, stderr = fx.run_main(["--data_path", str(tmp_path), "waterbirds"], capsys)
    assert code == 2
    stored = tmp_path / "waterbirds" / "waterbird_complete95_forest2water2.tar.gz"
    assert fx.error_lines(stderr) == [
        f"error: waterbirds: missing {stored}: run with --download, or download "
        f"https://nlp.stanford.edu/data/dro/waterbird_complete95_forest2water2.tar.gz by hand, save it as {stored}, "
        "and re-run without --download to prepare it"]
    assert list(tmp_path.rglob("*")) == [stored.parent]  # the folder it names, made and empty


def test_unknown_dataset_lists_the_valid_ones(tmp_path, capsys):
    code, stderr = fx.run_main(["--data_path", str(tmp_path), "waterbirds", "imagenet"], capsys)
    assert code == 2
    assert fx.error_lines(stderr) == [
        "error: unknown dataset 'imagenet'; choose from: celeba, chexpert, civilcomments, cmnist, imagenetbg, metashift, "
        "multinli, nicopp, waterbirds"]
    assert list(tmp_path.iterdir()) == []


def test_features_from_prepared_images(prepared):
    from XRM.data.extract_features import write_features
    from XRM.data.feature_file import load_features_file
    data = prepared[0]
    # resnet18 keeps the test fast on CPU; the width checks the backbone's, 512 here, 2048 for ResNet-50.
    path = write_features(data, "waterbirds", weights=None, architecture="resnet18", device=torch.device("cpu"),
                          batch_size=8, num_workers=0)
    assert path == data / "waterbirds" / "features.pt"
    features = load_features_file(path, "waterbirds")
    saved = torch.load(path, weights_only=True)  # the dtype as written, before the reader's .float()
    table = read_metadata_csv(data / "waterbirds/metadata_waterbirds.csv")
    for split_id, split in enumerate(("tr", "va", "te")):
        rows = table.rows_of_split(split_id)
        assert tuple(features[split].x.shape) == (len(rows), 512)
        assert saved[split]["x"].dtype == torch.float32
        assert features[split].y.tolist() == table.y[rows].tolist()
        assert features[split].a.tolist() == table.a[rows].tolist()

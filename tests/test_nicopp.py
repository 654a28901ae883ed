"""NICO++: downloaded over HTTP (a local server stands in for Dropbox), its metadata built as SubpopBench's
script builds it, its features computed and a linear head trained on them."""
import json

import pytest
import torch

import backbone_fixtures as bx
import download_fixtures as fx
import subpop_fixtures as sx
from XRM.data.extract_features import write_features
from XRM.data.metadata_table import group_counts, read_metadata_csv
from XRM.data.nicopp import balanced_evaluation_split

# The training rows SubpopBench's generate_metadata_nicopp picks on this fixture (its code run on the same
# files listed in sorted order, with pandas and seed 666): what is left of the two groups over 75 images.
SUBPOPBENCH_TRAIN_ROWS = [f"public_dg_0416/train/autumn/bear/bear_{n:03d}.jpg" for n in (36, 48, 55, 58, 64)] + [
    f"public_dg_0416/train/dim/cat/cat_{n:03d}.jpg" for n in (20, 26, 40)]
# (y, a) per split: y is the JSON's id (bear 3, cat 0), a the context (autumn 0, dim 1, water 5).
GROUPS = {0: {(0, 1): 3, (3, 0): 5},
          1: {(0, 0): 1, (0, 1): 25, (3, 0): 25},
          2: {(0, 0): 3, (0, 1): 50, (0, 5): 1, (3, 0): 50, (3, 1): 2}}


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mirror")
    sx.make_nicopp(folder)
    return folder


@pytest.fixture(scope="module")
def prepared(mirror, tmp_path_factory):
    """<data>/nicopp downloaded from the local HTTP server under SubpopBench's name, in another case."""
    data = tmp_path_factory.mktemp("data")
    with fx.LocalMirror(mirror) as server:
        result = fx.run_download(["--download", "--mirror", server.url, "--data_path", str(data), "NICO++"])
    assert result.returncode == 0, result.stderr
    return data


def test_download_builds_subpopbenchs_split(prepared):
    folder = prepared / "nicopp"
    assert sorted(path.name for path in folder.iterdir()) == [  # the downloaded archive is deleted once unpacked
        ".prepared", ".track_1.zip.extracted", "dg_label_id_mapping.json", "metadata.csv", "public_dg_0416"]
    table = read_metadata_csv(folder / "metadata.csv")
    assert len(table) == 165 and group_counts(table) == GROUPS
    assert [table.filenames[row] for row in table.rows_of_split(0)] == SUBPOPBENCH_TRAIN_ROWS
    # context by context, class by class in the JSON's order, files sorted
    assert (table.filenames[0], table.y[0], table.a[0]) == ("public_dg_0416/train/autumn/bear/bear_000.jpg", 3, 0)
    assert (table.filenames[84], table.y[84], table.a[84]) == ("public_dg_0416/train/dim/bear/bear_000.jpg", 3, 1)
    assert (table.filenames[-1], table.y[-1], table.a[-1]) == ("public_dg_0416/train/water/cat/cat_000.jpg", 0, 5)


def test_balanced_evaluation_split_per_group():
    # group 7: 5 rows -> 1 validation, 4 test; group 2: 80 rows -> 25 validation, 50 test, 5 train
    split = balanced_evaluation_split([7] * 5 + [2] * 80, per_group=75)
    assert [split[:5].count(code) for code in (0, 1, 2)] == [0, 1, 4]
    assert [split[5:].count(code) for code in (0, 1, 2)] == [5, 25, 50]


@pytest.mark.parametrize("mapping, problem", [
    ("{not json", "is not JSON"),
    (json.dumps({"bear": "three", "cat": 0}), "must map each class name to an integer id >= 0"),
])
def test_a_bad_label_mapping_is_one_line_and_nothing_is_prepared(mirror, tmp_path, mapping, problem):
    fx.copy_tree(mirror, tmp_path / "mirror")
    (tmp_path / "mirror" / "nicopp" / "dg_label_id_mapping.json").write_text(mapping)
    result = fx.run_download(["--download", "--mirror", str(tmp_path / "mirror"), "--data_path",
                              str(tmp_path / "data"), "nicopp"])
    assert result.returncode == 2
    mapping_file = tmp_path / "data" / "nicopp" / "dg_label_id_mapping.json"
    [line] = fx.error_lines(result.stderr)
    assert line.startswith(f"error: nicopp: {mapping_file} {problem}")
    assert not (tmp_path / "data" / "nicopp" / "metadata.csv").exists()
    assert not (tmp_path / "data" / "nicopp" / ".prepared").exists()


def test_missing_files_without_download_name_both(tmp_path):
    result = fx.run_download(["--data_path", str(tmp_path), "nicopp"])
    assert result.returncode == 2
    lines = fx.error_lines(result.stderr)
    assert [line.split(": run with --download")[0] for line in lines] == [
        f"error: nicopp: missing {tmp_path / 'nicopp' / 'track_1.zip'}",
        f"error: nicopp: missing {tmp_path / 'nicopp' / 'dg_label_id_mapping.json'}"]
    assert "https://www.dropbox.com/sh/u2bq2xo8sbax4pr/" in lines[0]


def test_features_then_a_linear_head_trains_on_them(prepared, tmp_path):
    fx.copy_tree(prepared, tmp_path / "data")  # features.pt goes into a copy: the other tests see none
    path = write_features(tmp_path / "data", "nicopp", weights=None, architecture="resnet18",
                          device=torch.device("cpu"), batch_size=64, num_workers=0)
    features = torch.load(path)
    assert {split: tuple(part["x"].shape) for split, part in features.items()} == {
        "tr": (8, 512), "va": (51, 512), "te": (106, 512)}
    assert features["tr"]["y"].view(-1).tolist() == [3] * 5 + [0] * 3
    assert features["te"]["m"].view(-1).bincount().tolist() == [53, 52, 0, 0, 0, 1]
    out = tmp_path / "out"
    assert bx.run_main(bx.main_args("--phase", "2", "--datasets", "nicopp", "--algorithms", "ERM", "--group_labels",
                                    "yes", "--inputs", "features", "--data_path", str(tmp_path / "data"), "--out_dir",
                                    str(out), "--hparams", '{"num_steps": 3, "eval_every": 2, "batch_size": 4}')) == 0
    header, rows = bx.records(out / "ERM" / "NICOpp" / "group_labels_yes" / "results_hpcomb_0_seed0.json")
    assert header["inputs_used"] == "features" and [row["step"] for row in rows] == [0, 2]
    # groups are y * 6 + a: the five (class, context) pairs of the test split, with their sizes
    assert {int(g): info["n"] for g, info in header["test_groups"].items()} == {0: 3, 1: 50, 5: 1, 18: 50, 19: 2}
    assert header["test_groups"]["5"]["attribute"] == "water"
    group_accuracies = [rows[-1][f"te_acc_group_{g}"] for g in (0, 1, 5, 18, 19)]
    assert rows[-1]["te_wga"] == min(group_accuracies)

"""CheXpert No Finding: no download; the files a user places are checked and prepared as SubpopBench's
script prepares them; features and fine-tuning run on them."""
import numpy as np
import pytest
import torch

import backbone_fixtures as bx
import download_fixtures as fx
import subpop_fixtures as sx
from XRM.common.errors import UserError
from XRM.data.base import InputOptions
from XRM.data.catalog import get_dataset
from XRM.data.chexpert import CHEXPERT_METADATA
from XRM.data.extract_features import write_features
from XRM.data.metadata_table import group_counts, read_metadata_csv
from XRM.data.stratified_split import stratified_train_test
from XRM.data.xlsx import read_first_sheet

WHERE_TO_GET_IT = (
    "CheXpert cannot be downloaded automatically: register at https://stanfordmlgroup.github.io/competitions/chexpert/ "
    "(Stanford AIMI), download CheXpert-v1.0-small and the demographics CHEXPERT DEMO.xlsx "
    "(https://stanfordaimi.azurewebsites.net/datasets/192ada7c-4d43-466e-b8bb-b81992bb80cf), and place train.csv, "
    "valid.csv, the folders train/, valid/ and CHEXPERT DEMO.xlsx in {folder}/")
# The rows SubpopBench's generate_metadata_chexpert (pandas, scikit-learn's train_test_split, openpyxl reading
# the fixture's workbook) puts in validation and test: checked once against its code, kept here.
SUBPOPBENCH_VALIDATION_ROWS = [14, 15, 22, 48, 53, 54, 61, 68, 82]
SUBPOPBENCH_TEST_ROWS = [7, 9, 11, 24, 25, 39, 40, 51, 59, 62, 70, 72, 80]


def _prepare(data, capsys, *flags: str) -> tuple[int, str]:
    return fx.run_main([*flags, "--data_path", str(data), "chexpert"], capsys)


@pytest.mark.parametrize("flags", [(), ("--download",)])
def test_absent_files_are_one_line_saying_where_to_get_them(tmp_path, capsys, flags):
    code, stderr = _prepare(tmp_path, capsys, *flags)
    assert code == 2
    assert fx.error_lines(stderr) == [
        "error: chexpert: " + WHERE_TO_GET_IT.format(folder=tmp_path / "chexpert")
        + " (missing: train.csv, valid.csv, train, valid, CHEXPERT DEMO.xlsx)"]
    assert list(tmp_path.iterdir()) == []


def test_training_without_the_files_says_where_to_get_them(tmp_path):
    with pytest.raises(UserError) as caught:
        get_dataset("chexpert").resolve(str(tmp_path), 2, InputOptions())
    folder = tmp_path / "chexpert"
    assert str(caught.value) == (
        f"CheXpert: neither {folder / 'features.pt'} nor {folder / CHEXPERT_METADATA} exists; "
        f"{WHERE_TO_GET_IT.format(folder=folder)}, then run: python -m XRM.cli download --features --data_path {tmp_path} "
        "chexpert")


def test_placed_files_are_prepared_as_subpopbench_prepares_them(tmp_path, capsys):
    sx.place_chexpert(tmp_path)
    code, stderr = _prepare(tmp_path, capsys)
    assert code == 0, stderr
    table = read_metadata_csv(tmp_path / "chexpert" / CHEXPERT_METADATA)
    assert len(table) == sx.KEPT  # the patient of unknown sex and the one the workbook lacks are left out
    assert table.rows_of_split(1).tolist() == SUBPOPBENCH_VALIDATION_ROWS
    assert table.rows_of_split(2).tolist() == SUBPOPBENCH_TEST_ROWS
    assert {split: sum(groups.values()) for split, groups in group_counts(table).items()} == {0: 62, 1: 9, 2: 13}
    # a = 2 * race + female: stratified, each of the 6 attributes keeps its share in every split
    assert [np.bincount(table.a[table.rows_of_split(split)]).tolist() for split in (0, 1, 2)] == [
        [10, 11, 10, 10, 10, 11], [2, 1, 2, 1, 2, 1], [2, 2, 2, 3, 2, 2]]
    expected = [(row, f"train/patient{sx.chexpert_patient(row):05d}/study1/view1_frontal.jpg") for row in (0, 3, 77)]
    expected.append((78, "valid/patient64541/study1/view1_frontal.jpg"))
    assert [(row, table.filenames[row]) for row, _ in expected] == expected
    # row 0: Male, "White", No Finding 1.0; row 3: Female, "Black or African American", blank; row 5: Female, ""
    # (other), 1.0; row 7: Female, "White, non-Hispanic", 0.0; row 10: Male, "Asian" (other), 1.0
    assert [(table.y[row], table.a[row]) for row in (0, 3, 5, 7, 10)] == [(1, 0), (0, 3), (1, 5), (0, 1), (1, 4)]


def _rewrite(path, old: str, new: str) -> None:
    path.write_text(path.read_text().replace(old, new, 1))


@pytest.mark.parametrize("damage, problem", [
    (lambda folder: (folder / "CHEXPERT DEMO.xlsx").write_bytes(b"PATIENT,PRIMARY_RACE\n"),
     "{folder}/CHEXPERT DEMO.xlsx is not a readable .xlsx workbook (BadZipFile: File is not a zip file): save it "
     "again as an Excel workbook, or download it again"),
    (lambda folder: sx.write_xlsx(folder / "CHEXPERT DEMO.xlsx", [["PATIENT", "RACE"], ["patient00001", "White"]]),
     "{folder}/CHEXPERT DEMO.xlsx lacks the column(s) PRIMARY_RACE in its first row: put Stanford's CHEXPERT DEMO.xlsx "
     "there"),
    (lambda folder: (folder / "train.csv").write_bytes(b"\xff\xd8\xff\xe0 a JPEG, not a CSV"),
     "{folder}/train.csv is not a readable CSV ('utf-8' codec can't decode byte 0xff in position 0: invalid start "
     "byte): put CheXpert-v1.0-small's own train.csv there"),
    (lambda folder: _rewrite(folder / "valid.csv", "No Finding", "Nothing"),
     "{folder}/valid.csv lacks the column(s) No Finding: put CheXpert-v1.0-small's own valid.csv there"),
    (lambda folder: _rewrite(folder / "train.csv", "Female,60,Frontal,AP,,", "Female,60,Frontal,AP,-1.0,"),
     "{folder}/train.csv, line 3: No Finding = '-1.0' is neither 1, 0 nor blank: put CheXpert-v1.0-small's own CSV "
     "there"),
    (lambda folder: (folder / "valid" / "patient64546" / "study1" / "view1_frontal.jpg").unlink(),
     "1 of the 84 images the metadata lists are missing, e.g. {folder}/valid/patient64546/study1/view1_frontal.jpg: "
     "put them there, or delete {folder} and run: python -m XRM.cli download --download --data_path {data} chexpert"),
])
def test_bad_placed_files_are_one_line_and_nothing_is_prepared(tmp_path, capsys, damage, problem):
    folder = sx.place_chexpert(tmp_path)
    damage(folder)
    code, stderr = _prepare(tmp_path, capsys)
    assert code == 2
    assert fx.error_lines(stderr) == [f"error: chexpert: {problem.format(folder=folder, data=tmp_path)}"]
    assert not (folder / CHEXPERT_METADATA).exists() and not (folder / ".prepared").exists()
    assert (folder / "train.csv").is_file() and (folder / "CHEXPERT DEMO.xlsx").is_file()  # the user's files stay


def test_stratified_split_draws_as_scikit_learn_does():
    # scikit-learn 1.9.1's train_test_split(rows, test_size=0.15, random_state=42, stratify=strata), then on the
    # first part test_size=0.1 / 0.85 with the same seed: its test rows, validation rows and training rows.
    strata = np.array([i % 3 for i in range(30)] + [0, 0, 1, 1, 1, 1, 2, 0, 0, 1])
    train_val, test = stratified_train_test(np.arange(40), strata, 0.15, 42)
    train, val = stratified_train_test(train_val, strata[train_val], 0.1 / 0.85, 42)
    assert test.tolist() == [9, 39, 17, 22, 29, 18]
    assert val.tolist() == [8, 35, 30, 1]
    assert train.tolist() == [6, 24, 4, 2, 25, 0, 16, 21, 7, 5, 20, 36, 34, 37, 38, 33, 27, 12, 11, 3, 15, 28, 10, 32,
                              23, 13, 19, 26, 14, 31]
    with pytest.raises(ValueError, match=r"4 items in 2 strata \(the smallest of 1\)"):
        stratified_train_test(np.arange(4), np.array([0, 0, 0, 1]), 0.5, 0)


def test_xlsx_first_sheet_cells(tmp_path):
    sx.write_xlsx(tmp_path / "book.xlsx", [["PATIENT", "RACE", 7], ["patient00002", "Black & other"], ["x"]])
    assert read_first_sheet(tmp_path / "book.xlsx") == [["PATIENT", "RACE", "7"], ["patient00002", "Black & other"],
                                                        ["x"]]


def test_features_then_resnet_fine_tuning(tmp_path, capsys):
    sx.place_chexpert(tmp_path)
    assert _prepare(tmp_path, capsys)[0] == 0
    path = write_features(tmp_path, "chexpert", weights=None, architecture="resnet18", device=torch.device("cpu"),
                          batch_size=64, num_workers=0)
    features = torch.load(path)
    assert {split: tuple(part["x"].shape) for split, part in features.items()} == {
        "tr": (62, 512), "va": (9, 512), "te": (13, 512)}
    # the attributes of metadata rows 14, 15, 22, 48, 53, 54, 61, 68, 82, in that order
    assert features["va"]["m"].view(-1).tolist() == [2, 3, 4, 0, 5, 0, 1, 2, 4]
    out = tmp_path / "out"
    assert bx.run_main(bx.main_args("--phase", "2", "--datasets", "CheXpert", "--algorithms", "ERM", "--group_labels",
                                    "yes", "--inputs", "images", "--image_backbone", "resnet18", "--backbone_weights",
                                    "none", "--data_path", str(tmp_path), "--out_dir", str(out), "--hparams",
                                    '{"num_steps": 3, "eval_every": 2, "batch_size": 4}')) == 0
    header, rows = bx.records(out / "ERM" / "CheXpert" / "group_labels_yes" / "results_hpcomb_0_seed0.json")
    assert (header["inputs_used"], header["backbone_used"]) == ("images", "resnet18")
    assert [row["step"] for row in rows] == [0, 2]
    # groups are y * 6 + a: the 8 (finding, sex x race) pairs of the 13 test images
    assert {int(g): info["n"] for g, info in header["test_groups"].items()} == {
        0: 2, 1: 1, 2: 1, 3: 3, 5: 2, 7: 1, 8: 1, 10: 2}
    assert rows[-1]["te_wga"] == min(rows[-1][f"te_acc_group_{g}"] for g in header["test_groups"])

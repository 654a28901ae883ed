"""CheXpert's "No Finding" task as SubpopBench builds it (Yang et al., ICML 2023), from files a user
places by hand: Stanford gives CheXpert (Irvin et al., AAAI 2019) and its demographics only to
registered users, so nothing here downloads.

``<data_path>/chexpert`` holds CheXpert-v1.0-small's ``train.csv``, ``valid.csv``, ``train/`` and
``valid/``, and the demographics workbook ``CHEXPERT DEMO.xlsx``. Rows of both CSVs (train, then
valid) whose Sex is Male or Female and whose patient the workbook lists are kept; y = No Finding
(1, or 0 when blank); a = sex x race: 2 * race (White 0, Black 1, any other or none 2) + 1 for
Female, so 12 groups. 15% of the rows are drawn for test and 10% for validation, stratified by a,
as SubpopBench draws them with scikit-learn (seed 42; XRM/data/stratified_split.py).
"""
import csv
from pathlib import Path

import numpy as np

from XRM.common.errors import UserError
from XRM.data.files import csv_rows_with, open_csv
from XRM.data.metadata_table import SPLIT_IDS, MetadataTable, table_from_rows, write_metadata_csv
from XRM.data.stratified_split import stratified_train_test
from XRM.data.xlsx import read_first_sheet

CHEXPERT_CSVS = ("train.csv", "valid.csv")
CHEXPERT_IMAGE_FOLDERS = ("train", "valid")
CHEXPERT_DEMOGRAPHICS = "CHEXPERT DEMO.xlsx"
#: SubpopBench's metadata file, relative to the dataset folder
CHEXPERT_METADATA = "subpop_bench_meta/metadata_no_finding.csv"
CHEXPERT_PAGE = "https://stanfordmlgroup.github.io/competitions/chexpert/"
CHEXPERT_DEMOGRAPHICS_PAGE = "https://stanfordaimi.azurewebsites.net/datasets/192ada7c-4d43-466e-b8bb-b81992bb80cf"
#: SubpopBench's fractions and seed
TEST_FRACTION, VALIDATION_FRACTION, SPLIT_SEED = 0.15, 0.1, 42
SEXES = ("Male", "Female")
CSV_COLUMNS = ("Path", "Sex", "No Finding")
DEMOGRAPHICS_COLUMNS = ("PATIENT", "PRIMARY_RACE")


def where_to_get_chexpert(folder: Path) -> str:
    """The one line that says CheXpert is placed by hand, where to get it and where to put it."""
    return (f"CheXpert cannot be downloaded automatically: register at {CHEXPERT_PAGE} (Stanford AIMI), download "
            f"CheXpert-v1.0-small and the demographics {CHEXPERT_DEMOGRAPHICS} ({CHEXPERT_DEMOGRAPHICS_PAGE}), and "
            f"place {', '.join(CHEXPERT_CSVS)}, the folders {', '.join(f'{name}/' for name in CHEXPERT_IMAGE_FOLDERS)} "
            f"and {CHEXPERT_DEMOGRAPHICS} in {folder}/")


def _check_placed(folder: Path) -> None:
    expected = [*CHEXPERT_CSVS, *CHEXPERT_IMAGE_FOLDERS, CHEXPERT_DEMOGRAPHICS]
    missing = [name for name in expected if not (folder / name).exists()]
    if missing:
        raise UserError(f"{where_to_get_chexpert(folder)} (missing: {', '.join(missing)})")


def _csv_rows(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    """The rows of one of CheXpert's CSVs, each with ``where`` it is; a UserError for a file that is not
    text CSV or lacks ``columns``."""
    fix = f"put CheXpert-v1.0-small's own {path.name} there"
    try:
        with open_csv(path) as handle:
            reader = csv_rows_with(handle, path, columns, fix)
            return [{**row, "where": f"{path}, line {reader.line_num}"} for row in reader]
    except (csv.Error, UnicodeDecodeError) as error:
        raise UserError(f"{path} is not a readable CSV ({error}): {fix}") from None


def _race_by_patient(path: Path) -> dict[int, int]:
    """Patient number -> race code (White 0, Black 1, other 2) from the demographics workbook."""
    rows = read_first_sheet(path)
    header = rows[0] if rows else []
    lacking = [column for column in DEMOGRAPHICS_COLUMNS if column not in header]
    if lacking:
        raise UserError(f"{path} lacks the column(s) {', '.join(lacking)} in its first row: put Stanford's "
                        f"{CHEXPERT_DEMOGRAPHICS} there")
    patient_column, race_column = (header.index(column) for column in DEMOGRAPHICS_COLUMNS)
    races = {}
    for line, row in enumerate(rows[1:], start=2):
        cells = row + [""] * (len(header) - len(row))
        patient = _patient_number(cells[patient_column], f"{path}, row {line}")
        if patient in races:
            raise UserError(f"{path}, row {line}: patient {cells[patient_column]} is listed twice: put Stanford's "
                            f"{CHEXPERT_DEMOGRAPHICS} there")
        race = cells[race_column]
        races[patient] = 0 if race.startswith("White") else 1 if race.startswith("Black") else 2
    return races


def _patient_number(name: str, where: str) -> int:
    """42 for "patient00042"."""
    digits = name[len("patient"):]
    if not name.startswith("patient") or not digits.isdigit():
        raise UserError(f"{where}: {name!r} is not a patient id like patient00001: the file is not CheXpert's")
    return int(digits)


def _no_finding(row: dict[str, str]) -> int:
    cell = row["No Finding"].strip()
    if cell in ("", "0", "0.0"):
        return 0
    if cell in ("1", "1.0"):
        return 1
    raise UserError(f"{row['where']}: No Finding = {cell!r} is neither 1, 0 nor blank: put CheXpert-v1.0-small's "
                    "own CSV there")


def _split_codes(attributes: np.ndarray) -> np.ndarray:
    rows = np.arange(len(attributes))
    try:
        train_val, test = stratified_train_test(rows, attributes, TEST_FRACTION, SPLIT_SEED)
        _, val = stratified_train_test(train_val, attributes[train_val],
                                       VALIDATION_FRACTION / (1 - TEST_FRACTION), SPLIT_SEED)
    except ValueError as error:
        raise UserError(f"CheXpert's kept rows cannot be split as SubpopBench does: {error}") from None
    split = np.full(len(attributes), SPLIT_IDS["tr"])
    split[val], split[test] = SPLIT_IDS["va"], SPLIT_IDS["te"]
    return split


def write_chexpert_metadata(folder: Path) -> MetadataTable:
    """chexpert/subpop_bench_meta/metadata_no_finding.csv, as the module docstring says; filenames
    are the CSVs' Path without its first folder (CheXpert-v1.0-small/), relative to ``chexpert/``."""
    _check_placed(folder)
    races = _race_by_patient(folder / CHEXPERT_DEMOGRAPHICS)
    filenames, y, a = [], [], []
    for name in CHEXPERT_CSVS:
        for row in _csv_rows(folder / name, CSV_COLUMNS):
            path = Path(row["Path"])
            if len(path.parts) < 4:
                raise UserError(f"{row['where']}: Path {row['Path']!r} is not <folder>/<split>/patient<n>/<study>/"
                                "<image>: put CheXpert-v1.0-small's own CSV there")
            patient = _patient_number(path.parent.parent.name, row["where"])
            if row["Sex"] not in SEXES or patient not in races:
                continue
            filenames.append(Path(*path.parts[1:]).as_posix())
            y.append(_no_finding(row))
            a.append(2 * races[patient] + SEXES.index(row["Sex"]))
    if not filenames:
        raise UserError(f"no row of {' or '.join(CHEXPERT_CSVS)} in {folder} has a Sex of Male or Female and a patient "
                        f"that {CHEXPERT_DEMOGRAPHICS} lists: put CheXpert's own files there")
    attributes = np.asarray(a)
    table = table_from_rows(list(range(len(filenames))), filenames, _split_codes(attributes), y, a)
    (folder / CHEXPERT_METADATA).parent.mkdir(exist_ok=True)
    write_metadata_csv(table, folder / CHEXPERT_METADATA)
    return table

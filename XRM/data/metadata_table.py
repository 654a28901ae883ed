"""The metadata CSV format shared by every dataset: ``id,filename,split,y,a``.

``split`` is 0/1/2 for train/val/test (ImagenetBG adds 3/4/5 for its extra test
variants); ``y`` the label, ``a`` the attribute that, with ``y``, defines the group.
"""
import csv
import io
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from XRM.common.commands import command
from XRM.common.errors import UserError
from XRM.common.fileio import atomic_write_text
from XRM.data.files import csv_rows_with, open_csv, require_file

COLUMNS = ("id", "filename", "split", "y", "a")
#: the ``split`` code of each split a run uses (tr/va/te: train, validation, test)
SPLIT_IDS = {"tr": 0, "va": 1, "te": 2}
#: the name of each split code, as printed and as the reference's raw files spell them
SPLIT_NAMES = {0: "train", 1: "val", 2: "test"}
#: split code by name, for files that spell the split out (CivilComments' raw CSV)
SPLIT_IDS_BY_NAME = {name: code for code, name in SPLIT_NAMES.items()}


@dataclass
class MetadataTable:
    """Rows of a metadata CSV as parallel arrays, in file order."""

    ids: list[str]
    filenames: list[str]
    split: np.ndarray  # int64 [n]
    y: np.ndarray  # int64 [n]
    a: np.ndarray  # int64 [n]

    def __len__(self) -> int:
        return len(self.filenames)

    def rows_of_split(self, split: int) -> np.ndarray:
        """Row positions of one split, in file order."""
        return np.flatnonzero(self.split == split)


def table_from_rows(ids: list, filenames: list, split: list, y: list, a: list) -> MetadataTable:
    """Build a table from Python lists (ids and filenames kept as text)."""
    return MetadataTable(
        ids=[str(i) for i in ids],
        filenames=[str(f) for f in filenames],
        split=np.asarray(split, dtype=np.int64),
        y=np.asarray(y, dtype=np.int64),
        a=np.asarray(a, dtype=np.int64),
    )


def write_metadata_csv(table: MetadataTable, path: Path) -> None:
    """Write ``table`` as ``id,filename,split,y,a`` atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in zip(table.ids, table.filenames, table.split.tolist(), table.y.tolist(), table.a.tolist()):
        writer.writerow(row)
    atomic_write_text(buffer.getvalue(), path)


def _whole_number(cell: str | None) -> int | None:
    """The integer a cell spells ("1", "1.0"), or None for any other text ("1.7", "nan", "")."""
    try:
        value = float(cell)
    except (TypeError, ValueError):
        return None
    return int(value) if math.isfinite(value) and value == int(value) else None


def _split_code(cell: str, split_ids: Mapping[str, int]) -> int | None:
    """The split code of a cell: a number among ``split_ids``' codes, or a name among its keys;
    None for any other."""
    code = _whole_number(cell)
    if code is None:
        return split_ids.get(cell)
    return code if code in split_ids.values() else None


def _label(cell: str, column: str, where: str, fix: str) -> int:
    """A ``y`` or ``a`` cell as an integer >= 0; a UserError naming the file and line otherwise."""
    value = _whole_number(cell)
    if value is None or value < 0:
        raise UserError(f"{where}: {column} = {cell!r} is not an integer >= 0 (labels and attributes are 0, 1, ...): "
                        f"{fix}")
    return value


def _checked_rows(path: Path, reader: csv.DictReader, fix: str) -> list[tuple[str, dict[str, str]]]:
    """Every row with where it is ("<file>, line <n>"); a UserError for a row whose field count
    differs from the header's (a short row, a stray comma)."""
    width = len(reader.fieldnames or [])
    rows = []
    for row in reader:
        where = f"{path}, line {reader.line_num}"
        if None in row or None in row.values():
            found = sum(value is not None for key, value in row.items() if key is not None) + len(row.get(None, []))
            raise UserError(f"{where}: {found} fields, but the header has {width}: {fix}")
        rows.append((where, row))
    return rows


def remake_hint() -> str:
    """What a malformed metadata file of a registered dataset asks for: its download command."""
    return f"re-create it with {command('download')}"


def read_metadata_csv(path: Path, split_ids: Mapping[str, int] = SPLIT_IDS_BY_NAME,
                      how_to_get_it: str | None = None, fix: str | None = None,
                      file_column: str | None = "filename") -> MetadataTable:
    """Read a metadata CSV; raises UserError naming the file (and line) when it is missing or malformed.

    Files the reference code wrote are read as they are: its MetaShift and ImagenetBG files
    have no ``id`` column (ids become row numbers), and its ImagenetBG file spells splits
    out (train, val, mixed_rand, ...): a named split gets its code from ``split_ids``. A split
    code that ``split_ids`` lacks, a label or attribute that is not an integer >= 0, or a row of
    another length than the header is refused with ``fix``. A UTF-8 byte-order mark (as
    spreadsheets save) is skipped. ``file_column`` None: a table without one (a text CSV), whose
    filenames are the row numbers. ``how_to_get_it`` and ``fix`` default to the download command's
    (a registered dataset's metadata file).
    """
    fix = fix or remake_hint()
    path = require_file(path, "metadata file", how_to_get_it or f"run `{command('download')} --data_path <data> "
                                                                  "<dataset>` first")
    required = ("split", "y", "a") if file_column is None else (file_column, "split", "y", "a")
    with open_csv(path) as handle:
        reader = csv_rows_with(handle, path, required, fix)
        rows = _checked_rows(path, reader, fix)
    splits = []
    for where, row in rows:
        splits.append(_split_code(row["split"], split_ids))
        if splits[-1] is None:
            codes = ", ".join(f"{code} ({name})" for name, code in split_ids.items())
            raise UserError(f"{where}: split = {row['split']!r} is not one of {codes}: {fix}")
    ids = [row["id"] for _, row in rows] if "id" in reader.fieldnames else list(range(len(rows)))
    filenames = list(range(len(rows))) if file_column is None else [row[file_column] for _, row in rows]
    return table_from_rows(ids, filenames, splits, [_label(row["y"], "y", where, fix) for where, row in rows],
                           [_label(row["a"], "a", where, fix) for where, row in rows])


def check_splits(table: MetadataTable, path: Path, fix: str) -> None:
    """A UserError unless every split (train, val, test) has rows and every class of the
    validation and test rows has training rows (a model cannot learn a class it never sees)."""
    for code in SPLIT_IDS.values():
        if not len(table.rows_of_split(code)):
            raise UserError(f"{path} has no {SPLIT_NAMES[code]} rows (split = {code}): every split needs examples; "
                            f"{fix}")
    trained = set(table.y[table.rows_of_split(SPLIT_IDS["tr"])].tolist())
    for split in ("va", "te"):
        unseen = sorted(set(table.y[table.rows_of_split(SPLIT_IDS[split])].tolist()) - trained)
        if unseen:
            raise UserError(f"{path}: class(es) y = {', '.join(map(str, unseen))} of the {SPLIT_NAMES[SPLIT_IDS[split]]} "
                            f"rows have no train rows (split = 0); a model cannot learn them: {fix}")


def group_counts(table: MetadataTable) -> dict[int, dict[tuple[int, int], int]]:
    """Examples per (y, a) group, for each split present: {split: {(y, a): count}}."""
    counts: dict[int, Counter] = {}
    for split, y, a in zip(table.split.tolist(), table.y.tolist(), table.a.tolist()):
        counts.setdefault(split, Counter())[(y, a)] += 1
    return {split: dict(sorted(counts[split].items())) for split in sorted(counts)}


def format_group_counts(table: MetadataTable, split_names: dict[int, str] = SPLIT_NAMES) -> str:
    """One line per split: its size and the count of every (y, a) group."""
    lines = []
    for split, groups in group_counts(table).items():
        name = split_names.get(split, str(split))
        cells = " ".join(f"(y={y},a={a}):{n}" for (y, a), n in groups.items())
        lines.append(f"  {name:>10} {sum(groups.values()):>7}  {cells}")
    return "\n".join(lines)


def size_warnings(what: str, sizes: Mapping[str, int], official: Mapping[str, int], unit: str = "examples") -> list[str]:
    """A ``warning:`` line for each split of ``official`` whose size in ``sizes`` differs
    (a truncated or partial copy otherwise passes unnoticed); none when all agree."""
    return [f"warning: {what}: the {split} split has {sizes.get(split, 0)} {unit}, not the official {count} "
            "(a partial or altered copy? it is used as it is)"
            for split, count in official.items() if sizes.get(split, 0) != count]

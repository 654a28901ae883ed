"""The metadata CSV format shared by every dataset: ``id,filename,split,y,a``.

``split`` is 0/1/2 for train/val/test (ImagenetBG adds 3/4/5 for its extra test
variants); ``y`` the label, ``a`` the attribute that, with ``y``, defines the group.
"""
import csv
import io
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from XRM.common.errors import UserError
from XRM.common.fileio import atomic_write_text
from XRM.data.files import open_csv, require_file

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


def _split_code(cell: str, split_ids: Mapping[str, int]) -> int:
    try:
        return int(float(cell))
    except ValueError:
        return split_ids[cell]  # a KeyError names a split the file's dataset does not have


def read_metadata_csv(path: Path, split_ids: Mapping[str, int] = SPLIT_IDS_BY_NAME,
                      how_to_get_it: str = "run `python download.py --data_path <data> <dataset>` first"
                      ) -> MetadataTable:
    """Read a metadata CSV; raises UserError naming the file when it is missing or malformed.

    Files the reference code wrote are read as they are: its MetaShift and ImagenetBG files
    have no ``id`` column (ids become row numbers), and its ImagenetBG file spells splits
    out (train, val, mixed_rand, ...): a named split gets its code from ``split_ids``.
    """
    path = require_file(path, "metadata file", how_to_get_it)
    with open_csv(path) as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in COLUMNS[1:] if column not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f"{path} lacks the column(s) {', '.join(missing)}: re-create it with download.py")
        rows = list(reader)
    ids = [r["id"] for r in rows] if "id" in reader.fieldnames else list(range(len(rows)))
    try:
        return table_from_rows(
            ids, [r["filename"] for r in rows], [_split_code(r["split"], split_ids) for r in rows],
            [int(float(r["y"])) for r in rows], [int(float(r["a"])) for r in rows])
    except KeyError as error:
        raise UserError(f"{path} has a split {error} that is not one of {', '.join(split_ids)}: "
                        "re-create it with download.py") from None
    except ValueError as error:
        raise UserError(f"{path} has a non-numeric y or a ({error}): re-create it with download.py") from error


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

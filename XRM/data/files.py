"""Reading files under --data_path: one missing-file error and one way to open and read a CSV."""
import csv
from pathlib import Path
from typing import TextIO

from XRM.common.commands import command
from XRM.common.errors import UserError

# Some CivilComments comments are longer than csv's default field limit (128 KiB).
LONG_CSV_FIELD_LIMIT = 1 << 30


def require_file(path: Path, what: str, how_to_get_it: str) -> Path:
    """``path`` when it exists (a file or a folder); else a one-line UserError
    ``missing <what> <path>; <how_to_get_it>``."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"missing {what} {path}; {how_to_get_it}")
    return path


def download_hint(data_path: str | Path, dataset: str, features: bool = False) -> str:
    """The download command that makes ``dataset``'s files under ``data_path`` (and its features)."""
    flags = "--features --download" if features else "--download"
    return f"run: {command('download')} {flags} --data_path {data_path} {dataset}"


def open_csv(path: Path) -> TextIO:
    """``path`` opened for the csv module: UTF-8 (a byte-order mark, as spreadsheets write, skipped),
    newlines left to csv, fields of any length."""
    csv.field_size_limit(LONG_CSV_FIELD_LIMIT)  # process-wide, but only ever raised
    return open(path, newline="", encoding="utf-8-sig")


def csv_rows_with(handle: TextIO, path: Path, columns: tuple[str, ...], fix: str) -> csv.DictReader:
    """A DictReader over ``handle`` (``path`` opened by :func:`open_csv`) whose header holds every one of
    ``columns``; else a one-line UserError naming those it lacks, then ``fix``."""
    reader = csv.DictReader(handle)
    lacking = [column for column in columns if column not in (reader.fieldnames or [])]
    if lacking:
        raise UserError(f"{path} lacks the column(s) {', '.join(lacking)}: {fix}")
    return reader

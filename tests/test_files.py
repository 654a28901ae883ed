"""The data folder's file helpers: one missing-file message, CSVs with long UTF-8 fields."""
import csv

import pytest

from XRM.common.errors import UserError
from XRM.data.files import download_hint, open_csv, require_file
from XRM.data.multinli import load_multinli_features


def test_require_file_names_what_is_missing_and_how_to_get_it(tmp_path):
    assert require_file(tmp_path, "folder", "make it") == tmp_path
    with pytest.raises(UserError) as caught:
        require_file(tmp_path / "x.csv", "metadata file", download_hint(tmp_path, "waterbirds", features=True))
    assert str(caught.value) == (f"missing metadata file {tmp_path / 'x.csv'}; "
                                 f"run: python -m XRM.cli download --features --download --data_path {tmp_path} waterbirds")


def test_open_csv_reads_fields_longer_than_the_default_limit(tmp_path):
    path = tmp_path / "long.csv"
    text = "\u00e9" * 200_000  # over csv's 131,072-character default, and not ASCII
    path.write_bytes(f"comment_text\n{text}\n".encode("utf-8"))
    with open_csv(path) as handle:
        assert [row["comment_text"] for row in csv.DictReader(handle)] == [text]


def test_missing_multinli_cached_file_names_the_download_command(tmp_path):
    with pytest.raises(UserError) as caught:
        load_multinli_features(tmp_path / "multinli")
    path = tmp_path / "multinli" / "glue_data" / "MNLI" / "cached_train_bert-base-uncased_128_mnli"
    assert str(caught.value) == (f"missing cached features file {path}; "
                                 f"run: python -m XRM.cli download --download --data_path {tmp_path} multinli")

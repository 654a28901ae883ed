"""Reading metadata CSVs: ours, and those the reference code wrote (no id, named splits)."""
import re

import pytest

from XRM.common.errors import UserError
from XRM.data.catalog import get_dataset
from XRM.data.images import load_image_split
from XRM.data.metadata_table import read_metadata_csv


def test_reference_metashift_csv_without_id(tmp_path):
    # The reference's pandas frame: filename (absolute), y, a, then split; no id column.
    folder = tmp_path / "metashift"
    folder.mkdir()
    images = folder / "MetaShift-Cat-Dog-indoor-outdoor"
    (folder / "metadata_metashift.csv").write_text(
        "filename,y,a,split\n"
        f"{images}/train/cat/cat(indoor)/a.jpg,1,1,0\n"
        f"{images}/train/dog/dog(outdoor)/b.jpg,0,0,2\n"
        f"{images}/test/cat/cat(outdoor)/c.jpg,1,0,0\n"
        f"{images}/test/dog/dog(indoor)/d.jpg,0,1,1\n", encoding="utf-8")
    table = read_metadata_csv(folder / "metadata_metashift.csv")
    assert table.ids == ["0", "1", "2", "3"]
    assert table.split.tolist() == [0, 2, 0, 1] and table.y.tolist() == [1, 0, 1, 0] and table.a.tolist() == [1, 0, 0, 1]
    split = load_image_split(tmp_path, "metashift", "tr")
    assert split.paths == [f"{images}/train/cat/cat(indoor)/a.jpg", f"{images}/test/cat/cat(outdoor)/c.jpg"]


def test_reference_imagenetbg_csv_with_named_splits(tmp_path):
    # The reference's columns: split (a name), filename (absolute), y, a; "test" is original/val.
    folder = tmp_path / "backgrounds_challenge"
    folder.mkdir()
    names = ["train", "val", "test", "mixed_rand", "only_fg", "no_fg", "mixed_rand", "train"]
    rows = [f"{name},{folder}/{name}/0{i % 9}_x/{i}.JPEG,{i % 9},0" for i, name in enumerate(names)]
    (folder / "metadata.csv").write_text("split,filename,y,a\n" + "\n".join(rows) + "\n", encoding="utf-8")
    test = load_image_split(tmp_path, "imagenetbg", "te")
    assert test.paths == [f"{folder}/mixed_rand/03_x/3.JPEG", f"{folder}/mixed_rand/06_x/6.JPEG"]
    assert test.y.tolist() == [3, 6]
    assert load_image_split(tmp_path, "imagenetbg", "tr").y.tolist() == [0, 7]
    assert load_image_split(tmp_path, "imagenetbg", "va").y.tolist() == [1]
    from XRM.data.metadata import IMAGENETBG_SPLIT_IDS
    table = read_metadata_csv(folder / "metadata.csv", IMAGENETBG_SPLIT_IDS)
    assert table.split.tolist() == [0, 1, 3, 2, 4, 5, 2, 0] and table.ids == [str(i) for i in range(8)]


def test_unknown_split_name_and_missing_column(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("id,filename,split,y,a\n0,a.jpg,holdout,1,0\n", encoding="utf-8")
    with pytest.raises(UserError) as caught:
        read_metadata_csv(path)
    assert str(caught.value) == (f"{path}, line 2: split = 'holdout' is not one of 0 (train), 1 (val), 2 (test): "
                                 "re-create it with python -m XRM.cli download")
    path.write_text("id,filename,y,a\n0,a.jpg,1,0\n", encoding="utf-8")
    with pytest.raises(UserError, match="lacks the column\\(s\\) split: re-create it with python -m XRM.cli download"):
        read_metadata_csv(path)


def test_utf8_filenames_and_missing_file(tmp_path):
    path = tmp_path / "m.csv"
    path.write_bytes("id,filename,split,y,a\n7,caf\u00e9/\u00e9t\u00e9.jpg,0,1,0\n".encode("utf-8"))
    assert read_metadata_csv(path).filenames == ["caf\u00e9/\u00e9t\u00e9.jpg"]
    with pytest.raises(UserError) as caught:
        load_image_split(tmp_path, "celeba", "tr")
    assert str(caught.value) == (f"missing metadata file {tmp_path / 'celeba' / 'metadata_celeba.csv'}; "
                                 f"run: python -m XRM.cli download --download --data_path {tmp_path} celeba")


def _csv(tmp_path, text: str, bom: bool = False):
    path = tmp_path / "mine.csv"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


GOOD_ROWS = "0,a.jpg,0,0,0\n1,b.jpg,0,1,1\n2,c.jpg,1,0,1\n3,d.jpg,2,1,0\n"


def test_a_byte_order_mark_as_spreadsheets_save_is_read(tmp_path):
    path = _csv(tmp_path, "id,filename,split,y,a\n" + GOOD_ROWS, bom=True)
    table = read_metadata_csv(path)
    assert table.ids == ["0", "1", "2", "3"] and table.split.tolist() == [0, 0, 1, 2] and table.y.tolist() == [0, 1, 0, 1]
    assert get_dataset(str(path)).num_classes == 2  # the custom dataset finds its columns past the mark
    texts = _csv(tmp_path, "id,text,split,y,a\n" + GOOD_ROWS.replace(".jpg", " is a text"), bom=True)
    assert get_dataset(str(texts)).table.y.tolist() == [0, 1, 0, 1]


@pytest.mark.parametrize("rows, message", [
    ("0,a.jpg,0,0\n", "line 2: 4 fields, but the header has 5"),
    ("0,a.jpg,0,0,0,9\n", "line 2: 6 fields, but the header has 5"),
    ("0,a.jpg,0,0,0\n1,b.jpg,0,1.7,0\n", "line 3: y = '1.7' is not an integer >= 0"),
    ("0,a.jpg,0,-1,0\n", "line 2: y = '-1' is not an integer >= 0"),
    ("0,a.jpg,0,0,x\n", "line 2: a = 'x' is not an integer >= 0"),
    ("0,a.jpg,3,0,0\n", "line 2: split = '3' is not one of 0 (train), 1 (val), 2 (test)"),
])
def test_malformed_rows_name_the_file_and_line(tmp_path, rows, message):
    path = _csv(tmp_path, "id,filename,split,y,a\n" + rows)
    with pytest.raises(UserError) as caught:
        get_dataset(str(path))
    assert str(caught.value).startswith(f"{path}, {message}")
    assert "correct the file" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("rows, message", [
    ("0,a.jpg,0,0,0\n1,b.jpg,0,1,1\n3,d.jpg,2,1,0\n", "has no val rows (split = 1)"),
    ("0,a.jpg,0,0,0\n1,b.jpg,1,1,1\n3,d.jpg,2,0,0\n", "class(es) y = 1 of the val rows have no train rows"),
    ("0,a.jpg,0,0,0\n1,b.jpg,1,0,1\n3,d.jpg,2,2,0\n", "class(es) y = 2 of the test rows have no train rows"),
])
def test_custom_splits_must_be_trainable(tmp_path, rows, message):
    path = _csv(tmp_path, "id,filename,split,y,a\n" + rows)
    with pytest.raises(UserError, match=re.escape(message)):
        get_dataset(str(path))


def test_a_bad_custom_csv_stops_main_before_anything_is_written(script, tmp_path):
    path = _csv(tmp_path, "id,filename,split,y,a\n" + GOOD_ROWS.replace("1,b.jpg,0,1,1", "1,b.jpg,0,1.7,1"))
    out = tmp_path / "out"
    result = script("main.py", "--phase", "2", "--datasets", str(path), "--algorithms", "ERM", "--out_dir", str(out))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {path}, line 3: y = '1.7' is not an integer >= 0 (labels and attributes are 0, 1, ...): correct the "
        "file (columns id,filename,split,y,a or id,text,split,y,a; see the README)"]
    assert not out.exists()

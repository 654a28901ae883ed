"""Reading metadata CSVs: ours, and those the reference code wrote (no id, named splits)."""
import pytest

from XRM.common.errors import UserError
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
    assert str(caught.value) == (f"{path} has a split 'holdout' that is not one of train, val, test: "
                                 "re-create it with download.py")
    path.write_text("id,filename,y,a\n0,a.jpg,1,0\n", encoding="utf-8")
    with pytest.raises(UserError, match="lacks the column\\(s\\) split: re-create it with download.py"):
        read_metadata_csv(path)


def test_utf8_filenames_and_missing_file(tmp_path):
    path = tmp_path / "m.csv"
    path.write_bytes("id,filename,split,y,a\n7,caf\u00e9/\u00e9t\u00e9.jpg,0,1,0\n".encode("utf-8"))
    assert read_metadata_csv(path).filenames == ["caf\u00e9/\u00e9t\u00e9.jpg"]
    with pytest.raises(UserError) as caught:
        load_image_split(tmp_path, "celeba", "tr")
    assert str(caught.value) == (f"missing metadata file {tmp_path / 'celeba' / 'metadata_celeba.csv'}; "
                                 f"run: python download.py --download --data_path {tmp_path} celeba")

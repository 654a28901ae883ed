"""Custom datasets passed by path: a features .pt, an image CSV, a text CSV; results filed under the stem."""
import csv

import backbone_fixtures as fx
import pytest
import torch

from XRM.common.errors import UserError
from XRM.data.catalog import get_dataset
from XRM.data.metadata_table import table_from_rows, write_metadata_csv

SHORT = '{"num_steps": 3, "eval_every": 2, "batch_size": 4}'


def test_phase_1_on_a_features_file_then_mat_on_the_images_of_the_same_stem(tmp_path):
    data = tmp_path / "mine"
    fx.write_features(data / "mine.pt")
    names = [f"pics/{i}.jpg" for i in range(len(fx.IMAGE_ROWS))]
    fx.write_jpegs(data, names)
    write_metadata_csv(table_from_rows(list(range(len(names))), names, *zip(*fx.IMAGE_ROWS)), data / "mine.csv")
    out = tmp_path / "out"
    assert fx.run_main(fx.main_args("--phase", "1", "--datasets", str(data / "mine.pt"), "--out_dir", str(out),
                                    "--hparams", '{"num_steps": 40, "eval_every": 20, "lr": 0.1, "batch_size": 6}')) == 0
    inferred = torch.load(out / "XRM" / "mine" / "group_labels_no" / "inferred_hpcomb_0_seed0.pt")
    assert inferred["tr"].tolist() == [0, 0, 1, 0, 0, 1]
    assert fx.run_main(fx.main_args("--phase", "2", "--datasets", str(data / "mine.csv"), "--algorithms", "MAT",
                                    "--group_labels", "no", "--out_dir", str(out), "--image_backbone", "resnet18",
                                    "--backbone_weights", "none", "--hparams", SHORT)) == 0
    header, rows = fx.records(out / "MAT" / "mine" / "group_labels_no" / "results_hpcomb_0_seed0.json")
    assert header["inputs_used"] == "images" and header["dataset"] == str(data / "mine.csv")
    assert [r["step"] for r in rows] == [0, 2] and "va_gi_wga" in rows[-1]


def test_text_csv_is_tokenised_into_a_cache_beside_it(tmp_path):
    bert = fx.write_tiny_bert(tmp_path / "tiny-bert")
    path = tmp_path / "reviews.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text", "split", "y", "a"])
        for i, ((split, y, a), text) in enumerate(zip(fx.IMAGE_ROWS, fx.CIVIL_TEXTS)):
            writer.writerow([f"r{i}", text, split, y + 1, a])  # labels 1..2: three classes
    out = tmp_path / "out"
    assert fx.run_main(fx.main_args("--phase", "2", "--datasets", str(path), "--algorithms", "ERM", "--out_dir",
                                    str(out), "--text_model", str(bert), "--hparams", SHORT)) == 0
    tokens = torch.load(tmp_path / "reviews.tokens_tiny-bert_220.pt")["tokens"]
    assert tokens.shape == (12, 220, 3) and tokens[3, :3, 0].tolist() == [2, 11, 3]  # [CLS] ok [SEP]
    _, rows = fx.records(out / "ERM" / "reviews" / "group_labels_yes" / "results_hpcomb_0_seed0.json")
    assert [r["step"] for r in rows] == [0, 2]
    assert get_dataset(str(path)).num_classes == 3


def test_other_files_and_names_are_user_errors(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("name,label\nx,1\n")
    with pytest.raises(UserError, match="columns id,filename,split,y,a \\(images\\) or id,text,split,y,a \\(texts\\)"):
        get_dataset(str(path))
    with pytest.raises(UserError) as caught:
        get_dataset(str(tmp_path / "missing.csv"))
    for name in ("CivilComments", "ColorMNIST", "MultiNLI", "Waterbirds", "or give the path of a custom dataset"):
        assert name in str(caught.value)
    with pytest.raises(UserError, match="pass a features file named mine.pt instead"):
        write_metadata_csv(table_from_rows([0, 1, 2], ["a.jpg"] * 3, [0, 1, 2], [0, 0, 0], [0, 0, 0]), tmp_path / "mine.csv")
        from XRM.data.base import InputOptions

        get_dataset(str(tmp_path / "mine.csv")).resolve(str(tmp_path), 1, InputOptions(inputs="features"))


def test_text_datasets_do_not_import_the_image_stack(script):
    # Split ids live in metadata_table: text data must not pull in PIL and torchvision transforms.
    result = script("-c", "import sys; import XRM.data.text_datasets; print('XRM.data.images' in sys.modules)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"

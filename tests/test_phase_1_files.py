"""Phase-1 files read back (--group_labels <file>, MAT's held-out logits): every value checked, one line."""
import re

import pytest
import torch

from XRM.common.errors import UserError
from XRM.data.catalog import get_dataset
from XRM.runs.phase_1_files import load_phase_1_artifact

TRAIN_Y = torch.tensor([0, 0, 1, 1, 0, 1])
VALIDATION_Y = torch.tensor([0, 0, 1, 1])
GOOD = {"tr": torch.tensor([0, 1, 0, 1, 1, 0]), "va": torch.tensor([1, 0, 0, 1]), "tr_ho": torch.zeros(6, 2)}


def _load(tmp_path, content):
    path = tmp_path / "groups.pt"
    torch.save(content, path)
    return path, load_phase_1_artifact(path, TRAIN_Y, VALIDATION_Y, num_classes=2)


def test_a_good_file_is_read_as_long_attributes_and_float_logits(tmp_path):
    _, loaded = _load(tmp_path, {**GOOD, "tr": GOOD["tr"].double()[:, None], "va": GOOD["va"].tolist()})
    assert loaded["tr"].dtype == torch.long and loaded["tr"].tolist() == GOOD["tr"].tolist()
    assert loaded["va"].tolist() == GOOD["va"].tolist() and loaded["tr_ho"].dtype == torch.float32


@pytest.mark.parametrize("change, message", [
    ({"tr": torch.tensor([0, 1, 0, 0.5, 1, 0])}, "'tr' holds 0.5, but attributes are integers"),
    ({"va": torch.tensor([1.0, 0.0, float("nan"), 1.0])}, "'va' holds nan, but attributes are integers"),
    ({"tr": torch.tensor([0, 1, 0, 1, -1, 0])}, "'tr' holds the attribute -1; attributes are integers >= 0"),
    ({"va": torch.tensor([1, 0, 0, 10**9])}, "'va' holds the attribute 1000000000, but there are 6 training examples"),
    ({"tr": torch.zeros(6, dtype=torch.long)}, "its 'tr' groups are degenerate"),
    ({"va": torch.tensor([1, 1, 0, 1])}, "its 'va' groups are degenerate"),
    ({"tr": "zeros"}, "'tr' is a str, not a tensor of numbers"),
    ({"va": {"a": 1}}, "'va' is a dict, not a tensor of numbers"),
    ({"tr_ho": ["x"] * 6}, "'tr_ho' is a list, not a tensor of numbers"),
    ({"tr_ho": torch.zeros(6, 3)}, "'tr_ho' has shape (6, 3) but this dataset needs (6, 2)"),
])
def test_bad_values_are_one_line_naming_the_file_and_key(tmp_path, change, message):
    with pytest.raises(UserError, match=re.escape(message)) as caught:
        _load(tmp_path, {**GOOD, **change})
    assert str(tmp_path / "groups.pt") in str(caught.value) and "\n" not in str(caught.value)


def test_a_string_payload_is_one_line(tmp_path):
    with pytest.raises(UserError, match="must hold a dict with 'tr' and 'va' tensors"):
        _load(tmp_path, "tr,va")


def test_main_refuses_a_fractional_group_file_and_writes_nothing(script, tmp_path):
    splits = get_dataset("Synthetic").load_splits("")
    attributes = {name: (torch.arange(len(splits[name])) % 3 == 0).double() for name in ("tr", "va")}
    attributes["tr"][7] = 0.25
    path = tmp_path / "groups.pt"
    torch.save(attributes, path)
    out = tmp_path / "out"
    result = script("main.py", "--phase", "2", "--datasets", "Synthetic", "--algorithms", "GroupDRO",
                    "--group_labels", str(path), "--out_dir", str(out))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: group-label file {path}: 'tr' holds 0.25, but attributes are integers (group ids); re-run phase 1 "
        "for this dataset, or pass another file"]
    assert not out.exists()

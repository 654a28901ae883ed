"""MultiNLI's cached features load without utils_glue, and nothing else runs."""
import pickle

import download_fixtures as fx
import pytest
import torch

from XRM.common.errors import UserError
from XRM.data.multinli import load_cached_features, load_multinli_features


@pytest.mark.parametrize("legacy_format", [True, False])
def test_cached_features_load_without_utils_glue(tmp_path, legacy_format):
    path = tmp_path / "cached_train_bert-base-uncased_128_mnli"
    fx.save_cached_features(path, [2, 0, 1], legacy_format=legacy_format, length=5)
    records = load_cached_features(path)
    assert [r.label_id for r in records] == [2, 0, 1]
    assert records[1].input_ids == [102] * 5 and records[2].input_mask == [1] * 5 and records[0].segment_ids == [0] * 5


def test_all_files_in_row_order(tmp_path):
    mnli = tmp_path / "glue_data" / "MNLI"
    for number, (name, rows) in enumerate(fx.MULTINLI_FILES.items()):
        fx.save_cached_features(mnli / name, [row[0] for row in rows], legacy_format=number == 1, length=4)
    features = load_multinli_features(tmp_path)
    assert features["label_ids"].tolist() == [0, 1, 2, 2, 1, 0, 2]
    assert features["input_ids"].shape == (7, 4) and features["input_ids"].dtype == torch.long
    assert features["input_ids"][:, 0].tolist() == [101, 102, 103, 104, 101, 102, 101]


class _Exploit:
    def __reduce__(self):
        return (print, ("pwned",))


def test_other_classes_are_refused(tmp_path, capsys):
    path = tmp_path / "cached_evil"
    with open(path, "wb") as handle:
        pickle.dump([_Exploit()], handle)
    with pytest.raises(UserError, match="unexpected class builtins.print"):
        load_cached_features(path)
    assert "pwned" not in capsys.readouterr().out

"""Precomputed-feature datasets read from <data_path>/<folder>/features.pt, end to end."""
import json

import pytest
import torch

from XRM.common.errors import UserError
from XRM.data.catalog import get_dataset


def _write_features(data_path, folder="waterbirds", n=(200, 100, 100), dim=8, classes=2):
    generator = torch.Generator().manual_seed(0)
    content = {}
    for split, size in zip(("tr", "va", "te"), n):
        y = torch.randint(0, classes, (size, 1), generator=generator)
        m = torch.randint(0, 2, (size, 1), generator=generator)
        x = torch.randn(size, dim, generator=generator) + 1.0 * y  # overlapping classes: the twins err on some
        content[split] = {"x": x, "y": y, "m": m}
    (data_path / folder).mkdir(parents=True)
    torch.save(content, data_path / folder / "features.pt")
    return content


def test_feature_dataset_loads_the_three_splits(tmp_path):
    content = _write_features(tmp_path)
    splits = get_dataset("Waterbirds").load_splits(str(tmp_path))
    assert [len(splits[s]) for s in ("tr", "va", "te")] == [200, 100, 100]
    assert splits["tr"].y.shape == (200,) and splits["tr"].x.shape == (200, 8)
    assert torch.equal(splits["va"].a, content["va"]["m"].reshape(-1))


def test_malformed_features_file_is_a_user_error(tmp_path):
    (tmp_path / "celeba").mkdir()
    torch.save({"tr": {"x": torch.zeros(2, 3)}}, tmp_path / "celeba" / "features.pt")
    with pytest.raises(UserError, match=r"features file .*: is not a features file: .*; got \['tr'\]; run: python -m XRM.cli download --features"):
        get_dataset("CelebA").load_splits(str(tmp_path))


def test_phase_1_and_mat_on_a_feature_dataset(tmp_path, script):
    _write_features(tmp_path / "data", folder="metashift")
    common = ["--datasets", "MetaShift", "--data_path", str(tmp_path / "data"), "--out_dir", str(tmp_path / "out"),
              "--hparams", '{"num_steps": 61, "eval_every": 30, "lr": 0.05}']
    assert script("main.py", "--phase", "1", *common).returncode == 0
    inferred = torch.load(tmp_path / "out" / "XRM" / "MetaShift" / "group_labels_no" / "inferred_hpcomb_0_seed0.pt")
    assert inferred["tr_ho"].shape == (200, 2) and inferred["va"].shape == (100,)
    result = script("main.py", "--phase", "2", "--algorithms", "MAT", "--group_labels", "no", *common)
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / "out" / "MAT" / "MetaShift" / "group_labels_no" / "results_hpcomb_0_seed0.json").read_text()
    assert [json.loads(line)["step"] for line in lines.splitlines()[1:]] == [0, 30, 60]

"""ColorMNIST from MNIST IDX files: label noise, colour agreement per environment and split."""
import gzip

import download_fixtures as dfx
import numpy as np
import pytest
import torch

from XRM.common.errors import UserError
from XRM.data.catalog import get_dataset
from XRM.data.colormnist import TEST_ENVIRONMENT, colour_digits


def _write_mnist(data_path, n_train: int = 2400, n_test: int = 1000) -> None:
    raw = data_path / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, count in (("train", n_train), ("t10k", n_test)):
        # pixels 1..255: every image lights its colour channel, so the colour can be read back
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(gzip.decompress(dfx.idx_gz(rng.integers(1, 256, (count, 28, 28)))))
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(gzip.decompress(dfx.idx_gz(rng.integers(0, 10, count))))


def _colour(x: torch.Tensor) -> torch.Tensor:
    return (x[:, 1].flatten(1).sum(1) > 0).long()


def test_colour_and_label_agreement_per_split(tmp_path):
    _write_mnist(tmp_path)
    splits = get_dataset("ColorMNIST").load_splits(str(tmp_path))
    assert [len(splits[s]) for s in ("tr", "va", "te")] == [2000, 400, 1000]
    assert splits["tr"].x.shape == (2000, 2, 14, 14) and splits["tr"].x.max() <= 1.0
    assert ((splits["tr"].x[:, 0].flatten(1).sum(1) > 0) != (splits["tr"].x[:, 1].flatten(1).sum(1) > 0)).all()
    train = splits["tr"]
    assert train.a.tolist() == [0] * 1000 + [1] * 1000  # the two environments
    agreement = [(_colour(train.x[train.a == e]) == train.y[train.a == e]).float().mean().item() for e in (0, 1)]
    assert abs(agreement[0] - 0.8) < 0.04 and abs(agreement[1] - 0.9) < 0.03
    test = splits["te"]
    assert abs((_colour(test.x) == test.y).float().mean().item() - 0.1) < 0.03 and test.a.sum() == 0
    again = get_dataset("ColorMNIST").load_splits(str(tmp_path))
    assert torch.equal(again["tr"].x, train.x) and torch.equal(again["te"].y, test.y)  # a fixed data seed


def test_label_noise_and_colours():
    digits = torch.arange(4000) % 10
    images = torch.full((4000, 28, 28), 255, dtype=torch.uint8)
    coloured = colour_digits(images, digits, TEST_ENVIRONMENT, torch.Generator().manual_seed(1))
    assert abs((coloured.y != (digits < 5).long()).float().mean().item() - 0.25) < 0.03
    assert torch.equal(_colour(coloured.x), coloured.colour)
    assert coloured.x.sum().item() == 4000 * 14 * 14  # one channel lit, with the subsampled pixels at 1.0


def test_missing_mnist_names_the_download_command(tmp_path):
    with pytest.raises(UserError, match=f"run: python -m XRM.cli download --download --data_path {tmp_path} cmnist"):
        get_dataset("ColorMNIST").load_splits(str(tmp_path))


def test_a_few_training_steps(tmp_path):
    import backbone_fixtures as fx

    _write_mnist(tmp_path / "data", n_train=240, n_test=100)
    out = tmp_path / "out"
    assert fx.run_main(fx.main_args("--phase", "2", "--datasets", "ColorMNIST", "--algorithms", "ERM",
                                    "--data_path", str(tmp_path / "data"), "--out_dir", str(out),
                                    "--hparams", '{"num_steps": 5, "eval_every": 2}')) == 0
    header, rows = fx.records(out / "ERM" / "ColorMNIST" / "group_labels_yes" / "results_hpcomb_0_seed0.json")
    assert header["hparams"]["optimizer"] == "adam" and [r["step"] for r in rows] == [0, 2, 4]


def test_the_mlp_starts_as_the_reference_xavier_everywhere_and_zero_biases():
    from XRM.networks.classifiers import build_network

    torch.manual_seed(0)
    mlp = build_network("mlp", (2, 14, 14), 2)
    layers = [layer for layer in mlp.modules() if isinstance(layer, torch.nn.Linear)]
    assert [tuple(layer.weight.shape) for layer in layers] == [(390, 392), (390, 390), (2, 390)]
    for layer in layers:
        bound = (6 / sum(layer.weight.shape)) ** 0.5  # xavier_uniform: U(-b, b), b = sqrt(6 / (fan_in + fan_out))
        assert layer.weight.abs().max().item() <= bound
        assert layer.weight.abs().max().item() > 0.95 * bound  # drawn over the whole range, the head included
        assert layer.bias.abs().sum().item() == 0.0


def test_loading_prints_the_split_sizes_and_warns_when_mnist_is_not_the_official_one(tmp_path, capsys):
    from XRM.data.colormnist import report_sizes

    _write_mnist(tmp_path, n_train=240, n_test=100)
    capsys.readouterr()
    get_dataset("ColorMNIST").load_splits(str(tmp_path))
    mnist = tmp_path / "mnist"
    assert capsys.readouterr().err.splitlines() == [
        f"ColorMNIST: MNIST under {mnist} has 240 train and 100 test images: tr 200, va 40, te 100",
        f"warning: MNIST under {mnist}: the train split has 240 images, not the official 60000 "
        "(a partial or altered copy? it is used as it is)",
        f"warning: MNIST under {mnist}: the test split has 100 images, not the official 10000 "
        "(a partial or altered copy? it is used as it is)"]
    report_sizes(mnist, 60000, 10000)  # the official MNIST: its sizes, no warning
    assert capsys.readouterr().err.splitlines() == [
        f"ColorMNIST: MNIST under {mnist} has 60000 train and 10000 test images: tr 50000, va 10000, te 10000"]

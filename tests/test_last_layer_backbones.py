"""DFR and AFR on networks that are more than a head: the base run's network without its last layer
makes the embeddings (a fine-tuned tiny ResNet, ColorMNIST's MLP), and the head is retrained on them."""
import gzip

import backbone_fixtures as fx
import download_fixtures as dfx
import numpy as np
import pytest
import torch

from XRM.common.errors import UserError
from XRM.data.base import InputOptions
from XRM.data.catalog import get_dataset
from XRM.engine.batches import evaluation_batches
from XRM.networks.backbones import BackboneSpec
from XRM.networks.classifiers import build_network
from XRM.runs.last_layer_inputs import split_last_layer

TINY_RESNET = ["--inputs", "images", "--image_backbone", "resnet18", "--backbone_weights", "none"]
SHORT = '{"num_steps": 5, "eval_every": 2, "batch_size": 4}'


def _run(*args: str) -> int:
    return fx.run_main(fx.main_args("--phase", "2", *args, "--hparams", SHORT))


def test_dfr_and_afr_on_a_fine_tuned_resnet(tmp_path):
    fx.write_waterbirds(tmp_path / "data", with_features=False)
    out = tmp_path / "out"
    common = ["--datasets", "Waterbirds", "--data_path", str(tmp_path / "data"), "--out_dir", str(out),
              "--group_labels", "yes", *TINY_RESNET]
    with pytest.raises(UserError) as caught:  # DFR before its base ERM run: one line naming the command to run first
        _run("--algorithms", "DFR", *common)
    assert "DFR retrains the last layer of a trained ERM model" in str(caught.value) and "\n" not in str(caught.value)
    assert "python -m XRM.cli train --phase 2 --datasets Waterbirds --algorithms ERM --group_labels yes" in str(caught.value)
    assert not out.exists()
    assert _run("--algorithms", "ERM", *common) == 0
    assert _run("--algorithms", "DFR", *common) == 0

    erm = out / "ERM" / "Waterbirds" / "group_labels_yes"
    cached = torch.load(erm / "embeddings_hpcomb_0_seed0.pt")
    assert [tuple(cached[s].shape) for s in ("tr", "va", "te")] == [(6, 512), (4, 512), (2, 512)]
    # the cache holds the ERM network's penultimate activations
    network = build_network("image", (3, 32, 32), 2, None, BackboneSpec("resnet18", pretrained=False))
    network.load_state_dict(torch.load(erm / "best_hpcomb_0_seed0.pt")["model"])
    extractor, _ = split_last_layer(network)
    dataset = get_dataset("Waterbirds").resolve(str(tmp_path / "data"), 2, InputOptions(
        inputs="images", image_backbone="resnet18", pretrained=False))
    with torch.inference_mode():
        test_inputs = dataset.load_splits(str(tmp_path / "data"))["te"].x
        expected = torch.cat([extractor.eval()(x) for x in evaluation_batches(test_inputs, 8, torch.device("cpu"), 0)])
    assert torch.allclose(cached["te"], expected, atol=1e-5)

    header, rows = fx.records(out / "DFR" / "Waterbirds" / "group_labels_yes" / "results_hpcomb_0_seed0.json")
    assert header["inputs_used"] == "embeddings" and header["backbone_used"] is None
    assert [r["step"] for r in rows] == [0, 2, 4]
    assert all(r["va_avg_acc"] in (0.0, 0.5, 1.0) for r in rows)  # the selection half: 2 of the 4 images
    best = torch.load(out / "DFR" / "Waterbirds" / "group_labels_yes" / "best_hpcomb_0_seed0.pt")
    assert best["model"]["weight"].shape == (2, 512)


def _write_mnist(data_path, n_train: int = 600, n_test: int = 200) -> None:
    raw = data_path / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, count in (("train", n_train), ("t10k", n_test)):
        images, labels = rng.integers(1, 256, (count, 28, 28)), rng.integers(0, 10, count)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(gzip.decompress(dfx.idx_gz(images)))
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(gzip.decompress(dfx.idx_gz(labels)))


def test_dfr_and_afr_on_the_hidden_layer_of_colormnist_mlp(tmp_path):
    _write_mnist(tmp_path / "data")
    out = tmp_path / "out"
    common = ["--phase", "2", "--datasets", "ColorMNIST", "--data_path", str(tmp_path / "data"), "--out_dir", str(out),
              "--group_labels", "yes", "--device", "cpu", "--hparams"]
    assert fx.run_main([*common, SHORT, "--algorithms", "ERM", "AFRBase"]) == 0
    assert fx.run_main([*common, SHORT, "--algorithms", "DFR"]) == 0
    # AFR at a vanishing learning rate: its first evaluation (after one step) is its base network's
    frozen = '{"num_steps": 5, "eval_every": 2, "batch_size": 4, "lr": 1e-30}'
    # every evaluation's test metrics (step 0's too, which no selection rule reads)
    assert fx.run_main([*common, frozen, "--algorithms", "AFR", "--test_every_evaluation"]) == 0
    for algorithm in ("DFR", "AFR"):
        header, rows = fx.records(out / algorithm / "ColorMNIST" / "group_labels_yes" / "results_hpcomb_0_seed0.json")
        assert header["inputs_used"] == "embeddings" and header["hparams"]["optimizer"] == "sgd"  # features' space
        best = torch.load(out / algorithm / "ColorMNIST" / "group_labels_yes" / "best_hpcomb_0_seed0.pt")
        assert best["model"]["weight"].shape == (2, 390)
    cached = torch.load(out / "ERM" / "ColorMNIST" / "group_labels_yes" / "embeddings_hpcomb_0_seed0.pt")
    assert cached["va"].shape == (100, 390) and (cached["va"] >= 0).all()  # after the last ReLU
    afr_header, afr_rows = fx.records(out / "AFR" / "ColorMNIST" / "group_labels_yes" / "results_hpcomb_0_seed0.json")
    base_best = torch.load(afr_header["base_model_file"])
    _, base_rows = fx.records(out / "AFRBase" / "ColorMNIST" / "group_labels_yes" / "results_hpcomb_0_seed0.json")
    base_record = next(r for r in base_rows if r["step"] == base_best["step"])
    for key in ("va_avg_acc", "va_wga", "te_avg_acc", "te_wga"):
        assert afr_rows[0][key] == base_record[key], key


def test_each_network_is_its_embeddings_then_its_last_layer(tmp_path):
    bert = fx.write_tiny_bert(tmp_path / "bert")
    cases = [("mlp", (2, 14, 14), None, torch.rand(3, 2, 14, 14)),
             ("image", (3, 32, 32), BackboneSpec("resnet18", pretrained=False), torch.rand(3, 3, 32, 32)),
             ("text", (7, 3), BackboneSpec(str(bert), pretrained=False),
              torch.stack([torch.randint(5, 12, (3, 7)), torch.ones(3, 7, dtype=torch.long),
                           torch.zeros(3, 7, dtype=torch.long)], dim=-1))]
    for family, shape, backbone, x in cases:
        torch.manual_seed(0)
        network = build_network(family, shape, 2, None, backbone).eval()
        with torch.no_grad():
            torch.nn.init.normal_(network.state_dict()[[k for k in network.state_dict() if k.endswith("weight")][-1]])
            logits = network(x)
            extractor, head = split_last_layer(network)
            assert isinstance(head, torch.nn.Linear) and head.out_features == 2
            assert torch.allclose(head(extractor(x)), logits, atol=1e-5), family
            assert extractor(x).shape == (3, head.in_features)

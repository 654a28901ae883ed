"""Image datasets: features or images chosen as the reference does; ResNet fine-tuning end to end."""
import backbone_fixtures as fx
import pytest
import torch
import torchvision

from XRM.common.errors import UserError
from XRM.data.base import InputOptions
from XRM.data.catalog import get_dataset
from XRM.networks import backbones
from XRM.networks.backbones import BackboneSpec, imagenet_weights, weights_file_location
from XRM.networks.classifiers import LinearHead, build_network

TINY_RESNET = ["--image_backbone", "resnet18", "--backbone_weights", "none"]


def _chosen(data_path, name: str, phase: int, inputs: str = "auto") -> tuple[str, str]:
    dataset = get_dataset(name).resolve(str(data_path), phase, InputOptions(inputs=inputs))
    return dataset.inputs, dataset.family


def test_inputs_chosen_as_the_reference_does(tmp_path):
    fx.write_waterbirds(tmp_path)
    assert _chosen(tmp_path, "Waterbirds", 1) == ("features", "features")
    assert _chosen(tmp_path, "Waterbirds", 2) == ("features", "features")  # Waterbirds stays on features
    assert _chosen(tmp_path, "Waterbirds", 2, "images") == ("images", "image")
    (tmp_path / "waterbirds" / "features.pt").unlink()
    assert _chosen(tmp_path, "Waterbirds", 1) == ("images", "image")  # no features: images
    # CelebA: features in phase 1, images in phase 2
    (tmp_path / "celeba").mkdir()
    (tmp_path / "waterbirds" / "metadata_waterbirds.csv").rename(tmp_path / "celeba" / "metadata_celeba.csv")
    fx.write_features(tmp_path / "celeba" / "features.pt")
    assert _chosen(tmp_path, "CelebA", 1) == ("features", "features")
    assert _chosen(tmp_path, "CelebA", 2) == ("images", "image")
    assert get_dataset("CelebA").resolve(str(tmp_path), 2, InputOptions()).backbone.name == "resnet50"


def test_neither_features_nor_metadata_names_the_download_command(tmp_path):
    with pytest.raises(UserError) as caught:
        get_dataset("MetaShift").resolve(str(tmp_path), 2, InputOptions())
    assert str(caught.value) == (
        f"MetaShift: neither {tmp_path / 'metashift' / 'features.pt'} nor "
        f"{tmp_path / 'metashift' / 'metadata_metashift.csv'} exists; run: python -m XRM.cli download --features "
        f"--download --data_path {tmp_path} metashift")


def test_phase_1_on_features_then_mat_and_erm_fine_tune_on_images(tmp_path):
    fx.write_waterbirds(tmp_path / "data")
    out = tmp_path / "out"
    common = ["--datasets", "Waterbirds", "--data_path", str(tmp_path / "data"), "--out_dir", str(out)]
    assert fx.run_main(fx.main_args("--phase", "1", *common, "--hparams",
                                    '{"num_steps": 40, "eval_every": 20, "lr": 0.1, "batch_size": 6}')) == 0
    header, phase_1 = fx.records(out / "XRM" / "Waterbirds" / "group_labels_no" / "results_hpcomb_0_seed0.json")
    assert header["inputs_used"] == "features" and [r["step"] for r in phase_1] == [0, 20, 39]
    inferred = torch.load(out / "XRM" / "Waterbirds" / "group_labels_no" / "inferred_hpcomb_0_seed0.pt")
    assert inferred["tr"].tolist() == [0, 0, 1, 0, 0, 1]  # the minority examples are the cross-mistakes

    short = '{"num_steps": 3, "eval_every": 2, "batch_size": 4}'
    assert fx.run_main(fx.main_args("--phase", "2", *common, "--algorithms", "MAT", "ERM", "--group_labels", "no",
                                    "--inputs", "images", *TINY_RESNET, "--hparams", short)) == 0
    for algorithm in ("MAT", "ERM"):
        header, rows = fx.records(out / algorithm / "Waterbirds" / "group_labels_no" / "results_hpcomb_0_seed0.json")
        assert (header["inputs_used"], header["backbone_used"]) == ("images", "resnet18")
        assert [r["step"] for r in rows] == [0, 2]
        expected = ({"step", "va_avg_acc", "va_wga", "va_neg_class_diff", "te_avg_acc", "te_wga", "train_loss", "lr",
                     "steps_per_s", "examples_per_s"}
                    | ({"va_gi_wga"} if algorithm == "MAT" else set()))
        assert {key for key in rows[-1] if not key.startswith("te_acc_group_")} == expected
        assert rows[-1]["te_wga"] == min(value for key, value in rows[-1].items() if key.startswith("te_acc_group_"))
    assert rows[-1]["te_avg_acc"] in (0.0, 0.5, 1.0)  # two test images


def test_pretrained_resnet_comes_from_the_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = torchvision.models.resnet18(weights=None)
    path = weights_file_location(imagenet_weights("resnet18"))
    assert path == tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    network = build_network("image", (3, 32, 32), 3, {}, BackboneSpec("resnet18"))
    assert torch.equal(network.backbone.conv1.weight, reference.conv1.weight)
    assert isinstance(network.backbone.fc, LinearHead) and network.backbone.fc.weight.abs().sum() == 0
    assert network(torch.randn(2, 3, 32, 32)).tolist() == [[0.0, 0.0, 0.0]] * 2


def test_missing_resnet_weights_offline_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    fake = torchvision.models.Weights(url="http://127.0.0.1:9/resnet50-0676ba61.pth", transforms=None, meta={})
    monkeypatch.setattr(backbones, "imagenet_weights", lambda architecture: fake)  # port 9: nothing listens
    with pytest.raises(UserError) as caught:
        build_network("image", (3, 32, 32), 2, {}, BackboneSpec("resnet50"))
    message = str(caught.value)
    assert "\n" not in message and "TORCH_HOME" in message
    assert f"put it at {tmp_path / 'hub' / 'checkpoints' / 'resnet50-0676ba61.pth'}" in message


def test_unknown_image_backbone_is_a_user_error():
    with pytest.raises(UserError, match="unknown image backbone 'resnet5'"):
        build_network("image", (3, 32, 32), 2, {}, BackboneSpec("resnet5", pretrained=False))

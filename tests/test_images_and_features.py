"""Image datasets over a metadata CSV, the features file, and where ResNet weights come from."""
import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from XRM.common.errors import UserError
from XRM.data.extract_features import build_feature_extractor
from XRM.data.feature_file import load_features_file, save_feature_file
from XRM.data.images import ImageSplitDataset, load_image_split
from XRM.data.metadata_table import table_from_rows, write_metadata_csv
from XRM.networks.backbones import load_weights, weights_file_location
from XRM.networks.pixels import IMAGENET_MEAN, IMAGENET_STD


@pytest.fixture
def metashift_folder(tmp_path):
    """A MetaShift-like folder: 3 flat-grey images with filenames relative to metashift/."""
    folder = tmp_path / "metashift"
    names = [f"imgs/{i}.jpg" for i in range(3)]
    for i, name in enumerate(names):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 30), (128, 128, 128)).save(folder / name, quality=100)
    write_metadata_csv(table_from_rows([0, 1, 2], names, [0, 2, 0], [1, 0, 1], [0, 1, 1]),
                       folder / "metadata_metashift.csv")
    return tmp_path


def test_image_split_in_metadata_order(metashift_folder):
    split = load_image_split(metashift_folder, "metashift", "tr")
    assert split.paths == [str(metashift_folder / "metashift" / f"imgs/{i}.jpg") for i in (0, 2)]
    assert split.y.tolist() == [1, 1] and split.a.tolist() == [0, 1]
    index, pixels, y, a = ImageSplitDataset(split)[1]
    assert (index, y.item(), a.item()) == (1, 1, 1)
    assert pixels.shape == (3, 224, 224) and pixels.dtype == torch.float32
    # Grey 128 normalised with the ImageNet statistics, channel by channel.
    expected = (128 / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert np.allclose(pixels.mean(dim=(1, 2)).numpy(), expected, atol=0.02)


def test_dataloader_with_workers(metashift_folder):
    dataset = ImageSplitDataset(load_image_split(metashift_folder, "metashift", "tr"))
    batches = list(torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=1))
    assert batches[0][0].tolist() == [0, 1] and batches[0][1].shape == (2, 3, 224, 224)


def test_unknown_split_and_dataset(metashift_folder):
    with pytest.raises(UserError, match="valid: tr, va, te"):
        load_image_split(metashift_folder, "metashift", "train")
    with pytest.raises(UserError, match="choose from: celeba, chexpert, imagenetbg, metashift, nicopp, waterbirds"):
        load_image_split(metashift_folder, "cub", "tr")


def test_feature_file_round_trip_and_checks(tmp_path):
    part = {"x": torch.randn(3, 4), "y": torch.tensor([[0], [1], [1]]), "m": torch.tensor([[1], [0], [1]])}
    save_feature_file({"tr": part, "va": part, "te": part}, tmp_path / "features.pt")
    loaded = load_features_file(tmp_path / "features.pt", "waterbirds")
    assert torch.equal(loaded["va"].x, part["x"]) and loaded["te"].a.tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match="te.y must be long"):
        save_feature_file({"tr": part, "va": part, "te": {**part, "y": torch.tensor([0, 1, 1])}}, tmp_path / "bad.pt")
    assert not (tmp_path / "bad.pt").exists()


def _fake_weights(url: str) -> torchvision.models.Weights:
    return torchvision.models.Weights(url=url, transforms=None, meta={})


def test_weights_come_from_the_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = _fake_weights("http://127.0.0.1:9/resnet18-test.pth")
    reference = torchvision.models.resnet18(weights=None)
    assert weights_file_location(weights) == tmp_path / "hub" / "checkpoints" / "resnet18-test.pth"
    weights_file_location(weights).parent.mkdir(parents=True)
    torch.save(reference.state_dict(), weights_file_location(weights))
    model = build_feature_extractor(weights, architecture="resnet18")
    assert torch.equal(model.conv1.weight, reference.conv1.weight)
    assert isinstance(model.fc, torch.nn.Identity) and not model.training


def test_missing_weights_offline_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = _fake_weights("http://127.0.0.1:9/resnet50-0676ba61.pth")  # nothing listens on port 9
    with pytest.raises(UserError) as caught:
        load_weights(weights)
    message = str(caught.value)
    assert "\n" not in message
    assert f"put it at {tmp_path / 'hub' / 'checkpoints' / 'resnet50-0676ba61.pth'}" in message
    assert "TORCH_HOME" in message


def test_missing_or_corrupt_image_is_one_line_user_error_even_from_a_worker(metashift_folder):
    from XRM.engine.batches import evaluation_batches

    split = load_image_split(metashift_folder, "metashift", "tr")
    (metashift_folder / "metashift" / "imgs" / "0.jpg").unlink()
    (metashift_folder / "metashift" / "imgs" / "2.jpg").write_bytes(b"not a jpeg")
    dataset = ImageSplitDataset(split)
    with pytest.raises(UserError, match=f"^cannot read image {split.paths[0]} \\(FileNotFoundError: "):
        dataset[0]
    # the decoder's error (PIL: UnidentifiedImageError; TorchCodec: ValueError), the file named
    with pytest.raises(UserError, match=f"^cannot read image {split.paths[1]} \\((UnidentifiedImage|Value)Error: "):
        dataset[1]
    # Through a DataLoader worker the error comes back as the same single line.
    with pytest.raises(UserError) as caught:
        list(evaluation_batches(dataset, 1, torch.device("cpu"), num_workers=1))
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"cannot read image {split.paths[0]} (FileNotFoundError: ")
    assert message.endswith("put a good copy there, or prepare the dataset again with python -m XRM.cli download")


def test_prepare_refuses_metadata_listing_missing_images(tmp_path):
    from XRM.data.prepare import prepare_dataset

    images = tmp_path / "waterbirds" / "waterbird_complete95_forest2water2"
    images.mkdir(parents=True)
    (images / "metadata.csv").write_text("img_id,img_filename,y,split,place,place_filename\n"
                                         "1,001.A/a.jpg,0,0,0,x\n2,001.A/b.jpg,1,1,1,x\n3,002.B/c.jpg,1,2,0,x\n")
    (images / "001.A").mkdir()
    Image.new("RGB", (8, 8)).save(images / "001.A" / "a.jpg")
    with pytest.raises(UserError) as caught:
        prepare_dataset("waterbirds", tmp_path)
    assert str(caught.value) == (
        f"waterbirds: 2 of the 3 images the metadata lists are missing, e.g. {images / '001.A' / 'b.jpg'}: put them "
        f"there, or delete {tmp_path / 'waterbirds'} and run: python -m XRM.cli download --download --data_path {tmp_path} "
        "waterbirds")
    assert not (tmp_path / "waterbirds" / "metadata_waterbirds.csv").exists()
    assert not (tmp_path / "waterbirds" / ".prepared").exists()


def test_image_recipes_use_the_folder_training_reads():
    from XRM.data.image_layouts import IMAGE_LAYOUTS
    from XRM.data.prepare import RECIPES

    image_recipes = {name: RECIPES.lookup(name) for name in RECIPES if RECIPES.lookup(name).image_dataset}
    assert sorted(image_recipes) == ["celeba", "chexpert", "imagenetbg", "metashift", "nicopp", "waterbirds"]
    assert {name: recipe.folder for name, recipe in image_recipes.items()} == {
        name: IMAGE_LAYOUTS.lookup(name).folder for name in image_recipes}
    assert image_recipes["imagenetbg"].folder == "backgrounds_challenge"


def test_features_are_extracted_in_float32_without_autocast(metashift_folder, monkeypatch):
    from XRM.data.extract_features import embed

    requested = []
    monkeypatch.setattr(torch, "autocast", lambda *args, **kwargs: requested.append(kwargs) or pytest.fail("autocast"))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 224 * 224, 5)).eval()
    dataset = ImageSplitDataset(load_image_split(metashift_folder, "metashift", "tr"))
    features = embed(model, dataset, torch.device("cpu"), batch_size=2, num_workers=0)
    expected = model(torch.stack([dataset[i][1] for i in range(2)])).detach()
    assert requested == [] and features.dtype == torch.float32 and features.shape == (2, 5)
    assert torch.equal(features, expected)

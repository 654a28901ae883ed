"""Images decoded in DataLoader workers or on the device: the same pixels, normalised on the device."""
import backbone_fixtures as fx
import numpy as np
import pytest
import torch
from PIL import Image

from XRM.common.errors import UserError
from XRM.data.image_decoders import DECODER_VARIABLE, IMAGE_DECODERS, PREFERENCE, decoder_problem
from XRM.data.image_decoding import DECODING_VARIABLE, DeviceDecoder, FileBytes, PixelsOf, decoding_mode
from XRM.data.image_layouts import celeba_geometry, resize_crop_geometry, waterbirds_geometry
from XRM.data.images import ImageSplit, ImageSplitDataset

SIZES = [(218, 178), (218, 178), (300, 260), (200, 320)]  # (height, width): CelebA's, and two others
#: the decoders of this environment that decode on a device too (TorchCodec, torchvision)
ON_DEVICE = [name for name in PREFERENCE if IMAGE_DECODERS[name].decode_jpegs and decoder_problem(name) is None]


def _photos(folder) -> list[str]:
    """Smooth random JPEGs (upsampled noise), closer to photographs than pixel noise."""
    rng = np.random.default_rng(0)
    paths = []
    for i, (height, width) in enumerate(SIZES):
        coarse = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
        paths.append(str(folder / f"{i}.jpg"))
        Image.fromarray(coarse).resize((width, height), Image.BICUBIC).save(paths[-1], quality=90)
    return paths


@pytest.mark.parametrize("decoder", ON_DEVICE)
@pytest.mark.parametrize("geometry", [celeba_geometry, waterbirds_geometry, resize_crop_geometry])
def test_decoding_on_the_device_gives_the_workers_pixels(tmp_path, monkeypatch, geometry, decoder):
    monkeypatch.setenv(DECODER_VARIABLE, decoder)
    paths = _photos(tmp_path)
    split = ImageSplit(paths, np.zeros(4), np.zeros(4), geometry())
    in_workers = torch.stack([PixelsOf(split)[i][1] for i in range(4)])
    on_device = DeviceDecoder(split, IMAGE_DECODERS[decoder])([FileBytes(paths)[i][1] for i in range(4)],
                                                             torch.arange(4), torch.device("cpu"))
    assert in_workers.shape == on_device.shape == (4, 3, 224, 224) and on_device.dtype == torch.uint8
    assert in_workers.float().std() > 10 and torch.equal(in_workers, on_device)  # one decoder, one geometry


@pytest.mark.skipif(not torch.cuda.is_available(), reason="nvJPEG decodes on a GPU")
@pytest.mark.parametrize("decoder", ON_DEVICE)
def test_nvjpeg_pixels_are_near_the_workers(tmp_path, decoder):
    paths = _photos(tmp_path)
    split = ImageSplit(paths, np.zeros(4), np.zeros(4), celeba_geometry())
    in_workers = torch.stack([ImageSplitDataset(split, True, IMAGE_DECODERS[decoder])[i][1] for i in range(4)])
    on_gpu = DeviceDecoder(split, IMAGE_DECODERS[decoder])([FileBytes(paths)[i][1] for i in range(4)],
                                                          torch.arange(4), torch.device("cuda"))
    assert on_gpu.device.type == "cuda" and on_gpu.shape == (4, 3, 224, 224) and on_gpu.dtype == torch.uint8
    difference = (in_workers.int() - on_gpu.cpu().int()).abs()
    # nvJPEG rounds apart from libjpeg-turbo (docs/engine.md: torchvision's on an H200, mean 1.8, at most 23)
    assert difference.float().mean() < 3 and difference.max() <= 40


def test_pixels_are_within_a_level_of_the_reference_pil_transform(tmp_path):
    from torchvision import transforms

    paths = _photos(tmp_path)
    # the reference's transforms (torchvision.transforms on PIL images), and how far our pixels may be
    references = {celeba_geometry: ([transforms.CenterCrop(178), transforms.Resize(224)], 0, 0),
                  waterbirds_geometry: ([transforms.Resize((256, 256)), transforms.CenterCrop(224)], 1, 0.05),
                  resize_crop_geometry: ([transforms.Resize(256), transforms.CenterCrop(224)], 1, 0.05)}
    for geometry, (reference, most, mean) in references.items():
        split = ImageSplit(paths, np.zeros(4), np.zeros(4), geometry())
        ours = torch.stack([PixelsOf(split)[i][1] for i in range(4)])
        with_pil = torch.stack([transforms.Compose([*reference, transforms.PILToTensor()])(Image.open(path).convert("RGB"))
                                for path in paths])
        difference = (ours.int() - with_pil.int()).abs()
        # uint8 tensor and PIL resizes round apart now and then (docs/engine.md)
        assert difference.max() <= most and difference.float().mean() <= mean, geometry.__name__


def test_uint8_images_are_normalised_on_the_device_exactly_as_before(tmp_path):
    from XRM.networks.backbones import BackboneSpec, build_torchvision_backbone
    from XRM.networks.classifiers import ImageClassifier

    paths = _photos(tmp_path)
    split = ImageSplit(paths, np.zeros(4), np.zeros(4), resize_crop_geometry())
    floats = torch.stack([ImageSplitDataset(split)[i][1] for i in range(4)])  # the reference's transform
    pixels = torch.stack([ImageSplitDataset(split, as_bytes=True)[i][1] for i in range(4)])
    torch.manual_seed(0)
    network = ImageClassifier(build_torchvision_backbone(BackboneSpec("resnet18", pretrained=False)), 2).eval()
    torch.nn.init.normal_(network.backbone.fc.weight)
    with torch.no_grad():
        expected = network(floats)
        assert expected.abs().min() > 0 and torch.equal(network(pixels), expected)


def test_the_mode_follows_the_variable_and_the_device(tmp_path, monkeypatch):
    jpegs, mixed = ["a.jpg", "b.JPEG"], ["a.jpg", "b.png"]
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    codec, pil = IMAGE_DECODERS["torchcodec"], IMAGE_DECODERS["pil"]
    monkeypatch.delenv(DECODING_VARIABLE, raising=False)
    # auto: on the GPU with few workers (4, main.py's default), in workers with many, without a GPU or with PIL
    assert [decoding_mode(jpegs, cuda, 1, codec), decoding_mode(jpegs, cuda, 4, codec),
            decoding_mode(jpegs, cuda, 5, codec), decoding_mode(mixed, cuda, 4, codec),
            decoding_mode(jpegs, cpu, 4, codec), decoding_mode(jpegs, cuda, 4, pil)] == \
        ["device", "device", "workers", "workers", "workers", "workers"]
    monkeypatch.setenv(DECODING_VARIABLE, "device")
    assert decoding_mode(jpegs, cpu, 16, codec) == "device"
    with pytest.raises(UserError, match=f"{DECODING_VARIABLE}=device decodes JPEG files only, and b.png is not one: "
                                        f"set {DECODING_VARIABLE}=workers"):
        decoding_mode(mixed, cpu, 4, codec)
    with pytest.raises(UserError, match=f"{DECODING_VARIABLE}=device needs a decoder that decodes on the device, "
                                        f"and {DECODER_VARIABLE}=pil does not: install TorchCodec, or set "
                                        f"{DECODING_VARIABLE}=workers"):
        decoding_mode(jpegs, cuda, 4, pil)
    monkeypatch.setenv(DECODING_VARIABLE, "workers")
    assert decoding_mode(jpegs, cuda, 0, codec) == "workers"
    monkeypatch.setenv(DECODING_VARIABLE, "gpu")
    with pytest.raises(UserError, match=f"{DECODING_VARIABLE}=gpu: choose one of auto, workers, device"):
        decoding_mode(jpegs, cpu, 4, codec)


@pytest.mark.parametrize("decoder", ON_DEVICE)
def test_a_corrupt_jpeg_decoded_on_the_device_is_named(tmp_path, decoder):
    paths = _photos(tmp_path)
    (tmp_path / "2.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 50)  # a JPEG marker, then nothing
    split = ImageSplit(paths, np.zeros(4), np.zeros(4), celeba_geometry())
    with pytest.raises(UserError, match=f"cannot read image {tmp_path / '2.jpg'} .*put a good copy there"):
        DeviceDecoder(split, IMAGE_DECODERS[decoder])([FileBytes(paths)[i][1] for i in range(4)], torch.arange(4),
                                                      torch.device("cpu"))
    with pytest.raises(UserError, match=f"cannot read image {tmp_path / 'gone.jpg'}"):
        FileBytes([str(tmp_path / "gone.jpg")])[0]


def test_fine_tuning_with_device_decoding_trains_and_evaluates(tmp_path, monkeypatch):
    monkeypatch.setenv(DECODING_VARIABLE, "device")
    fx.write_waterbirds(tmp_path / "data", with_features=False)
    out = tmp_path / "out"
    assert fx.run_main(fx.main_args("--phase", "2", "--datasets", "Waterbirds", "--data_path", str(tmp_path / "data"),
                                    "--out_dir", str(out), "--algorithms", "ERM", "--inputs", "images",
                                    "--image_backbone", "resnet18", "--backbone_weights", "none",
                                    "--hparams", '{"num_steps": 3, "eval_every": 2, "batch_size": 4}')) == 0
    header, rows = fx.records(out / "ERM" / "Waterbirds" / "group_labels_yes" / "results_hpcomb_0_seed0.json")
    assert header["inputs_used"] == "images" and [r["step"] for r in rows] == [0, 2]
    assert rows[-1]["te_avg_acc"] in (0.0, 0.5, 1.0) and rows[-1]["va_avg_acc"] in (0.0, 0.25, 0.5, 0.75, 1.0)

"""The image decoders (TorchCodec, torchvision, PIL): the same pixels, one chosen once by
XRM_IMAGE_DECODER, files that do not decode named, and the fallbacks when TorchCodec is absent."""
import json
import warnings

import backbone_fixtures as fx
import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from XRM.common.errors import UserError
from XRM.data.image_decoders import DECODER_VARIABLE, IMAGE_DECODERS, PREFERENCE, decoder_problem, image_decoder
from XRM.data.image_decoding import DeviceDecoder, FileBytes
from XRM.data.image_layouts import celeba_geometry
from XRM.data.images import ImageSplit, ImageSplitDataset, decoded_image

#: the decoders that import and work here (PIL always; TorchCodec and torchvision where installed)
WORKING = [name for name in PREFERENCE if decoder_problem(name) is None]


def _images(folder) -> dict[str, str]:
    """Smooth random images in the formats and modes datasets hold: RGB and grey JPEGs, RGB, RGBA and
    palette PNGs."""
    rng = np.random.default_rng(1)
    coarse = rng.integers(0, 256, (15, 13, 3), dtype=np.uint8)
    photo = Image.fromarray(coarse).resize((178, 218), Image.BICUBIC)
    files = {"rgb.jpg": photo, "grey.jpg": photo.convert("L"), "rgb.png": photo,
             "rgba.png": photo.convert("RGBA"), "palette.png": photo.convert("P")}
    for name, image in files.items():
        image.save(folder / name, quality=90) if name.endswith(".jpg") else image.save(folder / name)
    return {name: str(folder / name) for name in files}


def _pil_pixels(path: str) -> torch.Tensor:
    with Image.open(path) as image:
        return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)


@pytest.mark.parametrize("name", WORKING)
def test_every_decoder_gives_pils_pixels(tmp_path, name):
    for file, path in _images(tmp_path).items():
        decoded, expected = decoded_image(path, IMAGE_DECODERS[name]), _pil_pixels(path)
        assert decoded.dtype == torch.uint8 and decoded.shape == expected.shape == (3, 218, 178), file
        # PNG is lossless; JPEG decoders may differ by a rounding (libjpeg-turbo versions): 1 level of 255 at most
        allowed = 1 if file.endswith(".jpg") else 0
        assert (decoded.int() - expected.int()).abs().max() <= allowed, file


def test_auto_takes_torchcodec_where_it_works_and_the_variable_forces_one(monkeypatch):
    pytest.importorskip("torchcodec")
    monkeypatch.delenv(DECODER_VARIABLE, raising=False)
    assert WORKING[0] == "torchcodec" and image_decoder().name == "torchcodec"
    monkeypatch.setenv(DECODER_VARIABLE, "pil")
    assert image_decoder().name == "pil" and image_decoder().decode_jpegs is None
    monkeypatch.setenv(DECODER_VARIABLE, "nvjpeg")
    with pytest.raises(UserError, match=f"^{DECODER_VARIABLE}=nvjpeg: choose one of auto, torchcodec, torchvision, "
                                        "pil$"):
        image_decoder()


def _deprecation_warnings(decoder: str, split: ImageSplit, monkeypatch) -> list[warnings.WarningMessage]:
    """The DeprecationWarnings of decoding ``split`` in workers and on the (CPU) device with ``decoder``."""
    monkeypatch.setenv(DECODER_VARIABLE, decoder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ImageSplitDataset(split, as_bytes=True)[0]
        DeviceDecoder(split, image_decoder())([FileBytes(split.paths)[0][1]], torch.arange(1), torch.device("cpu"))
    return [warning for warning in caught if issubclass(warning.category, DeprecationWarning)]


def test_no_deprecation_warning_when_torchcodec_decodes(tmp_path, monkeypatch):
    pytest.importorskip("torchcodec")
    path = _images(tmp_path)["rgb.jpg"]
    split = ImageSplit([path], np.zeros(1), np.zeros(1), celeba_geometry())
    assert _deprecation_warnings("torchcodec", split, monkeypatch) == []
    # the same check sees torchvision's own decoders warn where they are deprecated (0.29 on)
    deprecated = tuple(int(part) for part in torchvision.__version__.split(".")[:2]) >= (0, 29)
    assert bool(_deprecation_warnings("torchvision", split, monkeypatch)) == deprecated


@pytest.mark.parametrize("name", WORKING)
def test_a_file_that_does_not_decode_is_named(tmp_path, monkeypatch, name):
    monkeypatch.setenv(DECODER_VARIABLE, name)
    paths = [str(tmp_path / "cut.jpg"), str(tmp_path / "text.png"), str(tmp_path / "gone.jpg")]
    good = tmp_path / "whole.jpg"
    Image.new("RGB", (40, 30), (10, 200, 30)).save(good)
    (tmp_path / "cut.jpg").write_bytes(good.read_bytes()[:200])  # a JPEG cut short
    (tmp_path / "text.png").write_bytes(b"not an image")
    dataset = ImageSplitDataset(ImageSplit(paths, np.zeros(3), np.zeros(3), celeba_geometry()))
    for index, path in enumerate(paths):
        with pytest.raises(UserError) as caught:
            dataset[index]
        message = str(caught.value)
        assert message.startswith(f"cannot read image {path} (") and "\n" not in message
        assert message.count("cannot read image") == 1 and ("FileNotFoundError" in message) == (path == paths[2])
        assert message.endswith("put a good copy there, or prepare the dataset again with python -m XRM.cli download")


_WITHOUT_TORCHCODEC = """
import json, os, sys
import torch
sys.modules["torchcodec"] = None  # as if TorchCodec were not installed
from XRM.common.errors import UserError
from XRM.data.image_decoders import DECODER_VARIABLE, decoder_problem, image_decoder
from XRM.data.images import decoded_image

path, pixels_file = sys.argv[1:]
chosen = [image_decoder().name]
torch.save(decoded_image(path, image_decoder()), pixels_file)
import torchvision.io
del torchvision.io.decode_image  # as a torchvision without its deprecated decoders
decoder_problem.cache_clear()
chosen.append(image_decoder().name)
os.environ[DECODER_VARIABLE] = "torchcodec"
try:
    image_decoder()
except UserError as error:
    chosen.append(str(error))
print(json.dumps(chosen))
"""


def test_without_torchcodec_torchvision_then_pil_decode_the_same_pixels(tmp_path, script):
    path = _images(tmp_path)["rgb.jpg"]
    result = script("-c", _WITHOUT_TORCHCODEC, path, str(tmp_path / "pixels.pt"), env={DECODER_VARIABLE: "auto"})
    assert result.returncode == 0, result.stderr
    fallback, last_resort, refusal = json.loads(result.stdout)
    assert (fallback, last_resort) == ("torchvision", "pil")
    assert refusal.startswith(f"{DECODER_VARIABLE}=torchcodec cannot decode images here (ModuleNotFoundError: ")
    assert refusal.endswith(f"install it (pip install '.[torchcodec]' for TorchCodec) or set {DECODER_VARIABLE}=auto")
    assert (torch.load(tmp_path / "pixels.pt").int() - _pil_pixels(path).int()).abs().max() <= 1


def test_an_unknown_decoder_is_one_error_line_before_training(tmp_path, script):
    fx.write_waterbirds(tmp_path / "data", with_features=False)
    result = script("main.py", *fx.main_args("--phase", "2", "--datasets", "Waterbirds", "--data_path",
                                             str(tmp_path / "data"), "--out_dir", str(tmp_path / "out"),
                                             "--algorithms", "ERM", "--inputs", "images", "--image_backbone",
                                             "resnet18", "--backbone_weights", "none"),
                    env={DECODER_VARIABLE: "gpu"})
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"error: {DECODER_VARIABLE}=gpu: choose one of auto, torchcodec, torchvision, pil"]
    assert not list((tmp_path / "out").rglob("*.json"))

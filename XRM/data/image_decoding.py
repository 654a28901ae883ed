"""Where a training run's images are decoded and resized: in DataLoader workers, or on the device.

- ``workers``: each worker decodes a file (with the decoder ``image_decoders.py`` chooses:
  TorchCodec where installed), applies the dataset's geometry (its resizes and crops) and
  hands over a uint8 tensor; the network normalises it on the device. What every machine
  without a GPU does.
- ``device``: workers only read the files' bytes; the main process decodes a whole batch
  of JPEGs with the same decoder on the training device (nvJPEG on a GPU) and applies the
  same geometry there (on the CPU: the workers' pixels exactly; nvJPEG's differ by a few
  levels). PIL decodes on the CPU only: with ``XRM_IMAGE_DECODER=pil`` it is ``workers``.

``XRM_IMAGE_DECODING`` chooses: ``workers``, ``device``, or ``auto`` (the default):
``device`` when training on CUDA, the decoder decodes there, every file is a JPEG and there
are at most ``DEVICE_DECODING_MAX_WORKERS`` workers, else ``workers``. The rule comes from
benchmarks/image_training.py on an H200 (docs/engine.md, Benchmarks), with PIL decoding and
resizing in the workers and torchvision's nvJPEG: one CPU core decoded and shaped
about 480 CelebA-sized JPEGs a second, and ResNet-50 at batch 128 trained at 2000 - 3000
images a second with decoding on the GPU (two measurements); so up to 4 workers (about 1900
images a second at best) decoding on the GPU is the faster, and with more, the workers are
(15 workers measured faster than decoding on the GPU there).
"""
import os

import torch
from torch.utils.data import Dataset, default_collate

from XRM.common.errors import UserError
from XRM.data.image_decoders import DECODER_VARIABLE, DECODING_ERRORS, ImageDecoder, image_decoder
from XRM.data.images import ImageSplit, ImageSplitDataset, read_encoded, unreadable_image
from XRM.data.loader_parts import LoaderParts

DECODING_VARIABLE = "XRM_IMAGE_DECODING"
DECODING_MODES = ("auto", "workers", "device")
JPEG_SUFFIXES = (".jpg", ".jpeg")
#: ``auto`` decodes on a GPU with this many DataLoader workers or fewer (see the module docstring)
DEVICE_DECODING_MAX_WORKERS = 4


def decoding_mode(paths: list[str], device: torch.device, num_workers: int, decoder: ImageDecoder) -> str:
    """``workers`` or ``device``, as ``$XRM_IMAGE_DECODING`` asks (see the module docstring), for
    images decoded by ``decoder``."""
    asked = os.environ.get(DECODING_VARIABLE, "auto") or "auto"
    if asked not in DECODING_MODES:
        raise UserError(f"{DECODING_VARIABLE}={asked}: choose one of {', '.join(DECODING_MODES)}")
    if asked == "device" and decoder.decode_jpegs is None:
        raise UserError(f"{DECODING_VARIABLE}=device needs a decoder that decodes on the device, and "
                        f"{DECODER_VARIABLE}={decoder.name} does not: install TorchCodec, or set "
                        f"{DECODING_VARIABLE}=workers")
    all_jpeg = all(path.lower().endswith(JPEG_SUFFIXES) for path in paths)
    if asked == "device" and not all_jpeg:
        first = next(path for path in paths if not path.lower().endswith(JPEG_SUFFIXES))
        raise UserError(f"{DECODING_VARIABLE}=device decodes JPEG files only, and {first} is not one: "
                        f"set {DECODING_VARIABLE}=workers")
    if asked == "auto":
        few_workers = num_workers <= DEVICE_DECODING_MAX_WORKERS
        on_gpu = device.type == "cuda" and decoder.decode_jpegs is not None
        return "device" if on_gpu and all_jpeg and few_workers else "workers"
    return asked


class PixelsOf(Dataset):
    """Items (index, uint8 image [3, H, W]) of a split, decoded and shaped in a worker."""

    def __init__(self, split: ImageSplit) -> None:
        self.images = ImageSplitDataset(split, as_bytes=True)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor]:
        return index, self.images[index][1]


class FileBytes(Dataset):
    """Items (index, the file's bytes as a uint8 tensor) of a split's images."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor]:
        return index, read_encoded(self.paths[index])


def _collate_bytes(items: list[tuple[int, torch.Tensor]]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    return torch.tensor([index for index, _ in items]), [content for _, content in items]


class DeviceDecoder:
    """Decodes batches of JPEG bytes on a device with ``decoder`` and applies a dataset's geometry there."""

    def __init__(self, split: ImageSplit, decoder: ImageDecoder) -> None:
        from torchvision.transforms import v2 as transforms

        self.paths = split.paths
        self.geometry = transforms.Compose(split.geometry)
        self.decoder = decoder

    def _decoded(self, encoded: list[torch.Tensor], index: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
        decode_jpegs = self.decoder.decode_jpegs
        if device.type == "cuda":
            # nvJPEG's hardware decoder writes its outputs without waiting for the work already queued
            # on its stream, so memory the caching allocator hands it could still be read by that work
            # (pytorch/vision#9606): the stream is drained first (TorchCodec drains it itself too;
            # torchvision's decode_jpeg does not).
            torch.cuda.current_stream(device).synchronize()
        try:
            return decode_jpegs(encoded, device)
        except DECODING_ERRORS as batch_error:  # find the file that fails alone, and name it
            for content, row in zip(encoded, index.tolist()):
                try:
                    decode_jpegs([content], torch.device("cpu"))
                except DECODING_ERRORS as error:
                    raise unreadable_image(self.paths[row], error) from None
            raise UserError(f"decoding JPEGs on {device} with {self.decoder.name} failed ({batch_error}), though each "
                            f"decodes on the CPU: set {DECODING_VARIABLE}=workers, or choose another "
                            f"{DECODER_VARIABLE}") from None

    def __call__(self, encoded: list[torch.Tensor], index: torch.Tensor, device: torch.device) -> torch.Tensor:
        """uint8 images [B, 3, h, w] on ``device`` of one batch of encoded files."""
        images = self._decoded(encoded, index, device)
        if len({tuple(image.shape) for image in images}) == 1:  # one size (CelebA): the geometry once, batched
            return self.geometry(torch.stack(images))
        return torch.stack([self.geometry(image) for image in images])


def loader_parts(split: ImageSplit, device: torch.device, num_workers: int) -> LoaderParts:
    """How a DataLoader with ``num_workers`` workers delivers ``split``'s images to ``device`` (see the
    module docstring)."""
    decoder = image_decoder()
    if decoding_mode(split.paths, device, num_workers, decoder) == "device":
        return LoaderParts(FileBytes(split.paths), _collate_bytes, DeviceDecoder(split, decoder), run_ahead=True)
    return LoaderParts(PixelsOf(split), default_collate)

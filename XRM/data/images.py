"""Image datasets over a metadata CSV: files decoded to pixels, then the reference's geometry.

``load_image_split(data_path, "waterbirds", "tr")`` gives the paths, labels and
attributes of one split plus the dataset's geometry (both from ``image_layouts.py``);
``ImageSplitDataset`` turns that into a ``torch.utils.data.Dataset`` of (index, image
tensor, y, a), safe to use with DataLoader workers and pinned memory (it holds only
paths, arrays and the decoder). Each file is decoded by the library ``image_decoders.py``
chooses (TorchCodec where installed) and resized and cropped as a uint8 tensor
(``torchvision.transforms.v2``: CelebA's pixels those of the reference's PIL transform, the other
datasets' within a level of 255). Its images are
normalised float tensors, or with ``as_bytes=True`` the uint8 tensors (a quarter of the bytes
through the loader; the network normalises them on its device with the same arithmetic, see
``XRM/networks/pixels.py``).
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from XRM.common.commands import command
from XRM.common.errors import UserError
from XRM.data.files import download_hint
from XRM.data.image_decoders import DECODING_ERRORS, ImageDecoder, image_decoder
from XRM.data.image_layouts import get_image_layout
from XRM.data.metadata_table import SPLIT_IDS, read_metadata_csv
from XRM.networks.pixels import normalise_pixels


@dataclass
class ImageSplit:
    """One split of an image dataset: rows in metadata order."""

    paths: list[str]  # absolute or --data_path-relative image files
    y: np.ndarray  # int64 [n]
    a: np.ndarray  # int64 [n], the true attribute
    geometry: list  # the dataset's resizes and crops (torchvision.transforms.v2)


def load_image_split(data_path: str | Path, name: str, split: str) -> ImageSplit:
    """Paths, labels and attributes of split ``tr``, ``va`` or ``te`` of image dataset
    ``name``, in metadata order, with the dataset's geometry."""
    if split not in SPLIT_IDS:
        raise UserError(f"unknown split {split!r}; valid: {', '.join(SPLIT_IDS)}")
    layout = get_image_layout(name)
    folder = Path(data_path) / layout.folder
    table = read_metadata_csv(folder / layout.metadata, layout.split_ids, download_hint(data_path, name))
    rows = table.rows_of_split(SPLIT_IDS[split])
    # Joining keeps absolute filenames (as some reference-made CSVs hold) as they are.
    paths = [str(folder / layout.image_root / table.filenames[row]) for row in rows]
    return ImageSplit(paths, table.y[rows], table.a[rows], layout.geometry())


def unreadable_image(path: str, error: Exception) -> UserError:
    """The one line that says an image file cannot be decoded and what to do."""
    return UserError(f"cannot read image {path} ({type(error).__name__}: {error}): put a good copy there, "
                     f"or prepare the dataset again with {command('download')}")


def read_encoded(path: str) -> torch.Tensor:
    """The bytes of image file ``path`` as a uint8 tensor [n]; a UserError naming it if it cannot be read."""
    try:
        content = Path(path).read_bytes()
    except OSError as error:
        raise unreadable_image(path, error) from None
    return torch.frombuffer(bytearray(content), dtype=torch.uint8)


def decoded_image(path: str, decoder: ImageDecoder) -> torch.Tensor:
    """The RGB pixels of image file ``path``, uint8 [3, H, W]; a UserError naming it if it is missing,
    unreadable, truncated or no image."""
    try:
        return decoder.decode(read_encoded(path))
    except DECODING_ERRORS as error:
        raise unreadable_image(path, error) from None


class ImageSplitDataset(torch.utils.data.Dataset):
    """Items (index, image [3, H, W], y long, a long) of one :class:`ImageSplit`: a normalised
    float image, or a uint8 one when ``as_bytes``; decoded by ``decoder`` (default: the one
    ``$XRM_IMAGE_DECODER`` chooses)."""

    def __init__(self, split: ImageSplit, as_bytes: bool = False, decoder: ImageDecoder | None = None):
        from torchvision.transforms import v2 as transforms

        self.paths = split.paths
        self.y = torch.as_tensor(split.y, dtype=torch.long)
        self.a = torch.as_tensor(split.a, dtype=torch.long)
        self.geometry = transforms.Compose(split.geometry)
        self.as_bytes = as_bytes
        self.decoder = decoder or image_decoder()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]:
        pixels = self.geometry(decoded_image(self.paths[index], self.decoder))
        return index, pixels if self.as_bytes else normalise_pixels(pixels), self.y[index], self.a[index]

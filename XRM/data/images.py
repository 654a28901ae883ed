"""Image datasets over a metadata CSV: PIL images through the reference's transforms.

``load_image_split(data_path, "waterbirds", "tr")`` gives the paths, labels and
attributes of one split plus the dataset's geometry (both from ``image_layouts.py``);
``ImageSplitDataset`` turns that into a ``torch.utils.data.Dataset`` of (index, image
tensor, y, a), safe to use with DataLoader workers and pinned memory (it holds only
paths and arrays). Its images are normalised float tensors, or with ``as_bytes=True``
uint8 tensors of the same geometry (a quarter of the bytes through the loader; the
network normalises them on its device, see ``XRM/networks/classifiers.py``).
"""
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from XRM.common.commands import command
from XRM.common.errors import UserError
from XRM.data.files import download_hint
from XRM.data.image_layouts import get_image_layout, normalised
from XRM.data.metadata_table import SPLIT_IDS, read_metadata_csv


@dataclass
class ImageSplit:
    """One split of an image dataset: rows in metadata order."""

    paths: list[str]  # absolute or --data_path-relative image files
    y: np.ndarray  # int64 [n]
    a: np.ndarray  # int64 [n], the true attribute
    geometry: list  # the dataset's resizes and crops (torchvision transforms)

    @property
    def transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """The reference's transform: the geometry, then a normalised float tensor."""
        return normalised(self.geometry)


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


class ImageSplitDataset(torch.utils.data.Dataset):
    """Items (index, image [3, H, W], y long, a long) of one :class:`ImageSplit`: a normalised
    float image, or a uint8 one when ``as_bytes``."""

    def __init__(self, split: ImageSplit, as_bytes: bool = False):
        from torchvision import transforms

        self.paths = split.paths
        self.y = torch.as_tensor(split.y, dtype=torch.long)
        self.a = torch.as_tensor(split.a, dtype=torch.long)
        self.transform = transforms.Compose([*split.geometry, transforms.PILToTensor()]) if as_bytes else split.transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]:
        path = self.paths[index]
        try:
            with Image.open(path) as image:
                pixels = self.transform(image.convert("RGB"))
        except OSError as error:  # missing, unreadable or truncated (PIL's errors are OSErrors)
            raise unreadable_image(path, error) from None
        return index, pixels, self.y[index], self.a[index]

"""Image datasets over a metadata CSV: PIL images through the reference's transforms.

``load_image_split(data_path, "waterbirds", "tr")`` gives the paths, labels and
attributes of one split plus the dataset's transform; ``ImageSplitDataset`` turns that
into a ``torch.utils.data.Dataset`` of (index, image tensor, y, a), safe to use with
DataLoader workers and pinned memory (it holds only paths and arrays).
"""
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import transforms

from XRM.data.files import download_hint
from XRM.data.metadata import CELEBA_IMAGES, IMAGENETBG_SPLIT_IDS, WATERBIRDS_IMAGES
from XRM.data.metadata_table import SPLIT_IDS, SPLIT_IDS_BY_NAME, read_metadata_csv
from XRM.errors import UserError
from XRM.registry import Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _to_normalised_tensor() -> list:
    return [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def waterbirds_transform() -> transforms.Compose:
    """The reference's Waterbirds transform: squash to 256x256, centre crop 224."""
    return transforms.Compose([transforms.Resize((256, 256)), transforms.CenterCrop(224), *_to_normalised_tensor()])


def celeba_transform() -> transforms.Compose:
    """The reference's CelebA transform: centre crop 178 (the face), resize to 224."""
    return transforms.Compose([transforms.CenterCrop(178), transforms.Resize(224), *_to_normalised_tensor()])


def resize_crop_transform() -> transforms.Compose:
    """The reference's MetaShift / ImagenetBG transform: shorter side 256, centre crop 224."""
    return transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), *_to_normalised_tensor()])


@dataclass(frozen=True)
class ImageLayout:
    """Where an image dataset's files are, relative to --data_path."""

    folder: str  # the dataset's folder; features.pt is written here
    metadata: str  # the metadata CSV, relative to ``folder``
    image_root: str  # metadata filenames are relative to this folder inside ``folder``
    transform: Callable[[], transforms.Compose]
    #: split code by name, for metadata files that spell the split out
    split_ids: Mapping[str, int] = field(default_factory=lambda: SPLIT_IDS_BY_NAME)


IMAGE_LAYOUTS: Registry[ImageLayout] = Registry("image dataset")


def register_image_layout(name: str, layout: ImageLayout) -> None:
    """Add an image dataset; a name can be registered once."""
    IMAGE_LAYOUTS.add(name, layout)


def get_image_layout(name: str) -> ImageLayout:
    """The layout of a registered image dataset; raises UserError listing the valid names."""
    return IMAGE_LAYOUTS.lookup(name)


register_image_layout("waterbirds", ImageLayout("waterbirds", "metadata_waterbirds.csv", WATERBIRDS_IMAGES,
                                                waterbirds_transform))
register_image_layout("celeba", ImageLayout("celeba", "metadata_celeba.csv", CELEBA_IMAGES, celeba_transform))
register_image_layout("metashift", ImageLayout("metashift", "metadata_metashift.csv", "", resize_crop_transform))
register_image_layout("imagenetbg", ImageLayout("backgrounds_challenge", "metadata.csv", "", resize_crop_transform,
                                                IMAGENETBG_SPLIT_IDS))


@dataclass
class ImageSplit:
    """One split of an image dataset: rows in metadata order."""

    paths: list[str]  # absolute or --data_path-relative image files
    y: np.ndarray  # int64 [n]
    a: np.ndarray  # int64 [n], the true attribute
    transform: Callable[[Image.Image], torch.Tensor]


def load_image_split(data_path: str | Path, name: str, split: str) -> ImageSplit:
    """Paths, labels and attributes of split ``tr``, ``va`` or ``te`` of image dataset
    ``name``, in metadata order, with the dataset's transform."""
    if split not in SPLIT_IDS:
        raise UserError(f"unknown split {split!r}; valid: {', '.join(SPLIT_IDS)}")
    layout = get_image_layout(name)
    folder = Path(data_path) / layout.folder
    table = read_metadata_csv(folder / layout.metadata, layout.split_ids, download_hint(data_path, name))
    rows = table.rows_of_split(SPLIT_IDS[split])
    # Joining keeps absolute filenames (as some reference-made CSVs hold) as they are.
    paths = [str(folder / layout.image_root / table.filenames[row]) for row in rows]
    return ImageSplit(paths, table.y[rows], table.a[rows], layout.transform())


class ImageSplitDataset(torch.utils.data.Dataset):
    """Items (index, image [3, H, W] float, y long, a long) of one :class:`ImageSplit`."""

    def __init__(self, split: ImageSplit):
        self.paths = split.paths
        self.y = torch.as_tensor(split.y, dtype=torch.long)
        self.a = torch.as_tensor(split.a, dtype=torch.long)
        self.transform = split.transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]:
        path = self.paths[index]
        try:
            with Image.open(path) as image:
                pixels = self.transform(image.convert("RGB"))
        except OSError as error:  # missing, unreadable or truncated (PIL's errors are OSErrors)
            raise UserError(f"cannot read image {path} ({type(error).__name__}: {error}): put a good copy there, "
                            "or prepare the dataset again with download.py") from None
        return index, pixels, self.y[index], self.a[index]

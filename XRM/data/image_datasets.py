"""The image datasets (Waterbirds, CelebA, MetaShift, ImagenetBG, NICOpp, CheXpert): on features or on images.

As the reference does, phase 1 trains a linear head on the precomputed ResNet-50 features
(``<folder>/features.pt``) and phase 2 fine-tunes ResNet-50 on the images, except on
Waterbirds, which stays on features in both phases. ``--inputs features|images``
overrides that choice; with ``auto``, a dataset that has only one of the two uses it.
"""
import copy
from pathlib import Path

import torch
from torch.utils.data import Dataset

from XRM.common.commands import command
from XRM.common.errors import UserError
from XRM.data.base import INPUT_CHOICES, SPLITS, GroupDataset, InputOptions, SplitTensors
from XRM.data.chexpert import where_to_get_chexpert
from XRM.data.feature_file import FEATURES_FILE, load_features_file
from XRM.data.files import download_hint
from XRM.data.image_decoding import loader_parts
from XRM.data.image_layouts import get_image_layout
from XRM.data.images import ImageSplit, ImageSplitDataset, load_image_split
from XRM.data.loader_parts import LoaderParts
from XRM.data.nicopp import NICOPP_CONTEXTS
from XRM.data.registry import register_dataset


class ImageInputs(Dataset):
    """Item i = the uint8 image tensor of example i, shaped by the dataset's geometry; a
    DataLoader reads them through :meth:`loader_parts` (decoded in workers or on the device)."""

    def __init__(self, split: ImageSplit) -> None:
        self.split = split
        self.images = ImageSplitDataset(split, as_bytes=True)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index][1]

    def loader_parts(self, device: torch.device, num_workers: int) -> LoaderParts:
        """What a DataLoader with ``num_workers`` workers reads for these images on ``device``
        (XRM/data/image_decoding.py)."""
        return loader_parts(self.split, device, num_workers)


def image_split_tensors(split: ImageSplit) -> SplitTensors:
    """A split whose inputs are decoded from disk, item by item, with labels and attributes as tensors."""
    return SplitTensors(ImageInputs(split), torch.as_tensor(split.y), torch.as_tensor(split.a))


def on_images(dataset: GroupDataset, options: InputOptions) -> GroupDataset:
    """A copy of ``dataset`` set up to fine-tune the image backbone (bf16 autocast on CUDA)."""
    view = copy.copy(dataset)
    view.inputs, view.family, view.backbone = "images", "image", options.image_spec()
    return view


def on_features(dataset: GroupDataset) -> GroupDataset:
    """A copy of ``dataset`` set up to train a linear head on precomputed features (float32)."""
    view = copy.copy(dataset)
    view.inputs, view.family, view.backbone = "features", "features", None
    return view


class ImageDataset(GroupDataset):
    """An image dataset of ``image_layouts.py``'s layouts, trained on its features or its images.

    Unresolved (``get_dataset(name).load_splits``) it reads features, as before phase 2
    fine-tuning existed.
    """

    layout_name: str = ""  # the name in image_layouts.IMAGE_LAYOUTS
    download_name: str = ""  # the name on download.py's command line
    #: the reference keeps this dataset on features in phase 2 too (Waterbirds)
    phase_2_on_features: bool = False
    inputs, family = "features", "features"

    def _folder(self, data_path: str) -> Path:
        return Path(data_path) / get_image_layout(self.layout_name).folder

    def how_to_get_it(self, data_path: str) -> str:
        """What to do when neither its features nor its metadata are under ``data_path``."""
        return download_hint(data_path, self.download_name, features=True)

    def resolve(self, data_path: str, phase: int, options: InputOptions) -> GroupDataset:
        """Features or images (see the module docstring); UserError when neither is there."""
        if options.inputs not in INPUT_CHOICES:
            raise UserError(f"unknown --inputs {options.inputs!r}; choose from: {', '.join(INPUT_CHOICES)}")
        folder = self._folder(data_path)
        features, metadata = folder / FEATURES_FILE, folder / get_image_layout(self.layout_name).metadata
        has_features, has_images = features.is_file(), metadata.is_file()
        if not has_features and not has_images:
            raise UserError(f"{self.name}: neither {features} nor {metadata} exists; {self.how_to_get_it(data_path)}")
        chosen = options.inputs
        if chosen == "auto":
            wants_features = phase == 1 or self.phase_2_on_features
            chosen = "features" if has_features and (wants_features or not has_images) else "images"
        return on_features(self) if chosen == "features" else on_images(self, options)

    def load_splits(self, data_path: str) -> dict[str, SplitTensors]:
        """The three splits: features from features.pt, or images listed by the metadata CSV."""
        if self.inputs == "features":
            return load_features_file(self._folder(data_path) / FEATURES_FILE, self.download_name,
                                      num_classes=self.num_classes)
        return {split: image_split_tensors(load_image_split(data_path, self.layout_name, split)) for split in SPLITS}


@register_dataset("Waterbirds")
class Waterbirds(ImageDataset):
    """Waterbirds: y landbird/waterbird, a land/water background; features in both phases."""

    layout_name = download_name = "waterbirds"
    label_names, attribute_names = ("landbird", "waterbird"), ("land", "water")
    phase_2_on_features = True
    num_steps, eval_every = 1001, 50


@register_dataset("CelebA")
class CelebA(ImageDataset):
    """CelebA: y Blond_Hair, a Male."""

    layout_name = download_name = "celeba"
    label_names, attribute_names = ("not blond", "blond"), ("female", "male")
    num_steps, eval_every = 10001, 50


@register_dataset("MetaShift")
class MetaShift(ImageDataset):
    """MetaShift cat/dog: a indoor/outdoor."""

    layout_name = download_name = "metashift"
    num_steps, eval_every = 5001, 50


@register_dataset("ImagenetBG")
class ImagenetBG(ImageDataset):
    """ImageNet backgrounds challenge: 9 super-classes (test = mixed_rand)."""

    layout_name = download_name = "imagenetbg"
    num_classes = 9
    num_steps, eval_every = 10001, 100


@register_dataset("NICOpp", aliases=("NICO++",))
class NICOpp(ImageDataset):
    """NICO++ (SubpopBench's attribute-generalisation split): 60 classes, a one of 6 contexts."""

    layout_name = download_name = "nicopp"
    num_classes = 60
    attribute_names = NICOPP_CONTEXTS
    num_steps, eval_every = 30001, 1000  # SubpopBench's N_STEPS and CHECKPOINT_FREQ


@register_dataset("CheXpert")
class CheXpert(ImageDataset):
    """CheXpert No Finding (placed by hand): a = sex x race, 6 values."""

    layout_name = download_name = "chexpert"
    label_names = ("finding", "no finding")
    attribute_names = ("male white", "female white", "male black", "female black", "male other", "female other")
    num_steps, eval_every = 20001, 1000  # SubpopBench's N_STEPS and CHECKPOINT_FREQ

    def how_to_get_it(self, data_path: str) -> str:
        """Where to get the files (a user places them), then the download command that prepares them."""
        return (f"{where_to_get_chexpert(self._folder(data_path))}, then run: {command('download')} --features "
                f"--data_path {data_path} {self.download_name}")

"""Where each image dataset's files are, and the reference's transform of its images.

Light on purpose: download.py's recipes and the dataset registry read the layouts
without loading torch or torchvision; a transform imports torchvision when it is built.
"""
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from XRM.data.metadata import CELEBA_IMAGES, IMAGENETBG_SPLIT_IDS, WATERBIRDS_IMAGES
from XRM.data.metadata_table import SPLIT_IDS_BY_NAME
from XRM.registry import Registry

if TYPE_CHECKING:
    from torchvision import transforms

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _to_normalised_tensor() -> list:
    from torchvision import transforms

    return [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def waterbirds_transform() -> "transforms.Compose":
    """The reference's Waterbirds transform: squash to 256x256, centre crop 224."""
    from torchvision import transforms

    return transforms.Compose([transforms.Resize((256, 256)), transforms.CenterCrop(224), *_to_normalised_tensor()])


def celeba_transform() -> "transforms.Compose":
    """The reference's CelebA transform: centre crop 178 (the face), resize to 224."""
    from torchvision import transforms

    return transforms.Compose([transforms.CenterCrop(178), transforms.Resize(224), *_to_normalised_tensor()])


def resize_crop_transform() -> "transforms.Compose":
    """The reference's MetaShift / ImagenetBG transform: shorter side 256, centre crop 224."""
    from torchvision import transforms

    return transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), *_to_normalised_tensor()])


@dataclass(frozen=True)
class ImageLayout:
    """Where an image dataset's files are, relative to --data_path."""

    folder: str  # the dataset's folder; features.pt is written here
    metadata: str  # the metadata CSV, relative to ``folder``
    image_root: str  # metadata filenames are relative to this folder inside ``folder``
    transform: Callable[[], "transforms.Compose"]
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

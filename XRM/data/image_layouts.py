"""Where each image dataset's files are, and the reference's geometry of its images (resizes and crops).

Light on purpose: download.py's recipes and the dataset registry read the layouts
without loading torch or torchvision; a transform imports torchvision when it is built.
"""
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from XRM.common.registry import Registry
from XRM.data.chexpert import CHEXPERT_METADATA
from XRM.data.metadata import CELEBA_IMAGES, IMAGENETBG_SPLIT_IDS, WATERBIRDS_IMAGES
from XRM.data.metadata_table import SPLIT_IDS_BY_NAME
from XRM.data.nicopp import NICOPP_METADATA


def waterbirds_geometry() -> list:
    """The reference's Waterbirds geometry: squash to 256x256, centre crop 224."""
    from torchvision.transforms import v2 as transforms

    return [transforms.Resize((256, 256)), transforms.CenterCrop(224)]


def celeba_geometry() -> list:
    """The reference's CelebA geometry: centre crop 178 (the face), resize to 224."""
    from torchvision.transforms import v2 as transforms

    return [transforms.CenterCrop(178), transforms.Resize(224)]


def resize_crop_geometry() -> list:
    """The reference's MetaShift / ImagenetBG geometry (SubpopBench's for NICO++ and CheXpert): shorter
    side 256, centre crop 224."""
    from torchvision.transforms import v2 as transforms

    return [transforms.Resize(256), transforms.CenterCrop(224)]


@dataclass(frozen=True)
class ImageLayout:
    """Where an image dataset's files are, relative to --data_path."""

    folder: str  # the dataset's folder; features.pt is written here
    metadata: str  # the metadata CSV, relative to ``folder``
    image_root: str  # metadata filenames are relative to this folder inside ``folder``
    #: the reference's resizes and crops (torchvision.transforms.v2: uint8 tensors on the CPU and the GPU)
    geometry: Callable[[], list]
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
                                                waterbirds_geometry))
register_image_layout("celeba", ImageLayout("celeba", "metadata_celeba.csv", CELEBA_IMAGES, celeba_geometry))
register_image_layout("metashift", ImageLayout("metashift", "metadata_metashift.csv", "", resize_crop_geometry))
register_image_layout("imagenetbg", ImageLayout("backgrounds_challenge", "metadata.csv", "", resize_crop_geometry,
                                                IMAGENETBG_SPLIT_IDS))
register_image_layout("nicopp", ImageLayout("nicopp", NICOPP_METADATA, "", resize_crop_geometry))
register_image_layout("chexpert", ImageLayout("chexpert", CHEXPERT_METADATA, "", resize_crop_geometry))

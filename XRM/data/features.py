"""Datasets stored as precomputed backbone features: ``<data_path>/<folder>/features.pt``."""
from pathlib import Path

import torch

from XRM.data.base import SPLITS, GroupDataset, SplitTensors
from XRM.data.registry import register_dataset
from XRM.errors import UserError


def load_features_file(path: Path, download_name: str) -> dict[str, SplitTensors]:
    """Read a features.pt file ``{'tr'|'va'|'te': {'x', 'y', 'm'}}`` into split tensors.

    ``m`` is the true attribute. Missing or malformed files raise a UserError that names
    the download command producing them.
    """
    fix = f"run: python download.py --features --data_path {path.parent.parent} {download_name}"
    if not path.is_file():
        raise UserError(f"missing features file {path}; {fix}")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
        splits = {s: SplitTensors(content[s]["x"].float(), content[s]["y"], content[s]["m"]) for s in SPLITS}
    except Exception as exc:  # any unreadable or misshapen file gets the same advice
        raise UserError(f"cannot read features file {path} ({type(exc).__name__}: {exc}); {fix}") from None
    return splits


class FeatureDataset(GroupDataset):
    """A dataset read from ``<data_path>/<folder>/features.pt`` (see DESIGN.md)."""

    folder: str = ""
    download_name: str = ""
    family = "features"

    def load_splits(self, data_path: str) -> dict[str, SplitTensors]:
        """Read the three splits from the features file."""
        return load_features_file(Path(data_path) / self.folder / "features.pt", self.download_name)


@register_dataset("Waterbirds")
class WaterbirdsFeatures(FeatureDataset):
    """Waterbirds on ResNet-50 features: y landbird/waterbird, a land/water background."""

    folder, download_name = "waterbirds", "waterbirds"
    num_steps, eval_every = 1001, 50


@register_dataset("CelebA")
class CelebAFeatures(FeatureDataset):
    """CelebA on ResNet-50 features: y Blond_Hair, a Male."""

    folder, download_name = "celeba", "celeba"
    num_steps, eval_every = 10001, 50


@register_dataset("MetaShift")
class MetaShiftFeatures(FeatureDataset):
    """MetaShift cat/dog on ResNet-50 features: a indoor/outdoor."""

    folder, download_name = "metashift", "metashift"
    num_steps, eval_every = 5001, 50


@register_dataset("ImagenetBG")
class ImagenetBGFeatures(FeatureDataset):
    """ImageNet backgrounds challenge (9 super-classes) on ResNet-50 features."""

    folder, download_name = "backgrounds_challenge", "imagenetbg"
    num_classes = 9
    num_steps, eval_every = 10001, 100

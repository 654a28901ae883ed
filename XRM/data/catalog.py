"""Datasets by name: the built-in ones (registered when their modules are imported here), or a
user's custom dataset file (a path names it; see XRM/data/custom.py)."""
from pathlib import Path

from XRM.common.errors import UserError
from XRM.data import colormnist, image_datasets, synthetic, text_datasets  # noqa: F401  (register the built-ins)
from XRM.data.base import GroupDataset
from XRM.data.registry import DATASETS


def dataset_names() -> list[str]:
    """Every registered dataset name, sorted."""
    return sorted(DATASETS)


def get_dataset(name: str) -> GroupDataset:
    """An instance of the dataset registered as ``name``, or of the custom dataset in file
    ``name`` (see XRM/data/custom.py); a UserError listing the valid names otherwise."""
    if name in DATASETS:
        return DATASETS[name]()
    if Path(name).is_file():
        from XRM.data.custom import custom_dataset

        if Path(name).stem in DATASETS:
            raise UserError(f"custom dataset file {name} is named like the built-in dataset {Path(name).stem}: their "
                            f"results would share <out_dir>/<ALGO>/{Path(name).stem}/; rename the file")
        return custom_dataset(Path(name))
    raise UserError(f"unknown dataset {name!r}; choose from: {', '.join(sorted(DATASETS))}, "
                    "or give the path of a custom dataset file (.pt or .csv)")


def dataset_label(name: str) -> str:
    """The name results are filed under: a registered name, or a custom dataset file's stem."""
    return name if name in DATASETS else Path(name).stem

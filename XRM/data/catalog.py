"""Datasets by name: the built-in ones (registered when their modules are imported here), or a
user's custom dataset file (a path names it; see XRM/data/custom.py). A registered name is taken
in any case and by its aliases (download.py's ``cmnist`` is ColorMNIST); runs record it, and file
their results under it, as it is registered."""
from pathlib import Path

from XRM.common.errors import UserError
from XRM.data import colormnist, image_datasets, synthetic, text_datasets  # noqa: F401  (register the built-ins)
from XRM.data.base import GroupDataset
from XRM.data.registry import DATASETS


def dataset_names() -> list[str]:
    """Every registered dataset name, sorted."""
    return sorted(DATASETS)


def get_dataset(name: str) -> GroupDataset:
    """An instance of the dataset registered as ``name`` (in any case, or an alias), or of the custom
    dataset in file ``name`` (see XRM/data/custom.py); a UserError listing the valid names otherwise."""
    registered = DATASETS.canonical(name)
    if registered is not None:
        return DATASETS[registered]()
    if Path(name).is_file():
        from XRM.data.custom import custom_dataset

        named_like = DATASETS.canonical(Path(name).stem)
        if named_like is not None:
            raise UserError(f"custom dataset file {name} is named like the built-in dataset {named_like}: their "
                            f"results would share <out_dir>/<ALGO>/{named_like}/; rename the file")
        return custom_dataset(Path(name))
    raise UserError(f"unknown dataset {name!r}; choose from: {', '.join(sorted(DATASETS))}, "
                    "or give the path of a custom dataset file (.pt or .csv)")


def dataset_key(name: str) -> str:
    """What a run records as its dataset: the registered name ``name`` spells, or the absolute path of
    a custom dataset file (any other name as given: :func:`get_dataset` refuses it)."""
    registered = DATASETS.canonical(name)
    if registered is not None:
        return registered
    return str(Path(name).resolve()) if Path(name).is_file() else name


def dataset_label(name: str) -> str:
    """The name results are filed under: the registered name ``name`` spells, or a custom dataset file's stem."""
    return DATASETS.canonical(name) or Path(name).stem

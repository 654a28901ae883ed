"""The registry of datasets: the only list of dataset names (a file path names a custom dataset)."""
from pathlib import Path
from typing import Callable, TypeVar

from XRM.data.base import GroupDataset
from XRM.errors import UserError
from XRM.registry import Registry

DATASETS: Registry[type[GroupDataset]] = Registry("dataset")
T = TypeVar("T", bound=type[GroupDataset])


def register_dataset(name: str) -> Callable[[T], T]:
    """Class decorator that registers a dataset under ``name`` (names are unique)."""

    def decorator(cls: T) -> T:
        cls.name = name
        return DATASETS.add(name, cls)

    return decorator


def dataset_names() -> list[str]:
    """Every registered dataset name, sorted."""
    _import_builtin_datasets()
    return sorted(DATASETS)


def get_dataset(name: str) -> GroupDataset:
    """An instance of the dataset registered as ``name``, or of the custom dataset in file
    ``name`` (see XRM/data/custom.py); a UserError listing the valid names otherwise."""
    _import_builtin_datasets()
    if name in DATASETS:
        return DATASETS[name]()
    if Path(name).is_file():
        from XRM.data.custom import custom_dataset

        return custom_dataset(Path(name))
    raise UserError(f"unknown dataset {name!r}; choose from: {', '.join(sorted(DATASETS))}, "
                    "or give the path of a custom dataset file (.pt or .csv)")


def dataset_label(name: str) -> str:
    """The name results are filed under: a registered name, or a custom dataset file's stem."""
    _import_builtin_datasets()
    return name if name in DATASETS else Path(name).stem


def _import_builtin_datasets() -> None:
    # Importing the modules runs their @register_dataset decorators.
    import XRM.data.colormnist  # noqa: F401
    import XRM.data.image_datasets  # noqa: F401
    import XRM.data.synthetic  # noqa: F401
    import XRM.data.text_datasets  # noqa: F401

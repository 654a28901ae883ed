"""The registry of datasets: the only list of dataset names."""
from typing import Callable, TypeVar

from XRM.data.base import GroupDataset
from XRM.errors import UserError

DATASETS: dict[str, type[GroupDataset]] = {}
T = TypeVar("T", bound=type[GroupDataset])


def register_dataset(name: str) -> Callable[[T], T]:
    """Class decorator that registers a dataset under ``name`` (names are unique)."""

    def decorator(cls: T) -> T:
        if name in DATASETS:
            raise ValueError(f"dataset {name!r} is registered twice")
        cls.name = name
        DATASETS[name] = cls
        return cls

    return decorator


def dataset_names() -> list[str]:
    """Every registered dataset name, sorted."""
    _import_builtin_datasets()
    return sorted(DATASETS)


def get_dataset(name: str) -> GroupDataset:
    """An instance of the dataset registered as ``name``; a UserError listing valid names otherwise."""
    _import_builtin_datasets()
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; choose from: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]()


def _import_builtin_datasets() -> None:
    # Importing the modules runs their @register_dataset decorators.
    import XRM.data.features  # noqa: F401
    import XRM.data.synthetic  # noqa: F401

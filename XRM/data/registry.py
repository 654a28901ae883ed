"""The registry of datasets: every dataset module registers its classes here when imported.

The lookups (a name or a custom dataset file -> a dataset) are XRM.data.catalog's, which
imports the built-in dataset modules.
"""
from typing import Callable, TypeVar

from XRM.common.registry import Registry
from XRM.data.base import GroupDataset

DATASETS: Registry[type[GroupDataset]] = Registry("dataset")
T = TypeVar("T", bound=type[GroupDataset])


def register_dataset(name: str) -> Callable[[T], T]:
    """Class decorator that registers a dataset under ``name`` (names are unique)."""

    def decorator(cls: T) -> T:
        cls.name = name
        return DATASETS.add(name, cls)

    return decorator

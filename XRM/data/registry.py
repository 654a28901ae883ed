"""The registry of datasets: every dataset module registers its classes here when imported.

The lookups (a name or a custom dataset file -> a dataset) are XRM.data.catalog's, which
imports the built-in dataset modules.
"""
from XRM.common.registry import Registry
from XRM.data.base import GroupDataset

DATASETS: Registry[type[GroupDataset]] = Registry("dataset", names_entries=True)
#: class decorator that registers a dataset under a name (names are unique; the class learns it as ``name``)
register_dataset = DATASETS.register

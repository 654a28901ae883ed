"""The registry of datasets: every dataset module registers its classes here when imported.

The lookups (a name or a custom dataset file -> a dataset) are XRM.data.catalog's, which
imports the built-in dataset modules.
"""
from XRM.common.registry import Registry
from XRM.data.base import GroupDataset

#: names are taken in any case (``waterbirds`` is Waterbirds) and by their aliases (download.py's ``cmnist``)
DATASETS: Registry[type[GroupDataset]] = Registry("dataset", names_entries=True, any_case=True)
#: class decorator that registers a dataset under a name and its aliases (names are unique in any case; the
#: class learns its name as ``name``)
register_dataset = DATASETS.register

"""Packages that add algorithms or datasets to the toolkit (``mat`` adds MAT), imported by the
training commands once their arguments are checked, so that their names can be trained.

An installed package declares itself in the entry-point group ``xrm.plugins`` (in its
pyproject.toml: ``[project.entry-points."xrm.plugins"] name = "module"``): the console scripts
(``xrm-train``, ``xrm-reproduce``) and ``python -m XRM.cli`` import every one. The scripts of a
checkout, which may not be installed, name the modules they import themselves. Launched jobs
import the modules that registered their run's algorithm and dataset (RunSpec.registering_modules).
"""
import importlib
from collections.abc import Sequence
from importlib.metadata import entry_points

PLUGIN_GROUP = "xrm.plugins"


def installed_plugins() -> list[str]:
    """The modules that installed packages declare in the ``xrm.plugins`` entry-point group."""
    return [entry.value for entry in entry_points(group=PLUGIN_GROUP)]


def load_plugins(modules: Sequence[str] = ()) -> None:
    """Import ``modules`` and every installed plugin (each registers what it adds when imported)."""
    for name in dict.fromkeys([*modules, *installed_plugins()]):
        importlib.import_module(name)

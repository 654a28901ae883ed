"""The paper's Table 1 protocol: its two model-selection settings, and which group-label folder
serves an algorithm in each (no torch here: reproduce.py plans with it before loading any).

The settings (Bayat et al., 2025, Table 1): "validation groups known" selects by the worst-group
validation accuracy over the true groups (``va_wga`` of a run given ``--group_labels yes``);
"no group labels" selects by the XRM-inferred validation groups (``va_gi_wga``, or ``va_wga``
of a run whose groups are XRM's). A folder's runs record ``va_wga`` over the groups of their
``--group_labels`` source, so the source is chosen per setting: from what the algorithm
declares it trains with (``group_information``) and accepts (``accepted_group_labels``), never
from its name.
"""
from pathlib import Path

from XRM.common.errors import UserError
from XRM.results import records

#: the two settings, named by their selection criterion
VALIDATION_GROUPS_KNOWN = records.VA_WGA
NO_GROUP_LABELS = records.VA_GI_WGA
SELECTION_SETTINGS = (VALIDATION_GROUPS_KNOWN, NO_GROUP_LABELS)
SETTING_TITLES = {VALIDATION_GROUPS_KNOWN: "Validation groups known (selection by va_wga)",
                  NO_GROUP_LABELS: "No group labels (selection by va_gi_wga)"}

#: the folder that serves a setting in a results folder of any origin: the first of these kinds
#: present (``yes`` in the no-labels setting only where its runs record va_gi_wga, which never
#: reads a true group)
FOLDER_PREFERENCE = {VALIDATION_GROUPS_KNOWN: ("yes", "inferred", "no"), NO_GROUP_LABELS: ("inferred", "no", "yes")}


def source_kinds(algorithm_cls: type, setting: str, true_groups: bool) -> tuple[str, ...]:
    """The --group_labels kinds that give ``algorithm_cls`` the groups ``setting`` allows, best first.

    - trains with every training example's group ("training"): XRM's inferred groups; the true
      ones with ``true_groups``, in the setting where validation groups are known;
    - trains with validation groups ("validation"): the true ones where they are known, else XRM's;
    - trains with no groups ("none"): the source only supplies the validation groups that select
      it: the true ones where known, else XRM's; algorithms given the phase-1 file (MAT) record
      va_gi_wga from it, so one folder serves both settings; "no" (the classes) where the
      algorithm accepts neither.
    """
    known = setting == VALIDATION_GROUPS_KNOWN
    information = algorithm_cls.group_information
    if information == "training":
        return ("yes",) if known and true_groups else ("inferred",)
    if information == "validation":
        return ("yes",) if known else ("inferred",)
    if known or algorithm_cls.needs_held_out_logits:
        return "yes", "no"
    return "inferred", "no"


def source_kind(algorithm_cls: type, setting: str, true_groups: bool) -> str:
    """The first of :func:`source_kinds` the algorithm accepts; a UserError when it accepts none."""
    wanted = source_kinds(algorithm_cls, setting, true_groups)
    for kind in wanted:
        if kind in algorithm_cls.accepted_group_labels:
            return kind
    raise UserError(f"{algorithm_cls.name} accepts --group_labels {_kinds_text(algorithm_cls.accepted_group_labels)}, "
                    f"but the setting {setting} needs {_kinds_text(wanted)}; leave {algorithm_cls.name} out of "
                    "--algorithms")


def _kinds_text(kinds: tuple[str, ...]) -> str:
    return " or ".join("a phase-1 folder" if kind == "inferred" else kind for kind in kinds)


def records_inferred_validation_groups(directory: Path) -> bool:
    """Whether some run in ``directory`` records va_gi_wga (a line of a results file carries it)."""
    key = f'"{records.VA_GI_WGA}"'
    return any(key in path.read_text() for path in directory.glob("results_hpcomb_*_seed*.json"))


def serving_folder(dataset_dir: Path, setting: str) -> Path | None:
    """The ``group_labels_<kind>`` folder under ``<root>/<ALGO>/<Dataset>`` that serves ``setting``
    (see FOLDER_PREFERENCE), or None."""
    for kind in FOLDER_PREFERENCE[setting]:
        folder = dataset_dir / records.group_labels_folder(kind)
        if not any(folder.glob("results_hpcomb_*_seed*.json")):
            continue
        if setting == NO_GROUP_LABELS and kind == "yes" and not records_inferred_validation_groups(folder):
            continue
        return folder
    return None

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


def source_kinds(algorithm_cls: type, setting: str, true_groups: bool,
                 inferred_validation_groups: bool = False) -> tuple[str, ...]:
    """The --group_labels kinds that give ``algorithm_cls`` the groups ``setting`` allows, best first.

    - trains with every training example's group ("training"): XRM's inferred groups; the true
      ones with ``true_groups``, in the setting where validation groups are known;
    - trains with validation groups ("validation"): the true ones where they are known, else XRM's;
    - trains with no groups ("none"): the source only supplies the validation groups that select
      it: the true ones where known, else XRM's; algorithms given the phase-1 file (MAT, and with
      ``inferred_validation_groups`` any of them: XRM.runs.sweep.SweepSpec) record va_gi_wga from it,
      so one folder serves both settings; "no" (the classes) where the algorithm accepts neither.
    """
    known = setting == VALIDATION_GROUPS_KNOWN
    information = algorithm_cls.group_information
    if information == "training":
        return ("yes",) if known and true_groups else ("inferred",)
    if information == "validation":
        return ("yes",) if known else ("inferred",)
    if known or algorithm_cls.needs_held_out_logits or inferred_validation_groups:
        return "yes", "no"
    return "inferred", "no"


def source_kind(algorithm_cls: type, setting: str, true_groups: bool, inferred_validation_groups: bool = False) -> str:
    """The first of :func:`source_kinds` the algorithm accepts; a UserError when it accepts none."""
    wanted = source_kinds(algorithm_cls, setting, true_groups, inferred_validation_groups)
    for kind in wanted:
        if kind in algorithm_cls.accepted_group_labels:
            return kind
    raise UserError(f"{algorithm_cls.name} accepts --group_labels {_kinds_text(algorithm_cls.accepted_group_labels)}, "
                    f"but the setting {setting} needs {_kinds_text(wanted)}; leave {algorithm_cls.name} out of "
                    "--algorithms")


def _kinds_text(kinds: tuple[str, ...]) -> str:
    return " or ".join("a phase-1 folder" if kind == "inferred" else kind for kind in kinds)


#: the phase-1 algorithm of a run whose phase-1 file cannot be traced (the reference code's
#: layout keeps phase 1 in another folder; XRM is its only phase-1 algorithm)
DEFAULT_GROUP_INFERENCE = "XRM"


def group_inference_of(header: dict) -> str | None:
    """The phase-1 algorithm whose file a phase-2 run read (its --group_labels file, else MAT's
    phase-1 file), as the results header of that phase-1 run beside the file names it;
    DEFAULT_GROUP_INFERENCE where those results are gone, None where the run read no phase-1 file."""
    named = False
    for key in ("group_labels", "phase_1_file"):
        value = header.get(key)
        if not isinstance(value, str) or not value.endswith(".pt"):
            continue
        named, phase_1_file = True, Path(value)
        results = phase_1_file.with_name(phase_1_file.stem.replace("inferred_", "results_", 1) + ".json")
        try:
            phase_1_header, _ = records.read_results(results)
        except (OSError, ValueError):
            continue
        if isinstance(phase_1_header.get("algorithm"), str):
            return phase_1_header["algorithm"]
    return DEFAULT_GROUP_INFERENCE if named else None


def setting_rules(setting: str, group_inference: str) -> str:
    """What a setting's cells mean: the group definition, the groups they are evaluated on, the
    selection rule, and the training groups of the algorithms that train with groups."""
    inferred = f"the {group_inference}-inferred"
    if setting == VALIDATION_GROUPS_KNOWN:
        return ("groups = (class, annotated attribute); evaluated on the annotated test groups; selected by va_wga, "
                "the worst-group validation accuracy over the annotated validation groups; algorithms that train "
                f"with groups train with {inferred} training groups (the annotated ones with --true_groups)")
    return (f"groups = (class, attribute inferred by {group_inference} in phase 1); evaluated on the annotated test "
            f"groups; selected by va_gi_wga, the worst-group validation accuracy over {inferred} validation groups "
            f"(no annotation read); algorithms that train with groups train with {inferred} training groups")


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

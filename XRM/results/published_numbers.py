"""Published test accuracies (%) that the Table 1 files print beside ours.

Sources: "The Pitfalls of Memorization" (Bayat et al., ICLR 2025, Table 1) for the baselines
without training groups, BAM's row among them (Li et al., "Bias Amplification Enhances Minority
Group Performance", TMLR 2024, selected by its ClassDiff rule without any group label);
"Discovering Environments with XRM" (Pezeshki et al., ICML 2024) for GroupDRO with human or
XRM-inferred groups (worst-group accuracy only); numbers as collected in the project's
PAPER_FACTS.md. EIIL (Creager et al., "Environment Inference for Invariant Learning", ICML 2021):
GroupDRO trained on EIIL's inferred groups, selected with validation groups (worst-group
accuracy only), the numbers the project's issue 21 gives (PAPER_FACTS.md does not hold them).
DPE: "Diverse Prototypical Ensembles Improve Robustness to Subpopulation Shift" (To et al., ICML
2025), worst-group accuracy only, with validation groups and without any group labels (its members'
subsets then balance the classes).
"""
from dataclasses import dataclass

from XRM.results.table1_settings import NO_GROUP_LABELS, VALIDATION_GROUPS_KNOWN


@dataclass(frozen=True)
class Published:
    """One published result: average and worst-group test accuracy (average None where not given),
    the group-label kinds of the folders whose numbers it compares with, and the phase-1 algorithm
    whose inferred groups the published protocol used (None: it used none)."""

    average: float | None
    worst_group: float
    group_labels: tuple[str, ...]
    group_inference: str | None = None


_DATASETS = ("Waterbirds", "CelebA", "MultiNLI", "CivilComments")
_GROUPDRO_DATASETS = ("Waterbirds", "CelebA", "MultiNLI", "CivilComments", "MetaShift", "ColorMNIST")

# (average, worst-group) per dataset of _DATASETS; the baselines train without group labels
_WITH_VALIDATION_GROUPS = {
    "ERM": ((97.3, 72.6), (95.6, 47.2), (82.4, 67.9), (83.1, 69.5)),
    "JTT": ((93.3, 86.7), (88.0, 81.1), (78.6, 72.6), (83.3, 64.3)),
    "AFR": ((94.4, 90.4), (91.3, 82.0), (81.4, 73.4), (89.8, 68.7)),
    "DPE": ((None, 94.1), (None, 90.3), (None, 75.3), (None, 70.8)),
}
_WITHOUT_GROUP_LABELS = {
    "JTT": ((88.9, 71.2), (95.9, 48.3), (81.4, 65.1), (79.0, 51.0)),
    "BAM": ((91.4, 89.1), (88.4, 80.1), (80.3, 70.8), (88.3, 79.3)),
    "DPE": ((None, 94.1), (None, 84.6), (None, 70.9), (None, 68.9)),
}
# GroupDRO worst-group accuracy on _GROUPDRO_DATASETS: human-annotated groups, XRM-inferred groups
_GROUPDRO_HUMAN = (86.5, 88.3, 73.4, 73.8, 80.3, 10.1)
_GROUPDRO_XRM = (88.1, 89.1, 72.1, 72.2, 77.5, 69.7)
# GroupDRO worst-group accuracy on _DATASETS with EIIL's inferred groups, validation groups known
_GROUPDRO_EIIL = (78.7, 77.8, 70.0, 67.0)


def _table() -> dict[tuple[str, str, str], tuple[Published, ...]]:
    table: dict[tuple[str, str, str], tuple[Published, ...]] = {}

    def add(key: tuple[str, str, str], entry: Published) -> None:
        table[key] = (*table.get(key, ()), entry)

    for setting, block, kinds in ((VALIDATION_GROUPS_KNOWN, _WITH_VALIDATION_GROUPS, ("yes",)),
                                  (NO_GROUP_LABELS, _WITHOUT_GROUP_LABELS, ("inferred", "no"))):
        for algorithm, numbers in block.items():
            for dataset, (average, worst) in zip(_DATASETS, numbers):
                add((algorithm, setting, dataset), Published(average, worst, kinds))
    for dataset, human, xrm in zip(_GROUPDRO_DATASETS, _GROUPDRO_HUMAN, _GROUPDRO_XRM):
        add(("GroupDRO", VALIDATION_GROUPS_KNOWN, dataset), Published(None, human, ("yes",)))
        add(("GroupDRO", NO_GROUP_LABELS, dataset), Published(None, xrm, ("inferred",), "XRM"))
    for dataset, eiil in zip(_DATASETS, _GROUPDRO_EIIL):
        add(("GroupDRO", VALIDATION_GROUPS_KNOWN, dataset), Published(None, eiil, ("inferred",), "EIIL"))
    return table


PUBLISHED = _table()


def published(algorithm: str, setting: str, dataset: str, group_labels: str,
              group_inference: str = "XRM") -> Published | None:
    """The published result comparable with ours: same algorithm, setting and dataset, our folder
    of a group-label kind the published protocol used, and our groups inferred by the algorithm it
    used (if it used inferred groups); None otherwise."""
    for entry in PUBLISHED.get((algorithm, setting, dataset), ()):
        if group_labels in entry.group_labels and entry.group_inference in (None, group_inference):
            return entry
    return None

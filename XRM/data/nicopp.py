"""NICO++'s metadata as SubpopBench builds it: the attribute-generalisation split of the public
domain-generalisation track (Zhang et al., CVPR 2023; Yang et al., ICML 2023, ``SubpopBench``).

The images are ``public_dg_0416/train/<context>/<class>/*.jpg``: 60 classes (ids from
``dg_label_id_mapping.json``) in 6 contexts, the attribute. Every (class, context) group gives at
most 75 images to evaluation, a third of them to validation and the rest to test (groups shuffled
with Python's ``random`` seeded 666, once, in SubpopBench's group order); what is left trains. A
group of fewer than 75 images is all validation and test: the (class, context) combinations
training never sees are what makes the split attribute generalisation.
"""
import json
import random
from pathlib import Path

from XRM.common.commands import command
from XRM.common.errors import UserError
from XRM.data.files import require_file
from XRM.data.metadata_table import SPLIT_IDS, MetadataTable, table_from_rows, write_metadata_csv

NICOPP_IMAGES = "public_dg_0416/train"
NICOPP_LABELS = "dg_label_id_mapping.json"
NICOPP_METADATA = "metadata.csv"
#: the attribute: SubpopBench's 6 contexts, in its order (a = position)
NICOPP_CONTEXTS = ("autumn", "dim", "grass", "outdoor", "rock", "water")
#: images a (class, context) group gives to validation and test together, and SubpopBench's seed
EVALUATION_IMAGES_PER_GROUP = 75
SPLIT_SEED = 666


def _what_to_do() -> str:
    """The hint of a missing or wrong NICO++ file, naming the download command the user runs."""
    return f"run {command('download')} with --download, or put NICO++'s track_1 files there by hand"


def _label_ids(path: Path) -> dict[str, int]:
    """The class name -> y mapping of dg_label_id_mapping.json, in the file's order."""
    try:
        mapping = json.loads(require_file(path, "downloaded file", _what_to_do()).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is not JSON ({error}): download it again") from None
    if not isinstance(mapping, dict) or not mapping or not all(
            isinstance(value, int) and not isinstance(value, bool) and value >= 0 for value in mapping.values()):
        raise UserError(f"{path} must map each class name to an integer id >= 0: download it again")
    return mapping


def balanced_evaluation_split(groups: list[int], seed: int = SPLIT_SEED,
                              per_group: int = EVALUATION_IMAGES_PER_GROUP) -> list[int]:
    """The split code of each row, given its group: per group (in order of first appearance), its rows
    shuffled by one ``random.Random(seed)``; the first ``min(n, per_group) // 3`` go to validation, the
    rest of the first ``min(n, per_group)`` to test, the others to training (SubpopBench's rule)."""
    rows_of: dict[int, list[int]] = {}
    for row, group in enumerate(groups):
        rows_of.setdefault(group, []).append(row)
    shuffler = random.Random(seed)
    split = [SPLIT_IDS["tr"]] * len(groups)
    for rows in rows_of.values():
        shuffler.shuffle(rows)
        evaluated = min(len(rows), per_group)
        for position, row in enumerate(rows[:evaluated]):
            split[row] = SPLIT_IDS["va"] if position < evaluated // 3 else SPLIT_IDS["te"]
    return split


def write_nicopp_metadata(folder: Path) -> MetadataTable:
    """nicopp/metadata.csv: y = the class id of dg_label_id_mapping.json, a = the context's index in
    NICOPP_CONTEXTS, split as the module docstring says. Rows go context by context, then class by
    class in the JSON's order; unlike SubpopBench (whose glob order depended on the file system),
    images are listed in sorted order, with filenames relative to ``nicopp/``."""
    labels = _label_ids(folder / NICOPP_LABELS)
    root = require_file(folder / NICOPP_IMAGES, "downloaded folder", _what_to_do())
    filenames, y, a = [], [], []
    for context, name in enumerate(NICOPP_CONTEXTS):
        for label, label_id in labels.items():
            for image in sorted((root / name / label).glob("*.jpg")):
                filenames.append(image.relative_to(folder).as_posix())
                y.append(label_id)
                a.append(context)
    if not filenames:
        raise UserError(f"no images under {root}/<context>/<class>/*.jpg for the contexts "
                        f"{', '.join(NICOPP_CONTEXTS)}: {_what_to_do()}")
    split = balanced_evaluation_split([attribute + label * len(NICOPP_CONTEXTS) for label, attribute in zip(y, a)])
    table = table_from_rows(list(range(len(filenames))), filenames, split, y, a)
    write_metadata_csv(table, folder / NICOPP_METADATA)
    return table

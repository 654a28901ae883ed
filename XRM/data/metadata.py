"""Per-dataset builders of the metadata CSV from the raw files as published.

Each builder takes the dataset's folder under --data_path, writes the files the
training code reads (atomically) and returns the table it wrote. Row order and the
meaning of y and a follow the reference implementation, so its data folders and ours
are interchangeable; where it had to differ, the builder's docstring says so.
"""
import csv
import io
import sys
from pathlib import Path

import numpy as np

from XRM.common.commands import command
from XRM.common.errors import UserError
from XRM.common.fileio import atomic_write_text
from XRM.data.files import open_csv, require_file
from XRM.data.metadata_table import SPLIT_IDS_BY_NAME, MetadataTable, size_warnings, table_from_rows, write_metadata_csv
from XRM.data.sources import MNIST_SPLIT_SIZES

WATERBIRDS_IMAGES = "waterbird_complete95_forest2water2"
CELEBA_IMAGES = "img_align_celeba"
METASHIFT_IMAGES = "MetaShift-Cat-Dog-indoor-outdoor"
CIVILCOMMENTS_IDENTITIES = ("male", "female", "LGBTQ", "christian", "muslim",
                            "other_religions", "black", "white")


def _require(path: Path) -> Path:
    """``path``, a raw file the builders read; a UserError saying how to get it when it is missing."""
    return require_file(path, "downloaded file",
                        f"run {command('download')} with --download, or put the dataset's files there by hand")


def _read_csv_rows(path: Path) -> list[dict[str, str]]:
    with open_csv(_require(path)) as handle:
        return list(csv.DictReader(handle))


def write_waterbirds_metadata(folder: Path) -> MetadataTable:
    """waterbirds/metadata_waterbirds.csv from the archive's metadata.csv.

    y: 1 = waterbird; a (the archive's ``place``): 1 = water background; filenames are
    relative to ``waterbird_complete95_forest2water2/``.
    """
    rows = _read_csv_rows(folder / WATERBIRDS_IMAGES / "metadata.csv")
    table = table_from_rows([r["img_id"] for r in rows], [r["img_filename"] for r in rows],
                            [r["split"] for r in rows], [r["y"] for r in rows],
                            [r["place"] for r in rows])
    write_metadata_csv(table, folder / "metadata_waterbirds.csv")
    return table


def _celeba_attribute_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    lines = _require(path).read_text().splitlines()
    names = lines[1].split()
    return names, [line.split() for line in lines[2:] if line.strip()]


def write_celeba_metadata(folder: Path) -> MetadataTable:
    """celeba/metadata_celeba.csv from list_eval_partition.txt and list_attr_celeba.txt.

    y = Blond_Hair, a = Male (attribute value 1 -> 1, -1 -> 0); the official splits;
    ids count from 1 as in the reference; filenames relative to ``img_align_celeba/``.
    """
    partition = [line.split() for line in _require(folder / "list_eval_partition.txt").read_text().splitlines()
                 if line.strip()]
    names, attributes = _celeba_attribute_rows(folder / "list_attr_celeba.txt")
    if len(partition) != len(attributes):
        raise UserError(f"{folder}: list_eval_partition.txt has {len(partition)} images but "
                        f"list_attr_celeba.txt {len(attributes)}: download both files again")
    blond, male = names.index("Blond_Hair") + 1, names.index("Male") + 1  # +1: the file name column
    for (filename, _), values in zip(partition, attributes):
        if filename != values[0]:
            raise UserError(f"{folder}: the two CelebA list files disagree at {filename} / {values[0]}: "
                            "download both again")
    table = table_from_rows(list(range(1, len(partition) + 1)), [p[0] for p in partition],
                            [p[1] for p in partition], [int(v[blond] == "1") for v in attributes],
                            [int(v[male] == "1") for v in attributes])
    write_metadata_csv(table, folder / "metadata_celeba.csv")
    return table


def _at_least_half(value: str) -> bool:
    # Empty cells are comments nobody rated for that identity.
    return value not in ("", "nan") and float(value) >= 0.5


def write_civilcomments_metadata(folder: Path) -> MetadataTable:
    """civilcomments/metadata_civilcomments_coarse.csv and civilcomments_coarse.csv (the text).

    The reference's "coarse" grouping (as in BalancingGroups): y = toxicity >= 0.5.
    Train rows keep their order, with a = 1 when none of the 8 identities (male, female,
    LGBTQ, christian, muslim, other_religions, black, white; each >= 0.5) is mentioned,
    else a = 0. Validation and test rows are repeated once per identity they mention,
    with a = that identity's index (0..7); rows mentioning none are left out there. Order:
    train, then test and val, each identity by identity. ``filename`` (= ``id``) is the
    row's position in civilcomments_coarse.csv, whose one column is ``comment_text``.
    """
    source = _read_csv_rows(folder / "all_data_with_identities.csv")
    texts, split, y, a = [], [], [], []
    train = [row for row in source if row["split"] == "train"]
    for row in train:
        texts.append(row["comment_text"])
        split.append(0)
        y.append(int(_at_least_half(row["toxicity"])))
        a.append(int(not any(_at_least_half(row[name]) for name in CIVILCOMMENTS_IDENTITIES)))
    for split_name in ("test", "val"):  # the order pandas' groupby gave the reference
        rows = [row for row in source if row["split"] == split_name]
        for identity, name in enumerate(CIVILCOMMENTS_IDENTITIES):
            for row in rows:
                if _at_least_half(row[name]):
                    texts.append(row["comment_text"])
                    split.append(SPLIT_IDS_BY_NAME[split_name])
                    y.append(int(_at_least_half(row["toxicity"])))
                    a.append(identity)
    positions = list(range(len(texts)))
    table = table_from_rows(positions, positions, split, y, a)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["comment_text"])
    writer.writerows([text] for text in texts)
    atomic_write_text(buffer.getvalue(), folder / "civilcomments_coarse.csv")
    write_metadata_csv(table, folder / "metadata_civilcomments_coarse.csv")
    return table


def write_multinli_metadata(folder: Path) -> MetadataTable:
    """multinli/metadata_multinli.csv from group_DRO's data/metadata_random.csv.

    y = gold_label (0 contradiction, 1 entailment, 2 neutral); a = sentence2_has_negation;
    the file's random 50/20/30 split. ``filename`` (= ``id``) is the row's position, which
    is also its position in the cached BERT features (train, dev, dev-mm concatenated);
    their count and labels are checked against the metadata here.
    """
    from XRM.data.multinli import load_multinli_features  # heavy: only for this dataset

    rows = _read_csv_rows(folder / "data" / "metadata_random.csv")
    positions = list(range(len(rows)))
    table = table_from_rows(positions, positions, [r["split"] for r in rows],
                            [r["gold_label"] for r in rows], [r["sentence2_has_negation"] for r in rows])
    features = load_multinli_features(folder)
    if len(features["label_ids"]) != len(table) or not np.array_equal(features["label_ids"].numpy(), table.y):
        raise UserError(f"{folder}: the cached BERT features ({len(features['label_ids'])} rows) do not match "
                        f"data/metadata_random.csv ({len(table)} rows) row for row: download both again")
    write_metadata_csv(table, folder / "metadata_multinli.csv")
    return table


def _split_like_reference(n: int, test_fraction: float = 0.25, val_fraction: float = 0.1) -> np.ndarray:
    rng = np.random.RandomState(42)
    test = rng.choice(np.arange(n), size=int(n * test_fraction), replace=False)
    val = rng.choice(np.setdiff1d(np.arange(n), test), size=int(n * val_fraction), replace=False)
    split = np.zeros(n, dtype=np.int64)
    split[val] = 1
    split[test] = 2
    return split


# Folder -> (y, a): y 1 = cat, a 1 = indoor. Train and test folders are pooled, then re-split.
METASHIFT_FOLDERS = {
    "train/cat/cat(indoor)": (1, 1),
    "train/dog/dog(outdoor)": (0, 0),
    "test/cat/cat(outdoor)": (1, 0),
    "test/dog/dog(indoor)": (0, 1),
}


def write_metashift_metadata(folder: Path) -> MetadataTable:
    """metashift/metadata_metashift.csv: Cat/Dog with indoor/outdoor, re-split 65/10/25.

    The split is the reference's (RandomState(42): 25% test, then 10% val). Unlike the
    reference, images are listed in sorted order (its glob order depended on the file
    system) and filenames are relative to ``metashift/`` rather than absolute.
    """
    root = _require(folder / METASHIFT_IMAGES)
    filenames, y, a = [], [], []
    for subfolder, (label, attribute) in METASHIFT_FOLDERS.items():
        for image in sorted(_require(root / subfolder).glob("*.jpg")):
            filenames.append(image.relative_to(folder).as_posix())
            y.append(label)
            a.append(attribute)
    table = table_from_rows(list(range(len(filenames))), filenames, _split_like_reference(len(filenames)), y, a)
    write_metadata_csv(table, folder / "metadata_metashift.csv")
    return table


IMAGENETBG_CLASSES = ("dog", "bird", "wheeled vehicle", "reptile", "carnivore", "insect",
                      "musical instrument", "primate", "fish")
# Split id -> folder. The reference evaluates on mixed_rand as its test split; the other
# variants it lists are kept as splits 3-5 for evaluation by hand.
IMAGENETBG_SPLITS = {
    0: "in9l/train",
    1: "in9l/val",
    2: "bg_challenge/mixed_rand/val",
    3: "bg_challenge/original/val",
    4: "bg_challenge/only_fg/val",
    5: "bg_challenge/no_fg/val",
}
IMAGENETBG_SPLIT_NAMES = {0: "train", 1: "val", 2: "mixed_rand", 3: "original", 4: "only_fg", 5: "no_fg"}
# Split code by name, for the reference's metadata.csv, which spells splits out; it calls
# bg_challenge/original/val "test" (a split its training never reads: mixed_rand is the test).
IMAGENETBG_SPLIT_IDS = {**{name: code for code, name in IMAGENETBG_SPLIT_NAMES.items()}, "test": 3}


def write_imagenetbg_metadata(folder: Path) -> MetadataTable:
    """backgrounds_challenge/metadata.csv: the 9 IN-9 super-classes, a = 0 for all.

    y = class index (00_dog .. 08_fish); the reference has no background attribute, so
    groups are the classes. Splits: see IMAGENETBG_SPLITS (test = mixed_rand). Filenames
    are relative to ``backgrounds_challenge/``, in sorted order.
    """
    filenames, split, y = [], [], []
    for split_id, subfolder in IMAGENETBG_SPLITS.items():
        if split_id > 2 and not (folder / subfolder).is_dir():
            continue  # an extra test variant missing from the archive: the reference skips it too
        for label, name in enumerate(IMAGENETBG_CLASSES):
            for image in sorted(_require(folder / subfolder / f"{label:02d}_{name}").glob("*.JPEG")):
                filenames.append(image.relative_to(folder).as_posix())
                split.append(split_id)
                y.append(label)
    table = table_from_rows(list(range(len(filenames))), filenames, split, y, [0] * len(filenames))
    write_metadata_csv(table, folder / "metadata.csv")
    return table


def check_mnist(folder: Path) -> None:
    """Check torchvision can read MNIST under ``folder`` (= <data_path>/mnist); ColorMNIST
    is built from it at training time, so no metadata file is written."""
    from torchvision.datasets import MNIST

    sizes = {}
    for split in MNIST_SPLIT_SIZES:
        try:
            images = MNIST(root=str(folder), train=split == "train", download=False)
        except (RuntimeError, ValueError, OSError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise UserError(f"MNIST under {folder} is unreadable ({reason}): replace the unpacked files in "
                            f"{folder / 'MNIST' / 'raw'} with good copies, or delete them to unpack the .gz "
                            "files there again") from error
        sizes[split] = len(images)
        print(f"  {split:>10} {len(images):>7}", file=sys.stderr)
    for line in size_warnings(f"MNIST under {folder}", sizes, MNIST_SPLIT_SIZES, "images"):
        print(line, file=sys.stderr)

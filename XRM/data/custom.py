"""A user's own data, passed by path instead of a registered name (``--datasets FILE``).

Three kinds, told apart by the file:
- ``*.pt``: a features file in DESIGN.md's format (``{'tr'|'va'|'te': {'x', 'y', 'm'}}``),
  trained with a linear head;
- a CSV with columns ``id,filename,split,y,a``: images, filenames relative to the CSV's
  folder, fine-tuning ResNet-50 (resize 256, centre crop 224, ImageNet normalisation);
- a CSV with columns ``id,text,split,y,a``: texts, tokenised once with the text model's
  tokenizer (max length 220) into ``<stem>.tokens_<model>_220.pt`` beside the CSV, and
  fine-tuning BERT.
``split`` is 0/1/2 for train/validation/test (every split must have rows, and validation and test
no class that training lacks); ``y`` and ``a`` are integers >= 0; the number of classes is
``max(y) + 1``. A UTF-8 byte-order mark (as spreadsheets save) is accepted.
Results go to a folder named after the file's stem.
"""
import csv
from pathlib import Path

import numpy as np
import torch

from XRM.common.errors import UserError
from XRM.data.base import SPLITS, GroupDataset, InputOptions, SplitTensors
from XRM.data.feature_file import load_features_file
from XRM.data.files import open_csv
from XRM.data.image_datasets import image_split_tensors, on_images
from XRM.data.image_layouts import resize_crop_geometry
from XRM.data.images import ImageSplit
from XRM.data.metadata_table import COLUMNS, SPLIT_IDS, MetadataTable, check_splits, read_metadata_csv
from XRM.data.text_datasets import CIVILCOMMENTS_MAX_LENGTH, TextDataset, read_text_column, token_splits, tokens_for

TEXT_COLUMNS = ("id", "text", "split", "y", "a")
#: what a malformed custom CSV asks for
FIX_CSV = "correct the file (columns id,filename,split,y,a or id,text,split,y,a; see the README)"


def _csv_columns(path: Path) -> list[str]:
    with open_csv(path) as handle:
        return next(csv.reader(handle), [])


def _read_custom_table(path: Path, file_column: str | None) -> MetadataTable:
    """A custom CSV's rows, checked (XRM.data.metadata_table: integer labels, known splits, whole
    rows; every split present, no class the training rows lack)."""
    table = read_metadata_csv(path, fix=FIX_CSV, file_column=file_column)
    check_splits(table, path, FIX_CSV)
    return table


def _num_classes(y: np.ndarray, path: Path) -> int:
    if len(y) == 0 or y.min() < 0:
        raise UserError(f"{path}: labels y must be integers 0 .. K-1, and there must be rows")
    return int(y.max()) + 1


class CustomFeatures(GroupDataset):
    """A features.pt given by path: a linear head on its features."""

    family, inputs = "features", "features"

    def __init__(self, path: Path) -> None:
        self.path, self.name = path, path.stem
        self._splits = None

    def load_splits(self, data_path: str) -> dict[str, SplitTensors]:
        """The file's three splits (``data_path`` is not used)."""
        if self._splits is None:
            fix = "it must hold {'tr'|'va'|'te': {'x': float[n,d], 'y': long[n,1], 'm': long[n,1]}} (see the README)"
            self._splits = load_features_file(self.path, "", fix=fix)
            self.num_classes = _num_classes(torch.cat([s.y for s in self._splits.values()]).numpy(), self.path)
        return self._splits


class CustomImages(GroupDataset):
    """A metadata CSV (id,filename,split,y,a) of images relative to its folder: ResNet-50 fine-tuning."""

    inputs = "images"

    def __init__(self, path: Path) -> None:
        self.path, self.name = path, path.stem
        self.table = _read_custom_table(path, "filename")
        self.num_classes = _num_classes(self.table.y, path)

    def resolve(self, data_path: str, phase: int, options: InputOptions) -> GroupDataset:
        """Images only; features of custom images come as their own ``<stem>.pt`` file."""
        if options.inputs not in ("auto", "images"):
            raise UserError(f"{self.path} is an image CSV; to train on features pass a features file named "
                            f"{self.name}.pt instead")
        return on_images(self, options)

    def load_splits(self, data_path: str) -> dict[str, SplitTensors]:
        """Image splits in CSV order (``data_path`` is not used)."""
        splits = {}
        for split in SPLITS:
            rows = self.table.rows_of_split(SPLIT_IDS[split])
            paths = [str(self.path.parent / self.table.filenames[row]) for row in rows]
            splits[split] = image_split_tensors(ImageSplit(paths, self.table.y[rows], self.table.a[rows],
                                                           resize_crop_geometry()))
        return splits


class CustomTexts(TextDataset):
    """A CSV (id,text,split,y,a) of texts: tokenised once, then BERT fine-tuning."""

    max_length = CIVILCOMMENTS_MAX_LENGTH

    def __init__(self, path: Path) -> None:
        self.path, self.name = path, path.stem
        self.table = _read_custom_table(path, None)
        self.num_classes = _num_classes(self.table.y, path)

    def load_splits(self, data_path: str) -> dict[str, SplitTensors]:
        """Token splits in CSV order, through the token cache beside the CSV."""
        tokens = tokens_for(self.path, read_text_column(self.path, "text"), [self.path], self.text_spec(),
                            self.max_length, prefix=f"{self.name}.tokens")
        return token_splits(self.table, tokens, np.arange(len(self.table)), self.path)


def custom_dataset(path: Path) -> GroupDataset:
    """The dataset a file describes (see the module docstring); UserError for any other file."""
    path = path.resolve()
    if path.suffix == ".pt":
        return CustomFeatures(path)
    if path.suffix == ".csv":
        columns = _csv_columns(path)
        if all(column in columns for column in TEXT_COLUMNS):
            return CustomTexts(path)
        if all(column in columns for column in COLUMNS):
            return CustomImages(path)
    raise UserError(f"{path}: a custom dataset is a features .pt file, or a .csv with columns "
                    f"{','.join(COLUMNS)} (images) or {','.join(TEXT_COLUMNS)} (texts)")

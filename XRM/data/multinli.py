"""MultiNLI's cached BERT features (group_DRO's files), readable without utils_glue.

The files are torch-pickled lists of ``utils_glue.InputFeatures`` objects. Instead of
needing that module on the path (and running whatever a pickle names), a restricted
unpickler maps any class called ``InputFeatures`` to a plain record and refuses every
other class outside a short list of safe built-ins.
"""
import pickle
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

from XRM.common.errors import UserError
from XRM.data.files import download_hint, require_file
from XRM.data.sources import MULTINLI_CACHED_FEATURES

CACHED_FEATURES_DIR = Path("glue_data") / "MNLI"
# What a pickle may name besides InputFeatures: containers the old files were saved with.
_ALLOWED_GLOBALS = {("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset")}


class InputFeatures(SimpleNamespace):
    """Stand-in for ``utils_glue.InputFeatures``: input_ids, input_mask, segment_ids, label_id."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if name == "InputFeatures":
            return InputFeatures
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected class {module}.{name} in a cached features file")


class _RestrictedPickleModule:
    """The ``pickle_module`` torch.load uses: pickle, with the restricted Unpickler."""

    Unpickler = _RestrictedUnpickler
    __name__ = "xrm_restricted_pickle"

    @staticmethod
    def load(handle, **kwargs):
        return _RestrictedUnpickler(handle, **kwargs).load()


def load_cached_features(path: Path) -> list[InputFeatures]:
    """Read one ``cached_*_mnli`` file: a list of records with input_ids, input_mask,
    segment_ids (lists of ints, length 128) and label_id."""
    try:
        # weights_only=False: the file holds objects, which torch >= 2.6 refuses by default;
        # the restricted pickle module is what keeps arbitrary code from running.
        return torch.load(path, map_location="cpu", pickle_module=_RestrictedPickleModule, weights_only=False)
    except (pickle.UnpicklingError, EOFError, RuntimeError) as error:
        raise UserError(f"{path} is not a readable cached features file ({error}): download it again") from error


def load_multinli_features(folder: Path) -> dict[str, torch.Tensor]:
    """All of MultiNLI's cached features under ``folder`` (= <data_path>/multinli), in
    metadata row order (train, dev matched, dev mismatched).

    Returns ``input_ids``, ``input_mask``, ``segment_ids``: long [n, 128], and
    ``label_ids``: long [n]. The reference stacks the first three as x = [n, 128, 3].
    """
    records = []
    for name in MULTINLI_CACHED_FEATURES:
        print(f"reading {name}", file=sys.stderr)
        path = require_file(Path(folder) / CACHED_FEATURES_DIR / name, "cached features file",
                            download_hint(Path(folder).parent, "multinli"))
        records += load_cached_features(path)
    columns = {field: [getattr(record, field) for record in records]
               for field in ("input_ids", "input_mask", "segment_ids", "label_id")}
    return {"input_ids": torch.tensor(columns["input_ids"], dtype=torch.long),
            "input_mask": torch.tensor(columns["input_mask"], dtype=torch.long),
            "segment_ids": torch.tensor(columns["segment_ids"], dtype=torch.long),
            "label_ids": torch.tensor(columns["label_id"], dtype=torch.long)}

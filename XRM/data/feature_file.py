"""The precomputed features file: ``{'tr'|'va'|'te': {'x': float[n,d], 'y': long[n,1], 'm': long[n,1]}}``.

``m`` is the true attribute a; rows follow the metadata order within each split. The
reference code reads the same file. Writing checks the layout strictly; reading is what
training does, into split tensors.
"""
from pathlib import Path

import torch

from XRM.data.base import SPLITS, SplitTensors
from XRM.data.files import download_hint, require_file
from XRM.errors import UserError
from XRM.fileio import atomic_torch_save

#: the file's name in an image dataset's folder
FEATURES_FILE = "features.pt"


def _check(features: dict, origin: str) -> None:
    if set(features) != set(SPLITS):
        raise ValueError(f"{origin}: splits {sorted(features)}, expected {list(SPLITS)}")
    width = None
    for split in SPLITS:
        part = features[split]
        x, y, m = part["x"], part["y"], part["m"]
        n = x.shape[0]
        if x.dim() != 2 or not x.is_floating_point():
            raise ValueError(f"{origin}: {split}.x must be float [n, d], got {x.dtype} {tuple(x.shape)}")
        for key, column in (("y", y), ("m", m)):
            if column.shape != (n, 1) or column.dtype != torch.long:
                raise ValueError(f"{origin}: {split}.{key} must be long [{n}, 1], got {column.dtype} "
                                 f"{tuple(column.shape)}")
        if width is not None and x.shape[1] != width:
            raise ValueError(f"{origin}: feature widths differ between splits")
        width = x.shape[1]


def save_feature_file(features: dict[str, dict[str, torch.Tensor]], path: Path) -> None:
    """Check the layout above (ValueError if wrong) and save it atomically to ``path``."""
    _check(features, str(path))
    atomic_torch_save({split: {key: features[split][key].cpu() for key in ("x", "y", "m")}
                       for split in SPLITS}, path)


def load_features_file(path: Path, download_name: str, fix: str | None = None) -> dict[str, SplitTensors]:
    """Read a features file into split tensors (``m`` becoming the attribute ``a``).

    Missing or malformed files raise a UserError that names the download command
    producing them (or says ``fix``).
    """
    fix = fix or download_hint(path.parent.parent, download_name, features=True)
    require_file(path, "features file", fix)
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
        splits = {s: SplitTensors(content[s]["x"].float(), content[s]["y"], content[s]["m"]) for s in SPLITS}
    except Exception as exc:  # any unreadable or misshapen file gets the same advice
        raise UserError(f"cannot read features file {path} ({type(exc).__name__}: {exc}); {fix}") from None
    return splits

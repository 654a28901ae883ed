"""The precomputed features file: ``{'tr'|'va'|'te': {'x': float[n,d], 'y': long[n,1], 'm': long[n,1]}}``.

``m`` is the true attribute a; rows follow the metadata order within each split. The
reference code reads the same file.
"""
from pathlib import Path

import torch

from XRM.errors import UserError
from XRM.fileio import atomic_torch_save

FEATURE_SPLITS = ("tr", "va", "te")


def _check(features: dict, origin: str) -> None:
    if set(features) != set(FEATURE_SPLITS):
        raise ValueError(f"{origin}: splits {sorted(features)}, expected {list(FEATURE_SPLITS)}")
    width = None
    for split in FEATURE_SPLITS:
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
                       for split in FEATURE_SPLITS}, path)


def load_feature_file(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Read a features file; raises UserError naming it when missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no features file {path}: run `python download.py --features --data_path <data> <dataset>`")
    features = torch.load(path, map_location="cpu", weights_only=True)
    try:
        _check(features, str(path))
    except (ValueError, KeyError, AttributeError) as error:
        raise UserError(f"{path} is not a features file ({error}): delete it and re-run download.py --features") from error
    return features

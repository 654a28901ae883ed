"""The precomputed features file: ``{'tr'|'va'|'te': {'x': float[n,d], 'y': long[n,1], 'm': long[n,1]}}``.

``m`` is the true attribute a; rows follow the metadata order within each split. The
reference code reads the same file. Writing checks the layout strictly; reading is what
training does, into split tensors.
"""
from pathlib import Path

import torch

from XRM.common.errors import UserError
from XRM.common.fileio import atomic_torch_save
from XRM.data.base import SPLITS, SplitTensors
from XRM.data.files import download_hint, require_file

#: the file's name in an image dataset's folder
FEATURES_FILE = "features.pt"


def content_problem(content: object, num_classes: int | None = None) -> str | None:
    """What is wrong with a features file's content, as one line naming the split; None if nothing.

    Checked: the documented dict, float inputs [n, d] of one width, long labels and
    attributes [n, 1] >= 0 (labels < ``num_classes`` when known), no empty split, at least
    two classes per split (worst-group accuracy compares them), only finite inputs.
    """
    if not isinstance(content, dict) or set(content) != set(SPLITS):
        found = sorted(map(str, content)) if isinstance(content, dict) else type(content).__name__
        return f"is not a features file: expected a dict with splits {list(SPLITS)}, each {{'x', 'y', 'm'}}; got {found}"
    width = None
    for split in SPLITS:
        part = content[split]
        if not isinstance(part, dict) or not all(isinstance(part.get(key), torch.Tensor) for key in ("x", "y", "m")):
            return f"split '{split}' must be a dict with tensors 'x', 'y' and 'm'"
        x, y, m = part["x"], part["y"], part["m"]
        if x.dim() != 2 or not x.is_floating_point():
            return f"{split}.x must be float [n, d], got {x.dtype} {tuple(x.shape)}"
        n = x.shape[0]
        if n == 0:
            return f"split '{split}' is empty"
        for key, column in (("y", y), ("m", m)):
            if column.shape != (n, 1) or column.dtype != torch.long:
                return f"{split}.{key} must be long [{n}, 1], got {column.dtype} {tuple(column.shape)}"
            if int(column.min()) < 0:
                return f"{split}.{key} has negative values; labels and attributes are 0, 1, ..."
        if num_classes is not None and int(y.max()) >= num_classes:
            return f"{split}.y has label {int(y.max())}; this dataset's labels are 0 .. {num_classes - 1}"
        if width is not None and x.shape[1] != width:
            return f"feature widths differ between splits: {split}.x has {x.shape[1]}, tr.x has {width}"
        width = x.shape[1]
        if len(torch.unique(y)) < 2:
            return f"split '{split}' holds one class (y = {int(y[0])}); worst-group accuracy needs two"
        bad = int((~torch.isfinite(x)).sum())
        if bad:
            return f"{split}.x has {bad} non-finite values (NaN or Inf)"
    return None


def save_feature_file(features: dict[str, dict[str, torch.Tensor]], path: Path) -> None:
    """Check the layout above (ValueError if wrong) and save it atomically to ``path``."""
    problem = content_problem(features)
    if problem is not None:
        raise ValueError(f"{path}: {problem}")
    atomic_torch_save({split: {key: features[split][key].cpu() for key in ("x", "y", "m")}
                       for split in SPLITS}, path)


def load_features_file(path: Path, download_name: str, fix: str | None = None,
                       num_classes: int | None = None) -> dict[str, SplitTensors]:
    """Read and check a features file into split tensors (``m`` becoming the attribute ``a``).

    A missing, unreadable or malformed file raises a one-line UserError naming the file, the
    split and what is wrong, and the download command that makes the file (or ``fix``).
    """
    fix = fix or download_hint(path.parent.parent, download_name, features=True)
    require_file(path, "features file", fix)
    if path.is_dir():
        raise UserError(f"features file {path} is a folder; {fix}")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file gets the same advice, without torch's own
        raise UserError(f"cannot read features file {path}: not a torch file of tensors ({type(exc).__name__}); "
                        f"{fix}") from None
    problem = content_problem(content, num_classes)
    if problem is not None:
        raise UserError(f"features file {path}: {problem}; {fix}")
    return {s: SplitTensors(content[s]["x"].float(), content[s]["y"], content[s]["m"]) for s in SPLITS}

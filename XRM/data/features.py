"""Reading precomputed backbone features (``features.pt``, DESIGN.md's format) into split tensors."""
from pathlib import Path

import torch

from XRM.data.base import SPLITS, SplitTensors
from XRM.errors import UserError


def load_features_file(path: Path, download_name: str, fix: str | None = None) -> dict[str, SplitTensors]:
    """Read a features.pt file ``{'tr'|'va'|'te': {'x', 'y', 'm'}}`` into split tensors.

    ``m`` is the true attribute. Missing or malformed files raise a UserError that names
    the download command producing them (or says ``fix``).
    """
    fix = fix or f"run: python download.py --features --data_path {path.parent.parent} {download_name}"
    if not path.is_file():
        raise UserError(f"missing features file {path}; {fix}")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
        splits = {s: SplitTensors(content[s]["x"].float(), content[s]["y"], content[s]["m"]) for s in SPLITS}
    except Exception as exc:  # any unreadable or misshapen file gets the same advice
        raise UserError(f"cannot read features file {path} ({type(exc).__name__}: {exc}); {fix}") from None
    return splits

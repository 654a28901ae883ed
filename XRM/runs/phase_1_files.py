"""The phase-1 file ``inferred_hpcomb_<k>_seed<s>.pt``: inferred attributes and held-out logits, written and read back.

What goes into it is the phase-1 algorithm's (XRM.algorithms.xrm: cross-mistakes, degeneracy).
"""
from pathlib import Path

import torch

from XRM.common.errors import UserError
from XRM.common.fileio import atomic_torch_save

#: the phase-1 artifact's keys: inferred attributes of the training and validation
#: examples, and every training example's held-out logits
TRAIN_ATTRIBUTES, VALIDATION_ATTRIBUTES, HELD_OUT_LOGITS = "tr", "va", "tr_ho"


def save_phase_1_artifact(path: Path, train_attributes: torch.Tensor, validation_attributes: torch.Tensor,
                          held_out_logits: torch.Tensor) -> None:
    """Write ``inferred_hpcomb_<k>_seed<s>.pt`` (CPU tensors; logits as float32), atomically."""
    atomic_torch_save({TRAIN_ATTRIBUTES: train_attributes.long().cpu(), VALIDATION_ATTRIBUTES: validation_attributes.long().cpu(),
                       HELD_OUT_LOGITS: held_out_logits.float().cpu()}, path)


def load_phase_1_artifact(path: Path, n_train: int, n_validation: int, num_classes: int) -> dict[str, torch.Tensor]:
    """Read and check an ``inferred_hpcomb_<k>_seed<s>.pt`` file against the dataset's sizes.

    Returns ``{'tr': long[n_tr], 'va': long[n_va], 'tr_ho': float[n_tr, K]}`` on the CPU
    (``tr_ho`` only when present and not None). Any mismatch raises a UserError naming the file.
    """
    if not path.is_file():
        raise UserError(f"missing phase-1 file {path}; run phase 1 first: python main.py --phase 1 ...")
    try:
        artifact = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"cannot read group-label file {path} ({type(exc).__name__}); re-run phase 1 or pass another file") from None
    if not isinstance(artifact, dict) or TRAIN_ATTRIBUTES not in artifact or VALIDATION_ATTRIBUTES not in artifact:
        raise UserError(f"group-label file {path} must hold a dict with '{TRAIN_ATTRIBUTES}' and "
                        f"'{VALIDATION_ATTRIBUTES}' tensors")
    expected = {TRAIN_ATTRIBUTES: (n_train,), VALIDATION_ATTRIBUTES: (n_validation,)}
    if artifact.get(HELD_OUT_LOGITS) is not None:  # the XRM repository's own files hold None there
        expected[HELD_OUT_LOGITS] = (n_train, num_classes)
    checked = {}
    for key, shape in expected.items():
        value = torch.as_tensor(artifact[key])
        if key != HELD_OUT_LOGITS:
            value = value.reshape(-1) if value.numel() == shape[0] else value
        if tuple(value.shape) != shape:
            raise UserError(
                f"group-label file {path}: '{key}' has shape {tuple(value.shape)} but this dataset needs {shape}; "
                "was it made for another dataset?")
        if key == HELD_OUT_LOGITS and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise UserError(f"phase-1 file {path}: '{key}' has {bad} non-finite values (NaN or Inf); "
                            "re-run phase 1 for this dataset")
        checked[key] = value.float() if key == HELD_OUT_LOGITS else value.long()
    return checked

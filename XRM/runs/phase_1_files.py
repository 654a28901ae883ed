"""The phase-1 file ``inferred_hpcomb_<k>_seed<s>.pt``: inferred attributes and held-out logits, written and read back.

What goes into it is the phase-1 algorithm's (XRM.algorithms.xrm: cross-mistakes, degeneracy;
XRM.algorithms.eiil: inferred environments, and ``tr_ho`` None).
A file read back (a phase-1 file, or any ``--group_labels`` file) is checked as phase 1 checks
what it writes: integer attributes 0 .. n_tr - 1 (at most one value per training example, and
never negative: -1 would make groups collide), every class of either split in two non-empty
groups (:func:`XRM.algorithms.xrm.is_degenerate`), finite held-out logits.
"""
from pathlib import Path
from typing import Any

import torch

from XRM.algorithms.xrm import is_degenerate
from XRM.common.commands import command
from XRM.common.errors import UserError
from XRM.common.fileio import atomic_torch_save

#: the phase-1 artifact's keys: inferred attributes of the training and validation
#: examples, and every training example's held-out logits
TRAIN_ATTRIBUTES, VALIDATION_ATTRIBUTES, HELD_OUT_LOGITS = "tr", "va", "tr_ho"
#: how a bad file is fixed, said at the end of its error line
REMAKE = "re-run phase 1 for this dataset, or pass another file"


def save_phase_1_artifact(path: Path, train_attributes: torch.Tensor, validation_attributes: torch.Tensor,
                          held_out_logits: torch.Tensor | None) -> None:
    """Write ``inferred_hpcomb_<k>_seed<s>.pt`` (CPU tensors; logits as float32, or None where the
    algorithm has no held-out logits, as EIIL), atomically."""
    logits = None if held_out_logits is None else held_out_logits.float().cpu()
    atomic_torch_save({TRAIN_ATTRIBUTES: train_attributes.long().cpu(), VALIDATION_ATTRIBUTES: validation_attributes.long().cpu(),
                       HELD_OUT_LOGITS: logits}, path)


def _numbers(path: Path, key: str, value: Any) -> torch.Tensor:
    """``value`` as a real-valued tensor; a UserError naming the file and key when it holds none."""
    try:
        tensor = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        tensor = None
    if tensor is None or tensor.is_complex():
        raise UserError(f"group-label file {path}: '{key}' is a {type(value).__name__}, not a tensor of numbers; "
                        f"{REMAKE}")
    return tensor


def _shaped(path: Path, key: str, value: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """``value`` in ``shape`` (a column of attributes flattened); a UserError when it is of another size."""
    if len(shape) == 1 and value.numel() == shape[0]:
        value = value.reshape(-1)
    if tuple(value.shape) != shape:
        raise UserError(f"group-label file {path}: '{key}' has shape {tuple(value.shape)} but this dataset needs "
                        f"{shape}; was it made for another dataset?")
    return value


def _attributes(path: Path, key: str, value: torch.Tensor, n_train: int) -> torch.Tensor:
    """``value`` as long attributes; a UserError unless every one is an integer 0 .. n_train - 1."""
    if value.is_floating_point():
        fractional = ~torch.isfinite(value) | (value != value.round())
        if bool(fractional.any()):
            raise UserError(f"group-label file {path}: '{key}' holds {value[fractional][0].item()}, but attributes "
                            f"are integers (group ids); {REMAKE}")
    value = value.long()
    if len(value) and int(value.min()) < 0:
        raise UserError(f"group-label file {path}: '{key}' holds the attribute {int(value.min())}; attributes are "
                        f"integers >= 0 (a negative one makes groups collide); {REMAKE}")
    if len(value) and int(value.max()) >= n_train:
        raise UserError(f"group-label file {path}: '{key}' holds the attribute {int(value.max())}, but there are "
                        f"{n_train} training examples: attributes lie in 0 .. {n_train - 1}; {REMAKE}")
    return value


def _held_out_logits(path: Path, value: torch.Tensor) -> torch.Tensor:
    """``value`` as float32 logits; a UserError when some are NaN or Inf."""
    if not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        raise UserError(f"phase-1 file {path}: '{HELD_OUT_LOGITS}' has {bad} non-finite values (NaN or Inf); "
                        "re-run phase 1 for this dataset")
    return value.float()


def _check_not_degenerate(path: Path, checked: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> None:
    """A UserError when some class of a split is not split in two groups (XRM's degeneracy rule)."""
    for key, y in labels.items():
        if is_degenerate(y, checked[key]):
            raise UserError(f"group-label file {path}: its '{key}' groups are degenerate (some class is not split "
                            "into two non-empty groups; all-zero attributes are): phase 1 writes no such file; "
                            f"{REMAKE}, or give --group_labels yes")


def load_phase_1_artifact(path: Path, train_y: torch.Tensor, validation_y: torch.Tensor,
                          num_classes: int) -> dict[str, torch.Tensor]:
    """Read and check an ``inferred_hpcomb_<k>_seed<s>.pt`` file against the dataset's labels
    ``train_y`` [n_tr] and ``validation_y`` [n_va] (see the module docstring).

    Returns ``{'tr': long[n_tr], 'va': long[n_va], 'tr_ho': float[n_tr, K]}`` on the CPU
    (``tr_ho`` only when present and not None). Any problem raises a UserError naming the file.
    """
    if not path.is_file():
        raise UserError(f"missing phase-1 file {path}; run phase 1 first: {command('train')} --phase 1 ...")
    try:
        artifact = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"cannot read group-label file {path} ({type(exc).__name__}); re-run phase 1 or pass another file") from None
    if not isinstance(artifact, dict) or TRAIN_ATTRIBUTES not in artifact or VALIDATION_ATTRIBUTES not in artifact:
        raise UserError(f"group-label file {path} must hold a dict with '{TRAIN_ATTRIBUTES}' and "
                        f"'{VALIDATION_ATTRIBUTES}' tensors")
    labels = {TRAIN_ATTRIBUTES: train_y.cpu(), VALIDATION_ATTRIBUTES: validation_y.cpu()}
    checked = {key: _attributes(path, key, _shaped(path, key, _numbers(path, key, artifact[key]), (len(y),)),
                                len(train_y))
               for key, y in labels.items()}
    if artifact.get(HELD_OUT_LOGITS) is not None:  # the XRM repository's own files and EIIL's hold None there
        logits = _numbers(path, HELD_OUT_LOGITS, artifact[HELD_OUT_LOGITS])
        checked[HELD_OUT_LOGITS] = _held_out_logits(path, _shaped(path, HELD_OUT_LOGITS, logits,
                                                                  (len(train_y), num_classes)))
    _check_not_degenerate(path, checked, labels)
    return checked

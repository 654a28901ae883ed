"""A run's checkpoint (its last saved training state) and its best model, written atomically.

``ckpt_hpcomb_<k>_seed<s>.pt``: {step, model, optimizer, algorithm_state, best, hparams,
identity, rng}; ``model`` is the network's state_dict, ``best`` = {metric, value, step} of the best
evaluation so far. ``best_hpcomb_<k>_seed<s>.pt``: {model, metric, value, step, hparams}.
Best files are written before the checkpoint that refers to them. A stack's checkpoints are saved
as one (:func:`save_pending_checkpoint`): a kill between two of them must not leave its runs at different
steps, which would resume them in other stacks (other shapes, other last bits) than an unbroken run's.
"""
import os
from pathlib import Path
from typing import Any

import torch

from XRM.common.errors import UserError
from XRM.common.fileio import atomic_torch_save
from XRM.results.records import RunFiles
from XRM.runs.identity import IDENTITY, identity_differences


#: a pending checkpoint's key: its stack's last pending checkpoint (relative to the run's folder), there
#: until every checkpoint of the stack is in place
PENDING_COMMIT = "pending_commit"


def save_pending_checkpoint(files: RunFiles, state: dict[str, Any], last: RunFiles) -> None:
    """Write the run's checkpoint as its pending checkpoint, in a stack whose last run is ``last``.

    A stack's checkpoints are saved as one: each written pending, the last run's last, then each moved into
    place, the last run's last (:func:`commit_checkpoints`). A kill while they are written leaves the last
    pending checkpoint absent and every run's previous checkpoint in place; a kill while they are moved leaves
    it there. :func:`settle_pending_checkpoints` then drops or finishes them: the runs resume from one step."""
    commit = os.path.relpath(last.pending_checkpoint, files.directory)
    atomic_torch_save({**state, PENDING_COMMIT: commit}, files.pending_checkpoint)


def commit_checkpoints(runs: list[RunFiles]) -> None:
    """Move the pending checkpoints of a stack's ``runs`` (every one written) into place, the last last."""
    for files in runs:
        os.replace(files.pending_checkpoint, files.checkpoint)


def settle_pending_checkpoints(runs: list[RunFiles]) -> None:
    """The pending checkpoints a killed save left among ``runs`` (locked by this process): moved into place
    where their stack's last pending checkpoint is there (all were written), else deleted; the last ones
    last, so that a kill here leaves the decision as it was."""
    # mapped, not read: only the key is wanted (a BERT run's checkpoint is over a gigabyte)
    pending = [(files, files.directory / _load(files.pending_checkpoint, "pending checkpoint", mmap=True,
                                               deleted="delete it to resume the run from its last checkpoint")
                [PENDING_COMMIT]) for files in runs if files.pending_checkpoint.exists()]
    commits = {os.path.realpath(commit) for _, commit in pending}
    for files, commit in sorted(pending, key=lambda item: os.path.realpath(item[0].pending_checkpoint) in commits):
        if commit.exists():
            os.replace(files.pending_checkpoint, files.checkpoint)
        else:
            files.pending_checkpoint.unlink()


def save_best(files: RunFiles, model: dict, best: dict, hparams: dict) -> None:
    """Write the run's best model with the evaluation it was chosen at."""
    atomic_torch_save({"model": model, **best, "hparams": hparams}, files.best_checkpoint)


def _load(path: Path, what: str, mmap: bool = False,
          deleted: str = "delete it to restart the run from step 0") -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:
        raise UserError(f"{what} {path} is unreadable ({type(exc).__name__}); {deleted}") from None


def load_checkpoint(spec, identity: dict) -> dict:
    """Run ``spec``'s checkpoint; a UserError when unreadable or written by another run (its
    identity, XRM.runs.identity; checkpoints of older versions: their hyper-parameters)."""
    files = spec.files
    checkpoint = _load(files.checkpoint, "checkpoint")
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise UserError(f"checkpoint {files.checkpoint} is from an older version of this toolkit; delete it to "
                        "restart the run from step 0")
    recorded = checkpoint.get(IDENTITY) or {"hparams": checkpoint.get("hparams")}
    differences = identity_differences(recorded, identity)
    if differences:
        raise UserError(f"{files.checkpoint} was written by another run ({'; '.join(differences)}); resume with "
                        "the same options, or delete it to start this run over")
    return checkpoint


def load_best_model(files: RunFiles) -> dict | None:
    """The best model saved so far, or None."""
    if not files.best_checkpoint.exists():
        return None
    return _load(files.best_checkpoint, "best model")["model"]


def rng_states() -> dict[str, Any]:
    """The global RNG states (dropout in backbones draws from them)."""
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Restore :func:`rng_states`."""
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])

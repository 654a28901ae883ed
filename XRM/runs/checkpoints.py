"""A run's checkpoint (its last saved training state) and its best model, written atomically.

``ckpt_hpcomb_<k>_seed<s>.pt``: {step, model, optimizer, algorithm_state, best, hparams,
identity, rng}; ``model`` is the network's state_dict, ``best`` = {metric, value, step} of the best
evaluation so far. ``best_hpcomb_<k>_seed<s>.pt``: {model, metric, value, step, hparams}.
Best files are written before the checkpoint that refers to them.
"""
from pathlib import Path
from typing import Any

import torch

from XRM.common.errors import UserError
from XRM.common.fileio import atomic_torch_save
from XRM.results.records import RunFiles
from XRM.runs.identity import IDENTITY, identity_differences


def save_checkpoint(files: RunFiles, state: dict[str, Any]) -> None:
    """Write the run's checkpoint."""
    atomic_torch_save(state, files.checkpoint)


def save_best(files: RunFiles, model: dict, best: dict, hparams: dict) -> None:
    """Write the run's best model with the evaluation it was chosen at."""
    atomic_torch_save({"model": model, **best, "hparams": hparams}, files.best_checkpoint)


def _load(path: Path, what: str) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"{what} {path} is unreadable ({type(exc).__name__}); delete it to restart the run "
                        "from step 0") from None


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

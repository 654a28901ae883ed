"""A run's identity: what makes its files its own, declared once and checked wherever they are reused.

A run's results header and checkpoint name the run: algorithm, dataset and a fingerprint of its
data, group-label source and the fingerprint of a phase-1 file it reads (its groups, MAT's
held-out logits), precision, hyper-parameters, combination, seed, and the toolkit's version.
Skipping a run as done, resuming it and selecting it compare the identity its files record with
the one the command asks for (XRM.runs.inputs, XRM.results.collect); the version is recorded,
not compared, so that results survive an upgrade.
"""
import hashlib
from pathlib import Path
from typing import Any

import torch

import XRM
from XRM.data.base import SplitTensors

#: the key of the identity in a results header and in a checkpoint
IDENTITY = "identity"
#: recorded for provenance, not compared
NOT_COMPARED = ("version",)
#: hex digits of a fingerprint (64 bits: tells files apart, not a security property)
FINGERPRINT_DIGITS = 16


def fingerprint_tensors(tensors: list[torch.Tensor]) -> str:
    """A fingerprint of tensors' shapes, dtypes and values (CPU or device; read on the CPU)."""
    digest = hashlib.blake2b(digest_size=FINGERPRINT_DIGITS // 2)
    for tensor in tensors:
        values = tensor.detach().cpu().contiguous()
        digest.update(f"{values.dtype}{tuple(values.shape)}".encode())
        if values.numel():
            digest.update(values.view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def fingerprint_splits(splits: dict[str, SplitTensors]) -> str:
    """The data's fingerprint: every split's labels, attributes and tensor inputs (features, tokens;
    inputs read from disk are represented by their labels and attributes)."""
    tensors = []
    for name in sorted(splits):
        split = splits[name]
        tensors += [split.y, split.a] + ([split.x] if isinstance(split.x, torch.Tensor) else [])
    return fingerprint_tensors(tensors)


_FILE_FINGERPRINTS: dict[tuple[str, int, int], str] = {}


def fingerprint_file(path: str | Path) -> str:
    """A fingerprint of a file's bytes (cached by path, size and modification time)."""
    stat = Path(path).stat()
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_FINGERPRINTS:
        digest = hashlib.blake2b(digest_size=FINGERPRINT_DIGITS // 2)
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _FILE_FINGERPRINTS[key] = digest.hexdigest()
    return _FILE_FINGERPRINTS[key]


def run_identity(spec, data_fingerprint: str, hparams: dict[str, Any]) -> dict[str, Any]:
    """The identity of run ``spec`` (a RunSpec) on data of ``data_fingerprint`` with ``hparams``."""
    group_labels_file = None if spec.group_labels in ("yes", "no") else fingerprint_file(spec.group_labels)
    return {
        "algorithm": spec.algorithm,
        "dataset": Path(spec.out_dir).parent.name,
        "data": data_fingerprint,
        "group_labels": Path(spec.out_dir).name.removeprefix("group_labels_"),
        "group_labels_file": group_labels_file,
        "phase_1_file": None if spec.phase_1_file is None else fingerprint_file(spec.phase_1_file),
        "dtype": spec.dtype,
        "hparams": hparams,
        "hparams_comb": spec.hparams_comb,
        "seed": spec.seed,
        "version": XRM.__version__,
    }


def identity_differences(recorded: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """What differs between a recorded identity and the wanted one, as 'key recorded -> wanted'
    (hyper-parameters one by one); keys one of them lacks (older files) are not compared."""
    differences = []
    for key in sorted(set(recorded) & set(wanted) - set(NOT_COMPARED)):
        old, new = recorded[key], wanted[key]
        if key == "hparams" and isinstance(old, dict) and isinstance(new, dict):
            differences += [f"{name} {old[name]!r} -> {new[name]!r}" for name in sorted(set(old) & set(new))
                            if old[name] != new[name]]
        elif old != new:
            differences.append(f"{key} {old!r} -> {new!r}")
    return differences

"""Figure 1 over several noise scales: how ERM's and MAT's minority test accuracy change with sigma.

For each sigma, the Figure 1 runs "ERM_sigma" and "MAT_sigma" (mat/figures/interpretable.py)
train at that noise scale, everything else as in Figure 1. At sigma = 0 every run (the XRM
twins too) trains at ``lr_sigma0``, the learning rate of Figure 1's ERM without noise.
"""
import dataclasses
import math
from collections.abc import Sequence

import torch

from mat.figures.interpretable import InterpretableConfig, StepCallback, run
from XRM.common.errors import UserError

#: sigma_sweep.json's algorithms -> the Figure 1 run each one is
SWEEP_RUNS = {"ERM": "ERM_sigma", "MAT": "MAT_sigma"}


def check_sigmas(sigmas: Sequence[float]) -> None:
    """A UserError naming the first sigma that cannot run (negative, NaN, infinite) or a repeated one."""
    for sigma in sigmas:
        if not (math.isfinite(sigma) and sigma >= 0):
            raise UserError(f"--sigmas has {sigma}: every sigma must be a finite number >= 0")
    if len(set(sigmas)) != len(sigmas):
        raise UserError(f"--sigmas {' '.join(f'{s:g}' for s in sigmas)} repeats a value: give each sigma once")


def config_at(config: InterpretableConfig, sigma: float) -> InterpretableConfig:
    """``config`` at noise scale ``sigma`` (at 0: every run at lr_sigma0)."""
    return dataclasses.replace(config, sigma=sigma, lr=config.lr_sigma0 if sigma == 0 else config.lr)


def sweep_epochs(config: InterpretableConfig, sigmas: Sequence[float]) -> int:
    """Full-batch steps of the whole sweep, for a progress bar: per sigma, ERM, the twins and MAT."""
    return len(sigmas) * (2 * config.epochs + config.xrm_epochs)


def run_sigma_sweep(config: InterpretableConfig, sigmas: Sequence[float], device: torch.device,
                    on_step: StepCallback = lambda: None) -> dict[str, list[dict[str, float]]]:
    """sigma_sweep.json's content: per algorithm, one entry per sigma (in the order given) with
    ``sigma`` and the final model's accuracies (maj_tr, min_tr, maj_te, min_te); MAT's also
    give its twins' ``xrm_flip_rate``, ``xrm_precision`` and ``xrm_recall`` for the minority."""
    sweep: dict[str, list[dict[str, float]]] = {algorithm: [] for algorithm in SWEEP_RUNS}
    for sigma in sigmas:
        for algorithm, name in SWEEP_RUNS.items():
            result, twins = run(name, config_at(config, sigma), device, on_step)
            entry = result.metrics()
            if twins is not None:
                entry.update(xrm_flip_rate=twins.flip_rate, xrm_precision=twins.precision, xrm_recall=twins.recall)
            sweep[algorithm].append(entry)
    return sweep

"""MAT, the paper's method, as an algorithm of XRM's engine: its class, search space and bounds.

Memorization-Aware Training (Bayat, Pezeshki et al., ICLR 2025, Algorithm 1) trains on the
cross-entropy of f(x) + log p_ho(. | x), the shift built once from phase 1's held-out logits
(:func:`mat.shift.memorization_aware_shift`). Importing this module registers MAT in XRM's
algorithm registry (``import mat`` does), so main.py, sweeps and launched jobs train it by name.
"""
import torch

from mat.shift import memorization_aware_shift
from XRM.algorithms.base import (Algorithm, RunData, State, gather_rows, masked_mean, per_example_cross_entropy,
                                 register_algorithm)
from XRM.common.search_space import POSITIVE, choice


@register_algorithm("MAT")
class MAT(Algorithm):
    """Memorization-Aware Training: cross-entropy of f(x) + log p_ho(. | x) (Algorithm 1).

    The shift is computed once over the whole training set from the phase-1 held-out
    logits; it is a constant per example and is used in training only.
    """

    needs_held_out_logits = True
    #: tau, the temperature of the held-out softmax (PAPER_FACTS.md, "Training protocol")
    search_space = {"tau": (0.1, choice([0.001, 0.01, 0.1]))}
    hparam_bounds = {"tau": POSITIVE}

    def initial_state(self, run: RunData) -> State:
        """The shift log p_ho(. | x_i) of every training example (and a zero padding row)."""
        if run.held_out_logits is None:
            raise ValueError("MAT needs the held-out logits of phase 1")
        shift = memorization_aware_shift(run.held_out_logits, run.y, run.hparams["tau"])
        return {"shift": torch.cat([shift, shift.new_zeros(1, shift.shape[1])])}

    def loss(self, logits, batch, state, hparams):
        """Cross-entropy of the shifted logits."""
        shifted = logits + gather_rows(state["shift"], batch.index).to(logits.dtype)
        return masked_mean(per_example_cross_entropy(shifted, batch.y), batch.mask), state

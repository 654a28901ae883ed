"""The paper's own contribution, built on the XRM toolkit: Memorization-Aware Training.

Bayat, Pezeshki et al., "The Pitfalls of Memorization: When Memorization Hurts Generalization"
(ICLR 2025). Importing ``mat`` registers the MAT algorithm in XRM's registry (mat/algorithm.py),
so main.py, sweeps and the jobs launchers start train it by name.

The public API, tensors in and tensors out, no files:

- :func:`infer_groups`: XRM (phase 1) on your training tensors: every example's inferred group
  and held-out logits (re-exported from ``XRM.api``).
- :func:`memorization_aware_shift`: Algorithm 1's shift log p_ho(y | x_i) from held-out logits.
- :class:`MATLoss`: the cross-entropy of your model's logits plus that shift, for any training loop.
- :func:`memorization_scores`: per-example memorisation scores (Feldman & Zhang, 2020) from
  models trained on random halves.

These are the functions and classes main.py trains with, not copies.
"""
from mat import algorithm  # noqa: F401  (registers MAT)
from mat.loss import MATLoss
from mat.memorization import memorization_scores, random_halves
from mat.shift import memorization_aware_shift
from XRM.api import InferredGroups, infer_groups

__all__ = ["InferredGroups", "MATLoss", "infer_groups", "memorization_aware_shift", "memorization_scores",
           "random_halves"]

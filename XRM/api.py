"""MAT and XRM in your own PyTorch code: tensors in, tensors out, no files.

- :func:`infer_groups`: XRM (phase 1) on your training tensors, with a linear head on
  features or any model your factory makes: every example's inferred group and held-out logits.
- :func:`memorization_aware_shift`: Algorithm 1's shift log p_ho(y | x_i) from held-out
  logits and labels.
- :class:`MATLoss`: the cross-entropy of your model's logits plus that shift, for any
  training loop (index your batches by their examples' positions in the training set).
- :func:`memorization_scores`: per-example memorisation scores (Feldman & Zhang, 2020) from
  models trained on random halves.

These are the functions and classes main.py trains with, not copies.
"""
from XRM.mat_loss import MATLoss
from XRM.mat_shift import memorization_aware_shift
from XRM.memorization import memorization_scores, random_halves
from XRM.xrm_inference import InferredGroups, infer_groups

__all__ = ["InferredGroups", "MATLoss", "infer_groups", "memorization_aware_shift", "memorization_scores",
           "random_halves"]

"""XRM in your own PyTorch code: tensors in, tensors out, no files.

- :func:`infer_groups`: XRM (phase 1) on your training tensors, with a linear head on
  features or any model your factory makes: every example's inferred group and held-out logits
  (degenerate groups, a class left unsplit, also warn: :class:`DegenerateGroupsWarning`).

The paper's method, MAT (its loss, its shift and memorisation scores), is the ``mat``
package, which re-exports this function as ``mat.infer_groups``.
This is the function main.py's phase 1 trains with, not a copy.
"""
from XRM.runs.infer_groups import DegenerateGroupsWarning, InferredGroups, infer_groups

__all__ = ["DegenerateGroupsWarning", "InferredGroups", "infer_groups"]

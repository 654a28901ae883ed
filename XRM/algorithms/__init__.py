"""Training algorithms, one module per family; importing this package registers the built-in ones.

- ``base``: the contract every algorithm follows, the registry and the shared loss helpers.
- ``group_robust``: ERM, RWG, SUBG, GroupDRO, IRM (one network per run).
- ``xrm``: XRM, phase 1 (group inference by twins and cross-mistakes).
- ``eiil``: EIIL, phase 1 (an ERM reference model, environments that maximise its IRMv1 penalty).
- ``two_networks``: JTT, uLA, LfF (two networks per run, no group labels).
- ``last_layer``: DFR, AFR and AFR's base model (a linear head retrained).
- ``bam``: BAM (bias amplification by per-example auxiliary logits, then JTT-like up-weighting).
- ``dpe``: DPE (an ensemble of diverse prototype classifiers on a trained model's embeddings).

MAT, the paper's method, lives in the ``mat`` package and registers itself when ``mat`` is imported.
"""
from XRM.algorithms import bam, dpe, eiil, group_robust, last_layer, two_networks, xrm  # noqa: F401  (registers them)
from XRM.algorithms.base import (ALGORITHMS, PHASE_1_GROUP_LABELS, Algorithm, Batch, GroupInference, RunData, State,
                                 check_group_labels, get_algorithm_class, register_algorithm)

__all__ = ["ALGORITHMS", "PHASE_1_GROUP_LABELS", "Algorithm", "Batch", "GroupInference", "RunData", "State",
           "check_group_labels", "get_algorithm_class", "register_algorithm"]

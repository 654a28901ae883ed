"""EIIL (phase 1): Environment Inference for Invariant Learning (Creager, Jacobsen & Zemel, ICML 2021).

A run trains a reference model with plain ERM (the loss is the mean cross-entropy); at the end of
phase 1, :meth:`EIIL.infer_groups` splits the examples into the two environments that violate the
IRMv1 invariance principle most for that model: with q_i = sigmoid(u_i) the probability that
example i lies in environment 1, it maximises over u by gradient ascent (Adam)

    penalty(q) = sum over e of (d/dw R_e(w * f) at w = 1) ** 2,
    R_1(w) = mean_i q_i l_i(w),  R_0(w) = mean_i (1 - q_i) l_i(w),

where l_i(w) is the cross-entropy of the scaled logits w * f(x_i). The means are over all n
examples of the split, as in the authors' code (``(loss * q).mean()``). d l_i / d w at w = 1 is
sum_k (softmax(f_i)_k - [k = y_i]) f_ik, a number per example read from the final logits alone,
so the optimisation needs no network. The inferred attribute is a_i = [q_i > 0.5]; groups are (y, a).

Validation attributes (for ``va_gi_wga``) are inferred by the same rule on the validation
examples: the same reference model's validation logits, an assignment of their own. The
assignments start from N(0, 1) logits drawn from a generator seeded by the run's seed (at u = 0
the penalty's gradient vanishes), each run alone, so a stacked run infers what it infers alone.

EIIL has no held-out logits (no model that did not train on the example): its phase-1 file holds
``tr_ho`` None, so MAT cannot use an EIIL folder (it says so in one line); GroupDRO, DFR and the
other baselines take its groups. Phase-1 selection reads the final ``eiil_penalty`` (the
penalty of the hard split of the training examples; higher: the reference model is further from
invariant across the inferred environments), as XRM's reads its flip rate.
"""
import torch

from XRM.algorithms.base import Algorithm, GroupInference, RunData, State, register_algorithm
from XRM.algorithms.xrm import is_degenerate
from XRM.common.groups import one_hot
from XRM.common.search_space import POSITIVE, POSITIVE_INTEGER, fixed, log_uniform
from XRM.results.records import EIIL_PENALTY

#: the assignment's generator seed for the validation split, apart from the training split's
VALIDATION_SEED_OFFSET = 1_000_003


def scale_gradients(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d/dw CE(w * logits_i, y_i) at w = 1 for every example: logits [n, K], y [n] -> [n] (float64)."""
    logits = logits.double()
    residual = torch.softmax(logits, dim=-1) - one_hot(y, logits.shape[-1], logits.dtype)
    return (residual * logits).sum(dim=-1)


def irm_penalty(gradients: torch.Tensor, assignment: torch.Tensor) -> torch.Tensor:
    """The IRMv1 penalty of a soft split: sum over the two environments of the squared scale
    gradient of the environment's risk, mean over all n examples of q-weighted losses (authors' form).
    gradients [n], assignment q [n] in [0, 1] -> a 0-d tensor."""
    first = (gradients * assignment).mean()
    second = (gradients * (1 - assignment)).mean()
    return first ** 2 + second ** 2


def infer_environments(gradients: torch.Tensor, steps: int, lr: float, seed: int) -> torch.Tensor:
    """The soft assignment q [n] that maximises :func:`irm_penalty` after ``steps`` Adam steps of rate
    ``lr`` on its logits, which start from N(0, 1) drawn from a generator seeded by ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(len(gradients), generator=generator, dtype=torch.float64).requires_grad_()
    optimiser = torch.optim.Adam([logits], lr=lr)
    gradients = gradients.detach().double().cpu()
    for _ in range(steps):
        optimiser.zero_grad()
        (-irm_penalty(gradients, torch.sigmoid(logits))).backward()
        optimiser.step()
    return torch.sigmoid(logits.detach())


def hard_environments(logits: torch.Tensor, y: torch.Tensor, steps: int, lr: float,
                      seed: int) -> tuple[torch.Tensor, float]:
    """The inferred attribute [q > 0.5] (long [n]) of examples with reference logits [n, K] and
    labels [n], and the IRMv1 penalty of that hard split."""
    gradients = scale_gradients(logits, y.to(logits.device)).cpu()
    assignment = (infer_environments(gradients, steps, lr, seed) > 0.5).long()
    return assignment, float(irm_penalty(gradients, assignment.double()))


@register_algorithm("EIIL")
class EIIL(Algorithm):
    """Environment inference for invariant learning: an ERM reference model, then the two environments
    that maximise its IRMv1 penalty (see the module docstring)."""

    phase = 1
    accepted_group_labels = ("no",)
    phase_1_metric = EIIL_PENALTY
    # The authors' code runs 10000 Adam steps at lr 0.001 on the assignment logits.
    search_space = {"eiil_steps": (10000, fixed(10000)), "eiil_lr": (1e-3, log_uniform(-3, -2))}
    hparam_bounds = {"eiil_steps": POSITIVE_INTEGER, "eiil_lr": POSITIVE}

    def initial_state(self, run: RunData) -> State:
        """What the inference at the end reads: the run's seed and its eiil_steps and eiil_lr."""
        return {"seed": torch.tensor(run.seed, dtype=torch.long),
                "eiil_steps": torch.tensor(int(run.hparams["eiil_steps"]), dtype=torch.long),
                "eiil_lr": torch.tensor(float(run.hparams["eiil_lr"]), dtype=torch.float64)}

    def infer_groups(self, train_logits, state, train_y, validation_logits=None, validation_y=None):
        """Every run's environments on both splits (each split inferred on its own), no held-out
        logits, whether a class of either split is not split in two, and the training split's penalty."""
        inferred = []
        for run, run_logits in enumerate(train_logits):
            seed, steps = int(state["seed"][run]), int(state["eiil_steps"][run])
            lr = float(state["eiil_lr"][run])
            train_attributes, penalty = hard_environments(run_logits, train_y, steps, lr, seed)
            degenerate = is_degenerate(train_y.cpu(), train_attributes)
            validation_attributes = None
            if validation_logits is not None:
                validation_attributes, _ = hard_environments(validation_logits[run], validation_y, steps, lr,
                                                             seed + VALIDATION_SEED_OFFSET)
                degenerate = degenerate or is_degenerate(validation_y.cpu(), validation_attributes)
            inferred.append(GroupInference(train_attributes, None, degenerate, validation_attributes,
                                           metrics={EIIL_PENALTY: penalty}))
        return inferred

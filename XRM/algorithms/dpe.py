"""DPE: Diverse Prototypical Ensembles (To, Wilson, Nguyen et al., "Diverse Prototypical Ensembles
Improve Robustness to Subpopulation Shift", ICML 2025), as a phase-2 last-layer algorithm.

An ensemble of M prototype classifiers on a trained model's embeddings. Member m holds one
prototype p_mk per class k and a distance scale s_m; its logits are the IsoMax+ ones,
-|s_m| ||z^ - p^_mk|| (z^, p^: unit vectors). It trains with the cross-entropy of its logits times
the entropic scale E on its own balanced subset of the training data, plus
w ||p_mk||^2 (mean over classes) and a diversity penalty that decorrelates its prototypes from the
earlier members' (the authors' "inter-prototype similarity" loss):

    c_m |mean_k sum_{j<m} <p_mk, p_jk> / ((D - 1) (m + 1))|,   c_m = c / (1 + alpha (m - 1)).

The ensemble predicts the class of the highest mean, over members, of softmax(-|s_m| d_m)
(no entropic scale); its evaluation logits are the log of that mean.

Following the authors' code (their package's ``DPE`` class and IsoMax+ head, and their
scripts): the head and its loss (normalised embeddings and prototypes, Euclidean distance, the
learnable scale from 1, prototypes from N(0, 0.01^2), E = 30), M = 15 members, w = 10, the
diversity penalty as written above with the earlier members fixed, its weight c (5e4 by default;
their scripts pass 1e5 and 5e5) and its decay alpha = 0.05, SGD with momentum 0.9 at lr 1e-3 and
no weight decay, the ensemble rule, training on the validation set and a fresh random balanced
subset for every member: as many examples of every group as the smallest group has, groups
being the classes without group labels and the annotated groups with them. Each embedding is
centred and scaled to unit length (their ``norm_emb`` standardisation, then the head's normalisation).

Our reconstruction: the members train at the same time, as M networks of one run, not one
after the other; each member's diversity term reads the earlier members' current prototypes,
held fixed (detached) in it, where the authors' reads their finished ones. The run is selected
as a whole (the step with the best selection metric) where the authors keep each member at its
own best validation epoch. The data are DFR's halves: a run trains on the first of two fixed
halves of the validation set and is selected on the other half (the authors train and select on
the whole validation set); unlike DFR's, the inputs are not standardised per feature. Batches
are drawn from the union of the members' subsets, and each member's loss is the mean over the
batch's examples of its subset.
The distance scale s_m is the first entry of member m's bias (its other entries stay zero): the
engine stacks linear layers, and DPE's head is its own function of one (``head``, below).
"""
import torch
import torch.nn.functional as F
from torch import nn

from XRM.algorithms.base import Algorithm, RunData, State, gather_rows, register_algorithm
from XRM.algorithms.last_layer import RAW_VALIDATION_HALVES_VIEW, balanced_subset
from XRM.common.search_space import NON_NEGATIVE, POSITIVE, choice, fixed, log_uniform

#: members of the ensemble: the default number of stages of the authors' package
ENSEMBLE_SIZE = 15
#: the standard deviation of the prototypes at the start (the authors' IsoMax+ head)
PROTOTYPE_INIT_STD = 0.01


def unit_embeddings(x: torch.Tensor) -> torch.Tensor:
    """Each embedding (last dimension) centred on its own mean and scaled to unit length."""
    return F.normalize(x - x.mean(dim=-1, keepdim=True), dim=-1)


def prototype_logits(x: torch.Tensor, prototypes: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Every member's IsoMax+ logits -|s_m| ||z^ - p^_mk||: inputs ``x`` [n, D] (shared) or [H, B, D]
    (each run its own), prototypes [H, M, K, D], ``bias`` [H, M, K] (s_m = bias[..., 0]) -> [H, M, n, K]."""
    z = unit_embeddings(x)
    directions = F.normalize(prototypes, dim=-1)
    if x.dim() == 2:
        cosine = torch.einsum("nd,hmkd->hmnk", z, directions)
    else:
        cosine = torch.einsum("hbd,hmkd->hmbk", z, directions)
    # ||z^ - p^||^2 = 2 - 2 cos; clamped above 0 so the square root keeps a finite gradient
    distance = (2 - 2 * cosine).clamp_min(1e-12).sqrt()
    return -bias[..., 0].abs()[:, :, None, None] * distance


def ensemble_logits(logits: torch.Tensor) -> torch.Tensor:
    """The ensemble's logits [H, n, K] from its members' [H, n, K, M]: log of the members' mean softmax."""
    members = logits.shape[-1]
    return torch.logsumexp(torch.log_softmax(logits, dim=2), dim=-1) - torch.log(
        torch.tensor(float(members), dtype=logits.dtype, device=logits.device))


def member_losses(logits: torch.Tensor, y: torch.Tensor, membership: torch.Tensor, mask: torch.Tensor,
                  entropic_scale: torch.Tensor) -> torch.Tensor:
    """Each member's mean IsoMax+ loss over the batch's examples of its subset: logits [H, B, K, M],
    y [H, B], membership [H, B, M] (1 where the example is in the member's subset), mask [H, B],
    entropic_scale [H] -> [H, M]."""
    scaled = logits * entropic_scale.to(logits.dtype)[:, None, None, None]
    targets = y[..., None].expand(*y.shape, logits.shape[-1])
    losses = F.cross_entropy(scaled.movedim(2, 1), targets, reduction="none")  # [H, B, M]
    weights = membership.to(logits.dtype) * mask[..., None]
    return (losses * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1)


def diversity_penalty(prototypes: torch.Tensor, strength: torch.Tensor, decay: torch.Tensor) -> torch.Tensor:
    """The weighted sum over members of c_m |mean_k sum_{j<m} <p_mk, p_jk> / ((D - 1)(m + 1))| (see the
    module docstring; earlier members' prototypes detached): prototypes [H, M, K, D], strength c and
    decay alpha [H] -> [H]."""
    members, dimensions = prototypes.shape[1], prototypes.shape[-1]
    inner = torch.einsum("hmkd,hjkd->hkmj", prototypes, prototypes.detach()) / (dimensions - 1)
    earlier = torch.ones(members, members, dtype=torch.bool, device=prototypes.device).tril(diagonal=-1)
    index = torch.arange(members, dtype=prototypes.dtype, device=prototypes.device)
    per_member = ((inner * earlier).sum(dim=-1) / (index + 1)).mean(dim=1).abs()  # [H, M]
    weights = strength.to(prototypes.dtype)[:, None] / (1 + decay.to(prototypes.dtype)[:, None] * (index - 1))
    return (weights * per_member)[:, 1:].sum(dim=1)  # member 0 has no earlier member


def prototype_size_penalty(prototypes: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """w times each member's mean squared prototype length, summed over members: [H, M, K, D] -> [H]."""
    return weight.to(prototypes.dtype) * (prototypes ** 2).sum(dim=-1).mean(dim=-1).sum(dim=1)


def member_subsets(groups: torch.Tensor, seed: int, members: int = ENSEMBLE_SIZE) -> torch.Tensor:
    """Which training examples each member trains on, [n, members] (0/1, float64): member m's
    balanced subset of ``groups`` (as many of every group as the smallest has), drawn from (seed, m)."""
    membership = torch.zeros(len(groups), members, dtype=torch.float64)
    for member in range(members):
        membership[balanced_subset(groups, seed * members + member), member] = 1.0
    return membership


@register_algorithm("DPE")
class DPE(Algorithm):
    """Diverse prototypical ensembles on a trained model's embeddings; see the module docstring."""

    group_information = "validation"
    accepted_group_labels = ("yes", "inferred", "no")  # no: the members' subsets balance the classes
    data_view = RAW_VALIDATION_HALVES_VIEW
    base_algorithm = "ERM"  # its embeddings, on datasets whose network is more than a head
    networks_per_run = ENSEMBLE_SIZE
    follows_balanced_batches = False  # the subsets balance already
    head = staticmethod(prototype_logits)
    hparam_names = ("dpe_entropic_scale", "dpe_diversity", "dpe_diversity_decay", "dpe_prototype_decay")
    # the authors' package defaults (entropic scale 30, diversity 5e4 decaying by 0.05, prototype
    # decay 10, SGD at 1e-3 without weight decay); their scripts pass entropic scales 10 to 30,
    # diversity weights 1e5 and 5e5, and rates 5e-4 and 1e-3
    search_space = {"dpe_entropic_scale": (30.0, choice([10.0, 20.0, 30.0])),
                    "dpe_diversity": (5e4, choice([1e4, 5e4, 1e5, 5e5])),
                    "dpe_diversity_decay": (0.05, fixed(0.05)),
                    "dpe_prototype_decay": (10.0, fixed(10.0)),
                    "lr": (1e-3, log_uniform(-3.5, -2.5)), "weight_decay": (0.0, fixed(0.0))}
    hparam_bounds = {"dpe_entropic_scale": POSITIVE, "dpe_diversity": NON_NEGATIVE,
                     "dpe_diversity_decay": NON_NEGATIVE, "dpe_prototype_decay": NON_NEGATIVE}

    def initialise_networks(self, networks: list[nn.Linear], hparams: dict) -> None:
        """Prototypes from N(0, 0.01^2), each member's distance scale 1 (bias [1, 0, ..., 0])."""
        with torch.no_grad():
            for network in networks:
                nn.init.normal_(network.weight, std=PROTOTYPE_INIT_STD)
                network.bias.zero_()
                network.bias[0] = 1.0

    def training_pool(self, run: RunData) -> torch.Tensor:
        """Every example of some member's subset."""
        return member_subsets(run.groups, run.seed).sum(dim=1).nonzero().flatten()

    def initial_state(self, run: RunData) -> State:
        """The members' subsets as a [n + 1, M] table (the padding row n in none)."""
        membership = member_subsets(run.groups, run.seed)
        return {"membership": torch.cat([membership, membership.new_zeros(1, ENSEMBLE_SIZE)])}

    def loss(self, logits, batch, state, hparams):
        """The sum over members of their losses on their subsets' examples of the batch."""
        membership = gather_rows(state["membership"], batch.index)
        losses = member_losses(logits, batch.y, membership, batch.mask, hparams["dpe_entropic_scale"])
        return losses.sum(dim=1), state

    def last_layer_penalty(self, model, part: slice, state: State, hparams: dict[str, torch.Tensor]) -> torch.Tensor:
        """The prototypes' size penalty and the diversity penalty of each run."""
        prototypes, _ = model.last_layers(part)
        return (prototype_size_penalty(prototypes, hparams["dpe_prototype_decay"])
                + diversity_penalty(prototypes, hparams["dpe_diversity"], hparams["dpe_diversity_decay"]))

    def evaluation_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """The ensemble's logits (the members' mean softmax, as a log)."""
        return ensemble_logits(logits)

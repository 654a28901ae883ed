"""Baselines that train two networks per run without any training group: JTT, uLA and LfF.

Each run holds two networks (logits [H, B, K, 2], as XRM's twins): network 0 is the
*biased* one (JTT's identification model, uLA's bias proxy, LfF's biased model) and
network 1 the one that classifies at evaluation (JTT's final model, uLA's and LfF's
debiased model). Neither uses group labels: they accept ``--group_labels`` yes, no or a
phase-1 folder only for model selection (``va_wga``), as ERM does.

JTT and uLA are two-stage: network 0 trains with ERM for the first T steps,
``T = round(fraction x num_steps)``, and is then frozen; network 1 stays at its
initialisation until T and trains from T on. Freezing is exact: the optimiser leaves a
network that a step does not train untouched (no weight decay, no momentum, no Adam
moments; ``Algorithm.network_updates``), and Adam's bias corrections count the network's own
updates, so network 1 starts at T as a fresh model with a fresh optimiser would. As network
0 no longer changes after T, its predictions on any batch are the predictions of the model
at T: JTT's error set and uLA's bias-proxy outputs are read from network 0's logits on each
batch, with no pass over the training set and no host synchronisation (a step stays a CUDA
graph). Everything a resumed run needs is in its weights, optimiser state and algorithm
state, so a resume is exact. Before T, evaluation records show network 1 untrained.
"""
import torch

from XRM.algorithms.base import (Algorithm, RunData, State, masked_mean, one_hot, per_example_cross_entropy,
                                 register_algorithm)
from XRM.common.search_space import OPEN_UNIT_INTERVAL, POSITIVE, choice, fixed, uniform

BIASED, DEBIASED = 0, 1


def switch_step(fraction: float, num_steps: int) -> int:
    """The first step of the second stage: round(fraction x num_steps), within 1 .. num_steps - 1
    (each stage gets at least one step)."""
    return min(max(round(fraction * num_steps), 1), max(num_steps - 1, 1))


class TwoNetworks(Algorithm):
    """Two networks per run; network 1 classifies at evaluation."""

    networks_per_run = 2
    accepted_group_labels = ("yes", "no", "inferred")

    def evaluation_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Network 1's logits [H, n, K]."""
        return logits[..., DEBIASED]


class TwoStage(TwoNetworks):
    """Network 0 trained with ERM for T steps, then frozen; network 1 trained from step T with
    :meth:`second_stage_loss`. ``fraction_name`` is the hyper-parameter that sets T."""

    fraction_name = ""

    def initial_state(self, run: RunData) -> State:
        """The step T at which the stages switch."""
        return {"switch_step": torch.tensor(switch_step(run.hparams[self.fraction_name], run.hparams["num_steps"]))}

    @classmethod
    def first_recorded_step(cls, hparams: dict) -> int:
        """T: network 1, the one evaluated, trains from T on."""
        return switch_step(hparams[cls.fraction_name], hparams["num_steps"])

    def network_updates(self, step, state, hparams):
        """Network 0 before T, network 1 from T on."""
        second = torch.as_tensor(step, device=state["switch_step"].device) >= state["switch_step"]  # [H]
        return torch.stack([~second, second], dim=1)

    def loss(self, logits, batch, state, hparams):
        """ERM of network 0 before T; the second stage's loss of network 1 (given network 0's logits) from T on."""
        second = batch.step >= state["switch_step"]
        biased, final = logits[..., BIASED], logits[..., DEBIASED]
        first_loss = masked_mean(per_example_cross_entropy(biased, batch.y), batch.mask)
        second_loss, state = self.second_stage_loss(final, biased.detach(), batch, state, hparams, second)
        return torch.where(second, second_loss, first_loss), state

    def second_stage_loss(self, logits: torch.Tensor, biased_logits: torch.Tensor, batch, state: State,
                          hparams: dict[str, torch.Tensor], second: torch.Tensor) -> tuple[torch.Tensor, State]:
        """Network 1's loss [H] (used where ``second`` [H] is set) and the state after the step."""
        raise NotImplementedError


def jtt_weights(biased_logits: torch.Tensor, y: torch.Tensor, lambda_up: torch.Tensor) -> torch.Tensor:
    """JTT's example weights: lambda_up for the identification model's errors, 1 elsewhere.
    biased_logits [H, B, K], y [H, B], lambda_up [H] -> [H, B]."""
    errors = biased_logits.argmax(dim=-1) != y
    return torch.where(errors, lambda_up[:, None], torch.ones_like(lambda_up)[:, None])


def error_weighted_loss(logits: torch.Tensor, biased_logits: torch.Tensor, batch, up: torch.Tensor) -> torch.Tensor:
    """The mean cross-entropy [H] of ``logits`` with the biased network's errors weighted ``up`` [H]
    (JTT's lambda_up, BAM's mu): sum_i w_i l_i / sum_i w_i over each batch's real examples."""
    weights = jtt_weights(biased_logits, batch.y, up.to(logits.dtype)) * batch.mask
    losses = per_example_cross_entropy(logits, batch.y)
    return (weights * losses).sum(dim=1) / weights.sum(dim=1).clamp_min(1e-12)


@register_algorithm("JTT")
class JTT(TwoStage):
    """Just Train Twice (Liu et al., ICML 2021).

    The identification model (network 0) trains with ERM for T steps; its error set is the
    training examples it misclassifies at T. The final model (network 1) then trains on the
    error set up-weighted by lambda_up. JTT up-samples the error set lambda_up times; here a
    batch's loss is the weighted mean sum_i w_i l_i / sum_i w_i (w = lambda_up on errors, 1
    elsewhere), the upsampled set's mean loss when taken over the whole training set, with
    batches drawn as ERM draws them (the draws are fixed before training: a pure function of
    (seed, step)). Hyper-parameters: ``jtt_T_fraction`` (T / num_steps) and ``jtt_lambda_up``.
    """

    fraction_name = "jtt_T_fraction"
    hparam_names = ("jtt_lambda_up",)
    # the paper tunes lambda_up in {20, 50, 100} on images and {4, 5, 6} on text; T, the identification
    # model's epochs, over the final model's budget T + N (the authors' README: 60 + 300 on Waterbirds,
    # 1 + 50 CelebA, 2 + 5 MultiNLI, 2 + 3 CivilComments) spans 0.02 - 0.4
    search_space = {"jtt_T_fraction": (0.2, uniform(0.02, 0.4)),
                    "jtt_lambda_up": (20.0, choice([4.0, 5.0, 6.0, 20.0, 50.0, 100.0]))}
    hparam_bounds = {"jtt_T_fraction": OPEN_UNIT_INTERVAL, "jtt_lambda_up": POSITIVE}

    def second_stage_loss(self, logits, biased_logits, batch, state, hparams, second):
        """The error-weighted mean cross-entropy of the final model."""
        return error_weighted_loss(logits, biased_logits, batch, hparams["jtt_lambda_up"]), state


def ula_batch_joint(biased_logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor,
                    temperature: torch.Tensor) -> torch.Tensor:
    """A batch's estimate of the joint table p(y_b = i, y = j) [H, K, K]: the mean over the batch's real
    examples of softmax(biased logits / temperature)_i 1[y = j] (uLA's bias proxy against the labels)."""
    probabilities = torch.softmax(biased_logits / temperature[:, None, None], dim=-1) * mask[..., None]
    labels = one_hot(y, biased_logits.shape[-1], biased_logits.dtype)
    return torch.einsum("hbi,hbj->hij", probabilities, labels) / mask.sum(dim=1).clamp_min(1)[:, None, None]


def ula_adjustment(joint: torch.Tensor, biased_logits: torch.Tensor) -> torch.Tensor:
    """uLA's logit adjustment log p(y | y_b = argmax of the bias proxy) for every example:
    joint [H, K, K] (rows: the proxy's prediction, columns: the label), biased_logits [H, B, K] -> [H, B, K]."""
    rows = joint.gather(1, biased_logits.argmax(dim=-1)[..., None].expand(-1, -1, joint.shape[2]))
    return torch.log(rows / rows.sum(dim=-1, keepdim=True))


@register_algorithm("uLA")
class ULA(TwoStage):
    """Unsupervised logit adjustment (Tsirigotis et al., NeurIPS 2023).

    The bias proxy (network 0) trains with ERM for T steps and is frozen: uLA's early-stopped,
    bias-amplified model (on pretrained features it is the linear probe the authors fit on a
    frozen self-supervised backbone). From T on, the debiased network 1 minimises
    CE(f(x) + eta log p(y | y_b(x)), y), y_b(x) the proxy's prediction and p(y | y_b) estimated
    from the proxy's tempered soft predictions against the labels; prediction uses f(x) alone.
    As in the authors' code, the proxy's outputs are those on the training examples themselves
    (it is early-stopped, not held out), and p(y, y_b) is estimated batch by batch: here as the
    running mean of the batch estimates since T, started from the uniform table as one batch
    (the authors' exponential average with momentum 0.999 estimates the same quantity, which is
    constant once the proxy is frozen). It trains its own proxy; XRM's held-out logits are not used.
    Hyper-parameters: ``ula_T_fraction`` (T / num_steps), ``ula_eta`` (the adjustment's weight,
    the authors' student temperature) and ``ula_teacher_temperature``.
    """

    fraction_name = "ula_T_fraction"
    hparam_names = ("ula_eta", "ula_teacher_temperature")
    # the authors' scripts train the bias proxy for 10 of 110 epochs (coloured MNIST), 50 of 250
    # (Waterbirds), 50 of 150 (CelebA), 100 of 200 (corrupted CIFAR-10), and fix both temperatures at 1
    search_space = {"ula_T_fraction": (0.2, uniform(0.09, 0.5)), "ula_eta": (1.0, fixed(1.0)),
                    "ula_teacher_temperature": (1.0, fixed(1.0))}
    hparam_bounds = {"ula_T_fraction": OPEN_UNIT_INTERVAL, "ula_eta": POSITIVE, "ula_teacher_temperature": POSITIVE}

    def initial_state(self, run: RunData) -> State:
        """T, and the summed joint table, the uniform table 1 / K^2 at first."""
        k = run.num_classes
        return {**super().initial_state(run), "joint": torch.full((k, k), 1.0 / k ** 2, dtype=torch.float64)}

    def state_signature(self, run: RunData) -> tuple:
        """The number of classes (the joint table's size)."""
        return (run.num_classes,)

    def second_stage_loss(self, logits, biased_logits, batch, state, hparams, second):
        """Cross-entropy of the adjusted logits, after adding this batch to the joint table."""
        with torch.no_grad():
            batch_joint = ula_batch_joint(biased_logits, batch.y, batch.mask, hparams["ula_teacher_temperature"])
            joint = torch.where(second[:, None, None], state["joint"] + batch_joint.to(state["joint"].dtype),
                                state["joint"])
            adjustment = ula_adjustment(joint, biased_logits).to(logits.dtype)
        adjusted = logits + hparams["ula_eta"][:, None, None].to(logits.dtype) * adjustment
        return masked_mean(per_example_cross_entropy(adjusted, batch.y), batch.mask), {**state, "joint": joint}


def generalized_cross_entropy(logits: torch.Tensor, y: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """GCE (Zhang & Sabuncu, 2018) of every example, (1 - p_y^q) / q: logits [H, B, K], y [H, B], q [H] -> [H, B].
    Its gradient is p_y^q times the cross-entropy's, so it stresses the examples the model already fits."""
    p_y = torch.softmax(logits, dim=-1).gather(-1, y[..., None])[..., 0]
    q = q[:, None].to(logits.dtype)
    return (1 - p_y ** q) / q


def relative_difficulty(biased_loss: torch.Tensor, debiased_loss: torch.Tensor) -> torch.Tensor:
    """LfF's weight W = L_b / (L_b + L_d) of each example (1e-8 keeps 0 / 0 at 0)."""
    return biased_loss / (biased_loss + debiased_loss + 1e-8)


def class_maxima(values: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per run, the largest of ``values`` [H, n] (non-negative) over the examples of each class: [H, K]."""
    return values.new_zeros(values.shape[0], num_classes).scatter_reduce(1, labels, values, "amax")


@register_algorithm("LfF")
class LfF(TwoNetworks):
    """Learning from Failure (Nam et al., NeurIPS 2020).

    The biased network 0 trains with the generalised cross-entropy (GCE, ``lff_q``), which
    amplifies what is easy to learn; the debiased network 1, trained at the same time, weighs
    each example's cross-entropy by its relative difficulty W = L_b / (L_b + L_d), with L_b,
    L_d each example's exponential moving average of the two networks' cross-entropies
    (``lff_ema``, 0.7, updated when the example is in a batch; the first value seeds it),
    divided by the largest average among the training examples of the example's class (the
    authors' code normalises class-wise so). The weights carry no gradient. The loss is the
    sum of the two networks' mean losses. GCE is taken as the paper defines it; the authors'
    code scales its gradient by q too.
    """

    hparam_names = ("lff_q", "lff_ema")
    # GCE's q = 0.7 and the loss averages' rate 0.7, fixed in the paper
    search_space = {"lff_q": (0.7, fixed(0.7)), "lff_ema": (0.7, fixed(0.7))}
    hparam_bounds = {"lff_q": POSITIVE, "lff_ema": OPEN_UNIT_INTERVAL}

    def initial_state(self, run: RunData) -> State:
        """The loss averages of both networks and whether each example has one yet (n + 1 rows), the labels."""
        rows = len(run.y) + 1
        return {"average_biased": torch.zeros(rows, dtype=torch.float64),
                "average_debiased": torch.zeros(rows, dtype=torch.float64),
                "seen": torch.zeros(rows, dtype=torch.bool),
                "labels": torch.cat([run.y.cpu(), run.y.new_zeros(1)])}

    def loss(self, logits, batch, state, hparams):
        """GCE of network 0 plus the difficulty-weighted cross-entropy of network 1; the averages after the batch."""
        biased, debiased = logits[..., BIASED], logits[..., DEBIASED]
        debiased_losses = per_example_cross_entropy(debiased, batch.y)
        with torch.no_grad():
            seen = state["seen"].gather(1, batch.index)
            rate = hparams["lff_ema"][:, None].to(torch.float64)
            averages = {}
            for name, losses in (("average_biased", per_example_cross_entropy(biased.detach(), batch.y)),
                                 ("average_debiased", debiased_losses.detach())):
                losses = losses.to(torch.float64)
                averaged = torch.where(seen, rate * state[name].gather(1, batch.index) + (1 - rate) * losses, losses)
                averages[name] = state[name].scatter(1, batch.index, averaged)
            n = state["labels"].shape[1] - 1  # the last row is the padding's
            normalised = []
            for name in ("average_biased", "average_debiased"):
                maxima = class_maxima(averages[name][:, :n], state["labels"][:, :n], self.num_classes)
                batch_values = averages[name].gather(1, batch.index)
                normalised.append(batch_values / maxima.gather(1, batch.y).clamp_min(1e-12))
            weights = relative_difficulty(*normalised).to(logits.dtype)
        biased_loss = masked_mean(generalized_cross_entropy(biased, batch.y, hparams["lff_q"]), batch.mask)
        debiased_loss = masked_mean(weights * debiased_losses, batch.mask)
        new_state = {**state, **averages, "seen": state["seen"].scatter(1, batch.index, torch.ones_like(seen))}
        return biased_loss + debiased_loss, new_state

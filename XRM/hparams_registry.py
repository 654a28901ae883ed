"""Hyper-parameters: one default and one random sampler per (dataset family, algorithm) entry.

Each random draw uses a generator seeded by (combination, hyper-parameter name), so adding
a hyper-parameter never changes the values drawn for the others. Search spaces follow the
reference protocol (PAPER_FACTS.md, "Training protocol").
"""
import math
import zlib
from typing import Any, Callable

import numpy as np

from XRM.errors import UserError
from XRM.optimizers import LR_SCHEDULES, OPTIMIZERS

Sampler = Callable[[np.random.RandomState], Any]


def _log_uniform(low: float, high: float) -> Sampler:
    return lambda rs: float(10 ** rs.uniform(low, high))


def _log2_uniform_int(low: float, high: float) -> Sampler:
    # int(2 ** U(low, high)), the reference's batch-size draw (not always a power of two)
    return lambda rs: int(2 ** rs.uniform(low, high))


def _choice(values: list) -> Sampler:
    return lambda rs: values[rs.randint(len(values))]


def _fixed(value: Any) -> Sampler:
    return lambda rs: value


#: family -> name -> (default, sampler)
FAMILY_SPACES: dict[str, dict[str, tuple[Any, Sampler]]] = {
    "features": {
        "optimizer": ("sgd", _fixed("sgd")),
        "sgd_momentum": (0.9, _fixed(0.9)),
        "lr": (1e-3, _log_uniform(-5, -3)),
        "batch_size": (64, _log2_uniform_int(5, 7)),
        "weight_decay": (1e-4, _log_uniform(-6, -3)),
    },
    "synthetic": {
        "optimizer": ("sgd", _fixed("sgd")),
        "sgd_momentum": (0.9, _fixed(0.9)),
        "lr": (3e-3, _log_uniform(-3, -2)),
        "batch_size": (64, _log2_uniform_int(5, 7)),
        "weight_decay": (1e-4, _log_uniform(-6, -3)),
    },
    "mlp": {
        "optimizer": ("adam", _fixed("adam")),
        "lr": (1e-3, _log_uniform(-5, -3)),
        "batch_size": (32, _log2_uniform_int(3, 6)),
        "weight_decay": (1e-4, _log_uniform(-6, -3)),
    },
    "text": {
        "optimizer": ("adamw", _fixed("adamw")),
        "lr": (1e-5, _log_uniform(-6, -4)),
        "batch_size": (32, _log2_uniform_int(4, 6)),
        "weight_decay": (1e-4, _log_uniform(-6, -3)),
        # the reference's schedule (optimizers.text_lr_factor) and BertForSequenceClassification's own
        # dropout before the head (BERT's hidden_dropout_prob, 0.1): the reference draws a
        # last_layer_dropout from {0, 0.1, 0.5} but never applies it, so 0.1 is what it trains with;
        # another value is an explicit override (--hparams '{"last_layer_dropout": 0.5}')
        "lr_schedule": ("text", _fixed("text")),
        "last_layer_dropout": (0.1, _fixed(0.1)),
    },
    "image": {
        "optimizer": ("sgd", _fixed("sgd")),
        "sgd_momentum": (0.9, _fixed(0.9)),
        "lr": (1e-4, _log_uniform(-5, -3)),
        "batch_size": (64, _log2_uniform_int(5, 7)),
        "weight_decay": (1e-4, _log_uniform(-6, -3)),
    },
}

#: algorithm -> name -> (default, sampler)
ALGORITHM_SPACES: dict[str, dict[str, tuple[Any, Sampler]]] = {
    "GroupDRO": {"eta": (1e-2, _log_uniform(-3, -1))},
    "IRM": {
        "lambda": (1e2, _log_uniform(-1, 5)),
        "penalty_anneal_iters": (500, lambda rs: int(10 ** rs.uniform(0, 4))),
    },
    "MAT": {"tau": (0.1, _choice([0.001, 0.01, 0.1]))},
    # JTT (Liu et al., 2021): the paper tunes lambda_up in {20, 50, 100} on images and {4, 5, 6} on
    # text; T, the identification model's epochs, over the final model's budget T + N (the authors'
    # README: 60 + 300 on Waterbirds, 1 + 50 CelebA, 2 + 5 MultiNLI, 2 + 3 CivilComments) spans 0.02 - 0.4
    "JTT": {
        "jtt_T_fraction": (0.2, lambda rs: float(rs.uniform(0.02, 0.4))),
        "jtt_lambda_up": (20.0, _choice([4.0, 5.0, 6.0, 20.0, 50.0, 100.0])),
    },
    # uLA (Tsirigotis et al., 2023): the authors' scripts train the bias proxy for 10 of 110 epochs
    # (coloured MNIST), 50 of 250 (Waterbirds), 50 of 150 (CelebA), 100 of 200 (corrupted CIFAR-10),
    # and fix both temperatures at 1
    "uLA": {
        "ula_T_fraction": (0.2, lambda rs: float(rs.uniform(0.09, 0.5))),
        "ula_eta": (1.0, _fixed(1.0)),
        "ula_teacher_temperature": (1.0, _fixed(1.0)),
    },
    # LfF (Nam et al., 2020): GCE's q = 0.7 and the loss averages' rate 0.7, fixed in the paper
    "LfF": {"lff_q": (0.7, _fixed(0.7)), "lff_ema": (0.7, _fixed(0.7))},
    # DFR (Kirichenko et al., 2023): the inverse L1 strength C of the authors' logistic regression, from
    # their grids (Waterbirds {1, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01}, CelebA {3, 1, 0.3, 0.1, 0.03, 0.01, 0.003});
    # the head is trained from zero by the family's optimiser instead of liblinear, so larger rates too
    "DFR": {"dfr_c": (0.3, _choice([3.0, 1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01, 0.003])),
            "lr": (1e-2, _log_uniform(-3, -1)), "weight_decay": (0.0, _fixed(0.0))},
    # AFR (Qiu et al., 2023): gamma, the weights' temperature, and lambda, the pull towards the base head;
    # the commands of the authors' README pass gamma 14 and reg_coeff 0.2 (Waterbirds), 1.8 and 0 (CelebA),
    # SGD at 0.02 and 0.01: the ranges hold both
    "AFR": {"afr_gamma": (4.0, _choice([0.5, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0, 20.0])),
            "afr_lambda": (0.1, _choice([0.0, 0.01, 0.1, 0.2, 0.3, 0.4])),
            "lr": (1e-2, _log_uniform(-3, -1)), "weight_decay": (0.0, _fixed(0.0))},
}


def _space(family: str, algorithm: str) -> dict[str, tuple[Any, Sampler]]:
    if family not in FAMILY_SPACES:
        raise ValueError(f"no hyper-parameter space for dataset family {family!r}")
    return {**FAMILY_SPACES[family], **ALGORITHM_SPACES.get(algorithm, {})}


def default_hparams(family: str, algorithm: str) -> dict[str, Any]:
    """The default value of every hyper-parameter of (dataset family, algorithm)."""
    return {name: default for name, (default, _) in _space(family, algorithm).items()}


def _draw_seed(hparams_comb: int, name: str) -> int:
    return zlib.crc32(f"{hparams_comb}/{name}".encode())


def random_hparams(family: str, algorithm: str, hparams_comb: int) -> dict[str, Any]:
    """Combination ``hparams_comb`` of the random search: each value drawn from its own seeded stream."""
    return {
        name: sampler(np.random.RandomState(_draw_seed(hparams_comb, name)))
        for name, (_, sampler) in _space(family, algorithm).items()
    }


_POSITIVE_INTEGERS = ("num_steps", "eval_every", "batch_size")
_POSITIVE = ("lr", "tau", "eta", "jtt_lambda_up", "ula_eta", "ula_teacher_temperature", "lff_q", "dfr_c")
_NON_NEGATIVE = ("weight_decay", "lambda", "penalty_anneal_iters", "sgd_momentum", "last_layer_dropout",
                 "afr_gamma", "afr_lambda")
#: JTT's and uLA's fractions of the run's steps, LfF's rate of the loss averages
_OPEN_UNIT_INTERVAL = ("jtt_T_fraction", "ula_T_fraction", "lff_ema")


def check_hparams(hparams: dict[str, Any]) -> None:
    """A UserError naming the first value that cannot train (after user overrides)."""
    def bad(name: str, need: str) -> UserError:
        return UserError(f"hyper-parameter {name} = {hparams[name]!r}: it must be {need}")

    if "optimizer" in hparams and hparams["optimizer"] not in OPTIMIZERS:
        raise bad("optimizer", "one of " + ", ".join(OPTIMIZERS))
    if "lr_schedule" in hparams and hparams["lr_schedule"] not in LR_SCHEDULES:
        raise bad("lr_schedule", "one of " + ", ".join(LR_SCHEDULES.names()))
    for name in _POSITIVE_INTEGERS:
        if name in hparams and not (isinstance(hparams[name], int) and hparams[name] >= 1):
            raise bad(name, "an integer >= 1")
    def finite(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    for name in _POSITIVE:
        if name in hparams and not (finite(hparams[name]) and hparams[name] > 0):
            raise bad(name, "a finite number > 0")
    for name in _NON_NEGATIVE:
        if name in hparams and not (finite(hparams[name]) and hparams[name] >= 0):
            raise bad(name, "a finite number >= 0")
    if "last_layer_dropout" in hparams and not hparams["last_layer_dropout"] < 1:
        raise bad("last_layer_dropout", "below 1 (a dropout probability)")
    for name in _OPEN_UNIT_INTERVAL:
        if name in hparams and not (finite(hparams[name]) and 0 < hparams[name] < 1):
            raise bad(name, "a number strictly between 0 and 1")

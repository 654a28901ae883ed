"""Hyper-parameters: one default and one random sampler per name, for a (dataset family, algorithm).

A dataset family's space (optimiser, learning rate, batch size, ...) is declared here; an
algorithm's own hyper-parameters, and the family ones it changes, are declared in its file
(``search_space`` and ``hparam_bounds`` on its class). Each random draw uses a generator seeded
by (combination, hyper-parameter name), so adding a hyper-parameter never changes the values
drawn for the others. Search spaces follow the reference protocol (PAPER_FACTS.md, "Training
protocol").
"""
import zlib
from collections.abc import Iterable
from typing import Any

import numpy as np

from XRM.algorithms import ALGORITHMS, get_algorithm_class
from XRM.common.errors import UserError
from XRM.common.search_space import (NON_NEGATIVE, POSITIVE, POSITIVE_INTEGER, PROBABILITY_BELOW_ONE, Bound,
                                     SearchSpace, check_values, fixed, log2_uniform_int, log_uniform, one_of)
from XRM.engine.optimizers import LR_SCHEDULES, OPTIMIZERS
from XRM.results.selection import may_select_step

#: family -> name -> (default, sampler)
FAMILY_SPACES: dict[str, SearchSpace] = {
    "features": {
        "optimizer": ("sgd", fixed("sgd")),
        "sgd_momentum": (0.9, fixed(0.9)),
        "lr": (1e-3, log_uniform(-5, -3)),
        "batch_size": (64, log2_uniform_int(5, 7)),
        "weight_decay": (1e-4, log_uniform(-6, -3)),
    },
    "synthetic": {
        "optimizer": ("sgd", fixed("sgd")),
        "sgd_momentum": (0.9, fixed(0.9)),
        "lr": (3e-3, log_uniform(-3, -2)),
        "batch_size": (64, log2_uniform_int(5, 7)),
        "weight_decay": (1e-4, log_uniform(-6, -3)),
    },
    "mlp": {
        "optimizer": ("adam", fixed("adam")),
        "lr": (1e-3, log_uniform(-5, -3)),
        "batch_size": (32, log2_uniform_int(3, 6)),
        "weight_decay": (1e-4, log_uniform(-6, -3)),
    },
    "text": {
        "optimizer": ("adamw", fixed("adamw")),
        "lr": (1e-5, log_uniform(-6, -4)),
        "batch_size": (32, log2_uniform_int(4, 6)),
        "weight_decay": (1e-4, log_uniform(-6, -3)),
        # the reference's schedule (optimizers.text_lr_factor) and BertForSequenceClassification's own
        # dropout before the head (BERT's hidden_dropout_prob, 0.1): the reference draws a
        # last_layer_dropout from {0, 0.1, 0.5} but never applies it, so 0.1 is what it trains with;
        # another value is an explicit override (--hparams '{"last_layer_dropout": 0.5}')
        "lr_schedule": ("text", fixed("text")),
        "last_layer_dropout": (0.1, fixed(0.1)),
    },
    "image": {
        "optimizer": ("sgd", fixed("sgd")),
        "sgd_momentum": (0.9, fixed(0.9)),
        "lr": (1e-4, log_uniform(-5, -3)),
        "batch_size": (64, log2_uniform_int(5, 7)),
        "weight_decay": (1e-4, log_uniform(-6, -3)),
    },
}


def _selectable_length(num_steps: Any) -> bool:
    """Whether a run of ``num_steps`` steps records an evaluation model selection may pick: its
    last evaluation, at step num_steps - 1, is always recorded (XRM.runs.members.next_evaluation)."""
    return POSITIVE_INTEGER.accepts(num_steps) and may_select_step(num_steps - 1)


#: a run's length: its last evaluation must come after step 0, which selection never picks
SELECTABLE_NUM_STEPS = Bound("an integer >= 2 (model selection never picks step 0, so a run needs an "
                             "evaluation after it)", _selectable_length)

#: the bounds of the families' hyper-parameters and of a run's length, checked for every algorithm
COMMON_BOUNDS: dict[str, Bound] = {
    "optimizer": one_of(OPTIMIZERS),
    "lr_schedule": one_of(LR_SCHEDULES.names()),
    "num_steps": SELECTABLE_NUM_STEPS,
    "eval_every": POSITIVE_INTEGER,
    "batch_size": POSITIVE_INTEGER,
    "lr": POSITIVE,
    "weight_decay": NON_NEGATIVE,
    "sgd_momentum": NON_NEGATIVE,
    "last_layer_dropout": PROBABILITY_BELOW_ONE,
}


def _space(family: str, algorithm: str) -> SearchSpace:
    if family not in FAMILY_SPACES:
        raise ValueError(f"no hyper-parameter space for dataset family {family!r}")
    return {**FAMILY_SPACES[family], **get_algorithm_class(algorithm).search_space}


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


def own_hparam_names(algorithms: Iterable[str]) -> set[str]:
    """The hyper-parameters the ``algorithms`` declare in their own search spaces (MAT's tau, ...)."""
    return {name for algorithm in algorithms for name in get_algorithm_class(algorithm).search_space}


def applicable_overrides(overrides: dict[str, Any], space: Iterable[str],
                         command_algorithms: Iterable[str]) -> dict[str, Any]:
    """The overrides a run takes: those of its ``space`` (its family's, its algorithm's own,
    num_steps, eval_every). Another algorithm of the command's own hyper-parameters are left to
    that algorithm's runs (``--algorithms ERM MAT --hparams '{"tau": 0.01}'``: MAT's runs take tau,
    ERM's ignore it); a name that belongs to none of them is a UserError listing the valid names."""
    space = set(space)
    valid = space | own_hparam_names(command_algorithms)
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise UserError(f"unknown hyper-parameter(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}")
    return {name: value for name, value in overrides.items() if name in space}


def hparam_bounds(algorithm: str | None = None) -> dict[str, Bound]:
    """The bound of every hyper-parameter ``algorithm`` may be given (None: of every registered algorithm)."""
    classes = [get_algorithm_class(algorithm)] if algorithm is not None else list(ALGORITHMS.values())
    bounds = dict(COMMON_BOUNDS)
    for cls in classes:
        bounds.update(cls.hparam_bounds)
    return bounds


def check_hparams(hparams: dict[str, Any], algorithm: str | None = None) -> None:
    """A UserError naming the first value that cannot train (after user overrides), checked
    against the families' bounds and ``algorithm``'s (None: every registered algorithm's)."""
    check_values(hparams, hparam_bounds(algorithm), prefix="hyper-parameter ")

"""Hyper-parameters: one default and one random sampler per (dataset family, algorithm) entry.

Each random draw uses a generator seeded by (combination, hyper-parameter name), so adding
a hyper-parameter never changes the values drawn for the others. Search spaces follow the
reference protocol (PAPER_FACTS.md, "Training protocol").
"""
import zlib
from typing import Any, Callable

import numpy as np

Sampler = Callable[[np.random.RandomState], Any]


def _log_uniform(low: float, high: float) -> Sampler:
    return lambda rs: float(10 ** rs.uniform(low, high))


def _power_of_two(low: float, high: float) -> Sampler:
    return lambda rs: int(2 ** rs.uniform(low, high))


def _choice(values: list) -> Sampler:
    return lambda rs: values[rs.randint(len(values))]


def _fixed(value: Any) -> Sampler:
    return lambda rs: value


#: family -> name -> (default, sampler)
FAMILY_SPACES: dict[str, dict[str, tuple[Any, Sampler]]] = {
    "features": {
        "optimizer": ("sgd", _fixed("sgd")),
        "lr": (1e-3, _log_uniform(-5, -3)),
        "batch_size": (64, _power_of_two(5, 7)),
        "weight_decay": (1e-4, _log_uniform(-6, -3)),
    },
    "synthetic": {
        "optimizer": ("sgd", _fixed("sgd")),
        "lr": (3e-3, _log_uniform(-3, -2)),
        "batch_size": (64, _power_of_two(5, 7)),
        "weight_decay": (1e-4, _log_uniform(-6, -3)),
    },
    "mlp": {
        "optimizer": ("adam", _fixed("adam")),
        "lr": (1e-3, _log_uniform(-5, -3)),
        "batch_size": (32, _power_of_two(3, 6)),
        "weight_decay": (1e-4, _log_uniform(-6, -3)),
    },
    "text": {
        "optimizer": ("adamw", _fixed("adamw")),
        "lr": (1e-5, _log_uniform(-6, -4)),
        "batch_size": (32, _power_of_two(4, 6)),
        "weight_decay": (1e-4, _log_uniform(-6, -3)),
        "last_layer_dropout": (0.0, _choice([0.0, 0.1, 0.5])),
    },
    "image": {
        "optimizer": ("sgd", _fixed("sgd")),
        "lr": (1e-4, _log_uniform(-5, -3)),
        "batch_size": (64, _power_of_two(5, 7)),
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

"""The vocabulary an algorithm's file declares its hyper-parameters with: samplers and bounds.

A search space maps each hyper-parameter's name to ``(default, sampler)``; a sampler draws one
value from a ``numpy.random.RandomState`` (seeded per combination and name by
XRM.runs.hparams, so adding a hyper-parameter changes no other's draws). A bound says which
values can train; XRM.runs.hparams checks every value against its bound after user overrides.
"""
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable

from XRM.common.errors import UserError

Sampler = Callable[[Any], Any]
#: name -> (default, sampler)
SearchSpace = dict[str, tuple[Any, Sampler]]


def log_uniform(low: float, high: float) -> Sampler:
    """10 ** U(low, high), as a float."""
    return lambda rs: float(10 ** rs.uniform(low, high))


def log2_uniform_int(low: float, high: float) -> Sampler:
    """int(2 ** U(low, high)): the reference's batch-size draw (not always a power of two)."""
    return lambda rs: int(2 ** rs.uniform(low, high))


def log_uniform_int(low: float, high: float) -> Sampler:
    """int(10 ** U(low, high))."""
    return lambda rs: int(10 ** rs.uniform(low, high))


def uniform(low: float, high: float) -> Sampler:
    """U(low, high), as a float."""
    return lambda rs: float(rs.uniform(low, high))


def choice(values: list) -> Sampler:
    """One of ``values``, each equally likely."""
    return lambda rs: values[rs.randint(len(values))]


def fixed(value: Any) -> Sampler:
    """Always ``value``: a hyper-parameter the search does not vary."""
    return lambda rs: value


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Bound:
    """Which values of a hyper-parameter can train: ``accepts(value)``, and ``need``, what the
    error message asks for."""

    need: str
    accepts: Callable[[Any], bool]

    def check(self, name: str, value: Any) -> None:
        """A UserError ``<name> = <value>: it must be <need>`` unless the bound accepts ``value``."""
        if not self.accepts(value):
            raise UserError(f"{name} = {value!r}: it must be {self.need}")


def at_least(minimum: int) -> Bound:
    """A bound that accepts the integers >= ``minimum`` (a bool is no integer here)."""
    return Bound(f"an integer >= {minimum}", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum)


def check_values(values: Mapping[str, Any], bounds: Mapping[str, Bound], prefix: str = "") -> None:
    """A UserError for the first of ``values`` that its bound in ``bounds`` refuses (names absent
    from ``values`` are skipped), named ``<prefix><name>``."""
    for name, bound in bounds.items():
        if name in values:
            bound.check(f"{prefix}{name}", values[name])


POSITIVE_INTEGER = at_least(1)
POSITIVE = Bound("a finite number > 0", lambda v: _finite(v) and v > 0)
NON_NEGATIVE = Bound("a finite number >= 0", lambda v: _finite(v) and v >= 0)
OPEN_UNIT_INTERVAL = Bound("a number strictly between 0 and 1", lambda v: _finite(v) and 0 < v < 1)
PROBABILITY_BELOW_ONE = Bound("below 1 and >= 0 (a dropout probability)",
                              lambda v: _finite(v) and 0 <= v < 1)


def one_of(names: Sequence[str]) -> Bound:
    """A bound that accepts the names in ``names``, listed in their order when refused."""
    return Bound("one of " + ", ".join(names), lambda v: v in names)

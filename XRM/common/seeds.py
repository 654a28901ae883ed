"""The seeds the toolkit accepts, checked before anything runs (importable without torch).

A seed picks a run's twin assignment, batches and initial weights (torch generators), and
sometimes seeds a few more streams at small offsets (a memorisation study's model m trains from
``seed + m``). torch takes seeds below 2**64; seeds here are integers 0 .. 2**63 - 1, a signed
64-bit integer, so that every offset stays in torch's range.
"""
from XRM.common.errors import UserError

#: the largest seed accepted
MAX_SEED = 2**63 - 1


def check_seed(seed: object, name: str = "seed") -> None:
    """A UserError ``<name> <seed>: give an integer from 0 to 2**63 - 1`` unless ``seed`` is one
    (a bool is no seed)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise UserError(f"{name} {seed!r}: give an integer from 0 to 2**63 - 1")

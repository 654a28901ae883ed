"""Named registries (datasets, algorithms, launchers, ...): one mechanism for every list of names."""
from typing import Callable, TypeVar

from XRM.common.errors import UserError

T = TypeVar("T")


class Registry(dict[str, T]):
    """A dict of named entries that refuses duplicates and names the valid choices on a miss.

    The registry is the only list of its names: command-line choices, sweeps and tests
    iterate it. With ``any_case``, :meth:`lookup` takes a name in any case and an entry's other
    names (``aliases``), and :meth:`canonical` says which name they spell.
    """

    def __init__(self, kind: str, names_entries: bool = False, any_case: bool = False) -> None:
        super().__init__()
        self.kind = kind
        #: whether an entry (a class) learns the name it is registered under, as its ``name``
        self.names_entries = names_entries
        self.any_case = any_case
        self._spellings: dict[str, str] = {}  # a name or alias (case-folded with any_case) -> the name

    def _key(self, spelling: str) -> str:
        return spelling.casefold() if self.any_case else spelling

    def add(self, name: str, entry: T, aliases: tuple[str, ...] = ()) -> T:
        """Register ``entry`` under ``name`` (and its other names ``aliases``); a name can be registered
        once, and with ``any_case`` no two names may differ in case only."""
        for spelling in (name, *aliases):
            if self._key(spelling) in self._spellings:
                raise ValueError(f"{self.kind} {spelling!r} is registered twice "
                                 f"(as {self._spellings[self._key(spelling)]!r})")
        if self.names_entries:
            entry.name = name  # type: ignore[attr-defined]
        self[name] = entry
        self._spellings.update({self._key(spelling): name for spelling in (name, *aliases)})
        return entry

    def register(self, name: str, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
        """Decorator form of :meth:`add` for classes and functions."""
        return lambda entry: self.add(name, entry, aliases)

    def canonical(self, spelling: str) -> str | None:
        """The name registered that ``spelling`` is (with ``any_case``: in any case, or an alias); None if none."""
        return spelling if spelling in self else self._spellings.get(self._key(spelling))

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self)

    def lookup(self, name: str) -> T:
        """The entry registered as ``name`` (see :meth:`canonical`); a UserError listing the valid names otherwise."""
        registered = self.canonical(name)
        if registered is None:
            raise UserError(f"unknown {self.kind} {name!r}; choose from: {', '.join(self.names())}")
        return self[registered]

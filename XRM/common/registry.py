"""Named registries (datasets, algorithms, launchers, ...): one mechanism for every list of names."""
from typing import Callable, TypeVar

from XRM.common.errors import UserError

T = TypeVar("T")


class Registry(dict[str, T]):
    """A dict of named entries that refuses duplicates and names the valid choices on a miss.

    The registry is the only list of its names: command-line choices, sweeps and tests
    iterate it.
    """

    def __init__(self, kind: str, names_entries: bool = False) -> None:
        super().__init__()
        self.kind = kind
        #: whether an entry (a class) learns the name it is registered under, as its ``name``
        self.names_entries = names_entries

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name``; a name can be registered once."""
        if name in self:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        if self.names_entries:
            entry.name = name  # type: ignore[attr-defined]
        self[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add` for classes and functions."""
        return lambda entry: self.add(name, entry)

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self)

    def lookup(self, name: str) -> T:
        """The entry registered as ``name``; a UserError listing the valid names otherwise."""
        if name not in self:
            raise UserError(f"unknown {self.kind} {name!r}; choose from: {', '.join(self.names())}")
        return self[name]

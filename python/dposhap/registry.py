"""A named registry: the one mechanism behind every extension point (worlds, utilities...)."""

from __future__ import annotations

from typing import Generic, TypeVar

from .errors import InvalidArgumentError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Items found by name, in registration order.

    Parameters
    ----------
    what
        What an item is, for error messages ("world", "utility").
    """

    def __init__(self, what: str):
        self.what = what
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T) -> T:
        """Add ``item`` under ``name`` (a later registration of the same name replaces it); returns it."""
        if not isinstance(name, str) or not name.isidentifier():
            raise InvalidArgumentError(f"a {self.what}'s name must be an identifier, got {name!r}")
        self._items[name] = item
        return item

    def get(self, name: str) -> T:
        """The item registered as ``name``.

        Raises
        ------
        InvalidArgumentError
            Nothing has this name (the message lists the names there are).
        """
        try:
            return self._items[name]
        except KeyError:
            raise InvalidArgumentError(
                f"unknown {self.what} {name!r}; choose one of {', '.join(self._items)}"
            ) from None

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

"""The base of every typed settings table: dataclass fields with help text, checked on creation.

A config table (``[model]``, ``[dpo]``, a world's ``[toy]``...) is a dataclass deriving from
:class:`Section`; its fields are declared with :func:`setting` (a default and the help text the
docs and the command line show) and checked in ``__post_init__`` with the helpers here, which
raise :class:`~dposhap.errors.ConfigError` naming ``table.field``.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any, ClassVar, Literal, get_args, get_origin, get_type_hints

from .errors import ConfigError

__all__ = ["Section", "setting"]


def setting(text: str, *, flag: str | None = None, **kwargs: Any) -> Any:
    """A dataclass field carrying its help text in ``metadata["help"]``.

    ``flag`` names its command-line flag when that is not ``--`` + the field's name with dashes.
    """
    metadata = {"help": text} if flag is None else {"help": text, "flag": flag}
    return field(metadata=metadata, **kwargs)


class Section:
    """Shared checks of a settings table; each subclass names its TOML table in ``TABLE``."""

    TABLE: ClassVar[str] = ""

    def fail(self, name: str, message: str) -> None:
        """Raise a :class:`ConfigError` about field ``name`` of this table."""
        raise ConfigError(message, field=f"{self.TABLE}.{name}")

    def check_positive(self, *names: str) -> None:
        """Every named field is > 0."""
        for name in names:
            if getattr(self, name) <= 0:
                self.fail(name, f"must be > 0, got {getattr(self, name)!r}")

    def check_literal(self, name: str) -> None:
        """A ``Literal``-typed field holds one of its allowed values."""
        hint = get_type_hints(type(self))[name]
        allowed = get_args(hint)
        if get_origin(hint) is Literal and getattr(self, name) not in allowed:
            self.fail(name, f"must be one of {', '.join(map(repr, allowed))}, got {getattr(self, name)!r}")

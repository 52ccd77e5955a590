"""The base of every typed settings table: dataclass fields with help text, checked on creation.

A config table (``[model]``, ``[dpo]``, a world's ``[toy]``...) is a dataclass deriving from
:class:`Section`; its fields are declared with :func:`setting` (a default and the help text the
docs and the command line show) and checked in ``__post_init__`` with the helpers here, which
raise :class:`~dposhap.errors.ConfigError` naming ``table.field``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import field, fields
from typing import Any, ClassVar, Literal, get_args, get_origin, get_type_hints

from .errors import ConfigError

__all__ = ["MAX_INT_SETTING", "Section", "setting"]

#: The largest integer any setting takes (a batch size, a step count, a seed...): the libraries
#: underneath store them in C integers, and a larger number is a typo, not a plan.
MAX_INT_SETTING = 2**31 - 1


def setting(
    text: str, *, flag: str | None = None, metavar: str | None = None, table: bool = True, **kwargs: Any
) -> Any:
    """A dataclass field carrying its help text in ``metadata["help"]``.

    ``flag`` names its command-line flag when that is not ``--`` + the field's name with dashes;
    ``metavar`` the flag's value in ``--help`` when that is not the default; ``table=False`` keeps
    the field out of the TOML table and of the record a run keeps of its config (a setting the
    code fills in, such as the folder relative paths resolve against).
    """
    metadata: dict[str, Any] = {"help": text}
    if not table:
        metadata["table"] = False
    if flag is not None:
        metadata["flag"] = flag
    if metavar is not None:
        metadata["metavar"] = metavar
    return field(metadata=metadata, **kwargs)


class Section:
    """Shared checks of a settings table; each subclass names its TOML table in ``TABLE``."""

    TABLE: ClassVar[str] = ""

    @classmethod
    def table_fields(cls) -> list[str]:
        """The fields a TOML table (and a run's record of its config) holds, in declaration order."""
        return [f.name for f in fields(cls) if f.metadata.get("table", True)]  # type: ignore[arg-type]

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

    def check_range(self, name: str, low: float | None = None, high: float | None = None) -> None:
        """Field ``name`` lies in ``[low, high]`` (either bound optional)."""
        value = getattr(self, name)
        if (low is not None and value < low) or (high is not None and value > high):
            if low is not None and high is not None:
                bound = f"between {low} and {high}"
            else:
                bound = f">= {low}" if low is not None else f"<= {high}"
            self.fail(name, f"must be {bound}, got {value!r}")

    def check_choice(self, name: str, allowed: Iterable[str], what: str) -> None:
        """Field ``name`` is one of ``allowed`` (the names ``what`` accepts, e.g. a library's enum)."""
        names = list(allowed)
        if getattr(self, name) not in names:
            self.fail(name, f"is not a {what}: {getattr(self, name)!r}; use one of {', '.join(map(repr, names))}")

    def check_numbers(self) -> None:
        """Every number of the table is finite and every integer fits :data:`MAX_INT_SETTING`.

        Called for every table when a config is built (:func:`dposhap.config.config_from_dict`),
        so NaN, infinity or a 30-digit batch size never reaches TRL, PEFT or transformers.
        """
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            items = value if isinstance(value, list) else [value]
            for item in items:
                if isinstance(item, bool):
                    continue
                if isinstance(item, float) and not math.isfinite(item):
                    self.fail(f.name, f"must be a finite number, got {item!r}")
                if isinstance(item, int) and abs(item) > MAX_INT_SETTING:
                    self.fail(f.name, f"is out of range ({item}); settings take integers up to {MAX_INT_SETTING}")

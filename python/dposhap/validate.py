"""Argument checks shared by the whole package: one wording, one exception class.

Every check raises :class:`~dposhap.errors.InvalidArgumentError` naming the argument, what it
must be and what it got.
"""

from __future__ import annotations

import math
from typing import Any

from .errors import InvalidArgumentError

__all__ = ["MAX_PLAYERS", "check_int", "check_positive", "is_int"]

#: The most players an estimator takes: checked before the Rust engine allocates anything (its
#: tables grow with n, some with n squared). 65,536 sources is far beyond any valuation of data
#: sources; a larger number is a mistake (e.g. 2**64) that would otherwise abort the process.
MAX_PLAYERS = 2**16


def is_int(value: Any) -> bool:
    """Whether ``value`` is an integer (a ``bool`` is not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(
    name: str, value: Any, *, minimum: int | None = 1, maximum: int | None = None, optional: bool = False
) -> None:
    """``value`` is an int in ``[minimum, maximum]`` (None, too, when ``optional``).

    Raises
    ------
    InvalidArgumentError
        ``"{name} must be an int >= {minimum}, got {value!r}"`` (or ``between {minimum} and {maximum}``).
    """
    if optional and value is None:
        return
    if is_int(value) and (minimum is None or value >= minimum) and (maximum is None or value <= maximum):
        return
    if minimum is not None and maximum is not None:
        bound = f" between {minimum} and {maximum}"
    elif minimum is not None:
        bound = f" >= {minimum}"
    elif maximum is not None:
        bound = f" <= {maximum}"
    else:
        bound = ""
    prefix = "None or " if optional else ""
    raise InvalidArgumentError(f"{name} must be {prefix}an int{bound}, got {value!r}")


def check_positive(name: str, value: Any) -> None:
    """``value`` is a finite real number > 0.

    Raises
    ------
    InvalidArgumentError
        ``"{name} must be a finite number > 0, got {value!r}"``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise InvalidArgumentError(f"{name} must be a finite number > 0, got {value!r}")

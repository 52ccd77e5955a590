"""Control variates: a cheap game evaluated on the same coalitions as the utility, whose exact
values are known, so that each value's estimate can be corrected by the control's error."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core import NativeGame
from ..errors import InvalidArgumentError
from .asktell import BanzhafEstimator, Semivalue, ShapleyEstimator, drive

__all__ = ["MAX_AUTO_CONTROL_PLAYERS", "MAX_NATIVE_EXACT_PLAYERS", "control_values"]

#: Players up to which a Python-callable control game gets its exact values computed for you.
MAX_AUTO_CONTROL_PLAYERS = 16
#: Players up to which the exact values of a native control game are computed by enumeration.
MAX_NATIVE_EXACT_PLAYERS = 24


def control_values(control: Any, n: int, semivalue: Semivalue) -> tuple[Any, np.ndarray]:
    """Split ``control`` into the control game and its exact values, computing the values where possible.

    Parameters
    ----------
    control
        A native game (a :class:`~dposhap.MarginGame`: kind ``"mean"`` has closed-form Shapley
        values, other kinds are enumerated up to :data:`MAX_NATIVE_EXACT_PLAYERS` players), a
        callable (enumerated up to :data:`MAX_AUTO_CONTROL_PLAYERS` players), or
        ``(game, exact_values)``.
    n
        Players of the utility; the control game must have as many.
    semivalue
        ``"shapley"`` or ``"banzhaf"``: which exact values.

    Returns
    -------
    tuple
        The game, and its exact values ``[n]`` or ``[n, kc]`` as float64.

    Raises
    ------
    dposhap.errors.InvalidArgumentError
        When ``control`` is none of these, has another number of players, or its exact values
        are too costly to compute and were not given.
    """
    if isinstance(control, tuple):
        if len(control) != 2:
            raise InvalidArgumentError("control=(game, exact_values) takes exactly two items")
        game, values = control
        values = np.asarray(values, dtype=np.float64)
    else:
        game, values = control, None
    if isinstance(game, NativeGame):
        if game.n_players != n:
            raise InvalidArgumentError(
                f"the control game has {game.n_players} players, the utility {n}: both must value the same sources"
            )
        if values is None:
            additive = game.additive_values() if semivalue == "shapley" else None
            if additive is not None:
                values = additive
            elif n <= MAX_NATIVE_EXACT_PLAYERS:
                values = game.exact(semivalue)
            else:
                raise InvalidArgumentError(
                    f"the exact values of a {game.kind!r} control game on {n} players are too costly to enumerate: "
                    "use kind 'mean' (closed form) or pass control=(game, exact_values)"
                )
    elif callable(game):
        if values is None:
            if n > MAX_AUTO_CONTROL_PLAYERS:
                raise InvalidArgumentError(
                    f"a Python control game on {n} players needs its exact values: pass control=(game, exact_values) "
                    f"(they are computed for you only up to {MAX_AUTO_CONTROL_PLAYERS} players)"
                )
            cls = ShapleyEstimator if semivalue == "shapley" else BanzhafEstimator
            values = drive(cls(n, "exact"), game).values
    else:
        raise InvalidArgumentError(
            f"control must be a callable, a MarginGame or (game, exact_values), got {type(game).__name__}"
        )
    values = np.asarray(values, dtype=np.float64)
    if values.shape[0] != n:
        raise InvalidArgumentError(
            f"the control game's exact values have {values.shape[0]} rows; expected one per player ({n})"
        )
    return game, values

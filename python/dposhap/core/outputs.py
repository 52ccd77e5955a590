"""The one check of what a utility returns for a batch of coalitions.

The estimators, the interaction indices and the utility cache all accept a utility's output through
:func:`utility_values`; per-item scores (:meth:`dposhap.core.ItemScores.coerce`) share its
:func:`require_finite`. A wrong shape or a NaN is then reported the same way wherever it is found.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import UtilityError
from .coalitions import describe_coalition

__all__ = ["require_finite", "utility_values"]


def require_finite(
    arr: np.ndarray,
    b: int,
    what: str,
    unit: str = "utility",
    *,
    objectives: Sequence[str] | None = None,
    coalitions: np.ndarray | None = None,
) -> None:
    """Raise :class:`~dposhap.errors.UtilityError` naming the first NaN or infinity of ``arr``.

    Parameters
    ----------
    arr
        float64 ``[b, k]`` or ``[b, k, m]``: axis 0 is the batch, axis 1 the objective.
    b
        Rows in the batch.
    what
        Who returned ``arr`` (``"utility"``, ``"utility 'accuracy'"``...), for the message.
    unit
        What one entry is (``"utility"``, ``"item score"``), for the message.
    objectives
        The objectives' names, to name the one affected (by index otherwise).
    coalitions
        The batch's bool coalitions ``[b, n]``, to name the members of the affected one.
    """
    bad = ~np.isfinite(arr)
    if not bad.any():
        return
    first = np.argwhere(bad)[0]
    r, j = int(first[0]), int(first[1])
    objective = repr(objectives[j]) if objectives is not None else str(j)
    where = (
        f"row {r} of the batch"
        if coalitions is None
        else f"coalition {describe_coalition(coalitions[r])} (row {r} of the batch)"
    )
    rows = int(bad.reshape(b, -1).any(axis=1).sum())
    raise UtilityError(
        f"the {what} returned a non-finite {unit} ({arr[tuple(first)]}) for {where}, objective {objective}: "
        f"{unit}s must be finite; {rows} of {b} rows are affected"
    )


def utility_values(
    raw: Any,
    b: int,
    what: str = "utility",
    *,
    objectives: Sequence[str] | None = None,
    coalitions: np.ndarray | None = None,
) -> np.ndarray:
    """A utility's output for a batch of ``b`` coalitions, checked, as float64 ``[b, k]`` (C-contiguous).

    Parameters
    ----------
    raw
        What the utility returned: ``[b]`` (one objective) or ``[b, k]`` numbers.
    b
        Coalitions in the batch.
    what
        Who returned ``raw``, for the messages.
    objectives
        The objectives the utility declared: ``k`` must then equal their number.
    coalitions
        The batch's bool coalitions ``[b, n]``, to name the members of one with a non-finite utility.

    Returns
    -------
    numpy.ndarray
        float64 ``[b, k]``.

    Raises
    ------
    UtilityError
        ``raw`` is not numeric, has the wrong shape, or holds a NaN or infinity.
    """
    k = None if objectives is None else len(objectives)
    if k is None:
        expected = f"({b},) or ({b}, k)"
    else:
        expected = f"({b},) or ({b}, 1)" if k == 1 else f"({b}, {k})"
    try:
        arr = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise UtilityError(
            f"the {what} returned {type(raw).__name__}, which is not numeric ({exc}): return a float array of "
            f"shape {expected}"
        ) from None
    if arr.ndim == 1 and arr.shape[0] == b and k in (None, 1):
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] != b or arr.shape[1] < 1 or (k is not None and arr.shape[1] != k):
        declared = "" if objectives is None else f" (objectives {list(objectives)})"
        raise UtilityError(
            f"the {what}{declared} returned shape {arr.shape} for a batch of {b} coalitions: return shape {expected}"
        )
    require_finite(arr, b, what, objectives=objectives, coalitions=coalitions)
    return np.ascontiguousarray(arr)

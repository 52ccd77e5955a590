"""Utilities that are means over items (held-out pairs, prompts), and the scores of each item.

:class:`ItemScores` is what such a utility returns for a batch of coalitions; :class:`ItemUtility`
is the protocol of a utility that can return it (the bootstrap over items in
:mod:`dposhap.estimate` reweights these scores instead of evaluating again); :class:`ItemGame`
turns a function of per-item scores into a game.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import InvalidArgumentError, UtilityError
from ..validate import check_int
from .coalitions import pack_coalitions
from .outputs import require_finite

__all__ = ["ItemGame", "ItemScores", "ItemUtility"]


@dataclass(frozen=True)
class ItemScores:
    """Per-item scores of a batch of coalitions.

    A coalition's utility on objective ``k`` is ``sum_j numer[b, k, j] / sum_j denom[b, j]``: a
    plain mean when ``denom`` is None (every item weighs one), a ratio estimator otherwise (items
    of different sizes, such as responses of different lengths, or self-normalised importance
    weights that depend on the coalition).

    Attributes
    ----------
    numer
        float64 ``[b, k, m]``.
    denom
        float64 ``[b, m]`` (positive sums), or None.
    """

    numer: np.ndarray
    denom: np.ndarray | None = None

    @classmethod
    def coerce(cls, raw: Any, b: int, what: str = "item utility") -> ItemScores:
        """``raw`` as :class:`ItemScores` for a batch of ``b``: an ItemScores, ``[b, m]`` or ``[b, k, m]``."""
        if isinstance(raw, ItemScores):
            numer = np.asarray(raw.numer, dtype=np.float64)
            denom = None if raw.denom is None else np.asarray(raw.denom, dtype=np.float64)
        else:
            numer, denom = np.asarray(raw, dtype=np.float64), None
        if numer.ndim == 2:
            numer = numer[:, None, :]
        if numer.ndim != 3 or numer.shape[0] != b or numer.shape[2] < 1:
            raise UtilityError(
                f"the {what} returned per-item scores of shape {numer.shape} for {b} coalitions: "
                f"return ({b}, n_items) or ({b}, k, n_items)"
            )
        require_finite(numer, b, what, "item score")
        if denom is not None:
            if denom.shape != (b, numer.shape[2]) or not np.isfinite(denom).all() or (denom.sum(1) <= 0).any():
                raise UtilityError(
                    f"the {what}'s item weights must be finite [{b}, {numer.shape[2]}] with positive row sums, "
                    f"got shape {denom.shape}"
                )
        return cls(np.ascontiguousarray(numer), denom)

    @property
    def n_items(self) -> int:
        """Number of items ``m``."""
        return int(self.numer.shape[2])

    @classmethod
    def concat(cls, parts: Sequence[ItemScores]) -> ItemScores:
        """The scores of consecutive batches as one batch (all with or all without item weights)."""
        if not parts:
            raise InvalidArgumentError("concat needs at least one batch of item scores")
        numer = np.concatenate([p.numer for p in parts], axis=0)
        weighted = [p.denom is not None for p in parts]
        if any(weighted) != all(weighted):
            raise InvalidArgumentError("cannot concatenate item scores with and without item weights")
        denom = np.concatenate([p.denom for p in parts if p.denom is not None], axis=0) if all(weighted) else None
        return cls(numer, denom)

    def values(self) -> np.ndarray:
        """The utilities ``[b, k]``."""
        total = self.numer.sum(axis=2)
        if self.denom is None:
            return total / self.n_items
        return total / self.denom.sum(axis=1)[:, None]

    def replicates(self, weights: np.ndarray) -> np.ndarray:
        """The utilities under item weights ``[r, m]`` (bootstrap counts): ``[b, k, r]``."""
        w = np.asarray(weights, dtype=np.float64)
        num = self.numer @ w.T  # [b, k, r]
        den = (np.full((len(self.numer), self.n_items), 1.0) if self.denom is None else self.denom) @ w.T  # [b, r]
        return num / den[:, None, :]


@runtime_checkable
class ItemUtility(Protocol):
    """A utility that is a mean over items and can say each item's score.

    ``item_scores(coalitions)`` returns the :class:`ItemScores` of a bool batch ``[b, n]``; the
    utility itself is their :meth:`ItemScores.values`.
    """

    @property
    def n_items(self) -> int: ...

    def item_scores(self, coalitions: np.ndarray) -> ItemScores: ...


class ItemGame:
    """A utility given by its per-item scores: the mean over ``n_items`` items.

    Passed to :func:`dposhap.shapley` with ``n_boot``, the values come with evaluation standard
    errors bootstrapped over the items. The per-item scores of every evaluated coalition are kept
    in memory for the bootstrap (``b x k x n_items`` floats per batch), so nothing is evaluated
    twice.

    Parameters
    ----------
    fn
        Bool ``[b, n]`` -> per-item scores ``[b, n_items]`` or ``[b, k, n_items]``, or an
        :class:`ItemScores` (for ratio utilities).
    n_items
        Number of items the scores run over.

    Examples
    --------
    >>> import numpy as np, dposhap
    >>> scores = np.random.default_rng(0).normal(size=(3, 50))      # [players, items]
    >>> game = dposhap.ItemGame(lambda S: S.astype(float) @ scores, 50)
    >>> res = dposhap.shapley(game, 3, n_boot=100)
    >>> bool(np.allclose(res.values, scores.mean(1)))
    True
    """

    def __init__(self, fn: Callable[[np.ndarray], Any], n_items: int):
        if not callable(fn):
            raise InvalidArgumentError(f"fn must be callable, got {type(fn).__name__}")
        self.fn = fn
        check_int("n_items", n_items, minimum=1)
        self._n_items = int(n_items)
        self._memo: dict[bytes, tuple[np.ndarray, np.ndarray | None]] = {}
        self.evaluated = 0

    @property
    def n_items(self) -> int:
        """Number of items."""
        return self._n_items

    def item_scores(self, coalitions: np.ndarray) -> ItemScores:
        """Per-item scores of a batch, evaluating only the coalitions not seen before."""
        c = np.ascontiguousarray(coalitions, dtype=bool)
        keys = pack_coalitions(c)
        missing = [r for r, key in enumerate(keys) if key not in self._memo]
        if missing:
            fresh = ItemScores.coerce(self.fn(c[missing]), len(missing))
            if fresh.n_items != self._n_items:
                raise UtilityError(f"fn returned scores for {fresh.n_items} items; the game has {self._n_items}")
            for row, r in enumerate(missing):
                self._memo[keys[r]] = (fresh.numer[row], None if fresh.denom is None else fresh.denom[row])
            self.evaluated += len(missing)
        rows = [self._memo[key] for key in keys]
        denom = None if rows[0][1] is None else np.stack([r[1] for r in rows])  # type: ignore[misc]
        return ItemScores(np.stack([r[0] for r in rows]), denom)

    def __call__(self, coalitions: np.ndarray) -> np.ndarray:
        values = self.item_scores(coalitions).values()
        return values[:, 0] if values.shape[1] == 1 else values

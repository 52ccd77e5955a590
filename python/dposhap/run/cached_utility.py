"""Reading a utility through the run's cache, a batch at a time, and asking ahead.

:func:`cached` wraps a batch utility so that every coalition already in a
:class:`~dposhap.run.UtilityStore` is served from it and every new one is evaluated once and
recorded. The wrapper's :meth:`CachedUtility.submit` / :meth:`CachedUtility.collect` pair lets the
estimator ask for the next batch while the previous one is still being evaluated elsewhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core import ItemScores, ItemUtility, pack_coalitions
from ..errors import CacheError, InvalidArgumentError
from .utility_store import UtilityStore

__all__ = ["CachedItemUtility", "CachedUtility", "cached"]


class CachedUtility:
    """A batch utility read through a :class:`UtilityStore`: see :func:`cached`.

    Attributes
    ----------
    hits
        Coalitions served without evaluating them, over all calls (found in the store, or a
        repeat of another coalition of the same batch).
    evaluated
        Coalitions the wrapped utility evaluated, over all calls.
    calls
        Calls of the wrapper.
    """

    def __init__(
        self,
        utility: Callable[[np.ndarray], Any],
        store: UtilityStore,
        key: str,
        *,
        seed: int | None = None,
        n_samples: int = 1,
        on_batch: Callable[[int, int], None] | None = None,
    ):
        if not callable(utility):
            raise InvalidArgumentError(f"utility must be callable, got {type(utility).__name__}")
        if store.readonly:
            raise InvalidArgumentError(f"cached() records what it evaluates: open {store.path} without readonly=True")
        self.utility = utility
        self.store = store
        self.key = key
        self.info = store.info(key)
        self.seed = seed
        self.n_samples = n_samples
        self.on_batch = on_batch
        self.hits = 0
        self.evaluated = 0
        self.calls = 0

    def __call__(self, coalitions: np.ndarray) -> np.ndarray:
        """Utilities of a batch ``[b, n]``: ``[b]`` for one objective, ``[b, k]`` for several."""
        return self.collect(self.submit(coalitions))

    def submit(self, coalitions: np.ndarray) -> _Pending:
        """Look a batch up and start evaluating the missing coalitions; :meth:`collect` finishes it.

        The estimator asks ahead through this pair: a wrapped utility that evaluates elsewhere
        (``submit``/``collect`` of its own, as the Ray pool's proxy has) works on the next batch
        while this one is told; any other is evaluated when the batch is collected."""
        found, values = self.store.lookup(self.key, coalitions)
        missing = np.flatnonzero(~found)
        pending = _Pending(values, missing)
        if missing.size:
            arr = np.asarray(coalitions, dtype=bool)[missing]
            # repeats within the batch are evaluated once, in order of first appearance
            slot_of: dict[bytes, int] = {}
            pending.slots = np.fromiter(
                (slot_of.setdefault(blob, len(slot_of)) for blob in pack_coalitions(arr)),
                dtype=np.int64,
                count=len(arr),
            )
            pending.batch = arr[np.unique(pending.slots, return_index=True)[1]]
            pending.started = time.perf_counter()
            if callable(getattr(self.utility, "submit", None)):
                pending.ticket = self.utility.submit(pending.batch)  # type: ignore[attr-defined]
        return pending

    def collect(self, pending: _Pending) -> np.ndarray:
        """The utilities of a submitted batch, the new ones recorded in the cache (in batch order)."""
        values, evaluated = pending.values, 0
        if pending.batch is not None:
            batch = pending.batch
            items = None
            if pending.ticket is not None:
                out = self.utility.collect(pending.ticket)  # type: ignore[attr-defined]
                items = out if isinstance(out, ItemScores) else None
                raw = items.values() if items is not None else out
            elif isinstance(self.utility, ItemUtility):
                items = ItemScores.coerce(self.utility.item_scores(batch), len(batch))
                raw = items.values()
            else:
                raw = self.utility(batch)
            elapsed = time.perf_counter() - pending.started
            self.store.record(
                self.key,
                batch,
                raw,
                n_samples=self.n_samples,
                seed=self.seed,
                seconds=elapsed / len(batch),
                items=items,
            )
            fresh = np.asarray(raw, dtype=np.float64).reshape(len(batch), -1)
            values[pending.missing] = fresh[pending.slots]
            evaluated = len(batch)
        self.calls += 1
        self.evaluated += evaluated
        self.hits += len(values) - evaluated
        if self.on_batch is not None:
            self.on_batch(len(values) - evaluated, evaluated)
        return values[:, 0].copy() if len(self.info.objectives) == 1 else values

    def discard(self, pending: _Pending) -> None:
        """Drop a submitted batch that will not be collected (nothing of it is recorded)."""
        if pending.ticket is not None and callable(getattr(self.utility, "discard", None)):
            self.utility.discard(pending.ticket)  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"cached({self.info.name!r}, hits={self.hits}, evaluated={self.evaluated})"


@dataclass
class _Pending:
    """A batch between :meth:`CachedUtility.submit` and :meth:`CachedUtility.collect`."""

    values: np.ndarray
    missing: np.ndarray
    slots: np.ndarray | None = None
    batch: np.ndarray | None = None
    ticket: Any = None
    started: float = 0.0


class CachedItemUtility(CachedUtility):
    """A :class:`CachedUtility` over an item utility (:class:`~dposhap.core.ItemUtility`):
    each evaluated coalition's per-item scores are recorded with its values, and
    :meth:`item_scores` reads them back, so the values can be bootstrapped over the items
    without evaluating anything again."""

    @property
    def n_items(self) -> int:
        """Items the wrapped utility averages."""
        return int(self.utility.n_items)  # type: ignore[attr-defined]

    def item_scores(self, coalitions: np.ndarray) -> ItemScores:
        """Per-item scores of a batch, from the cache (coalitions not yet evaluated are evaluated)."""
        found, items = self.store.lookup_items(self.key, coalitions)
        if not found.all():
            known, _ = self.store.lookup(self.key, np.asarray(coalitions, dtype=bool)[~found])
            if known.any():
                raise CacheError(
                    f"{int(known.sum())} coalitions of utility {self.info.name!r} are cached in {self.store.path} "
                    "without their per-item scores (recorded by an older dposhap): their values stand, but their "
                    "evaluation error cannot be bootstrapped; value with --n-boot 0, or move the cache aside to "
                    "re-evaluate"
                )
            self(coalitions)
            found, items = self.store.lookup_items(self.key, coalitions)
        assert items is not None and found.all()
        return items


def cached(
    utility: Callable[[np.ndarray], Any],
    store: UtilityStore,
    key: str,
    *,
    seed: int | None = None,
    n_samples: int = 1,
    on_batch: Callable[[int, int], None] | None = None,
) -> CachedUtility:
    """Read a batch utility through the cache: cached coalitions are never evaluated again.

    Each call looks every coalition up, evaluates only the missing ones (deduplicated, in one
    call of ``utility``), records them with the call's wall time split evenly, and returns
    the whole batch's utilities in input order. A run driven through the wrapper can be
    interrupted and started again with the same seed: the coalitions it had evaluated come
    from the store and the run ends with the same values.

    Parameters
    ----------
    utility
        Bool array ``[b, n]`` -> ``[b]`` or ``[b, k]``.
    store
        A writable store.
    key
        The utility's key from :meth:`UtilityStore.utility_key`; fixes ``n`` and ``k``.
    seed
        The seed the utility runs with, recorded with every row.
    n_samples
        Samples each value averages over, recorded with every row.
    on_batch
        Called after every call as ``on_batch(hits, evaluated)`` with that batch's counts
        (``hits + evaluated`` is the batch size), e.g. to advance a progress bar.

    Returns
    -------
    CachedUtility
        A callable with the same signature, which returns ``[b]`` when the key has one
        objective and ``[b, k]`` otherwise, and counts ``.hits`` and ``.evaluated``.

    Examples
    --------
    >>> u = cached(utility, store, key)                                        # doctest: +SKIP
    >>> result = dposhap.shapley(u, n, seed=0); u.evaluated, u.hits
    """
    cls = CachedItemUtility if isinstance(utility, ItemUtility) else CachedUtility
    return cls(utility, store, key, seed=seed, n_samples=n_samples, on_batch=on_batch)

"""The subset search: exhaustive over every coalition, or greedy (forward, backward, then local)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidArgumentError

#: Sources up to which the subset search is exhaustive (2^16 coalitions).
EXHAUSTIVE_SOURCES = 16


@dataclass
class SearchResult:
    """What :func:`search_subsets` found.

    Attributes
    ----------
    best
        bool ``[n]``: the chosen coalition.
    ranked
        bool ``[r, n]``: the evaluated coalitions, best first (``ranked[0]`` is ``best``).
    values
        ``[r, K]``: their objective values.
    method
        ``"exhaustive"`` or ``"greedy"``.
    evaluated
        Distinct coalitions whose utility the search asked for.
    """

    best: np.ndarray
    ranked: np.ndarray
    values: np.ndarray
    method: str
    evaluated: int


def _all_coalitions(n: int) -> np.ndarray:
    index = np.arange(2**n, dtype=np.int64)
    return ((index[:, None] >> np.arange(n)) & 1).astype(bool)


def search_subsets(
    values: Callable[[np.ndarray], np.ndarray],
    n: int,
    rank: Callable[[np.ndarray, np.ndarray], np.ndarray],
    better: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], bool],
    *,
    method: str = "auto",
    batch_size: int = 4096,
) -> SearchResult:
    """The coalition that ranks first under ``rank``.

    Parameters
    ----------
    values
        bool ``[b, n]`` -> objective values ``[b, K]``.
    n
        Number of sources.
    rank
        ``rank(values, coalitions)``: objective values ``[b, K]`` of coalitions ``[b, n]`` -> the
        rows' indices, best first.
    better
        ``better(a, b, coalition_a, coalition_b)``: whether ``coalition_a`` with values ``a`` ``[K]``
        beats ``coalition_b`` with ``b``.
    method
        ``"exhaustive"`` (every coalition), ``"greedy"`` (forward, backward, then local search), or
        ``"auto"``: exhaustive up to :data:`EXHAUSTIVE_SOURCES` sources.
    batch_size
        Coalitions per call of ``values`` in the exhaustive search.

    Returns
    -------
    SearchResult
    """
    if method == "auto":
        method = "exhaustive" if n <= EXHAUSTIVE_SOURCES else "greedy"
    if method not in ("exhaustive", "greedy"):
        raise InvalidArgumentError(f"search must be 'auto', 'exhaustive' or 'greedy', got {method!r}")
    if method == "exhaustive":
        if n > 20:
            raise InvalidArgumentError(f"an exhaustive search over {n} sources needs 2^{n} coalitions: use greedy")
        every = _all_coalitions(n)
        table = np.concatenate([values(every[k : k + batch_size]) for k in range(0, len(every), batch_size)])
        order = rank(table, every)
        return SearchResult(every[order[0]], every[order], table[order], method, len(every))

    memo: dict[bytes, np.ndarray] = {}

    def ask(coalitions: np.ndarray) -> np.ndarray:
        keys = [row.tobytes() for row in coalitions]
        todo = [r for r, key in enumerate(keys) if key not in memo]
        if todo:
            fresh = np.asarray(values(coalitions[todo]), dtype=np.float64).reshape(len(todo), -1)
            for r, row in zip(todo, fresh, strict=True):
                memo[keys[r]] = row
        return np.stack([memo[key] for key in keys])

    def climb(start: np.ndarray, moves: Callable[[np.ndarray], list[int]]) -> np.ndarray:
        current = start.copy()
        here = ask(current[None])[0]
        while True:
            candidates = moves(current)
            if not candidates:
                return current
            trial = np.repeat(current[None], len(candidates), axis=0)
            trial[np.arange(len(candidates)), candidates] ^= True
            got = ask(trial)
            top = int(rank(got, trial)[0])
            if not better(got[top], here, trial[top], current):
                return current
            current, here = trial[top], got[top]

    forward = climb(np.zeros(n, dtype=bool), lambda s: list(np.flatnonzero(~s)))
    backward = climb(np.ones(n, dtype=bool), lambda s: list(np.flatnonzero(s)))
    ends = ask(np.stack([forward, backward]))
    start = forward if int(rank(ends, np.stack([forward, backward]))[0]) == 0 else backward
    climb(start, lambda s: list(range(n)))
    keys = list(memo)
    seen = np.stack([np.frombuffer(key, dtype=bool) for key in keys])
    table = np.stack([memo[key] for key in keys])
    order = rank(table, seen)
    return SearchResult(seen[order[0]], seen[order], table[order], method, len(memo))

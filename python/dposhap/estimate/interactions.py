"""How sources interact: the pairwise Shapley interaction index (Grabisch & Roubens 1999).

For players ``i != j`` of a game ``v`` on ``N = {0..n-1}``,

    SII_ij = sum_{S ⊆ N \\ {i, j}} |S|! (n - |S| - 2)! / (n - 1)! [v(S+ij) - v(S+i) - v(S+j) + v(S)]

the Shapley-weighted mean of how much adding ``j`` changes ``i``'s marginal contribution.
Negative: the two are redundant (each is worth less once the other is in, as two vendors
selling the same data); positive: complementary (they help most together). A game that is a
sum of pair terms ``a_ij 1[i, j in S]`` has ``SII_ij = a_ij``.

- :func:`interactions_exact` computes every pair from the table of all ``2**n`` utilities;
- :func:`interactions_from_samples` estimates them from sampled coalitions (a second-order
  surrogate plus a stratified correction on its residuals, with standard errors);
- :func:`pairwise_interactions` does either for a callable or a native game;
- :func:`dposhap.report.plot_interactions` draws the matrix as a heatmap (plots live in the report).

The diagonal of every matrix here is 0 (the index is defined for pairs only).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core import Game, pack_coalitions, utility_values
from ..errors import InvalidArgumentError
from ..validate import check_int

#: A game: bool coalitions ``[b, n]`` to utilities ``[b]`` or ``[b, k]``, or a native game.

#: Default largest number of players valued exactly (``2**16`` coalitions).
MAX_EXACT_PLAYERS = 16
#: Most players whose ``2**n`` coalitions are ever enumerated.
MAX_TABLE_PLAYERS = 24
#: With at least this many sampled coalitions per surrogate parameter, the surrogate is fitted
#: once on all of them (more accurate); with fewer, it is cross-fitted (see
#: :func:`interactions_from_samples`).
IN_SAMPLE_RATIO = 4
#: Coalitions per call of the game.
BATCH = 4096
#: Coalitions per chunk of the exact computation (bounds its memory).
_CHUNK = 1 << 15


@dataclass
class InteractionResult:
    """Pairwise Shapley interaction indices of every pair of players.

    Attributes
    ----------
    matrix
        ``[n, n]`` (one objective) or ``[k, n, n]``; symmetric, diagonal 0.
    stderr
        Standard error of each entry (same shape), or None when the matrix is exact.
    exact
        Whether the matrix was computed from all ``2**n`` coalitions.
    names
        One name per player.
    objectives
        One name per objective (None when not given).
    method
        ``"exact"`` or ``"surrogate+stratified"``.
    n_evaluations
        Distinct coalitions evaluated.
    """

    matrix: np.ndarray
    stderr: np.ndarray | None
    exact: bool
    names: list[str]
    objectives: list[str] | None = None
    method: str = "exact"
    n_evaluations: int = 0

    def plane(self, objective: int = 0) -> np.ndarray:
        """The ``[n, n]`` matrix of one objective.

        Raises
        ------
        InvalidArgumentError
            ``objective`` does not exist.
        """
        m = np.asarray(self.matrix)
        if m.ndim == 2:
            if objective != 0:
                raise InvalidArgumentError(f"objective {objective} does not exist: the matrix has one objective (0)")
            return m
        if not 0 <= objective < m.shape[0]:
            raise InvalidArgumentError(f"objective {objective} does not exist: choose one in 0..{m.shape[0] - 1}")
        return m[objective]

    def _ranked(self, top: int, objective: int, sign: int) -> list[tuple[str, str, float]]:
        check_int("top", top, minimum=1)
        plane = self.plane(objective)
        i, j = np.triu_indices(plane.shape[0], k=1)
        vals = plane[i, j] * sign
        order = np.argsort(-vals, kind="stable")
        return [(self.names[i[o]], self.names[j[o]], float(plane[i[o], j[o]])) for o in order[:top] if vals[o] > 0]

    def most_redundant(self, top: int = 5, objective: int = 0) -> list[tuple[str, str, float]]:
        """The ``top`` pairs with the most negative index, most negative first (only pairs below 0).

        Returns
        -------
        list of (name_i, name_j, value)
        """
        return self._ranked(top, objective, -1)

    def most_complementary(self, top: int = 5, objective: int = 0) -> list[tuple[str, str, float]]:
        """The ``top`` pairs with the most positive index, most positive first (only pairs above 0).

        Returns
        -------
        list of (name_i, name_j, value)
        """
        return self._ranked(top, objective, 1)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> InteractionResult:
        """The inverse of :meth:`to_json`."""
        return cls(
            matrix=np.asarray(doc["matrix"], dtype=float),
            stderr=None if doc.get("stderr") is None else np.asarray(doc["stderr"], dtype=float),
            exact=bool(doc["exact"]),
            names=list(doc["names"]),
            objectives=None if doc.get("objectives") is None else list(doc["objectives"]),
            method=str(doc.get("method", "exact")),
            n_evaluations=int(doc.get("n_evaluations", 0)),
        )

    def to_json(self) -> dict[str, Any]:
        """Plain-Python form (lists, floats, strings), ready for ``json.dump``."""
        return {
            "index": "shapley_interaction",
            "method": self.method,
            "exact": bool(self.exact),
            "n_evaluations": int(self.n_evaluations),
            "names": list(self.names),
            "objectives": None if self.objectives is None else list(self.objectives),
            "matrix": np.asarray(self.matrix, dtype=float).tolist(),
            "stderr": None if self.stderr is None else np.asarray(self.stderr, dtype=float).tolist(),
        }


# ---------------------------------------------------------------------------------------
# Weights


def _pair_weights(n: int) -> np.ndarray:
    """``w[t] = t! (n-t-2)! / (n-1)!`` for ``t = 0..n-2``, padded with zeros to length ``n + 2``
    (so that ``w[t]`` for ``t = -1, n-1, n`` reads 0 through ``w[t + 1]`` offsets)."""
    w = np.zeros(n + 2)
    for t in range(n - 1):
        w[t] = 1.0 / ((n - 1) * math.comb(n - 2, t))
    return w


def _popcount(masks: np.ndarray, n: int) -> np.ndarray:
    return ((masks[:, None] >> np.arange(n, dtype=np.int64)) & 1).sum(axis=1)


def _symmetrize(m: np.ndarray) -> np.ndarray:
    m = 0.5 * (m + np.swapaxes(m, -1, -2))
    idx = np.arange(m.shape[-1])
    m[..., idx, idx] = 0.0
    return m


# ---------------------------------------------------------------------------------------
# Exact


def interactions_exact(values: np.ndarray, n: int) -> np.ndarray:
    """Pairwise Shapley interaction indices from the utilities of all ``2**n`` coalitions.

    Parameters
    ----------
    values
        ``[2**n]`` or ``[2**n, k]``: the utility of the coalition whose bit ``i`` says whether
        player ``i`` is in it (as :func:`dposhap.testing.table_of` lays it out).
    n
        Number of players, 1 to 24.

    Returns
    -------
    numpy.ndarray
        ``[n, n]`` (or ``[k, n, n]``), symmetric, with 0 on the diagonal.

    Notes
    -----
    With ``D_i(R) = v(R + i) - v(R)`` for ``i`` not in ``R``, the index is
    ``SII_ij = sum_R D_i(R) c_j(R)`` over ``R`` without ``i``, where ``c_j(R) = w(|R| - 1)`` if
    ``j`` is in ``R`` and ``-w(|R|)`` otherwise: one matrix product per chunk of coalitions,
    ``O(n^2 2^n)`` in all.
    """
    check_int("n", n, minimum=1, maximum=MAX_TABLE_PLAYERS)
    table = np.asarray(values, dtype=np.float64)
    if table.ndim not in (1, 2) or table.shape[0] != 2**n:
        raise InvalidArgumentError(
            f"values has shape {table.shape}, expected [2**{n}] = [{2**n}] or [{2**n}, k]: one utility per coalition mask"
        )
    if not np.isfinite(table).all():
        raise InvalidArgumentError("values contains NaN or infinity: every coalition needs a finite utility")
    scalar = table.ndim == 1
    t2 = table[:, None] if scalar else table
    k = t2.shape[1]
    w = _pair_weights(n)
    bits = np.int64(1) << np.arange(n, dtype=np.int64)
    out = np.zeros((k, n, n))
    for lo in range(0, 2**n, _CHUNK):
        masks = np.arange(lo, min(lo + _CHUNK, 2**n), dtype=np.int64)
        member = ((masks[:, None] & bits) != 0).astype(np.float64)  # [r, n]
        sizes = member.sum(axis=1).astype(np.int64)
        # c[r, j] = w(|R| - 1) if j in R else -w(|R|)
        with_j = w[np.maximum(sizes - 1, 0)] * (sizes > 0)
        coef = member * with_j[:, None] - (1.0 - member) * w[sizes][:, None]
        for i in range(n):
            free = (masks & bits[i]) == 0
            r = masks[free]
            d = t2[r | bits[i]] - t2[r]  # [r_i, k]
            out[:, i, :] += d.T @ coef[free]
    out = _symmetrize(out)
    return out[0] if scalar else out


# ---------------------------------------------------------------------------------------
# From samples


def _unique_rows(coalitions: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keys = pack_coalitions(coalitions)
    _, first = np.unique(np.array(keys, dtype=object), return_index=True)
    first = np.sort(first)
    return coalitions[first], values[first]


def _pair_design(x: np.ndarray) -> np.ndarray:
    """Columns ``[x_0..x_{n-1}, x_i x_j for i < j]`` of a bool matrix ``[c, n]``."""
    xf = x.astype(np.float64)
    i, j = np.triu_indices(x.shape[1], k=1)
    return np.concatenate([xf, xf[:, i] * xf[:, j]], axis=1)


def _fit_surrogate(x: np.ndarray, y: np.ndarray, weights: np.ndarray, total: np.ndarray, ridge: float) -> np.ndarray:
    """Kernel-weighted ridge fit of ``y - v(empty)`` on main and pair effects, with the effects
    summing to ``total = v(N) - v(empty)`` exactly (a KKT system). Returns ``[p, k]``."""
    z = _pair_design(x)
    p = z.shape[1]
    a = z.T @ (z * weights[:, None])
    scale = float(np.mean(np.diag(a))) or 1.0
    a[np.diag_indices(p)] += ridge * scale
    kkt = np.zeros((p + 1, p + 1))
    kkt[:p, :p] = a
    kkt[:p, p] = 1.0
    kkt[p, :p] = 1.0
    rhs = np.concatenate([z.T @ (y * weights[:, None]), total[None, :]], axis=0)
    try:
        sol = np.linalg.solve(kkt, rhs)
    except np.linalg.LinAlgError:
        sol = np.linalg.lstsq(kkt, rhs, rcond=None)[0]
    return sol[:p]


def _surrogate(x: np.ndarray, y: np.ndarray, n: int, total: np.ndarray, ridge: float) -> np.ndarray:
    """Effects ``[p, k]`` of the second-order surrogate fitted to interior coalitions ``x`` with
    utilities ``y`` (minus ``v(empty)``); ``total = v(N) - v(empty)``."""
    k = y.shape[1]
    if x.shape[0] == 0:
        beta = np.zeros((n + n * (n - 1) // 2, k))
        beta[:n] = total / n
        return beta
    sizes = x.sum(axis=1)
    counts = np.bincount(sizes, minlength=n + 1)
    s = sizes.astype(np.float64)
    # Shapley-kernel weight of a size-s coalition times C(n, s) / count_s (the inverse of its
    # share in the sample), so that the fit estimates the weighted fit on all coalitions.
    weights = (n - 1) / (s * (n - s) * counts[sizes])
    return _fit_surrogate(x, y, weights, total, ridge)


def _residual_index(x: np.ndarray, resid: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified estimate ``[k, n, n]`` of the index of the residual game, and its variance.

    Within size ``s``, ``v(T)`` enters ``SII_ij`` with the coefficient ``w(s-2)`` (both ``i``
    and ``j`` in ``T``), ``-w(s-1)`` (one of them) or ``w(s)`` (neither); the sum over the
    ``C(n, s)`` coalitions of that size is estimated by ``C(n, s)`` times the sample mean.
    """
    k = resid.shape[1]
    sizes = x.sum(axis=1)
    w = _pair_weights(n)
    est = np.zeros((k, n, n))
    var = np.zeros((k, n, n))
    for s in range(1, n):
        rows = sizes == s
        c = int(rows.sum())
        if c == 0:
            continue
        total = math.comb(n, s)
        a, b, d = (w[s - 2] if s >= 2 else 0.0), -w[s - 1], w[s]
        xs = x[rows].astype(np.float64)
        ns = 1.0 - xs
        for obj in range(k):
            r = resid[rows, obj]
            sums, squares = np.zeros((n, n)), np.zeros((n, n))
            for power, target in ((1, sums), (2, squares)):
                rp = r**power
                one = xs.T @ (ns * rp[:, None])
                target += a**power * (xs.T @ (xs * rp[:, None])) + b**power * (one + one.T)
                target += d**power * (ns.T @ (ns * rp[:, None]))
            mean = sums / c
            est[obj] += total * mean
            # one sample in a stratum: its term squared stands in for the variance (conservative)
            spread = np.maximum(squares - c * mean**2, 0.0) / (c - 1) if c >= 2 else squares
            var[obj] += total**2 * max(0.0, 1.0 - c / total) * spread / c
    return est, var


def _pair_matrix(beta: np.ndarray, n: int) -> np.ndarray:
    k = beta.shape[1]
    gamma = np.zeros((k, n, n))
    iu, ju = np.triu_indices(n, k=1)
    gamma[:, iu, ju] = beta[n:].T
    return gamma + np.swapaxes(gamma, -1, -2)


def interactions_from_samples(
    coalitions: np.ndarray,
    values: np.ndarray,
    n: int,
    *,
    names: Sequence[str] | None = None,
    objectives: Sequence[str] | None = None,
    ridge: float = 1e-8,
    seed: int = 0,
) -> InteractionResult:
    """Pairwise Shapley interaction indices estimated from sampled coalitions.

    Two parts, cross-fitted. (1) A second-order surrogate
    ``g(S) = v(empty) + sum_{i in S} b_i + sum_{i<j in S} g_ij`` is fitted by Shapley-kernel
    weighted least squares with a small ridge, the empty and the grand coalition pinned
    exactly; its index is exactly ``g_ij``. (2) The index of the residual game ``v - g`` is
    added, estimated size by size: within a coalition size the index is a fixed linear
    combination of the utilities, and the sum over all coalitions of that size is estimated by
    the sampled mean times their number. The index is linear in the game, so (1) + (2) is
    unbiased for the true index (not only the surrogate's) when coalitions are drawn uniformly
    within each size. The coalitions are split at random into two halves; each half's residuals
    are taken from the surrogate fitted on the other half, so that an overfitted surrogate
    cannot hide its errors (with fewer coalitions than parameters, the error bars grow instead
    of vanishing). The estimate is the mean of the two halves' estimates; its standard error
    combines their stratified-sampling variances (per-size sample variance, finite-population
    corrected) as if independent. When every coalition is present, one fit on all of them
    gives the exact index and zero error.

    Parameters
    ----------
    coalitions
        Bool ``[c, n]``. Must contain the empty and the grand coalition. Within each size, the
        coalitions are assumed drawn uniformly at random (the sizes may follow any law; the
        sampler :func:`kernel_sample` draws them so). Duplicate rows are dropped.
    values
        ``[c]`` or ``[c, k]``: the utility of each row.
    n
        Number of players (at least 2).
    names, objectives
        Names of the players and objectives.
    ridge
        Ridge on the surrogate's effects, relative to the mean diagonal of the normal matrix.
    seed
        Seed of the split into halves.

    Returns
    -------
    InteractionResult
        ``exact`` is True only when every coalition was given. Sizes without any sampled
        coalition in a half contribute through the surrogate only (a bias the error bar does
        not see); a size with a single coalition in a half gets its term squared as variance.
    """
    check_int("n", n, minimum=2)
    check_int("seed", seed, minimum=0)
    x = np.asarray(coalitions)
    if x.ndim != 2 or x.shape[1] != n:
        raise InvalidArgumentError(f"coalitions has shape {x.shape}, expected a bool array [c, {n}]")
    if x.dtype != bool:
        if not np.isin(x, (0, 1)).all():
            raise InvalidArgumentError("coalitions must be bool or 0/1 membership values")
        x = x.astype(bool)
    scalar = np.ndim(values) == 1
    y = utility_values(values, x.shape[0], "values argument")
    x, y = _unique_rows(x, y)
    sizes = x.sum(axis=1)
    empty, grand = np.flatnonzero(sizes == 0), np.flatnonzero(sizes == n)
    if empty.size == 0 or grand.size == 0:
        raise InvalidArgumentError(
            "coalitions must include the empty and the grand coalition (their utilities pin the surrogate)"
        )
    v0, vn = y[empty[0]], y[grand[0]]
    inner = (sizes > 0) & (sizes < n)
    xi, yi = x[inner], y[inner] - v0
    complete = n < 63 and x.shape[0] == 2**n
    n_params = n + n * (n - 1) // 2
    if complete or xi.shape[0] >= IN_SAMPLE_RATIO * n_params:
        beta = _surrogate(xi, yi, n, vn - v0, ridge)
        corr, var = _residual_index(xi, yi - _pair_design(xi) @ beta, n)
        # in-sample residuals are smaller than fresh ones by about (c - p) / c
        inflate = 1.0 if complete else xi.shape[0] / (xi.shape[0] - n_params)
        matrix, variance = _pair_matrix(beta, n) + corr, var * inflate
    else:
        half = np.random.default_rng(seed).permutation(xi.shape[0]) % 2 == 0
        parts = []
        for fit, held in ((half, ~half), (~half, half)):
            beta = _surrogate(xi[fit], yi[fit], n, vn - v0, ridge)
            corr, var = _residual_index(xi[held], yi[held] - _pair_design(xi[held]) @ beta, n)
            parts.append((_pair_matrix(beta, n) + corr, var))
        matrix = 0.5 * (parts[0][0] + parts[1][0])
        variance = 0.25 * (parts[0][1] + parts[1][1])
    matrix, stderr = _symmetrize(matrix), np.sqrt(_symmetrize(variance))
    k = y.shape[1]
    one = scalar and k == 1
    return InteractionResult(
        matrix=matrix[0] if one else matrix,
        stderr=stderr[0] if one else stderr,
        exact=complete,
        names=_player_names(names, n),
        objectives=_objective_names(objectives, k),
        method="exact" if complete else "surrogate+stratified",
        n_evaluations=int(x.shape[0]),
    )


# ---------------------------------------------------------------------------------------
# Games


def _player_names(names: Sequence[str] | None, n: int) -> list[str]:
    if names is None:
        return [str(i) for i in range(n)]
    out = [str(x) for x in names]
    if len(out) != n:
        raise InvalidArgumentError(f"names has {len(out)} entries but there are {n} players: give one name per player")
    return out


def _objective_names(objectives: Sequence[str] | None, k: int) -> list[str] | None:
    if objectives is None:
        return None
    out = [str(x) for x in objectives]
    if len(out) != k:
        raise InvalidArgumentError(f"objectives has {len(out)} entries but the game has {k} objective(s)")
    return out


def _evaluate(game: Game, coalitions: np.ndarray) -> np.ndarray:
    parts = []
    for lo in range(0, coalitions.shape[0], BATCH):
        batch = np.ascontiguousarray(coalitions[lo : lo + BATCH])
        parts.append(utility_values(game(batch), batch.shape[0], "game"))
    return np.concatenate(parts, axis=0)


def kernel_sample(n: int, budget: int, seed: int = 0) -> np.ndarray:
    """``budget`` distinct coalitions of ``n`` players: the empty and the grand one, then pairs
    ``(S, N minus S)`` with sizes drawn from the Shapley kernel ``∝ 1 / (s (n - s))`` and members
    uniform within the size. Returns bool ``[budget, n]`` (fewer only if ``2**n < budget``)."""
    check_int("n", n, minimum=2)
    check_int("budget", budget, minimum=2)
    budget = min(budget, 2**n) if n < 63 else budget
    rng = np.random.default_rng(seed)
    sizes = np.arange(1, n)
    prob = 1.0 / (sizes * (n - sizes))
    prob /= prob.sum()
    rows = [np.zeros(n, dtype=bool), np.ones(n, dtype=bool)]
    seen = set(pack_coalitions(np.array(rows)))
    while len(rows) < budget:
        need = budget - len(rows)
        draw = max(16, need)
        s = rng.choice(sizes, size=draw, p=prob)
        keys = rng.random((draw, n))
        order = np.argsort(keys, axis=1)
        member = np.zeros((draw, n), dtype=bool)
        member[np.arange(draw)[:, None], order] = np.arange(n)[None, :] < s[:, None]
        added = 0
        for row in member:
            for cand in (row, ~row):
                key = pack_coalitions(cand[None, :])[0]
                if key not in seen and len(rows) < budget:
                    seen.add(key)
                    rows.append(cand.copy())
                    added += 1
        if added == 0 and len(seen) >= 2**n:
            break
    return np.array(rows, dtype=bool)


def pairwise_interactions(
    game: Game,
    n: int | None = None,
    *,
    names: Sequence[str] | None = None,
    objectives: Sequence[str] | None = None,
    max_exact: int = MAX_EXACT_PLAYERS,
    budget: int | None = None,
    seed: int = 0,
) -> InteractionResult:
    """Pairwise Shapley interaction index of every pair of players of ``game``.

    Parameters
    ----------
    game
        A callable from bool coalitions ``[b, n]`` to utilities ``[b]`` or ``[b, k]``, or a
        native game such as :class:`dposhap.MarginGame` (evaluated in Rust).
    n
        Number of players; taken from a native game or from ``names`` when omitted.
    names, objectives
        Names of the players and of the objectives.
    max_exact
        Up to this many players (at most 24), all ``2**n`` coalitions are evaluated (in
        batches of 4096) and the index is exact.
    budget
        Coalitions to evaluate above ``max_exact`` (default ``5 * (1 + n + n (n-1) / 2)``, at
        least 2048: a few per surrogate parameter).
    seed
        Seed of the coalition sampler (:func:`kernel_sample`).

    Notes
    -----
    The sampled estimate fits ``p = n + n (n-1) / 2`` effects to ``c`` coalitions: ``O(c p^2)``
    time and ``O(c p)`` memory, seconds at 64 sources, impractical past a few hundred.

    Returns
    -------
    InteractionResult

    Examples
    --------
    >>> import numpy as np, dposhap
    >>> both = lambda S: (S[:, 0] & S[:, 1]).astype(float)   # 0 and 1 only help together
    >>> res = dposhap.pairwise_interactions(both, 3)
    >>> res.most_complementary(top=1)
    [('0', '1', 1.0)]
    """
    if n is None:
        if hasattr(game, "n_players"):
            n = int(game.n_players)
        elif names is not None:
            n = len(names)
        else:
            raise InvalidArgumentError("n is missing: pass the number of players (or names, or a native game)")
    check_int("n", n, minimum=2)
    check_int("max_exact", max_exact, minimum=2, maximum=MAX_TABLE_PLAYERS)
    check_int("budget", budget, minimum=2, optional=True)
    check_int("seed", seed, minimum=0)
    if not callable(game):
        raise InvalidArgumentError(f"game must be a callable or a native game, got {type(game).__name__}")
    names_list = _player_names(names, n)
    if n <= max_exact:
        masks = np.arange(2**n, dtype=np.int64)
        table = _evaluate(game, ((masks[:, None] >> np.arange(n)) & 1).astype(bool))
        k = table.shape[1]
        matrix = interactions_exact(table, n)  # [k, n, n]
        return InteractionResult(
            matrix=matrix[0] if k == 1 else matrix,
            stderr=None,
            exact=True,
            names=names_list,
            objectives=_objective_names(objectives, k),
            method="exact",
            n_evaluations=2**n,
        )
    if budget is None:
        budget = max(2048, 5 * (1 + n + n * (n - 1) // 2))
    coalitions = kernel_sample(n, budget, seed)
    vals = _evaluate(game, coalitions)
    res = interactions_from_samples(coalitions, vals, n, names=names_list, objectives=objectives)
    if vals.shape[1] == 1:
        res.matrix = np.asarray(res.matrix).reshape(n, n)
        res.stderr = None if res.stderr is None else np.asarray(res.stderr).reshape(n, n)
    return res


__all__ = [
    "InteractionResult",
    "interactions_exact",
    "interactions_from_samples",
    "kernel_sample",
    "pairwise_interactions",
]

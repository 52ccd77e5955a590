"""Test games for the Shapley benchmark and their exact Shapley values.

Every game is a vectorised utility ``bool[b, n] -> float[b]`` with fixed random
parameters. None of them is of order <= 2 (paired regression estimators recover such
games exactly, which would make the comparison meaningless).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

UtilityFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Game:
    """A cooperative game with a vectorised utility.

    Parameters
    ----------
    name
        Short label used in the tables.
    n
        Number of players.
    utility
        ``bool[b, n] -> float[b]``.
    description
        One line on how the game is built.
    margins
        For margin games, the ``[n, m]`` float64 matrix of per-source margins
        (so that the native ``dposhap.MarginGame`` can be cross-checked against it).
    margin_kind
        The ``dposhap.MarginGame`` objective matching ``utility`` (``"accuracy"``,
        ``"logsigmoid"``), or ``None`` for other games.
    """

    name: str
    n: int
    utility: UtilityFn
    description: str
    margins: np.ndarray | None = field(default=None, repr=False)
    margin_kind: str | None = None


# ---------------------------------------------------------------------------------------
# Utilities


def _as_matrix(coalitions: np.ndarray, n: int) -> np.ndarray:
    x = np.asarray(coalitions, dtype=bool)
    if x.ndim == 1:
        x = x[None, :]
    if x.shape[1] != n:
        raise ValueError(f"coalition matrix has {x.shape[1]} columns, expected {n}")
    return x


def weighted_voting_utility(weights: np.ndarray, quota: float) -> UtilityFn:
    """``v(S) = 1[sum_{i in S} w_i >= quota]``."""
    w = np.asarray(weights, dtype=np.float64)

    def utility(coalitions: np.ndarray) -> np.ndarray:
        x = _as_matrix(coalitions, w.size)
        return (x @ w >= quota).astype(np.float64)

    return utility


def accuracy_utility(margins: np.ndarray) -> UtilityFn:
    """Preference accuracy: ``v(S) = mean_j 1[sum_{i in S} M_ij > 0]``, ties count 1/2."""
    m = np.asarray(margins, dtype=np.float64)

    def utility(coalitions: np.ndarray) -> np.ndarray:
        x = _as_matrix(coalitions, m.shape[0])
        s = x.astype(np.float64) @ m
        return ((s > 0).sum(axis=1) + 0.5 * (s == 0).sum(axis=1)) / m.shape[1]

    return utility


def logsigmoid_utility(margins: np.ndarray) -> UtilityFn:
    """Held-out DPO log-likelihood: ``v(S) = mean_j log sigmoid(sum_{i in S} M_ij)``."""
    m = np.asarray(margins, dtype=np.float64)

    def utility(coalitions: np.ndarray) -> np.ndarray:
        x = _as_matrix(coalitions, m.shape[0])
        s = x.astype(np.float64) @ m
        return -np.logaddexp(0.0, -s).mean(axis=1)

    return utility


def third_order_utility(
    linear: np.ndarray, pairwise: np.ndarray, triples: np.ndarray, triple_coef: np.ndarray,
    scale: float,
) -> UtilityFn:
    """``v(S) = tanh(scale * (a.x + x^T B x + sum_t c_t x_i x_j x_k))`` on indicators ``x``."""
    a = np.asarray(linear, dtype=np.float64)
    b = np.asarray(pairwise, dtype=np.float64)
    t = np.asarray(triples, dtype=np.int64)
    c = np.asarray(triple_coef, dtype=np.float64)

    def utility(coalitions: np.ndarray) -> np.ndarray:
        x = _as_matrix(coalitions, a.size).astype(np.float64)
        inner = x @ a + np.einsum("bi,ij,bj->b", x, b, x)
        inner += (x[:, t[:, 0]] * x[:, t[:, 1]] * x[:, t[:, 2]]) @ c
        return np.tanh(scale * inner)

    return utility


def preference_margins(n: int, m: int, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    """Margins ``[n, m]`` with heterogeneous per-source signal and noise.

    Source ``i`` has a signal strength ``mu_i`` (some sources help, some hurt, some are
    pure noise) and a noise level ``sigma_i``; pair ``j`` has a difficulty ``d_j`` that
    scales every source's signal on it alike. ``M_ij = scale * (mu_i d_j + sigma_i z_ij)``.
    """
    mu = rng.normal(0.15, 0.35, size=n)
    mu[rng.choice(n, size=max(1, n // 8), replace=False)] = 0.0  # pure-noise sources
    sigma = rng.uniform(0.3, 1.5, size=n)
    difficulty = rng.gamma(2.0, 0.5, size=m)
    z = rng.standard_normal((n, m))
    return scale * (mu[:, None] * difficulty[None, :] + sigma[:, None] * z)


# ---------------------------------------------------------------------------------------
# The games of the accuracy benchmark


def make_games(n: int = 16) -> list[Game]:
    """Build the four nonlinear games of the accuracy benchmark (fixed seeds)."""
    games = []

    rng = np.random.default_rng(1001)
    weights = rng.integers(1, 25, size=n)
    quota = float(np.floor(weights.sum() / 2) + 1)
    games.append(Game(
        name="voting",
        n=n,
        utility=weighted_voting_utility(weights, quota),
        description=f"weighted voting, integer weights in [1, 24] (sum {int(weights.sum())}), "
        f"quota {int(quota)} (simple majority)",
    ))

    rng = np.random.default_rng(1002)
    m_acc = preference_margins(n, 500, rng)
    games.append(Game(
        name="pref-accuracy",
        n=n,
        utility=accuracy_utility(m_acc),
        description="preference accuracy over m=500 held-out pairs, "
        "M_ij = mu_i d_j + sigma_i z_ij, ties count 1/2 (v(empty) = 0.5)",
        margins=m_acc,
        margin_kind="accuracy",
    ))

    rng = np.random.default_rng(1003)
    m_ls = preference_margins(n, 500, rng, scale=0.8)
    games.append(Game(
        name="logsigmoid",
        n=n,
        utility=logsigmoid_utility(m_ls),
        description="mean log sigmoid of the coalition margin over m=500 pairs "
        "(held-out DPO log-likelihood), same margin model scaled by 0.8",
        margins=m_ls,
        margin_kind="logsigmoid",
    ))

    rng = np.random.default_rng(1004)
    linear = rng.normal(0.1, 0.3, size=n)
    pairwise = np.triu(rng.normal(0.0, 0.3, size=(n, n)) * (rng.random((n, n)) < 0.3), k=1)
    n_triples = 24
    triples = np.array([rng.choice(n, size=3, replace=False) for _ in range(n_triples)])
    triple_coef = rng.normal(0.0, 0.8, size=n_triples)
    games.append(Game(
        name="third-order",
        n=n,
        utility=third_order_utility(linear, pairwise, triples, triple_coef, scale=0.5),
        description=f"tanh(0.5 (linear + 30%-dense pairwise + {n_triples} random triple terms))",
    ))
    return games


# ---------------------------------------------------------------------------------------
# Exact Shapley values by enumeration


def all_coalitions(n: int) -> np.ndarray:
    """All ``2^n`` coalitions as a ``bool[2^n, n]`` matrix; row ``k`` has bit ``i`` of ``k``."""
    codes = np.arange(1 << n, dtype=np.int64)
    return ((codes[:, None] >> np.arange(n, dtype=np.int64)) & 1).astype(bool)


def utility_table(utility: UtilityFn, n: int, chunk: int = 8192) -> np.ndarray:
    """Evaluate ``utility`` on every coalition; entry ``k`` is ``v`` of the coalition coded ``k``."""
    if n > 24:
        raise ValueError(f"exact enumeration needs 2^n evaluations; n={n} is too large")
    x = all_coalitions(n)
    out = np.empty(x.shape[0], dtype=np.float64)
    for start in range(0, x.shape[0], chunk):
        out[start:start + chunk] = utility(x[start:start + chunk])
    return out


def shapley_from_table(values: np.ndarray, n: int) -> np.ndarray:
    """Exact Shapley values from the table of ``v`` over all coalitions (bit-coded)."""
    codes = np.arange(1 << n, dtype=np.int64)
    sizes = np.zeros(codes.size, dtype=np.int64)
    for i in range(n):
        sizes += (codes >> i) & 1
    # weight of a coalition S not containing i: |S|! (n - |S| - 1)! / n! = 1 / (n C(n-1, |S|))
    from math import comb

    weight_by_size = np.array([1.0 / (n * comb(n - 1, s)) for s in range(n)])
    phi = np.empty(n, dtype=np.float64)
    for i in range(n):
        bit = 1 << i
        without = codes[(codes & bit) == 0]
        marginal = values[without | bit] - values[without]
        phi[i] = np.dot(weight_by_size[sizes[without]], marginal)
    return phi


@functools.lru_cache(maxsize=None)
def _exact_cached(name: str, n: int, utility: UtilityFn) -> tuple[np.ndarray, float, float]:
    t0 = time.perf_counter()
    table = utility_table(utility, n)
    phi = shapley_from_table(table, n)
    efficiency_gap = abs(phi.sum() - (table[-1] - table[0]))
    scale = max(1.0, abs(table[-1] - table[0]))
    if efficiency_gap > 1e-9 * scale:
        raise AssertionError(
            f"exact Shapley values of {name} violate efficiency by {efficiency_gap:.3e}"
        )
    phi.setflags(write=False)
    return phi, efficiency_gap, time.perf_counter() - t0


def exact_shapley(game: Game) -> np.ndarray:
    """Exact Shapley values of ``game`` (enumeration of all coalitions, cached in memory).

    Raises
    ------
    AssertionError
        If the values violate efficiency: ``sum(phi) != v(N) - v(empty)``.
    """
    return _exact_cached(game.name, game.n, game.utility)[0]


def exact_report(game: Game) -> tuple[float, float]:
    """Return ``(efficiency gap, seconds spent)`` of the cached exact computation."""
    _, gap, seconds = _exact_cached(game.name, game.n, game.utility)
    return gap, seconds


def free_utility(n: int) -> UtilityFn:
    """A nearly free utility for overhead measurements: ``v(S) = (sum_{i in S} w_i)^2``.

    Not additive (an additive game gives zero-variance marginals, which could let an
    adaptive estimator stop early), but costs a single matrix-vector product per batch.
    """
    w = np.random.default_rng(7).uniform(0.5, 1.5, size=n)

    def utility(coalitions: np.ndarray) -> np.ndarray:
        x = _as_matrix(coalitions, n)
        s = x @ w
        return s * s

    return utility

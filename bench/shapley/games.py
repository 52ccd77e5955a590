"""Test games for the Shapley benchmark and their exact Shapley values.

Every game is a vectorised utility ``bool[b, n] -> float[b]`` with fixed random
parameters. None of them is of order <= 2 (paired regression estimators recover such
games exactly, which would make the comparison meaningless).

The utilities shared with the tests (weighted voting, the margin games) and the exact values
by enumeration come from :mod:`dposhap.testing`; this module only builds the benchmark's games.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from dposhap.testing import (
    InteractionGame,
    airport_shapley,
    airport_utility,
    coalition_matrix,
    grouped_groups,
    grouped_margin_game,
    grouped_voting,
    margin_utility,
    semivalue_reference,
    table_of,
    weighted_voting_utility,
)

UtilityFn = Callable[[np.ndarray], np.ndarray]

#: Most players of the games whose exact values come from enumerating all 2^n coalitions.
MAX_ENUMERATED_PLAYERS = 16


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
    exact
        Exact Shapley values ``[n]`` known in closed form or from the game's structure
        (games too large to enumerate), or ``None`` (then all 2^n coalitions are enumerated).
    """

    name: str
    n: int
    utility: UtilityFn
    description: str
    margins: np.ndarray | None = field(default=None, repr=False)
    margin_kind: str | None = None
    exact: np.ndarray | None = field(default=None, repr=False)


# ---------------------------------------------------------------------------------------
# Utilities


def third_order_utility(
    linear: np.ndarray,
    pairwise: np.ndarray,
    triples: np.ndarray,
    triple_coef: np.ndarray,
    scale: float,
) -> UtilityFn:
    """``v(S) = tanh(scale * (a.x + x^T B x + sum_t c_t x_i x_j x_k))`` on indicators ``x``."""
    a = np.asarray(linear, dtype=np.float64)
    b = np.asarray(pairwise, dtype=np.float64)
    t = np.asarray(triples, dtype=np.int64)
    c = np.asarray(triple_coef, dtype=np.float64)

    def utility(coalitions: np.ndarray) -> np.ndarray:
        x = coalition_matrix(coalitions, a.size).astype(np.float64)
        inner = x @ a + np.einsum("bi,ij,bj->b", x, b, x)
        inner += (x[:, t[:, 0]] * x[:, t[:, 1]] * x[:, t[:, 2]]) @ c
        return np.tanh(scale * inner)

    return utility


def unanimity_utility(terms: list[tuple[tuple[int, ...], float]], n: int) -> UtilityFn:
    """``v(S) = sum_T c_T 1[T subset of S]``, vectorised per term size (the same values as
    :class:`dposhap.testing.InteractionGame`, whose loop over terms is too slow for the peers
    that evaluate one coalition per call)."""
    by_size: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for k in sorted({len(t) for t, _ in terms}):
        members = np.array([t for t, _ in terms if len(t) == k], dtype=np.int64)
        coefs = np.array([c for t, c in terms if len(t) == k], dtype=np.float64)
        by_size[k] = (members, coefs)

    def utility(coalitions: np.ndarray) -> np.ndarray:
        x = coalition_matrix(coalitions, n)
        out = np.zeros(x.shape[0])
        for members, coefs in by_size.values():
            out += x[:, members].all(axis=2) @ coefs
        return out

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
    games.append(
        Game(
            name="voting",
            n=n,
            utility=weighted_voting_utility(weights, quota),
            description=f"weighted voting, integer weights in [1, 24] (sum {int(weights.sum())}), "
            f"quota {int(quota)} (simple majority)",
        )
    )

    rng = np.random.default_rng(1002)
    m_acc = preference_margins(n, 500, rng)
    games.append(
        Game(
            name="pref-accuracy",
            n=n,
            utility=margin_utility(m_acc, "accuracy"),
            description="preference accuracy over m=500 held-out pairs, "
            "M_ij = mu_i d_j + sigma_i z_ij, ties count 1/2 (v(empty) = 0.5)",
            margins=m_acc,
            margin_kind="accuracy",
        )
    )

    rng = np.random.default_rng(1003)
    m_ls = preference_margins(n, 500, rng, scale=0.8)
    games.append(
        Game(
            name="logsigmoid",
            n=n,
            utility=margin_utility(m_ls, "logsigmoid"),
            description="mean log sigmoid of the coalition margin over m=500 pairs "
            "(held-out DPO log-likelihood), same margin model scaled by 0.8",
            margins=m_ls,
            margin_kind="logsigmoid",
        )
    )

    rng = np.random.default_rng(1004)
    linear = rng.normal(0.1, 0.3, size=n)
    pairwise = np.triu(rng.normal(0.0, 0.3, size=(n, n)) * (rng.random((n, n)) < 0.3), k=1)
    n_triples = 24
    triples = np.array([rng.choice(n, size=3, replace=False) for _ in range(n_triples)])
    triple_coef = rng.normal(0.0, 0.8, size=n_triples)
    games.append(
        Game(
            name="third-order",
            n=n,
            utility=third_order_utility(linear, pairwise, triples, triple_coef, scale=0.5),
            description=f"tanh(0.5 (linear + 30%-dense pairwise + {n_triples} random triple terms))",
        )
    )
    return games


# ---------------------------------------------------------------------------------------
# The games of the accuracy benchmark past enumeration (n = 32, 64, 128)


def make_large_games(n: int) -> list[Game]:
    """Five nonlinear games of ``n`` players whose exact Shapley values are known.

    Voting and the margin games have players in a few groups of interchangeable players
    (exact values by enumerating the count vectors, :class:`dposhap.testing.GroupedGame`);
    the third-order game is a sum of unanimity games of 1-3 players (each coefficient split
    among its members) and the airport game ``max_{i in S} c_i`` has a closed form.
    """
    games = []
    rng = np.random.default_rng(2001)
    groups = grouped_groups(n, (0.3, 0.25, 0.2, 0.15, 0.1))
    weights = np.array([1.0, 2.0, 3.0, 5.0, 8.0])
    quota = float(np.floor(weights @ np.bincount(groups) / 2) + 1)
    voting = grouped_voting(groups, weights, quota)
    games.append(
        Game(
            name="voting",
            n=n,
            utility=voting,
            description=f"weighted voting, 5 groups (30/25/20/15/10%) of weights 1, 2, 3, 5, 8, "
            f"quota {int(quota)} (simple majority)",
            exact=voting.shapley(),
        )
    )
    groups4 = grouped_groups(n, (0.1, 0.2, 0.3, 0.4))
    for name, kind, seed, scale in (("pref-accuracy", "accuracy", 2002, 1.0), ("logsigmoid", "logsigmoid", 2003, 0.8)):
        rng = np.random.default_rng(seed)
        # per-group margins as in preference_margins, scaled by 4 / sqrt(n) so that v(N) does not saturate
        group_margins = preference_margins(4, 200, rng, scale=scale * 4.0 / np.sqrt(n))
        game = grouped_margin_game(groups4, group_margins, kind)
        games.append(
            Game(
                name=name,
                n=n,
                utility=game,
                description=f"{kind} margin game over m=200 pairs, 4 groups (10/20/30/40%) of "
                "players sharing margins M_gj = mu_g d_j + sigma_g z_gj, scaled 4/sqrt(n)",
                margins=group_margins[groups4],
                margin_kind=kind,
                exact=game.shapley(),
            )
        )
    interaction = InteractionGame(n, n_pairs=2 * n, n_triples=2 * n, seed=2004)
    games.append(
        Game(
            name="third-order",
            n=n,
            utility=unanimity_utility(interaction.terms, n),
            description=f"sum of unanimity games: n singletons N(0,1), {2 * n} pairs and {2 * n} triples N(0,4)",
            exact=interaction.shapley(),
        )
    )
    costs = np.random.default_rng(2005).uniform(0.0, 1.0, size=n)
    games.append(
        Game(
            name="airport",
            n=n,
            utility=airport_utility(costs),
            description="airport game max_{i in S} c_i, c_i ~ U(0, 1)",
            exact=airport_shapley(costs),
        )
    )
    return games


# ---------------------------------------------------------------------------------------
# Exact Shapley values by enumeration


@functools.cache
def _exact_cached(name: str, n: int, utility: UtilityFn) -> tuple[np.ndarray, float, float]:
    t0 = time.perf_counter()
    table = table_of(utility, n, chunk=8192)
    phi = semivalue_reference(table, n, "shapley")
    efficiency_gap = abs(phi.sum() - (table[-1] - table[0]))
    scale = max(1.0, abs(table[-1] - table[0]))
    if efficiency_gap > 1e-9 * scale:
        raise AssertionError(f"exact Shapley values of {name} violate efficiency by {efficiency_gap:.3e}")
    phi.setflags(write=False)
    return phi, efficiency_gap, time.perf_counter() - t0


def exact_shapley(game: Game) -> np.ndarray:
    """Exact Shapley values of ``game``: ``game.exact`` when known, else by enumeration of all
    coalitions (cached in memory).

    Raises
    ------
    AssertionError
        If the values violate efficiency: ``sum(phi) != v(N) - v(empty)``.
    """
    if game.exact is not None:
        return game.exact
    return _exact_cached(game.name, game.n, game.utility)[0]


def exact_report(game: Game) -> tuple[float, float]:
    """Return ``(efficiency gap, seconds spent)`` of the cached exact computation."""
    if game.exact is not None:
        ends = game.utility(np.vstack([np.zeros(game.n, bool), np.ones(game.n, bool)]))
        return abs(float(game.exact.sum()) - float(ends[1] - ends[0])), 0.0
    _, gap, seconds = _exact_cached(game.name, game.n, game.utility)
    return gap, seconds


def free_utility(n: int) -> UtilityFn:
    """A nearly free utility for overhead measurements: ``v(S) = (sum_{i in S} w_i)^2``.

    Not additive (an additive game gives zero-variance marginals, which could let an
    adaptive estimator stop early), but costs a single matrix-vector product per batch.
    """
    w = np.random.default_rng(7).uniform(0.5, 1.5, size=n)

    def utility(coalitions: np.ndarray) -> np.ndarray:
        x = coalition_matrix(coalitions, n)
        s = x @ w
        return s * s

    return utility

"""Exact enumeration against the Shapley and Banzhaf formulas, and the Shapley axioms.

Games are random tables of ``2**n`` values (n = 1..7) drawn by hypothesis.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import dposhap
from dposhap.testing import (
    InteractionGame,
    TableGame,
    banzhaf_bruteforce,
    semivalue_reference,
    shapley_bruteforce,
    table_of,
)

finite = st.floats(-100.0, 100.0, allow_nan=False, allow_infinity=False)


@st.composite
def tables(draw: st.DrawFn, max_n: int = 7, k: int | None = None, min_n: int = 1) -> tuple[int, np.ndarray]:
    """``(n, table)`` with a table of ``2**n`` values (``[2**n, k]`` when ``k`` is given)."""
    n = draw(st.integers(min_n, max_n))
    shape = (2**n,) if k is None else (2**n, k)
    return n, draw(hnp.arrays(np.float64, shape, elements=finite))


def tolerance(*tables_: np.ndarray) -> float:
    return 1e-9 * (1.0 + max(float(np.abs(t).max()) for t in tables_))


def exact(table: np.ndarray, n: int, semivalue: str = "shapley") -> np.ndarray:
    fn = dposhap.shapley if semivalue == "shapley" else dposhap.banzhaf
    res = fn(TableGame(table), n, method="exact")
    assert res.method == "exact" and res.stop == "complete"
    assert res.n_evaluations == 2**n
    np.testing.assert_array_equal(res.stderr, 0.0)
    return res.values


def swap_bits(mask: np.ndarray, i: int, j: int) -> np.ndarray:
    bi, bj = (mask >> i) & 1, (mask >> j) & 1
    return mask ^ ((bi ^ bj) << i) ^ ((bi ^ bj) << j)


@settings(max_examples=60)
@given(tables())
def test_exact_shapley_matches_the_formula(game: tuple[int, np.ndarray]) -> None:
    n, table = game
    np.testing.assert_allclose(exact(table, n), shapley_bruteforce(table, n), rtol=0, atol=tolerance(table))


@settings(max_examples=60)
@given(tables())
def test_exact_banzhaf_matches_the_formula(game: tuple[int, np.ndarray]) -> None:
    n, table = game
    np.testing.assert_allclose(exact(table, n, "banzhaf"), banzhaf_bruteforce(table, n), rtol=0, atol=tolerance(table))


@settings(max_examples=60)
@given(tables())
def test_efficiency(game: tuple[int, np.ndarray]) -> None:
    n, table = game
    phi = exact(table, n)
    assert abs(phi.sum() - (table[-1] - table[0])) <= tolerance(table)


@settings(max_examples=60)
@given(tables(min_n=2), st.data())
def test_symmetric_players_get_equal_values(game: tuple[int, np.ndarray], data: st.DataObject) -> None:
    n, base = game
    i = data.draw(st.integers(0, n - 1))
    j = data.draw(st.integers(0, n - 1).filter(lambda x: x != i))
    masks = np.arange(2**n)
    # v(S) depends on S only up to exchanging i and j, so i and j are interchangeable
    table = base[np.minimum(masks, swap_bits(masks, i, j))]
    for semivalue in ("shapley", "banzhaf"):
        phi = exact(table, n, semivalue)
        assert abs(phi[i] - phi[j]) <= tolerance(table)


@settings(max_examples=60)
@given(tables(), st.data())
def test_null_player_gets_zero(game: tuple[int, np.ndarray], data: st.DataObject) -> None:
    n, base = game
    j = data.draw(st.integers(0, n - 1))
    masks = np.arange(2**n)
    table = base[masks & ~(1 << j)]  # adding j never changes the value
    for semivalue in ("shapley", "banzhaf"):
        phi = exact(table, n, semivalue)
        assert abs(phi[j]) <= tolerance(table)


@settings(max_examples=40)
@given(tables(max_n=6), st.data())
def test_null_player_does_not_change_the_others(game: tuple[int, np.ndarray], data: st.DataObject) -> None:
    """Adding a null player to a game leaves the other players' Shapley values as they were."""
    n, table = game
    j = data.draw(st.integers(0, n))
    masks = np.arange(2 ** (n + 1))
    # the game on n + 1 players that ignores player j: drop bit j and close the gap
    low, high = masks & ((1 << j) - 1), masks >> (j + 1)
    bigger = table[low | (high << j)]
    phi = exact(bigger, n + 1)
    assert abs(phi[j]) <= tolerance(table)
    np.testing.assert_allclose(np.delete(phi, j), exact(table, n), rtol=0, atol=tolerance(table))


@settings(max_examples=60)
@given(tables(), st.data(), finite, finite)
def test_linearity(game: tuple[int, np.ndarray], data: st.DataObject, a: float, b: float) -> None:
    n, u = game
    v = data.draw(hnp.arrays(np.float64, (2**n,), elements=finite))
    combined = a * u + b * v
    for semivalue in ("shapley", "banzhaf"):
        expected = a * exact(u, n, semivalue) + b * exact(v, n, semivalue)
        scale = (1.0 + abs(a) + abs(b)) * (1.0 + max(np.abs(u).max(), np.abs(v).max()))
        np.testing.assert_allclose(exact(combined, n, semivalue), expected, rtol=0, atol=1e-9 * scale)


@settings(max_examples=40)
@given(st.integers(1, 4).flatmap(lambda k: tables(k=k)))
def test_multi_objective_equals_each_objective_alone(game: tuple[int, np.ndarray]) -> None:
    n, table = game
    k = table.shape[1]
    for semivalue in ("shapley", "banzhaf"):
        phi = exact(table, n, semivalue)
        assert phi.shape == (n, k)
        for j in range(k):
            np.testing.assert_allclose(
                phi[:, j], exact(table[:, j].copy(), n, semivalue), rtol=0, atol=tolerance(table)
            )


@settings(max_examples=30)
@given(tables(max_n=6))
def test_vectorised_reference_matches_the_written_out_formula(game: tuple[int, np.ndarray]) -> None:
    """The fast reference the estimator tests use is the formula too."""
    n, table = game
    np.testing.assert_allclose(
        semivalue_reference(table, n), shapley_bruteforce(table, n), rtol=0, atol=tolerance(table)
    )
    np.testing.assert_allclose(
        semivalue_reference(table, n, "banzhaf"), banzhaf_bruteforce(table, n), rtol=0, atol=tolerance(table)
    )


@pytest.mark.parametrize("semivalue", ["shapley", "banzhaf"])
def test_exact_matches_closed_form_values_of_an_interaction_game(semivalue: str) -> None:
    game = InteractionGame(n=12)
    closed = game.shapley() if semivalue == "shapley" else game.banzhaf()
    phi = exact(table_of(game, 12), 12, semivalue)
    np.testing.assert_allclose(phi, closed, rtol=0, atol=1e-10)


def test_exact_values_of_a_voting_game_worked_out_by_hand() -> None:
    """A voting game worked out by hand: weights 1, 2, 4, 8 and quota 7.

    The 8 is pivotal after any proper subset of {1, 2, 4}: 6/24 + 3 * 2/24 + 3 * 2/24 = 9/12.
    Each of 1, 2, 4 is pivotal only after the other two (sum < 7): 2!1!/4! = 1/12.
    """
    w = np.array([1.0, 2.0, 4.0, 8.0])
    phi = dposhap.shapley(lambda s: (s @ w >= 7).astype(float), 4, method="exact").values
    np.testing.assert_allclose(phi * 12, [1.0, 1.0, 1.0, 9.0], rtol=1e-12)


def test_auto_enumerates_when_all_coalitions_fit() -> None:
    n = 5
    table = np.random.default_rng(0).normal(size=2**n)
    for kwargs in ({}, {"budget": 2**n}, {"budget": 10**6}):
        res = dposhap.shapley(TableGame(table), n, **kwargs)
        assert res.method == "exact"
        np.testing.assert_allclose(res.values, shapley_bruteforce(table, n), atol=1e-12)
    assert dposhap.shapley(TableGame(table), n, budget=2**n - 1).method != "exact"

"""The native MarginGame against the same game written in numpy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import dposhap
from dposhap.errors import BudgetTooSmallError, InvalidArgumentError
from dposhap.testing import (
    MAX_TABLE_PLAYERS,
    all_coalitions,
    banzhaf_bruteforce,
    margin_utility,
    semivalue_reference,
    shapley_bruteforce,
    table_of,
)

KINDS = ["accuracy", "logsigmoid", "mean"]


def margins_for(kind: str, n: int, m: int, seed: int = 0) -> np.ndarray:
    """Integer-valued margins for accuracy (so that sums tie exactly at 0), floats otherwise."""
    rng = np.random.default_rng(seed)
    if kind == "accuracy":
        return rng.integers(-3, 4, size=(n, m)).astype(np.float64)
    return rng.normal(0.2, 1.0, size=(n, m))


@st.composite
def margin_games(draw: st.DrawFn, max_n: int = 7) -> tuple[str, np.ndarray]:
    kind = draw(st.sampled_from(KINDS))
    n = draw(st.integers(1, max_n))
    m = draw(st.integers(1, 6))
    if kind == "accuracy":
        elements = st.integers(-3, 3).map(float)
    else:
        elements = st.floats(-5, 5, allow_nan=False, allow_infinity=False)
    return kind, draw(hnp.arrays(np.float64, (n, m), elements=elements))


# --------------------------------------------------------------------------------------
# utilities


def test_accuracy_counts_ties_as_one_half() -> None:
    margins = np.array([[1.0, 0.0], [-1.0, 3.0]])
    game = dposhap.MarginGame(margins, "accuracy")
    coalitions = all_coalitions(2)  # {}, {0}, {1}, {0, 1}
    # sums per pair: (0, 0), (1, 0), (-1, 3), (0, 3)
    np.testing.assert_array_equal(game(coalitions), [0.5, 0.75, 0.5, 0.75])


@pytest.mark.parametrize("kind", KINDS)
def test_the_numpy_reference_in_chunks_and_on_one_row(kind: str) -> None:
    """The reference gives the same utilities whatever the chunking, and takes a single coalition."""
    margins = margins_for(kind, 6, 40, seed=3)
    coalitions = all_coalitions(6)
    whole = margin_utility(margins, kind)(coalitions)
    np.testing.assert_allclose(margin_utility(margins, kind, chunk=7)(coalitions), whole, rtol=0, atol=1e-12)
    np.testing.assert_allclose(margin_utility(margins, kind)(coalitions[5]), whole[5:6], rtol=0, atol=1e-12)
    np.testing.assert_allclose(table_of(margin_utility(margins, kind), 6, chunk=9), whole, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="unknown margin game kind"):
        margin_utility(margins, "hinge")
    with pytest.raises(ValueError, match="limited"):
        table_of(margin_utility(margins, kind), MAX_TABLE_PLAYERS + 1)


@settings(max_examples=80)
@given(margin_games())
def test_utilities_match_numpy(game_: tuple[str, np.ndarray]) -> None:
    kind, margins = game_
    n = margins.shape[0]
    game = dposhap.MarginGame(margins, kind)
    assert (game.n_players, game.n_pairs, game.kind) == (n, margins.shape[1], kind)
    coalitions = all_coalitions(n)
    expected = margin_utility(margins, kind)(coalitions)
    if kind == "accuracy":
        np.testing.assert_array_equal(game(coalitions), expected)  # integer sums: no rounding
    else:
        np.testing.assert_allclose(game(coalitions), expected, rtol=1e-12, atol=1e-12)


def test_call_accepts_views_and_single_rows() -> None:
    margins = margins_for("logsigmoid", 6, 9)
    game = dposhap.MarginGame(margins, "logsigmoid")
    coalitions = all_coalitions(6)
    expected = margin_utility(margins, "logsigmoid")(coalitions)
    np.testing.assert_allclose(game(coalitions[::3]), expected[::3], rtol=1e-12)
    np.testing.assert_allclose(game(np.asfortranarray(coalitions)), expected, rtol=1e-12)
    np.testing.assert_allclose(game(coalitions[5:6]), expected[5:6], rtol=1e-12)
    assert game(coalitions[:0]).shape == (0,)


# --------------------------------------------------------------------------------------
# exact values


@settings(max_examples=60)
@given(margin_games())
def test_gray_code_exact_matches_the_formula(game_: tuple[str, np.ndarray]) -> None:
    kind, margins = game_
    n = margins.shape[0]
    game = dposhap.MarginGame(margins, kind)
    table = table_of(margin_utility(margins, kind), n)
    atol = 1e-10 * (1 + np.abs(table).max())
    np.testing.assert_allclose(game.exact(), shapley_bruteforce(table, n), rtol=0, atol=atol)
    np.testing.assert_allclose(game.exact("banzhaf"), banzhaf_bruteforce(table, n), rtol=0, atol=atol)


@pytest.mark.parametrize("kind", KINDS)
def test_gray_code_exact_matches_exact_on_the_numpy_callable(kind: str) -> None:
    n = 10
    margins = margins_for(kind, n, 25)
    game, utility = dposhap.MarginGame(margins, kind), margin_utility(margins, kind)
    native = dposhap.shapley(game, method="exact")
    assert native.method == "exact" and native.n_evaluations == 2**n and native.values.shape == (n,)
    np.testing.assert_allclose(native.values, dposhap.shapley(utility, n, method="exact").values, rtol=0, atol=1e-12)
    np.testing.assert_allclose(game.exact(), native.values, rtol=0, atol=0)
    np.testing.assert_allclose(
        dposhap.banzhaf(game, method="exact").values,
        dposhap.banzhaf(utility, n, method="exact").values,
        rtol=0,
        atol=1e-12,
    )
    # auto enumerates a small native game
    assert dposhap.shapley(game).method == "exact"


def test_gray_code_exact_on_many_players() -> None:
    """19 players: 2048 Gray-code steps per chunk, so the running state is rebuilt mid-chunk."""
    n = 19
    margins = margins_for("logsigmoid", n, 5, seed=4)
    game = dposhap.MarginGame(margins, "logsigmoid")
    table = table_of(margin_utility(margins, "logsigmoid"), n)
    np.testing.assert_allclose(game.exact(), semivalue_reference(table, n), rtol=0, atol=1e-10)
    np.testing.assert_allclose(game.exact("banzhaf"), semivalue_reference(table, n, "banzhaf"), rtol=0, atol=1e-10)


@settings(max_examples=40)
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 9), st.integers(1, 8)), elements=st.floats(-5, 5)))
def test_additive_values_of_the_mean_game(margins: np.ndarray) -> None:
    game = dposhap.MarginGame(margins, "mean")
    np.testing.assert_allclose(game.additive_values(), margins.mean(axis=1), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(game.additive_values(), game.exact(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(game.exact("banzhaf"), game.exact(), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kind", ["accuracy", "logsigmoid"])
def test_additive_values_only_for_the_mean_game(kind: str) -> None:
    assert dposhap.MarginGame(margins_for(kind, 3, 4), kind).additive_values() is None


# --------------------------------------------------------------------------------------
# sampled values: the native run against the Python loop


SAMPLED = [("shapley", m) for m in ["permutation", "antithetic", "svarm", "regression", "kernel"]] + [
    ("banzhaf", "msr")
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("semivalue", "method"), SAMPLED)
def test_native_run_matches_the_numpy_callable(semivalue: str, method: str, kind: str) -> None:
    """Same seed, same coalitions: the values agree up to the rounding of the utilities."""
    n = 12
    margins = margins_for(kind, n, 30, seed=1)
    fn = dposhap.shapley if semivalue == "shapley" else dposhap.banzhaf
    for seed in (0, 1):
        native = fn(dposhap.MarginGame(margins, kind), method=method, budget=1500, seed=seed)
        python = fn(margin_utility(margins, kind), n, method=method, budget=1500, seed=seed)
        assert native.method == python.method == method
        assert native.n_evaluations == python.n_evaluations
        assert native.stop == python.stop == "budget"
        np.testing.assert_allclose(native.values, python.values, rtol=0, atol=1e-12)
        np.testing.assert_allclose(native.stderr, python.stderr, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_native_stratified_matches_the_python_loop(kind: str) -> None:
    """Stratified allocates its samples by the utilities, so it is compared on identical
    utilities: the native run against a Python loop over the same game."""
    n = 12
    game = dposhap.MarginGame(margins_for(kind, n, 30, seed=2), kind)
    native = dposhap.shapley(game, method="stratified", budget=1500, seed=3)
    python = dposhap.shapley(lambda s: game(s), n, method="stratified", budget=1500, seed=3)
    assert native.n_evaluations == python.n_evaluations
    np.testing.assert_array_equal(native.values, python.values)


def test_native_run_converges() -> None:
    n = 14
    margins = margins_for("logsigmoid", n, 40, seed=5)
    game = dposhap.MarginGame(margins, "logsigmoid")
    exact = game.exact()
    res = dposhap.shapley(game, method="antithetic", budget=5000, seed=0)
    assert res.n_evaluations <= 5000
    assert np.all(np.abs(res.values - exact) <= 5 * res.stderr + 1e-3)
    res = dposhap.shapley(game, method="antithetic", tol=2e-3, seed=0)
    assert res.stop == "tol" and res.stderr.max() <= 2e-3
    assert np.all(np.abs(res.values - exact) <= 5 * 2e-3)


def test_native_run_keeps_names_and_budget() -> None:
    game = dposhap.MarginGame(margins_for("accuracy", 4, 7), "accuracy")
    res = dposhap.shapley(game, names=["a", "b", "c", "d"])
    assert res.names == ["a", "b", "c", "d"]
    with pytest.raises(BudgetTooSmallError, match="2\\^4"):
        dposhap.shapley(game, method="exact", budget=15)
    with pytest.raises(InvalidArgumentError, match="4 players"):
        dposhap.shapley(game, 5)


# --------------------------------------------------------------------------------------
# bad margins


def test_bad_margins_are_rejected_with_their_position() -> None:
    margins = np.zeros((3, 4))
    margins[1, 2] = np.nan
    with pytest.raises(InvalidArgumentError, match=r"margins\[1, 2\]"):
        dposhap.MarginGame(margins, "accuracy")
    margins[1, 2] = np.inf
    with pytest.raises(InvalidArgumentError, match="finite"):
        dposhap.MarginGame(margins, "mean")
    with pytest.raises(InvalidArgumentError, match="n_sources, n_pairs"):
        dposhap.MarginGame(np.zeros((0, 3)), "mean")
    with pytest.raises(InvalidArgumentError, match="unknown margin game kind"):
        dposhap.MarginGame(np.zeros((2, 2)), "hinge")
    with pytest.raises(InvalidArgumentError, match="bool array"):
        dposhap.MarginGame(np.zeros((2, 2)), "mean")(np.zeros((1, 3), dtype=bool))
    with pytest.raises(InvalidArgumentError, match="semivalue"):
        dposhap.MarginGame(np.zeros((2, 2)), "mean").exact("owen")


@pytest.mark.parametrize("dtype", [np.int64, np.float32])
def test_margins_of_another_numeric_dtype(dtype: type) -> None:
    """Integer or float32 margins are either taken as float64 or refused with a dposhap error
    (never a bare TypeError from the binding layer)."""
    margins = np.array([[1, -2, 3], [0, 2, -1]], dtype=dtype)
    try:
        game = dposhap.MarginGame(margins, "accuracy")
    except dposhap.errors.DposhapError as exc:
        assert "float" in str(exc)
        return
    reference = dposhap.MarginGame(margins.astype(np.float64), "accuracy")
    np.testing.assert_array_equal(game(all_coalitions(2)), reference(all_coalitions(2)))


def test_arrays_of_the_wrong_rank_or_dtype_raise_dposhap_errors() -> None:
    """Conversion failures at the binding layer surface as InvalidArgumentError."""
    with pytest.raises(InvalidArgumentError):
        dposhap.MarginGame(np.zeros(4), "mean")  # one source's margins without the 2-d shape
    game = dposhap.MarginGame(np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), "mean")
    try:
        values = game(np.array([[1, 0], [1, 1]]))  # 0/1 integers instead of bools
    except dposhap.errors.DposhapError as exc:
        assert "bool" in str(exc)
    else:
        np.testing.assert_array_equal(values, [2.0, 7.0])


@pytest.mark.parametrize(("semivalue", "method"), SAMPLED)
def test_native_run_on_more_than_64_players(semivalue: str, method: str) -> None:
    """70 sources: coalitions span two words of the bitset, on both paths."""
    n = 70
    margins = np.random.default_rng(7).normal(0.1, 1.0, size=(n, 20))
    fn = dposhap.shapley if semivalue == "shapley" else dposhap.banzhaf
    native = fn(dposhap.MarginGame(margins, "logsigmoid"), method=method, budget=3000, seed=0)
    python = fn(margin_utility(margins, "logsigmoid"), n, method=method, budget=3000, seed=0)
    assert native.n_evaluations == python.n_evaluations <= 3000
    np.testing.assert_allclose(native.values, python.values, rtol=0, atol=1e-12)
    if method in ("permutation", "antithetic", "kernel"):  # efficient estimators
        full = margin_utility(margins, "logsigmoid")(np.array([[True] * n, [False] * n]))
        assert abs(native.values.sum() - (full[0] - full[1])) <= 1e-9


def test_auto_on_a_large_native_game_uses_chains() -> None:
    """Past 128 players a native game runs antithetic permutations (nested coalitions are
    evaluated incrementally); a Python callable of the same size still gets regression."""
    rng = np.random.default_rng(0)
    margins = rng.normal(0.05, 1.0, size=(130, 50))
    game = dposhap.MarginGame(margins, "accuracy")
    res = dposhap.shapley(game, budget=2000, seed=0)
    assert res.method == "antithetic"
    assert res.n_evaluations <= 2000
    small = dposhap.shapley(dposhap.MarginGame(margins[:20], "accuracy"), budget=2000, seed=0)
    assert small.method == "regression"

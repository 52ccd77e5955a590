"""Every sampling estimator against exact values, judged by its own standard errors.

The games have 12 players (4096 coalitions, enumerated for the reference) and the budgets
are well below 4096, so the estimators really sample.
"""

from __future__ import annotations

import functools
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import dposhap
from dposhap.testing import InteractionGame, TableGame, saturating_sum, semivalue_reference, table_of, weighted_voting

N = 12
SHAPLEY_SAMPLERS = ["permutation", "antithetic", "stratified", "svarm", "regression", "kernel"]
# estimators whose coalitions do not depend on the utilities (stratified allocates by them)
NON_ADAPTIVE = [("shapley", m) for m in ["permutation", "antithetic", "svarm", "kernel"]] + [("banzhaf", "msr")]
# "regression" chooses the ridge of its surrogate from the data (per utility column), so it is
# not linear in the utility, but each objective is still estimated on its own
PER_OBJECTIVE = NON_ADAPTIVE + [("shapley", "regression")]


@functools.cache
def game(name: str):
    """``(utility, exact Shapley values, exact Banzhaf values)`` of a 12-player test game."""
    if name == "voting":
        utility, _ = weighted_voting(N)
    elif name == "saturating":
        utility, _ = saturating_sum(N)
    elif name == "interactions":
        utility = InteractionGame(N)
    else:
        raise KeyError(name)
    table = table_of(utility, N)
    return utility, semivalue_reference(table, N), semivalue_reference(table, N, "banzhaf")


def run(semivalue: str, utility, **kwargs) -> dposhap.ShapleyResult:
    fn = dposhap.shapley if semivalue == "shapley" else dposhap.banzhaf
    return fn(utility, N, **kwargs)


CASES = [("shapley", m) for m in SHAPLEY_SAMPLERS] + [("banzhaf", "msr")]


@pytest.mark.parametrize("game_name", ["voting", "saturating", "interactions"])
@pytest.mark.parametrize(("semivalue", "method"), CASES)
def test_estimate_is_within_its_standard_errors(semivalue: str, method: str, game_name: str) -> None:
    utility, shapley_exact, banzhaf_exact = game(game_name)
    exact = shapley_exact if semivalue == "shapley" else banzhaf_exact
    scale = float(np.abs(exact).max())
    zs = []
    for seed in range(3):
        res = run(semivalue, utility, method=method, budget=2500, seed=seed)
        assert res.method == method and res.stop == "budget"
        assert 2000 <= res.n_evaluations <= 2500
        err = np.abs(res.values - exact)
        worst = int(np.argmax(err - 5 * res.stderr))
        assert np.all(err <= 5 * res.stderr + 0.01 * scale), (
            f"seed {seed}, player {worst}: error {err[worst]:.4g} but stderr {res.stderr[worst]:.3g} "
            f"(value {res.values[worst]:.4g}, exact {exact[worst]:.4g})"
        )
        sampled = res.stderr > 1e-9 * scale
        assert np.all(err[~sampled] <= 1e-9 * scale), "a zero standard error must mean an exact value"
        zs.extend(err[sampled] / res.stderr[sampled])
    # the standard errors are calibrated: z-scores are of order one, neither tiny nor large
    mean_z2 = float(np.mean(np.square(zs)))
    assert 0.1 <= mean_z2 <= 3.0, f"mean squared z-score {mean_z2:.2f} over {len(zs)} values"


@pytest.mark.parametrize(("semivalue", "method"), CASES)
def test_stderr_shrinks_as_the_budget_grows(semivalue: str, method: str) -> None:
    utility, _, _ = game("saturating")
    small = run(semivalue, utility, method=method, budget=600, seed=1)
    large = run(semivalue, utility, method=method, budget=2400, seed=1)
    assert np.all(np.isfinite(small.stderr)) and small.stderr.mean() > 0
    # four times the evaluations: about half the standard error
    ratio = large.stderr.mean() / small.stderr.mean()
    assert ratio < 0.7, f"stderr ratio {ratio:.2f} between budgets 2400 and 600"


@pytest.mark.parametrize(("semivalue", "method"), CASES)
def test_error_shrinks_as_the_budget_grows(semivalue: str, method: str) -> None:
    utility, shapley_exact, banzhaf_exact = game("interactions")
    exact = shapley_exact if semivalue == "shapley" else banzhaf_exact

    def rmse(budget: int) -> float:
        errs = [run(semivalue, utility, method=method, budget=budget, seed=s).values - exact for s in range(6)]
        return float(np.sqrt(np.mean(np.square(errs))))

    assert rmse(3200) < 0.75 * rmse(800)


@pytest.mark.parametrize(("semivalue", "method"), NON_ADAPTIVE)
@settings(max_examples=15)
@given(
    u=hnp.arrays(np.float64, 2**7, elements=st.floats(-10, 10)),
    v=hnp.arrays(np.float64, 2**7, elements=st.floats(-10, 10)),
    a=st.floats(-3, 3),
    b=st.floats(-3, 3),
    seed=st.integers(0, 2**32),
)
def test_sampled_estimates_are_linear_in_the_utility(
    semivalue: str, method: str, u: np.ndarray, v: np.ndarray, a: float, b: float, seed: int
) -> None:
    """The same seed draws the same coalitions, and each estimate is linear in their utilities."""
    fn = dposhap.shapley if semivalue == "shapley" else dposhap.banzhaf

    def values(table: np.ndarray) -> np.ndarray:
        return fn(TableGame(table), 7, method=method, budget=60, seed=seed).values

    expected = a * values(u) + b * values(v)
    np.testing.assert_allclose(values(a * u + b * v), expected, rtol=0, atol=1e-9 * 10 * (1 + abs(a) + abs(b)))


@pytest.mark.parametrize(("semivalue", "method"), PER_OBJECTIVE)
def test_sampled_multi_objective_equals_each_objective_alone(semivalue: str, method: str) -> None:
    utilities = [game(name)[0] for name in ("voting", "saturating", "interactions")]

    def stacked(s: np.ndarray) -> np.ndarray:
        return np.stack([f(s) for f in utilities], axis=1)

    both = run(semivalue, stacked, method=method, budget=1500, seed=7)
    assert both.values.shape == both.stderr.shape == (N, 3)
    for j, f in enumerate(utilities):
        alone = run(semivalue, f, method=method, budget=1500, seed=7)
        np.testing.assert_allclose(both.values[:, j], alone.values, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(both.stderr[:, j], alone.stderr, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("method", ["permutation", "antithetic", "kernel"])
@settings(max_examples=25)
@given(
    game_=st.integers(2, 7).flatmap(
        lambda n: st.tuples(st.just(n), hnp.arrays(np.float64, 2**n, elements=st.floats(-10, 10)))
    ),
    seed=st.integers(0, 1000),
)
def test_efficient_estimators_sum_to_the_grand_coalition(method: str, game_: tuple[int, np.ndarray], seed: int) -> None:
    """Along a permutation the marginal contributions telescope to v(N) - v(empty); the paired
    unbiased KernelSHAP estimate is efficient by construction. Both hold for every sample."""
    n, table = game_
    res = dposhap.shapley(TableGame(table), n, method=method, budget=8 * n, seed=seed)
    assert abs(res.values.sum() - (table[-1] - table[0])) <= 1e-9 * (1 + np.abs(table).max())


@pytest.mark.parametrize("n", [4, 12, 30])
@pytest.mark.parametrize(("semivalue", "method"), CASES)
def test_the_smallest_accepted_budget_gives_standard_errors(semivalue: str, method: str, n: int) -> None:
    """A budget below the minimum is refused because it "cannot give values with standard
    errors"; so the minimum itself must give a finite standard error for every player."""
    fn = dposhap.shapley if semivalue == "shapley" else dposhap.banzhaf
    w = np.random.default_rng(n).normal(size=n)

    def utility(s: np.ndarray) -> np.ndarray:
        return np.tanh(np.asarray(s, dtype=float) @ w)

    with pytest.raises(dposhap.errors.BudgetTooSmallError) as info:
        fn(utility, n, method=method, budget=1)
    need = int(re.search(r"at least (\d+)", str(info.value)).group(1))
    for seed in range(3):
        res = fn(utility, n, method=method, budget=need, seed=seed)
        assert res.n_evaluations <= need
        assert np.all(np.isfinite(res.stderr)), f"budget {need}, seed {seed}: stderr {res.stderr}"


def test_auto_picks_a_sampler_below_the_full_budget() -> None:
    utility, shapley_exact, banzhaf_exact = game("saturating")
    res = dposhap.shapley(utility, N, budget=2000)
    assert res.method not in ("exact", "auto") and res.method in dposhap.methods("shapley")
    assert np.all(np.abs(res.values - shapley_exact) <= 5 * res.stderr + 0.01)
    res = dposhap.banzhaf(utility, N, budget=2000)
    assert res.method == "msr"
    assert np.all(np.abs(res.values - banzhaf_exact) <= 5 * res.stderr + 0.01)


def test_methods_lists_the_documented_names() -> None:
    assert dposhap.methods("shapley") == ["auto", "exact", *SHAPLEY_SAMPLERS]
    assert dposhap.methods("banzhaf") == ["auto", "exact", "msr"]


# --------------------------------------------------------------------------------------
# tol


@pytest.mark.parametrize("method", SHAPLEY_SAMPLERS)
def test_tol_alone_stops_once_every_stderr_is_below_it(method: str) -> None:
    utility, exact, _ = game("saturating")
    res = dposhap.shapley(utility, N, method=method, tol=0.02, seed=3, batch_size=64)
    assert res.stop == "tol"
    assert res.stderr.max() <= 0.02
    assert res.n_evaluations < 2**N
    assert np.all(np.abs(res.values - exact) <= 5 * 0.02)


@pytest.mark.parametrize("method", SHAPLEY_SAMPLERS)
def test_a_smaller_tol_needs_more_evaluations(method: str) -> None:
    utility, _, _ = game("interactions")
    # "regression" checks tol only once every stratum is reached and its surrogate has as many
    # samples as coefficients; by then its standard errors are already below 0.08
    lo, hi = (0.025, 0.05) if method == "regression" else (0.08, 0.2)
    loose = dposhap.shapley(utility, N, method=method, tol=hi, seed=5, batch_size=32)
    tight = dposhap.shapley(utility, N, method=method, tol=lo, seed=5, batch_size=32)
    assert loose.stop == tight.stop == "tol"
    assert tight.stderr.max() <= lo < loose.stderr.max() <= hi
    assert tight.n_evaluations > loose.n_evaluations


def test_tol_with_banzhaf_msr() -> None:
    utility, _, banzhaf_exact = game("saturating")
    res = dposhap.banzhaf(utility, N, method="msr", tol=0.03, seed=0, batch_size=64)
    assert res.stop == "tol" and res.stderr.max() <= 0.03
    assert np.all(np.abs(res.values - banzhaf_exact) <= 5 * 0.03)


def test_budget_wins_over_an_unreachable_tol() -> None:
    utility, _, _ = game("interactions")
    res = dposhap.shapley(utility, N, method="permutation", tol=1e-6, budget=500, seed=0)
    assert res.stop == "budget" and res.n_evaluations <= 500
    assert res.stderr.max() > 1e-6


def test_tol_wins_over_a_generous_budget() -> None:
    utility, _, _ = game("saturating")
    res = dposhap.shapley(utility, N, method="antithetic", tol=0.05, budget=4000, seed=0, batch_size=32)
    assert res.stop == "tol" and res.n_evaluations < 4000 and res.stderr.max() <= 0.05

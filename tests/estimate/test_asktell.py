"""The ask/tell protocol: reproducible planning, the utility cache and the budget."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dposhap
from dposhap.errors import BudgetTooSmallError, DposhapError
from dposhap.testing import InteractionGame, Recorder, TableGame, saturating_sum, shapley_bruteforce, to_masks

N = 10
ALL_METHODS = [
    ("shapley", m) for m in ["exact", "permutation", "antithetic", "stratified", "svarm", "regression", "kernel"]
] + [
    ("banzhaf", "exact"),
    ("banzhaf", "msr"),
]
SAMPLING_METHODS = [(s, m) for s, m in ALL_METHODS if m != "exact"]
GAME = InteractionGame(N, seed=11)


def estimator(semivalue: str, n: int, method: str, **kwargs) -> dposhap.ShapleyEstimator:
    cls = dposhap.ShapleyEstimator if semivalue == "shapley" else dposhap.BanzhafEstimator
    return cls(n, method, **kwargs)


def drive(est: dposhap.ShapleyEstimator, utility, batch: int) -> list[np.ndarray]:
    """Ask, evaluate, tell until done; return the batches asked."""
    batches = []
    while not est.done:
        c = est.ask(batch)
        if len(c) == 0:
            break
        batches.append(c)
        est.tell(c, utility(c))
    return batches


def min_budget(semivalue: str, n: int, method: str) -> int:
    """The smallest budget the method accepts, read from its error message."""
    try:
        estimator(semivalue, n, method, budget=1)
    except BudgetTooSmallError as exc:
        match = re.search(r"at least (\d+)", str(exc))
        assert match, f"the message should say how much budget is needed: {exc}"
        return int(match.group(1))
    return 1


@pytest.mark.parametrize(("semivalue", "method"), ALL_METHODS)
def test_same_seed_same_coalitions_and_values(semivalue: str, method: str) -> None:
    budget = 2**N if method == "exact" else 400
    runs = []
    for _ in range(2):
        est = estimator(semivalue, N, method, seed=42, budget=budget)
        batches = drive(est, GAME, 64)
        runs.append((np.concatenate(batches), est.result()))
    (c1, r1), (c2, r2) = runs
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(r1.values, r2.values)
    np.testing.assert_array_equal(r1.stderr, r2.stderr)
    assert r1.n_evaluations == r2.n_evaluations == len(c1)


@pytest.mark.parametrize(("semivalue", "method"), ALL_METHODS)
def test_batch_size_does_not_change_the_plan(semivalue: str, method: str) -> None:
    """Units are planned and absorbed in order, so the batching cannot change anything."""
    budget = 2**N if method == "exact" else 700
    reference = None
    for batch in (1, 7, 64, 1000, 5000):
        est = estimator(semivalue, N, method, seed=3, budget=budget)
        coalitions = np.concatenate(drive(est, GAME, batch))
        res = est.result()
        if reference is None:
            reference = (coalitions, res)
            continue
        np.testing.assert_array_equal(coalitions, reference[0], err_msg=f"batch {batch}")
        np.testing.assert_array_equal(res.values, reference[1].values, err_msg=f"batch {batch}")
        np.testing.assert_array_equal(res.stderr, reference[1].stderr, err_msg=f"batch {batch}")
        assert res.stop == reference[1].stop


@pytest.mark.parametrize(("semivalue", "method"), SAMPLING_METHODS)
def test_batch_size_does_not_change_the_result_of_shapley(semivalue: str, method: str) -> None:
    fn = dposhap.shapley if semivalue == "shapley" else dposhap.banzhaf
    results = [fn(GAME, N, method=method, budget=600, seed=9, batch_size=b) for b in (5, 128, None)]
    for res in results[1:]:
        np.testing.assert_array_equal(res.values, results[0].values)
        assert res.n_evaluations == results[0].n_evaluations


@pytest.mark.parametrize(("semivalue", "method"), SAMPLING_METHODS)
def test_different_seeds_differ(semivalue: str, method: str) -> None:
    fn = dposhap.shapley if semivalue == "shapley" else dposhap.banzhaf
    a = fn(GAME, N, method=method, budget=600, seed=0)
    b = fn(GAME, N, method=method, budget=600, seed=1)
    assert not np.allclose(a.values, b.values)
    assert a.seed == 0 and b.seed == 1
    first = [np.concatenate(drive(estimator(semivalue, N, method, seed=s, budget=600), GAME, 600)) for s in (0, 1)]
    assert set(to_masks(first[0]).tolist()) != set(to_masks(first[1]).tolist())


@pytest.mark.parametrize(("semivalue", "method"), ALL_METHODS)
def test_tell_order_does_not_matter(semivalue: str, method: str) -> None:
    """Each batch may be told in pieces and in any row order."""
    budget = 2**N if method == "exact" else 500
    rng = np.random.default_rng(0)
    plain = estimator(semivalue, N, method, seed=4, budget=budget)
    drive(plain, GAME, 100)
    shuffled = estimator(semivalue, N, method, seed=4, budget=budget)
    while not shuffled.done:
        c = shuffled.ask(100)
        if len(c) == 0:
            break
        order = rng.permutation(len(c))
        for piece in np.array_split(order, 3)[::-1]:
            if len(piece):
                shuffled.tell(c[piece], GAME(c[piece]))
    np.testing.assert_allclose(shuffled.result().values, plain.result().values, rtol=1e-12, atol=1e-12)
    assert shuffled.result().n_evaluations == plain.result().n_evaluations


@pytest.mark.parametrize("method", ["permutation", "antithetic", "svarm", "regression", "kernel"])
def test_asking_ahead_then_telling_late_gives_the_same_result(method: str) -> None:
    """A caller may keep several batches in flight (e.g. one per worker)."""
    plain = estimator("shapley", N, method, seed=8, budget=500)
    drive(plain, GAME, 50)
    ahead = estimator("shapley", N, method, seed=8, budget=500)
    in_flight = []
    while True:
        c = ahead.ask(50)
        if len(c) == 0:
            break
        in_flight.append(c)
    assert not ahead.done, "coalitions are out: the run cannot be done"
    with pytest.raises(DposhapError, match="no utilities"):
        ahead.result()
    for c in reversed(in_flight):
        ahead.tell(c, GAME(c))
    assert ahead.done
    np.testing.assert_allclose(ahead.result().values, plain.result().values, rtol=1e-12, atol=1e-12)


def test_stratified_waits_for_its_pilot_instead_of_failing() -> None:
    est = estimator("shapley", N, "stratified", seed=0, budget=800)
    out = []
    while True:
        c = est.ask(10_000)
        if len(c) == 0:
            break
        out.append(c)
    assert not est.done and len(out) >= 1  # the pilot went out; the rounds wait for it
    for c in out:
        est.tell(c, GAME(c))
    drive(est, GAME, 64)
    assert est.done and est.result().stop == "budget"
    assert est.n_evaluations <= 800


# --------------------------------------------------------------------------------------
# the cache and the budget


def check_cache(
    semivalue: str, method: str, n: int, budget: int, seed: int, batch: int, utility
) -> dposhap.ShapleyResult:
    rec = Recorder(utility)
    fn = dposhap.shapley if semivalue == "shapley" else dposhap.banzhaf
    res = fn(rec, n, method=method, budget=budget, seed=seed, batch_size=batch)
    counts = Counter(rec.keys)
    repeated = [k for k, c in counts.items() if c > 1]
    assert not repeated, f"{len(repeated)} coalitions evaluated twice"
    assert res.n_evaluations == len(counts) == len(rec.keys)
    assert res.n_evaluations <= budget
    return res


@settings(max_examples=120)
@given(
    case=st.sampled_from(ALL_METHODS),
    n=st.integers(1, 9),
    extra=st.integers(0, 400),
    seed=st.integers(0, 2**63),
    batch=st.sampled_from([1, 3, 16, 100, 1024]),
)
def test_no_coalition_is_evaluated_twice_and_the_budget_holds(
    case: tuple[str, str], n: int, extra: int, seed: int, batch: int
) -> None:
    semivalue, method = case
    budget = min_budget(semivalue, n, method) + extra
    utility = TableGame(np.random.default_rng(n).normal(size=2**n))
    res = check_cache(semivalue, method, n, budget, seed, batch, utility)
    assert res.stop in ("budget", "complete")
    assert np.all(np.isfinite(res.values))
    if method == "exact":
        assert res.n_evaluations == 2**n and res.stop == "complete"
    elif res.stop == "complete":
        assert res.n_evaluations < budget or res.n_evaluations == 2**n


@pytest.mark.parametrize(("semivalue", "method"), SAMPLING_METHODS)
def test_the_budget_is_nearly_spent(semivalue: str, method: str) -> None:
    """A budget below 2**n is used up (up to one unit of work), never exceeded."""
    utility, _ = saturating_sum(N)
    for budget in (400, 555, 1000):
        res = check_cache(semivalue, method, N, budget, 0, 128, utility)
        assert res.stop == "budget"
        assert budget - 2 * N <= res.n_evaluations <= budget


@pytest.mark.parametrize(("semivalue", "method"), SAMPLING_METHODS)
def test_with_a_budget_beyond_all_coalitions_each_is_evaluated_once(semivalue: str, method: str) -> None:
    n = 6
    utility = TableGame(np.random.default_rng(1).normal(size=2**n))
    res = check_cache(semivalue, method, n, 10**6, 0, 1024, utility)
    assert res.stop == "complete"
    assert res.n_evaluations <= 2**n


@pytest.mark.parametrize(("semivalue", "method"), SAMPLING_METHODS)
def test_the_cache_on_more_than_64_players(semivalue: str, method: str) -> None:
    """Coalitions of 70 players span two words of the bitset."""
    n = 70
    w = np.random.default_rng(0).normal(size=n)
    res = check_cache(
        semivalue, method, n, 3000 if method != "stratified" else 40_000, 1, 512, lambda s: np.tanh(s @ w)
    )
    assert res.values.shape == (n,) and np.all(np.isfinite(res.values))


def test_tol_and_the_cache() -> None:
    utility, _ = saturating_sum(N)
    rec = Recorder(utility)
    res = dposhap.shapley(rec, N, method="antithetic", tol=0.01, seed=0, batch_size=50)
    assert res.stop == "tol"
    assert len(rec.keys) == len(set(rec.keys)) == res.n_evaluations


def test_history_records_each_batch() -> None:
    utility, _ = saturating_sum(N)
    res = dposhap.shapley(utility, N, method="permutation", budget=600, seed=0, batch_size=100)
    evals = [e for e, _ in res.history]
    assert len(evals) >= 5 and evals == sorted(evals) and evals[-1] == res.n_evaluations
    np.testing.assert_array_equal(res.history[-1][1], res.values)
    assert all(v.shape == (N,) for _, v in res.history)


def test_done_estimator_asks_nothing() -> None:
    game = TableGame(np.arange(8.0) ** 2)
    est = estimator("shapley", 3, "exact")
    drive(est, game, 3)
    assert est.done
    assert est.ask(10).shape == (0, 3)
    assert est.result().stop == "complete"
    np.testing.assert_allclose(est.result().values, shapley_bruteforce(game.table, 3), rtol=1e-12)


def test_coalitions_in_flight_when_tol_is_reached_can_still_be_told() -> None:
    utility = InteractionGame(12, seed=1)
    est = estimator("shapley", 12, "antithetic", tol=0.3, seed=0)
    first, second = est.ask(300), est.ask(300)
    est.tell(first, utility(first))
    assert est.done and est.result().stop == "tol"
    est.tell(second, utility(second))  # asked before the stop: still welcome
    res = est.result()
    assert res.stop == "tol" and res.stderr.max() <= 0.3 and res.n_evaluations == 600
    assert est.ask(10).shape == (0, 12)


def test_the_progress_bar_changes_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    utility, _ = saturating_sum(N)
    quiet = dposhap.shapley(utility, N, method="svarm", budget=300, seed=2)
    shown = dposhap.shapley(utility, N, method="svarm", budget=300, seed=2, progress=True)
    np.testing.assert_array_equal(quiet.values, shown.values)
    assert "svarm" in capsys.readouterr().err

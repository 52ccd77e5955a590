"""Evaluation noise: bootstrap replicates over items, paired comparisons, ranking groups."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dposhap
from dposhap.errors import InvalidArgumentError, UtilityError
from dposhap.uncertainty import ItemScores, bootstrap_weights, compare_pairs, ranking_groups

SAMPLING = ["permutation", "antithetic", "svarm", "regression", "kernel"]


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(2, 6),
    m=st.integers(1, 12),
    seed=st.integers(0, 2**32 - 1),
    method=st.sampled_from(["exact", *SAMPLING]),
)
def test_bootstrap_of_an_item_additive_game_is_the_exact_bootstrap(n: int, m: int, seed: int, method: str) -> None:
    # item j gives v_j(S) = sum_{i in S} a_ij: every estimator is exact on it, so replicate b
    # must be the resampled mean sum_j W_bj a_ij / m, whatever the method
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, m))
    game = dposhap.ItemGame(lambda c: c.astype(float) @ a, m)
    budget = None if method == "exact" else 40 * n
    res = dposhap.shapley(game, n, method=method, budget=budget, seed=seed % 1000, n_boot=16)
    w = bootstrap_weights(m, 16, seed % 1000)
    expected = w @ a.T / m  # [B, n]
    assert res.replicates is not None and res.replicates.shape == (16, n)
    np.testing.assert_allclose(res.replicates, expected, atol=1e-9)
    np.testing.assert_allclose(res.eval_stderr, expected.std(axis=0, ddof=1), atol=1e-9)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(2, 7), m=st.integers(2, 30), seed=st.integers(0, 10_000))
def test_every_replicate_is_efficient_and_symmetric(n: int, m: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    margins = rng.normal(0.1, 1.0, size=(n, m))
    margins[-1] = margins[0]  # players 0 and n-1 are interchangeable
    game = dposhap.MarginGame(margins, "logsigmoid")
    res = dposhap.shapley(game, n, method="exact", n_boot=8, boot_seed=seed)
    w = bootstrap_weights(m, 8, seed)
    full = game.reweighted(w)(np.ones((1, n), bool))[0]
    empty = game.reweighted(w)(np.zeros((1, n), bool))[0]
    assert res.replicates is not None
    np.testing.assert_allclose(res.replicates.sum(axis=1), full - empty, atol=1e-9)
    np.testing.assert_allclose(res.replicates[:, 0], res.replicates[:, -1], atol=1e-9)


@pytest.mark.parametrize("method", ["exact", *SAMPLING])
def test_native_bootstrap_equals_rerunning_on_resampled_pairs(method: str) -> None:
    rng = np.random.default_rng(3)
    n, m = 9, 80
    margins = rng.normal(0.05, 1.0, size=(n, m))
    game = dposhap.MarginGame(margins, "accuracy")
    budget = None if method == "exact" else 600
    res = dposhap.shapley(game, n, method=method, budget=budget, seed=5, n_boot=6, boot_seed=11)
    w = bootstrap_weights(m, 6, 11)
    assert res.replicates is not None
    for b in range(3):
        resampled = dposhap.MarginGame(np.repeat(margins, w[b].astype(int), axis=1), "accuracy")
        again = dposhap.shapley(resampled, n, method=method, budget=budget, seed=5)
        np.testing.assert_allclose(res.replicates[b], again.values, atol=1e-12)
    # the Python item path gives the same replicates as the native one
    items = dposhap.ItemGame(lambda c: (np.sign(c.astype(float) @ margins) + 1) / 2, m)
    via_items = dposhap.shapley(items, n, method=method, budget=budget, seed=5, n_boot=6, boot_seed=11)
    np.testing.assert_allclose(via_items.replicates, res.replicates, atol=1e-12)
    np.testing.assert_allclose(via_items.values, res.values, atol=1e-12)


def test_the_bootstrap_evaluates_nothing_new_and_exact_runs_report_evaluation_error() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(5, 40))
    calls = []

    def fn(c: np.ndarray) -> np.ndarray:
        calls.append(len(c))
        return c.astype(float) @ scores

    game = dposhap.ItemGame(fn, 40)
    res = dposhap.shapley(game, 5, method="exact", n_boot=50)
    assert sum(calls) == 2**5 == game.evaluated
    assert res.eval_stderr is not None and (res.eval_stderr > 0).all()
    assert (res.stderr == 0).all()
    np.testing.assert_allclose(res.total_stderr, res.eval_stderr)
    assert "± eval" in repr(res)
    # the replicates' spread is the usual standard error of a mean over 40 items, roughly
    se = scores.std(axis=1, ddof=1) / np.sqrt(40)
    assert np.all(np.abs(res.eval_stderr / se - 1) < 0.4)


def test_ratio_items_and_several_objectives() -> None:
    rng = np.random.default_rng(1)
    n, m = 4, 30
    num = rng.normal(size=(n, 2, m))
    size = rng.integers(1, 5, size=m).astype(float)

    def fn(c: np.ndarray) -> ItemScores:
        x = c.astype(float)
        numer = np.einsum("bi,ikm->bkm", x, num) * size
        return ItemScores(numer, np.tile(size, (len(c), 1)))

    game = dposhap.ItemGame(fn, m)
    res = dposhap.shapley(game, n, method="exact", n_boot=10)
    assert res.values.shape == (n, 2) and res.replicates is not None and res.replicates.shape == (10, n, 2)
    w = bootstrap_weights(m, 10, 0)
    expected = np.einsum("bm,ikm->bik", w * size, num) / (w @ size)[:, None, None]
    np.testing.assert_allclose(res.replicates, expected, atol=1e-9)


def test_comparisons_separate_what_the_items_separate() -> None:
    rng = np.random.default_rng(2)
    m = 400
    good = rng.normal(1.0, 1.0, m)
    copy = good.copy()
    bad = rng.normal(-1.0, 1.0, m)
    noise = rng.normal(0.0, 1.0, m)
    scores = np.stack([good, copy, bad, noise])
    res = dposhap.shapley(dposhap.ItemGame(lambda c: c.astype(float) @ scores, m), 4, n_boot=200, names=list("GCBN"))
    pairs = {(c.first, c.second): c for c in res.comparisons()}
    gc = pairs.get(("G", "C")) or pairs[("C", "G")]
    assert not gc.significant and abs(gc.difference) < 1e-12
    assert pairs[("G", "B")].significant and pairs[("G", "B")].share == 1.0
    assert pairs[("N", "B")].significant
    groups = ranking_groups(res.names, res.values, res.comparisons())
    assert sorted(groups[0]) == ["C", "G"] and groups[-1] == ["B"]


def test_compare_pairs_counts_estimator_error_too() -> None:
    # no bootstrap: a difference of 1 with estimator errors of 1 each is not significant
    out = compare_pairs(["a", "b"], np.array([1.0, 0.0]), np.array([1.0, 1.0]), None)
    assert len(out) == 1 and not out[0].significant and np.isnan(out[0].share)
    out = compare_pairs(["a", "b"], np.array([0.0, 10.0]), np.array([1.0, 1.0]), None)
    assert out[0].first == "b" and out[0].significant


def test_bad_bootstrap_arguments() -> None:
    game = dposhap.MarginGame(np.ones((2, 3)), "accuracy")
    with pytest.raises(InvalidArgumentError, match="n_boot"):
        dposhap.shapley(game, 2, n_boot=1)
    with pytest.raises(InvalidArgumentError, match="n_boot"):
        dposhap.shapley(game, 2, n_boot=-3)
    with pytest.raises(UtilityError, match="per-item scores of shape"):
        dposhap.shapley(dposhap.ItemGame(lambda c: np.ones(len(c)), 3), 2, n_boot=5)
    # a plain callable has no items: the bootstrap is skipped and says nothing
    res = dposhap.shapley(lambda c: c.sum(1).astype(float), 2, n_boot=5)
    assert res.eval_stderr is None and res.replicates is None

"""The pairwise Shapley interaction index: exact against the formula written out, sampled
against exact, and the cases a buyer of data reads it for (duplicates, complements)."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import dposhap
from dposhap.errors import InvalidArgumentError, UtilityError
from dposhap.interactions import interactions_exact, interactions_from_samples, kernel_sample, plot_interactions
from dposhap.testing import InteractionGame, all_coalitions, margin_utility, saturating_sum, table_of


def sii_bruteforce(table: np.ndarray, n: int) -> np.ndarray:
    """The index written out: a double loop over pairs and over subsets of the others."""
    out = np.zeros((n, n))
    for i, j in itertools.permutations(range(n), 2):
        others = [p for p in range(n) if p not in (i, j)]
        for size in range(n - 1):
            weight = math.factorial(size) * math.factorial(n - size - 2) / math.factorial(n - 1)
            for subset in itertools.combinations(others, size):
                s = sum(1 << p for p in subset)
                out[i, j] += weight * (table[s | 1 << i | 1 << j] - table[s | 1 << i] - table[s | 1 << j] + table[s])
    return out


def upper(m: np.ndarray) -> np.ndarray:
    return m[np.triu_indices(m.shape[-1], k=1)]


@settings(max_examples=40)
@given(
    st.integers(2, 6).flatmap(
        lambda n: st.tuples(st.just(n), hnp.arrays(np.float64, 2**n, elements=st.floats(-10, 10)))
    )
)
def test_exact_matches_the_formula_written_out(case: tuple[int, np.ndarray]) -> None:
    n, table = case
    got = interactions_exact(table, n)
    np.testing.assert_allclose(got, sii_bruteforce(table, n), atol=1e-10)
    np.testing.assert_array_equal(got, got.T)
    np.testing.assert_array_equal(np.diag(got), 0.0)


@settings(max_examples=25)
@given(st.integers(2, 9), st.integers(0, 2**31 - 1))
def test_a_sum_of_pair_terms_has_index_equal_to_its_coefficients(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = np.triu(rng.normal(size=(n, n)), k=1)
    main = rng.normal(size=n)

    def game(s: np.ndarray) -> np.ndarray:
        x = s.astype(float)
        return 0.3 + x @ main + np.einsum("bi,ij,bj->b", x, a, x)

    got = interactions_exact(table_of(game, n), n)
    np.testing.assert_allclose(got, a + a.T, atol=1e-10)


def test_several_objectives_are_valued_one_by_one() -> None:
    n = 6
    game = InteractionGame(n, n_pairs=5, n_triples=4, seed=3)
    table = table_of(game, n)
    both = interactions_exact(np.stack([table, -2 * table], axis=1), n)
    assert both.shape == (2, n, n)
    np.testing.assert_allclose(both[0], sii_bruteforce(table, n), atol=1e-10)
    np.testing.assert_allclose(both[1], -2 * both[0], atol=1e-10)


def duplicated_margins(n: int, m: int = 400, seed: int = 0, copied: int = 1) -> np.ndarray:
    """Margins of ``n`` informative sources on ``m`` pairs; the last one is a copy of ``copied``."""
    rng = np.random.default_rng(seed)
    margins = rng.normal(0.5, 1.0, size=(n, m))
    margins[n - 1] = margins[copied]  # the last source sells source ``copied``'s data again
    return margins


@settings(max_examples=12)
@given(st.sampled_from(["accuracy", "logsigmoid"]), st.integers(4, 8), st.integers(0, 2**31 - 1), st.data())
def test_a_duplicated_source_is_the_most_redundant_pair(kind: str, n: int, seed: int, data: st.DataObject) -> None:
    copied = data.draw(st.integers(0, n - 2))
    names = [f"s{i}" for i in range(n)]
    game = dposhap.MarginGame(duplicated_margins(n, seed=seed, copied=copied), kind)
    res = dposhap.pairwise_interactions(game, names=names)
    assert res.exact and res.stderr is None
    ranked = res.most_redundant(top=2)
    assert {ranked[0][0], ranked[0][1]} == {f"s{copied}", f"s{n - 1}"}
    assert ranked[0][2] < 0
    if len(ranked) > 1:
        assert ranked[0][2] < ranked[1][2]


def test_sources_that_only_help_together_are_complementary() -> None:
    n = 5

    def together(s: np.ndarray) -> np.ndarray:
        return (s[:, 2] & s[:, 4]).astype(float)

    res = dposhap.pairwise_interactions(together, n, names=list("abcde"))
    assert res.most_complementary(top=3) == [("c", "e", 1.0)]
    assert res.most_redundant() == []
    m = np.asarray(res.matrix).copy()
    m[2, 4] = m[4, 2] = 0
    np.testing.assert_allclose(m, 0.0, atol=1e-12)


def test_the_native_margin_game_gives_what_its_numpy_reference_gives() -> None:
    n = 8
    margins = duplicated_margins(n, m=300, seed=4)
    native = dposhap.pairwise_interactions(dposhap.MarginGame(margins, "accuracy"))
    numpy = dposhap.pairwise_interactions(margin_utility(margins, "accuracy"), n)
    np.testing.assert_allclose(native.matrix, numpy.matrix, atol=1e-12)
    sampled_native = dposhap.pairwise_interactions(dposhap.MarginGame(margins, "logsigmoid"), max_exact=6, budget=200)
    sampled_numpy = dposhap.pairwise_interactions(margin_utility(margins, "logsigmoid"), n, max_exact=6, budget=200)
    np.testing.assert_allclose(sampled_native.matrix, sampled_numpy.matrix, atol=1e-10)
    assert sampled_native.stderr is not None and sampled_numpy.stderr is not None
    np.testing.assert_allclose(sampled_native.stderr, sampled_numpy.stderr, atol=1e-10)


def test_every_coalition_as_samples_gives_the_exact_index_with_zero_error() -> None:
    n = 7
    game, _ = saturating_sum(n, seed=2)
    coalitions = all_coalitions(n)[::-1]  # any order
    res = interactions_from_samples(coalitions, game(coalitions), n)
    np.testing.assert_allclose(res.matrix, interactions_exact(table_of(game, n), n), atol=1e-10)
    assert res.stderr is not None
    np.testing.assert_allclose(res.stderr, 0.0, atol=1e-12)


def test_sampled_index_is_close_to_exact_with_enough_budget() -> None:
    n = 10
    rng = np.random.default_rng(7)
    margins = rng.normal(0.1, 1.0, size=(n, 300))
    game = margin_utility(margins, "accuracy")
    exact = upper(interactions_exact(table_of(game, n), n))
    z = []
    for seed in range(12):
        res = dposhap.pairwise_interactions(game, n, max_exact=8, budget=600, seed=seed)
        assert not res.exact and res.method == "surrogate+stratified" and res.n_evaluations == 600
        assert res.stderr is not None
        err = upper(np.asarray(res.matrix)) - exact
        assert np.sqrt(np.mean(err**2)) < 0.3 * np.sqrt(np.mean(exact**2))
        z.append(err / np.maximum(upper(res.stderr), 1e-12))
    # the standard errors are honest: most errors lie within 1.96 of them
    assert 0.85 <= np.mean(np.abs(np.concatenate(z)) < 1.96) <= 1.0


def test_a_second_order_game_is_recovered_from_a_few_samples_per_parameter() -> None:
    n = 20
    game = InteractionGame(n, n_pairs=30, n_triples=0, seed=1)
    res = dposhap.pairwise_interactions(game, n, budget=900, seed=3)
    expected = np.zeros((n, n))
    for members, c in game.terms:
        if len(members) == 2:
            expected[members[0], members[1]] += c
            expected[members[1], members[0]] += c
    np.testing.assert_allclose(res.matrix, expected, atol=1e-5)  # the ridge leaves ~1e-7


def test_kernel_sample_draws_distinct_complement_pairs() -> None:
    c = kernel_sample(12, 300, seed=1)
    assert c.shape == (300, 12)
    assert len({row.tobytes() for row in c}) == 300
    assert not c[0].any() and c[1].all()
    keys = {row.tobytes() for row in c}
    paired = sum((~row).tobytes() in keys for row in c[2:])
    assert paired >= 290
    assert kernel_sample(4, 100).shape == (16, 4)


def test_results_serialise_and_draw(tmp_path: Path) -> None:
    n = 6
    game = InteractionGame(n, n_pairs=6, n_triples=2, seed=5)

    def two(s: np.ndarray) -> np.ndarray:
        v = game(s)
        return np.stack([v, v**2], axis=1)

    res = dposhap.pairwise_interactions(two, n, objectives=["acc", "acc2"])
    doc = json.loads(json.dumps(res.to_json()))
    assert doc["exact"] is True and doc["objectives"] == ["acc", "acc2"]
    assert np.array(doc["matrix"]).shape == (2, n, n)
    for obj in (0, 1):
        path = plot_interactions(res, tmp_path / f"inter{obj}.png", objective=obj)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rng = np.random.default_rng(0)
    sym = rng.normal(size=(64, 64))
    big = dposhap.InteractionResult(sym + sym.T, None, exact=False, names=[f"source-{i}" for i in range(64)])
    plot_interactions(big, tmp_path / "big.png")  # 64 sources: every second label
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.png", "inter0.png", "inter1.png"]
    with pytest.raises(InvalidArgumentError, match="objective 2"):
        res.most_redundant(objective=2)


def test_bad_input_is_refused_with_a_message() -> None:
    with pytest.raises(InvalidArgumentError, match=r"expected \[2\*\*3\]"):
        interactions_exact(np.zeros(7), 3)
    with pytest.raises(InvalidArgumentError, match="empty and the grand"):
        interactions_from_samples(np.array([[True, False], [False, True]]), np.zeros(2), 2)
    with pytest.raises(InvalidArgumentError, match="n is missing"):
        dposhap.pairwise_interactions(lambda s: s.sum(axis=1))
    with pytest.raises(UtilityError, match="non-finite"):
        dposhap.pairwise_interactions(lambda s: np.full(s.shape[0], np.nan), 3)
    with pytest.raises(InvalidArgumentError, match="names has 2 entries"):
        dposhap.pairwise_interactions(lambda s: s.sum(axis=1).astype(float), 3, names=["a", "b"])

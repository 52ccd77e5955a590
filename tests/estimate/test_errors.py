"""Bad arguments and bad utilities raise dposhap.errors classes that say what went wrong."""

from __future__ import annotations

import numpy as np
import pytest

import dposhap
from dposhap.errors import (
    BudgetTooSmallError,
    DposhapError,
    InvalidArgumentError,
    ProtocolError,
    UtilityError,
)
from dposhap.testing import InteractionGame, linear_game

N = 6
GAME = InteractionGame(N, n_pairs=4, n_triples=2, seed=1)


def test_the_error_tree() -> None:
    for cls in (InvalidArgumentError, BudgetTooSmallError, UtilityError, ProtocolError):
        assert issubclass(cls, DposhapError)
    assert issubclass(BudgetTooSmallError, InvalidArgumentError)
    assert issubclass(InvalidArgumentError, ValueError) and issubclass(ProtocolError, RuntimeError)


# --------------------------------------------------------------------------------------
# bad utilities


@pytest.mark.parametrize(
    ("utility", "phrase"),
    [
        (lambda s: np.zeros(len(s) + 1), "shape"),
        (lambda s: np.zeros((len(s), 2, 2)), "shape"),
        (lambda s: np.zeros((len(s), 0)), "shape"),
        (lambda s: 1.0, "shape"),
        (lambda s: ["a"] * len(s), "not numeric"),
        (lambda s: np.full(len(s), np.nan), "finite"),
        (lambda s: np.where(s[:, 0], np.inf, 0.0), "finite"),
        (lambda s: np.stack([np.zeros(len(s)), np.full(len(s), -np.inf)], axis=1), "objective 1"),
    ],
    ids=["too-long", "3-d", "no-objective", "scalar", "strings", "nan", "inf", "inf-in-objective-1"],
)
@pytest.mark.parametrize("method", ["exact", "permutation", "kernel"])
def test_bad_utility_output(utility, phrase: str, method: str) -> None:
    with pytest.raises(UtilityError, match=phrase):
        dposhap.shapley(utility, N, method=method, budget=2**N)


def test_nan_message_says_where() -> None:
    def utility(s: np.ndarray) -> np.ndarray:
        out = np.ones(len(s))
        out[3] = np.nan
        return out

    with pytest.raises(UtilityError, match=r"row 3.*finite.*1 of \d+ rows"):
        dposhap.shapley(utility, N, method="exact")


def test_changing_the_number_of_objectives_mid_run() -> None:
    calls = []

    def utility(s: np.ndarray) -> np.ndarray:
        calls.append(1)
        return np.ones((len(s), 1 if len(calls) == 1 else 2))

    with pytest.raises(UtilityError, match="objectives"):
        dposhap.shapley(utility, N, method="permutation", budget=200, batch_size=10)


def test_bad_control_output() -> None:
    control = linear_game(np.ones(N))
    with pytest.raises(UtilityError, match="control game"):
        dposhap.shapley(GAME, N, method="svarm", budget=100, control=(lambda s: np.full(len(s), np.nan), np.ones(N)))
    with pytest.raises(UtilityError, match="control game returned 2 values"):
        dposhap.shapley(
            GAME, N, method="svarm", budget=100, control=(lambda s: np.stack([control(s)] * 2, 1), np.ones(N))
        )


# --------------------------------------------------------------------------------------
# bad arguments


@pytest.mark.parametrize("n", [0, -3])
def test_n_players_below_one(n: int) -> None:
    with pytest.raises(InvalidArgumentError, match="at least 1"):
        dposhap.shapley(GAME, n, method="exact")
    with pytest.raises(InvalidArgumentError, match="at least 1"):
        dposhap.ShapleyEstimator(n, "permutation", budget=100)


def test_n_players_of_the_wrong_type_or_missing() -> None:
    with pytest.raises(InvalidArgumentError, match="integer"):
        dposhap.ShapleyEstimator(2.5, "exact")
    with pytest.raises(InvalidArgumentError, match="n_players"):
        dposhap.shapley(GAME)
    with pytest.raises(InvalidArgumentError, match="callable"):
        dposhap.shapley(np.ones(3), 3)
    with pytest.raises(InvalidArgumentError, match="one name per player"):
        dposhap.shapley(GAME, N, names=["a", "b"])
    # names alone give the number of players
    assert dposhap.shapley(GAME, names=list("abcdef")).names == list("abcdef")


def test_exact_budget_below_two_to_the_n() -> None:
    with pytest.raises(BudgetTooSmallError, match=r"2\^6 = 64.*at least 64"):
        dposhap.shapley(GAME, N, method="exact", budget=63)
    assert dposhap.shapley(GAME, N, method="exact", budget=64).n_evaluations == 64


@pytest.mark.parametrize(
    ("semivalue", "method"),
    [("shapley", m) for m in ["permutation", "antithetic", "stratified", "svarm", "regression", "kernel"]]
    + [("banzhaf", "msr")],
)
def test_budget_too_small_for_the_method(semivalue: str, method: str) -> None:
    fn = dposhap.shapley if semivalue == "shapley" else dposhap.banzhaf
    with pytest.raises(BudgetTooSmallError, match=f'"{method}".*at least') as info:
        fn(GAME, N, method=method, budget=3)
    need = int(str(info.value).rsplit("at least ", 1)[1].split()[0])
    assert need > 3
    assert fn(GAME, N, method=method, budget=need).n_evaluations <= need


def test_stratified_names_the_budget_it_needs() -> None:
    n = 12
    with pytest.raises(BudgetTooSmallError, match="stratified.*raise budget to at least"):
        dposhap.shapley(InteractionGame(n), n, method="stratified", budget=100)


@pytest.mark.parametrize("budget", [0, -5])
def test_budget_not_positive(budget: int) -> None:
    with pytest.raises(InvalidArgumentError, match="budget"):
        dposhap.shapley(GAME, N, method="permutation", budget=budget)


def test_budget_of_the_wrong_type() -> None:
    with pytest.raises(InvalidArgumentError, match="integer"):
        dposhap.shapley(GAME, N, method="permutation", budget=100.5)


def test_unknown_method() -> None:
    with pytest.raises(InvalidArgumentError, match="unknown method.*permutation"):
        dposhap.shapley(GAME, N, method="montecarlo", budget=100)
    with pytest.raises(InvalidArgumentError, match="unknown method"):
        dposhap.ShapleyEstimator(N, "Permutation", budget=100)


@pytest.mark.parametrize("tol", [0.0, -0.1, float("nan"), float("inf")])
def test_tol_not_positive_and_finite(tol: float) -> None:
    with pytest.raises(InvalidArgumentError, match="tol"):
        dposhap.shapley(GAME, N, method="permutation", tol=tol)


def test_sampling_without_a_stopping_rule() -> None:
    with pytest.raises(InvalidArgumentError, match="budget=.*tol="):
        dposhap.shapley(GAME, N, method="permutation")


def test_banzhaf_with_a_shapley_only_method() -> None:
    """The message says the method exists but estimates the Shapley value (not "unknown")."""
    for method in ["permutation", "antithetic", "stratified", "svarm", "regression", "kernel"]:
        with pytest.raises(InvalidArgumentError, match=f'"{method}".*msr') as info:
            dposhap.banzhaf(GAME, N, method=method, budget=500)
        assert "Shapley value only" in str(info.value), str(info.value)


def test_shapley_with_msr() -> None:
    with pytest.raises(InvalidArgumentError, match="msr") as info:
        dposhap.shapley(GAME, N, method="msr", budget=500)
    assert "call dposhap.banzhaf" in str(info.value), str(info.value)


def test_exact_on_too_many_players() -> None:
    with pytest.raises(InvalidArgumentError, match="limited"):
        dposhap.ShapleyEstimator(40, "exact")


def test_bad_seed_and_batch() -> None:
    with pytest.raises(InvalidArgumentError, match="seed"):
        dposhap.shapley(GAME, N, method="exact", seed=-1)
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        dposhap.shapley(GAME, N, method="exact", batch_size=0)
    with pytest.raises(InvalidArgumentError, match="max_batch"):
        dposhap.ShapleyEstimator(N, "exact").ask(0)


# --------------------------------------------------------------------------------------
# control games of the wrong size


def test_control_game_of_another_size() -> None:
    game = dposhap.MarginGame(np.ones((N, 3)), "logsigmoid")
    other = dposhap.MarginGame(np.ones((N + 1, 3)), "mean")
    with pytest.raises(InvalidArgumentError, match="7 players.*same sources"):
        dposhap.shapley(game, method="svarm", budget=100, control=other)
    with pytest.raises(InvalidArgumentError, match="same sources"):
        dposhap.shapley(GAME, N, method="svarm", budget=100, control=other)
    with pytest.raises(InvalidArgumentError, match="one per player"):
        dposhap.shapley(GAME, N, method="svarm", budget=100, control=(GAME, np.zeros(N + 2)))
    with pytest.raises(InvalidArgumentError, match="same sources"):
        dposhap.ShapleyEstimator(N, "svarm", budget=100, control_values=np.zeros((N - 1, 1)))
    with pytest.raises(InvalidArgumentError, match="exactly two"):
        dposhap.shapley(GAME, N, method="svarm", budget=100, control=(GAME, np.zeros(N), 1))
    with pytest.raises(InvalidArgumentError, match="control must be"):
        dposhap.shapley(GAME, N, method="svarm", budget=100, control=3.0)


def test_control_with_the_wrong_number_of_outputs() -> None:
    def three(s: np.ndarray) -> np.ndarray:
        return np.stack([GAME(s)] * 3, axis=1)

    with pytest.raises(InvalidArgumentError, match="1 .*or one per objective"):
        dposhap.shapley(GAME, N, method="svarm", budget=100, control=(three, np.zeros((N, 3))))


def test_control_utilities_given_or_missing_in_tell() -> None:
    est = dposhap.ShapleyEstimator(N, "svarm", budget=100)
    c = est.ask(5)
    with pytest.raises(InvalidArgumentError, match="no control_values"):
        est.tell(c, GAME(c), control=GAME(c))
    est = dposhap.ShapleyEstimator(N, "svarm", budget=100, control_values=np.zeros(N))
    c = est.ask(5)
    with pytest.raises(InvalidArgumentError, match="control="):
        est.tell(c, GAME(c))


# --------------------------------------------------------------------------------------
# the ask/tell protocol


def test_telling_a_coalition_never_asked() -> None:
    est = dposhap.ShapleyEstimator(N, "permutation", budget=100)
    asked = est.ask(4)
    never = np.ones((1, N), dtype=bool)
    while any((row == never[0]).all() for row in asked):
        never[0, 0] = False  # pick a coalition that is not among the asked ones
    with pytest.raises(ProtocolError, match="not asked"):
        est.tell(never, GAME(never))
    # the estimator is still usable afterwards
    est.tell(asked, GAME(asked))
    assert est.n_evaluations == 4


def test_telling_a_coalition_twice() -> None:
    est = dposhap.ShapleyEstimator(N, "permutation", budget=100)
    asked = est.ask(4)
    est.tell(asked, GAME(asked))
    with pytest.raises(ProtocolError, match="told twice"):
        est.tell(asked[:1], GAME(asked[:1]))
    est2 = dposhap.ShapleyEstimator(N, "permutation", budget=100)
    asked = est2.ask(4)
    doubled = np.concatenate([asked[:2], asked[:1]])
    with pytest.raises(ProtocolError):
        est2.tell(doubled, GAME(doubled))


def test_telling_coalitions_of_the_wrong_width() -> None:
    est = dposhap.ShapleyEstimator(N, "permutation", budget=100)
    est.ask(4)
    with pytest.raises(ProtocolError, match="columns"):
        est.tell(np.zeros((1, N + 1), dtype=bool), np.zeros(1))


def test_telling_the_wrong_number_of_utilities() -> None:
    est = dposhap.ShapleyEstimator(N, "permutation", budget=100)
    c = est.ask(4)
    with pytest.raises(UtilityError, match="shape"):
        est.tell(c, np.zeros(3))


def test_a_rejected_tell_changes_nothing() -> None:
    """A batch refused for a NaN can be told again, corrected, with the same final result."""
    reference = dposhap.ShapleyEstimator(N, "svarm", budget=60, seed=1)
    est = dposhap.ShapleyEstimator(N, "svarm", budget=60, seed=1)
    first = True
    while not est.done:
        c = est.ask(16)
        if len(c) == 0:
            break
        if first:
            bad = GAME(c)
            bad[-1] = np.nan
            with pytest.raises(UtilityError):
                est.tell(c, bad)
            first = False
        est.tell(c, GAME(c))
    while not reference.done:
        c = reference.ask(16)
        if len(c) == 0:
            break
        reference.tell(c, GAME(c))
    np.testing.assert_array_equal(est.result().values, reference.result().values)


def test_result_before_any_tell() -> None:
    est = dposhap.ShapleyEstimator(N, "permutation", budget=100)
    est.ask(4)
    with pytest.raises(DposhapError, match="no utilities"):
        est.result()


# --------------------------------------------------------------------------------------
# partial results travel with errors


def failing_on_call(k: int, exc: BaseException | None = None, base=GAME):
    calls = []

    def utility(s: np.ndarray) -> np.ndarray:
        calls.append(len(s))
        if len(calls) == k:
            if exc is not None:
                raise exc
            out = base(s)
            out[0] = np.nan
            return out
        return base(s)

    return utility, calls


@pytest.mark.parametrize("method", ["permutation", "svarm", "regression", "kernel", "exact"])
def test_an_exception_mid_run_keeps_the_partial_result(method: str) -> None:
    utility, calls = failing_on_call(3, RuntimeError("GPU fell over"))
    with pytest.raises(RuntimeError, match="GPU fell over") as info:
        dposhap.shapley(utility, N, method=method, budget=64, batch_size=8, names=list("abcdef"))
    partial = info.value.partial
    assert isinstance(partial, dposhap.ShapleyResult)
    assert partial.stop == "running"
    # two batches evaluated and told; the third one was asked, and its evaluation raised
    assert partial.n_evaluations == 16 and sum(calls) == 24
    assert partial.names == list("abcdef") and partial.values.shape == (N,)
    assert any("partial" in note for note in getattr(info.value, "__notes__", []))


def test_a_bad_utility_mid_run_keeps_the_partial_result() -> None:
    utility, _ = failing_on_call(3, base=InteractionGame(10))
    with pytest.raises(UtilityError, match="finite") as info:
        dposhap.shapley(utility, 10, method="permutation", budget=500, batch_size=50)
    partial = info.value.partial
    assert isinstance(partial, dposhap.ShapleyResult) and partial.stop == "running"
    assert np.all(np.isfinite(partial.values)) and partial.values.shape == (10,)


def test_an_exception_in_the_first_batch_has_no_partial_result() -> None:
    utility, _ = failing_on_call(1, KeyError("boom"))
    with pytest.raises(KeyError) as info:
        dposhap.shapley(utility, N, method="permutation", budget=64)
    assert info.value.partial is None


def test_out_of_range_integers_raise_dposhap_errors() -> None:
    """A seed beyond 64 bits is refused as an invalid argument, not as a bare OverflowError."""
    with pytest.raises(InvalidArgumentError, match="seed"):
        dposhap.shapley(GAME, N, method="svarm", budget=100, seed=2**64)
    assert dposhap.shapley(GAME, N, method="svarm", budget=100, seed=2**64 - 1).seed == 2**64 - 1
    # a budget beyond any count of coalitions is either taken as unlimited or refused clearly
    try:
        res = dposhap.shapley(GAME, N, method="svarm", budget=2**70)
    except DposhapError as exc:
        assert "budget" in str(exc)
    else:
        assert res.n_evaluations <= 2**N


def test_a_bad_n_boot_is_refused_before_anything_is_evaluated() -> None:
    calls: list[int] = []

    def utility(coalitions: np.ndarray) -> np.ndarray:
        calls.append(len(coalitions))
        return coalitions.sum(axis=1).astype(float)

    for bad in (1, -3):
        with pytest.raises(InvalidArgumentError, match="n_boot"):
            dposhap.shapley(utility, 4, n_boot=bad)
    assert calls == []

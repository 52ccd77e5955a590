"""Control variates: a correlated control must cut the error, an unrelated one must not hurt."""

from __future__ import annotations

import functools

import numpy as np
import pytest

import dposhap
from dposhap.testing import InteractionGame, TableGame, linear_game, margin_utility, semivalue_reference, table_of

N = 12
BUDGET = 1500
SEEDS = range(10)
SHAPLEY_SAMPLERS = ["permutation", "antithetic", "stratified", "svarm", "regression", "kernel"]
CASES = [("shapley", m) for m in SHAPLEY_SAMPLERS] + [("banzhaf", "msr")]
# samplers whose per-player samples are marginal contributions: the control's marginal
# contributions must vary for it to help, which those of an additive control do not
MARGINAL_SAMPLERS = {"permutation", "antithetic", "stratified"}
# methods on which an additive control cannot help: marginal samplers see constant marginal
# contributions; "regression" already fits (and removes) the additive part of the game itself
ADDITIVE_BLIND = MARGINAL_SAMPLERS | {"regression"}


def semivalue_fn(semivalue: str):
    return dposhap.shapley if semivalue == "shapley" else dposhap.banzhaf


@functools.cache
def pair(name: str):
    """``(utility, control, exact Shapley, exact Banzhaf, control Shapley, control Banzhaf)``."""
    rng = np.random.default_rng(0)
    if name == "interactions+wiggle":
        # a non-additive game plus a small nonlinear term, controlled by the game itself
        control = InteractionGame(N, seed=5)
        a = rng.uniform(0, 1, size=N)

        def utility(s: np.ndarray) -> np.ndarray:
            return control(s) + 0.5 * np.cos(np.asarray(s, dtype=float) @ a)

    elif name == "linear+wiggle":
        # a linear game plus a small nonlinear term, controlled by the linear part
        w = rng.normal(size=N)
        control = linear_game(w)

        def utility(s: np.ndarray) -> np.ndarray:
            return control(s) + 0.3 * np.sin(3 * (np.asarray(s, dtype=float) @ w))

    elif name == "logsigmoid|mean":
        margins = 0.3 * rng.normal(0.3, 1.0, size=(N, 60))
        utility, control = margin_utility(margins, "logsigmoid"), margin_utility(margins, "mean")
    elif name == "interactions|independent":
        utility = InteractionGame(N, seed=6)
        control = TableGame(np.random.default_rng(9).normal(size=2**N))
    else:
        raise KeyError(name)
    tu, tc = table_of(utility, N), table_of(control, N)
    return (
        utility,
        control,
        semivalue_reference(tu, N),
        semivalue_reference(tu, N, "banzhaf"),
        semivalue_reference(tc, N),
        semivalue_reference(tc, N, "banzhaf"),
    )


def mse_ratio(name: str, semivalue: str, method: str) -> float:
    """MSE with the control over MSE without, over the same seeds (so the same coalitions)."""
    utility, control, sv, bz, csv, cbz = pair(name)
    exact, control_exact = (sv, csv) if semivalue == "shapley" else (bz, cbz)
    fn = semivalue_fn(semivalue)
    plain, controlled = [], []
    for seed in SEEDS:
        a = fn(utility, N, method=method, budget=BUDGET, seed=seed)
        b = fn(utility, N, method=method, budget=BUDGET, seed=seed, control=(control, control_exact))
        plain.append(np.mean((a.values - exact) ** 2))
        controlled.append(np.mean((b.values - exact) ** 2))
    return float(np.mean(controlled) / np.mean(plain))


@pytest.mark.parametrize(("semivalue", "method"), CASES)
def test_a_correlated_control_cuts_the_error(semivalue: str, method: str) -> None:
    ratio = mse_ratio("interactions+wiggle", semivalue, method)
    assert ratio < 0.5, f"MSE ratio {ratio:.2f}"


@pytest.mark.parametrize(("semivalue", "method"), CASES)
def test_the_additive_mean_margin_game_as_control(semivalue: str, method: str) -> None:
    """log-sigmoid accuracy with the (additive) mean margin game as control."""
    ratio = mse_ratio("logsigmoid|mean", semivalue, method)
    if method in ADDITIVE_BLIND:
        # no help, and it must do no harm
        assert ratio <= 1.3, f"MSE ratio {ratio:.2f}"
    else:
        assert ratio < 0.5, f"MSE ratio {ratio:.2f}"


@pytest.mark.parametrize(("semivalue", "method"), CASES)
def test_a_linear_control_never_hurts(semivalue: str, method: str) -> None:
    ratio = mse_ratio("linear+wiggle", semivalue, method)
    assert ratio <= 1.3, f"MSE ratio {ratio:.2f}"
    if method not in ADDITIVE_BLIND:
        assert ratio < 0.5, f"MSE ratio {ratio:.2f}"


@pytest.mark.parametrize(("semivalue", "method"), CASES)
def test_control_coefficients_of_an_additive_control_stay_bounded(semivalue: str, method: str) -> None:
    """The best coefficient for ``u = linear + small`` with the linear part as control is
    about 1, or 0 where the control does not vary; never huge."""
    utility, control, _, _, csv, cbz = pair("linear+wiggle")
    res = semivalue_fn(semivalue)(
        utility, N, method=method, budget=BUDGET, seed=0, control=(control, csv if semivalue == "shapley" else cbz)
    )
    assert res.control_coef.shape == (N,)
    assert np.all(np.abs(res.control_coef) <= 10), res.control_coef


@pytest.mark.parametrize(("semivalue", "method"), CASES)
def test_an_unrelated_control_does_not_hurt(semivalue: str, method: str) -> None:
    ratio = mse_ratio("interactions|independent", semivalue, method)
    assert ratio <= 1.3, f"MSE ratio {ratio:.2f}"


@pytest.mark.parametrize(("semivalue", "method"), CASES)
def test_controlled_estimates_are_within_their_standard_errors(semivalue: str, method: str) -> None:
    utility, control, sv, bz, csv, cbz = pair("interactions+wiggle")
    exact, control_exact = (sv, csv) if semivalue == "shapley" else (bz, cbz)
    zs = []
    for seed in range(4):
        res = semivalue_fn(semivalue)(
            utility, N, method=method, budget=BUDGET, seed=seed, control=(control, control_exact)
        )
        err = np.abs(res.values - exact)
        assert np.all(err <= 5 * res.stderr + 1e-3), (err, res.stderr)
        assert np.any(res.control_coef != 0)
        zs.extend(err[res.stderr > 0] / res.stderr[res.stderr > 0])
    assert np.mean(np.square(zs)) <= 3.0


# --------------------------------------------------------------------------------------
# how the control is given


@pytest.mark.parametrize(
    ("semivalue", "method"), [("shapley", "svarm"), ("shapley", "permutation"), ("banzhaf", "msr")]
)
def test_exact_values_of_a_callable_control_are_computed_for_you(semivalue: str, method: str) -> None:
    utility, control, _, _, csv, cbz = pair("interactions+wiggle")
    fn = semivalue_fn(semivalue)
    given = fn(utility, N, method=method, budget=800, seed=1, control=(control, csv if semivalue == "shapley" else cbz))
    computed = fn(utility, N, method=method, budget=800, seed=1, control=control)
    np.testing.assert_allclose(computed.values, given.values, rtol=0, atol=1e-10)
    assert computed.n_evaluations == given.n_evaluations <= 800


def test_exact_ignores_the_control() -> None:
    utility, control, sv, _, csv, _ = pair("interactions+wiggle")
    res = dposhap.shapley(utility, N, method="exact", control=(control, csv))
    np.testing.assert_allclose(res.values, sv, atol=1e-10)
    np.testing.assert_array_equal(res.control_coef, 0.0)


def test_ask_tell_with_a_control_matches_shapley() -> None:
    utility, control, _, _, csv, _ = pair("interactions+wiggle")
    expected = dposhap.shapley(utility, N, method="kernel", budget=700, seed=2, control=(control, csv), batch_size=90)
    est = dposhap.ShapleyEstimator(N, "kernel", seed=2, budget=700, control_values=csv)
    while not est.done:
        c = est.ask(90)
        if len(c) == 0:
            break
        est.tell(c, utility(c), control=control(c))
    np.testing.assert_allclose(est.result().values, expected.values, rtol=0, atol=1e-12)
    np.testing.assert_allclose(est.result().control_coef, expected.control_coef, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("method", ["svarm", "regression", "kernel", "permutation"])
def test_one_control_shared_by_every_objective(method: str) -> None:
    """A control with one output is used for each objective as if it ran alone."""
    u1, control, _, _, csv, _ = pair("interactions+wiggle")
    u2, _, _, _, _, _ = pair("linear+wiggle")

    def both(s: np.ndarray) -> np.ndarray:
        return np.stack([u1(s), u2(s)], axis=1)

    res = dposhap.shapley(both, N, method=method, budget=900, seed=4, control=(control, csv))
    assert res.values.shape == res.control_coef.shape == (N, 2)
    for j, u in enumerate((u1, u2)):
        alone = dposhap.shapley(u, N, method=method, budget=900, seed=4, control=(control, csv))
        np.testing.assert_allclose(res.values[:, j], alone.values, rtol=0, atol=1e-10)
        np.testing.assert_allclose(res.control_coef[:, j], alone.control_coef, rtol=1e-7, atol=1e-10)


def test_one_control_per_objective() -> None:
    u1, c1, _, _, csv1, _ = pair("interactions+wiggle")
    u2, c2, _, _, csv2, _ = pair("logsigmoid|mean")

    def both(s: np.ndarray) -> np.ndarray:
        return np.stack([u1(s), u2(s)], axis=1)

    def controls(s: np.ndarray) -> np.ndarray:
        return np.stack([c1(s), c2(s)], axis=1)

    res = dposhap.shapley(
        both, N, method="svarm", budget=900, seed=4, control=(controls, np.stack([csv1, csv2], axis=1))
    )
    for j, (u, c, csv) in enumerate(((u1, c1, csv1), (u2, c2, csv2))):
        alone = dposhap.shapley(u, N, method="svarm", budget=900, seed=4, control=(c, csv))
        np.testing.assert_allclose(res.values[:, j], alone.values, rtol=0, atol=1e-10)


@pytest.mark.parametrize(("semivalue", "method"), [("shapley", m) for m in SHAPLEY_SAMPLERS] + [("banzhaf", "msr")])
def test_native_control_matches_the_python_control(semivalue: str, method: str) -> None:
    """A MarginGame with a MarginGame control runs natively; the same pair as numpy callables
    with the same exact control values must give the same estimate."""
    margins = 0.3 * np.random.default_rng(3).normal(0.3, 1.0, size=(N, 40))
    game, control = dposhap.MarginGame(margins, "logsigmoid"), dposhap.MarginGame(margins, "mean")
    control_exact = control.additive_values() if semivalue == "shapley" else control.exact("banzhaf")
    fn = semivalue_fn(semivalue)
    native = fn(game, method=method, budget=900, seed=6, control=control)
    python = fn(
        margin_utility(margins, "logsigmoid"),
        N,
        method=method,
        budget=900,
        seed=6,
        control=(margin_utility(margins, "mean"), control_exact),
    )
    assert native.n_evaluations == python.n_evaluations
    if method == "stratified":
        # allocation follows the utilities, whose rounding differs between the two paths
        assert np.all(np.abs(native.values - python.values) <= 5 * (native.stderr + python.stderr) + 1e-9)
    else:
        np.testing.assert_allclose(native.values, python.values, rtol=0, atol=1e-9)


def test_a_native_non_additive_control_is_enumerated() -> None:
    margins = np.random.default_rng(4).normal(0.2, 1.0, size=(N, 30))
    game = dposhap.MarginGame(margins, "logsigmoid")
    control = dposhap.MarginGame(margins, "accuracy")
    exact = game.exact()
    res = dposhap.shapley(game, method="svarm", budget=1500, seed=0, control=control)
    with_given = dposhap.shapley(game, method="svarm", budget=1500, seed=0, control=(control, control.exact()))
    np.testing.assert_allclose(res.values, with_given.values, rtol=0, atol=1e-12)
    assert np.all(np.abs(res.values - exact) <= 5 * res.stderr + 1e-3)

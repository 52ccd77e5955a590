"""ShapleyResult: shapes, the dict form and the printed table."""

from __future__ import annotations

import json

import numpy as np
import pytest

import dposhap
from dposhap.testing import InteractionGame

N = 5
GAME = InteractionGame(N, n_pairs=3, n_triples=2, seed=3)
NAMES = ["helpful", "harmless", "a-much-longer-source-name", "x", "code"]


def two_objectives(s: np.ndarray) -> np.ndarray:
    return np.stack([GAME(s), -2.0 * GAME(s) + s.sum(axis=1)], axis=1)


@pytest.mark.parametrize("method", ["exact", "permutation", "kernel"])
def test_shapes(method: str) -> None:
    scalar = dposhap.shapley(GAME, N, method=method, budget=64)
    assert scalar.values.shape == scalar.stderr.shape == scalar.control_coef.shape == (N,)
    multi = dposhap.shapley(two_objectives, N, method=method, budget=64)
    assert multi.values.shape == multi.stderr.shape == multi.control_coef.shape == (N, 2)
    column = dposhap.shapley(lambda s: GAME(s)[:, None], N, method=method, budget=64)
    assert column.values.shape == (N, 1)  # an explicit [b, 1] utility keeps its objective axis
    np.testing.assert_allclose(column.values[:, 0], scalar.values, rtol=1e-12, atol=1e-12)
    assert scalar.n_players == multi.n_players == N


def test_banzhaf_shapes() -> None:
    assert dposhap.banzhaf(GAME, N, method="msr", budget=40).values.shape == (N,)
    assert dposhap.banzhaf(two_objectives, N, method="exact").values.shape == (N, 2)


@pytest.mark.parametrize("utility", [GAME, two_objectives], ids=["scalar", "two-objectives"])
@pytest.mark.parametrize("method", ["exact", "svarm"])
def test_to_dict_is_json_and_round_trips(utility, method: str) -> None:
    res = dposhap.shapley(utility, N, method=method, budget=40 if method != "exact" else None, names=NAMES, seed=7)
    text = json.dumps(res.to_dict())
    back = json.loads(text)
    np.testing.assert_array_equal(np.array(back["values"]), res.values)
    np.testing.assert_array_equal(np.array(back["stderr"]), res.stderr)
    assert back["names"] == NAMES
    assert back["method"] == method and back["semivalue"] == "shapley"
    assert back["n_evaluations"] == res.n_evaluations and back["seed"] == 7
    assert back["stop"] == res.stop


def test_to_dict_of_a_native_run() -> None:
    game = dposhap.MarginGame(np.random.default_rng(0).normal(size=(N, 7)), "logsigmoid")
    for res in (dposhap.shapley(game), dposhap.banzhaf(game, method="msr", budget=30)):
        back = json.loads(json.dumps(res.to_dict()))
        np.testing.assert_array_equal(np.array(back["values"]), res.values)
        assert isinstance(back["n_evaluations"], int)


@pytest.mark.parametrize("utility", [GAME, two_objectives], ids=["scalar", "two-objectives"])
def test_repr_names_every_player(utility) -> None:
    res = dposhap.shapley(utility, N, method="permutation", budget=60, names=NAMES)
    text = repr(res)
    lines = text.splitlines()
    assert "permutation" in lines[0] and str(res.n_evaluations) in lines[0] and res.stop in lines[0]
    assert len(lines) == 2 + N
    for name, line in zip(NAMES, lines[2:], strict=True):
        assert line.startswith(name)
    if np.ndim(res.values) == 2:
        assert "value[0]" in lines[1] and "value[1]" in lines[1]


def test_default_names_are_indices() -> None:
    res = dposhap.shapley(GAME, N, method="exact")
    assert res.names == [str(i) for i in range(N)]
    assert all(line.startswith(str(i)) for i, line in enumerate(repr(res).splitlines()[2:]))

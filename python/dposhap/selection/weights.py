"""Per-source weights: the margin-weight optimiser (native, with its numpy reference) and the grid
search of the utilities without a native game."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._core import optimise_margin_weights as native_optimise_margin_weights
from ..errors import InvalidArgumentError
from .goal import GoalRanking, Objectives, finite_or_none, goal_errors

#: Weight grid of the coordinate search of the utilities without a native game (scaled to w_max).
GRID = (0.0, 0.5, 1.0)


def _margin_terms(kind: str, sums: np.ndarray) -> np.ndarray:
    if kind == "accuracy":
        return np.where(sums > 0, 1.0, np.where(sums == 0, 0.5, 0.0))
    return np.minimum(sums, 0.0) - np.log1p(np.exp(-np.abs(sums)))


def margin_weights_reference(
    margins: np.ndarray,
    kind: str,
    coef: np.ndarray,
    masks: Sequence[np.ndarray],
    *,
    w_max: float = 1.0,
    start: np.ndarray | None = None,
    constrained: Sequence[int] | np.ndarray = (),
    levels: Sequence[float] | np.ndarray = (),
    max_iter: int = 500,
) -> np.ndarray:
    """The plain numpy reference of :func:`optimise_margin_weights` (the ground truth in tests): the
    same problem, parameters and result, solved the same way in numpy."""
    m = np.asarray(margins, dtype=np.float64)
    n = m.shape[0]
    mask_mat = np.stack([np.asarray(k, dtype=np.float64) for k in masks])  # [K, P]
    mean_mat = mask_mat / mask_mat.sum(1, keepdims=True)  # objective k = mean_mat[k] @ terms
    coef = np.asarray(coef, dtype=np.float64)
    cons = np.asarray(constrained, dtype=np.int64)
    lev = np.asarray(levels, dtype=np.float64)
    w = (
        np.clip(np.asarray(start, dtype=np.float64), 0.0, w_max)
        if start is not None
        else np.full(n, min(1.0, w_max) if kind == "accuracy" else w_max / 2)
    )

    def objectives(weights: np.ndarray) -> np.ndarray:
        return mean_mat @ _margin_terms(kind, weights @ m)

    if kind == "loglik":
        penalty = 1e4

        def goal_and_grad(weights: np.ndarray) -> tuple[float, np.ndarray]:
            s = weights @ m
            terms = _margin_terms(kind, s)
            obj = mean_mat @ terms
            d_terms = 1.0 / (1.0 + np.exp(np.clip(s, -500, 500)))  # d log sigmoid(s) / ds = sigmoid(-s)
            d_obj = (mean_mat * d_terms[None, :]) @ m.T  # [K, n]
            value = float(coef @ obj)
            grad = coef @ d_obj
            if len(cons):
                short = np.maximum(0.0, lev - obj[cons])
                value -= penalty * float(short @ short)
                grad = grad + 2 * penalty * (short @ d_obj[cons])
            return value, grad

        value, grad = goal_and_grad(w)
        step = 1.0
        for _ in range(max_iter):
            while True:
                trial = np.clip(w + step * grad, 0.0, w_max)
                got, got_grad = goal_and_grad(trial)
                if got >= value + 1e-4 * float(grad @ (trial - w)) or step < 1e-12:
                    break
                step /= 2
            moved = float(np.abs(trial - w).max())
            w, value, grad = trial, got, got_grad
            step = min(step * 2, 1e6)
            if moved < 1e-9:
                break
        return w

    if kind != "accuracy":
        raise InvalidArgumentError(f"margin weights are optimised for accuracy and loglik, not {kind!r}")

    def key(obj: np.ndarray) -> tuple[float, float]:
        viol = float(np.maximum(0.0, lev - obj[cons]).sum()) if len(cons) else 0.0
        return (-round(viol, 12), float(coef @ obj))

    current = key(objectives(w))
    for _ in range(max_iter):
        changed = False
        for i in range(n):
            rest = w @ m - w[i] * m[i]
            moving = m[i] != 0
            cuts = -rest[moving] / m[i, moving]
            cuts = np.unique(np.clip(cuts[(cuts > 0) & (cuts < w_max)], 0.0, w_max))
            points = np.concatenate([[0.0], cuts, [w_max]])
            candidates = np.unique(np.concatenate([points, (points[:-1] + points[1:]) / 2, [w[i]]]))
            sums = rest[None, :] + candidates[:, None] * m[i][None, :]
            objs = _margin_terms(kind, sums) @ mean_mat.T  # [C, K]
            keys = [key(o) for o in objs]
            best = max(range(len(candidates)), key=lambda c: (keys[c], -abs(candidates[c] - w[i])))
            if keys[best] > current:
                w[i], current, changed = candidates[best], keys[best], True
        if not changed:
            break
    return w


def optimise_margin_weights(
    margins: np.ndarray,
    kind: str,
    coef: np.ndarray,
    masks: Sequence[np.ndarray],
    *,
    w_max: float = 1.0,
    start: np.ndarray | None = None,
    constrained: Sequence[int] | np.ndarray = (),
    levels: Sequence[float] | np.ndarray = (),
    max_iter: int = 500,
) -> np.ndarray:
    """Per-source weights in ``[0, w_max]`` that maximise a goal over a margin game, natively in Rust.

    Objective ``k`` is the mean over the pairs of ``masks[k]`` of ``f(sum_i w_i m_ij)``, ``f``
    the indicator (``accuracy``, ties 1/2) or log sigmoid (``loglik``); the goal is
    ``sum_k coef_k objective_k`` subject to ``objective_c >= level_c`` for ``c`` in
    ``constrained``. ``loglik`` is concave in ``w``: projected gradient ascent with backtracking
    on the goal minus a quadratic penalty of the constraints reaches its maximum. ``accuracy`` is
    piecewise constant in each weight: coordinate ascent, each weight set to the best of the
    points between its breakpoints (feasibility first, then the goal), until a sweep changes
    nothing. :func:`margin_weights_reference` is the same in numpy.

    Parameters
    ----------
    margins
        ``[n, P]``.
    kind
        ``"accuracy"`` or ``"loglik"``.
    coef
        ``[K]`` coefficients of the objectives (``masks`` has K boolean ``[P]`` masks).
    w_max
        The largest weight.
    start
        The starting weights (default all ``w_max / 2`` for loglik, ones clipped for accuracy).
    constrained, levels
        Objectives (indices into ``masks``) that must reach the levels.
    max_iter
        Most gradient steps (loglik) or sweeps (accuracy).

    Returns
    -------
    numpy.ndarray
        ``[n]`` weights.
    """
    if kind not in ("accuracy", "loglik"):
        raise InvalidArgumentError(f"margin weights are optimised for accuracy and loglik, not {kind!r}")
    m = np.ascontiguousarray(margins, dtype=np.float64)
    mask_mat = np.stack([np.asarray(k, dtype=np.float64) for k in masks])
    avg = np.ascontiguousarray(mask_mat / mask_mat.sum(1, keepdims=True))
    n = m.shape[0]
    first = np.full(n, min(1.0, w_max) if kind == "accuracy" else w_max / 2) if start is None else start
    return native_optimise_margin_weights(
        m,
        "accuracy" if kind == "accuracy" else "logsigmoid",
        avg,
        np.ascontiguousarray(coef, dtype=np.float64),
        np.ascontiguousarray(first, dtype=np.float64),
        float(w_max),
        [int(c) for c in constrained],
        [float(v) for v in levels],
        max_iter,
    )


def _grid_weights(
    objectives: Objectives, scored: GoalRanking, start: np.ndarray, w_max: float, grid: Sequence[float]
) -> tuple[np.ndarray, int]:
    """One sweep of coordinate search over ``grid`` (scaled to ``w_max``) from ``start``; the
    weights and the number of composed evaluations."""
    w = start.astype(np.float64)
    here = objectives.values(w[None])[0]
    evaluations = 1
    points = sorted({float(g) * w_max for g in grid} | {min(1.0, w_max)})
    for i in range(len(w)):
        options = [p for p in points if p != w[i]]
        trial = np.repeat(w[None], len(options), axis=0)
        trial[:, i] = options
        got = objectives.values(trial)
        evaluations += len(options)
        top = int(scored.order(got, trial)[0])
        if scored.better(got[top], here, trial[top], w):
            w, here = trial[top], got[top]
    return w, evaluations


def optimise_weights(
    objectives: Objectives,
    scored: GoalRanking,
    best: np.ndarray,
    w_max: float,
    n_boot: int,
    seed: int,
    all_row: np.ndarray,
) -> dict[str, Any]:
    """The weights that maximise the goal, their predicted goal with its error, and how they were found."""
    start = best.astype(np.float64) * min(1.0, w_max)
    built = objectives.built
    if objectives.margins:
        kind = built.kinds[0]
        masks = [np.ones(built.n_pairs, dtype=bool), *objectives.set_masks]
        cons = scored.constrained
        w_ll = optimise_margin_weights(  # from the best subset
            built.margins, kind, scored.coef, masks, w_max=w_max, start=start, constrained=cons, levels=scored.levels
        )
        w = w_ll
        if kind == "accuracy":  # several starts: the best subset, and all sources at weight 1
            other = optimise_margin_weights(
                built.margins,
                kind,
                scored.coef,
                masks,
                w_max=w_max,
                start=np.full(len(start), min(1.0, w_max)),
                constrained=cons,
                levels=scored.levels,
            )
            keys = scored.keys(objectives.values(np.stack([w_ll, other])), np.zeros((2, len(start))))
            w = other if tuple(keys[1]) > tuple(keys[0]) else w_ll  # a tie keeps the start from the best subset
        how, evaluations = (
            f"native margin game, {'coordinate ascent' if kind == 'accuracy' else 'projected gradient'}",
            0,
        )
    else:
        w, evaluations = _grid_weights(objectives, scored, start, w_max, GRID)
        how = f"coordinate search over the weights {sorted({g * w_max for g in GRID} | {min(1.0, w_max)})}"
    rows = np.stack([w, all_row.astype(np.float64), start])
    errs = goal_errors(objectives, rows, scored, n_boot, seed)
    return {
        "weights": dict(zip(objectives.players, map(float, w), strict=True)),
        "predicted": float(errs["goal"][0]),
        "predicted_stderr": finite_or_none(errs["stderr"][0]),
        "gain": float(errs["goal"][0] - errs["goal"][1]),
        "gain_stderr": finite_or_none(errs["diff_stderr"]),
        "subset_predicted": float(errs["goal"][2]),
        "objectives": dict(zip(objectives.names, map(float, objectives.values(w[None])[0]), strict=True)),
        "method": how,
        "composed_evaluations": evaluations,
    }

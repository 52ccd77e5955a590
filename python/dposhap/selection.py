"""Acting on the values: choose the sources (and their weights) to train on, and prove it by retraining.

:func:`select_run` searches the coalitions of a trained run for the one whose composed model
maximises a goal (one objective, a stated weighted sum of objectives, either subject to other
objectives not falling below a level), with no new training: every coalition's utility is one
masked sum (margin games) or one composed evaluation, read through the run's cache
(:func:`dposhap.valuation.open_utility`), so no coalition is evaluated twice.

* **Subset.** Exhaustive over all ``2^n`` coalitions up to :data:`EXHAUSTIVE_SOURCES` sources.
  Beyond, a greedy search: forward from the empty coalition (add the source that improves the
  goal most, until none does) and backward from all sources (remove the one whose removal
  improves it most), then a local search from the better of the two (flip the one source that
  improves it most, until none does). Beside it, the rule people use: drop every source whose
  Shapley value on the goal is significantly negative (value + 1.96 total standard errors < 0).
* **Weights.** Per-source weights in ``[0, w_max]``. A margin game is linear in the weights
  inside the game (``m_S(w) = sum_i w_i m_i``): ``loglik`` (mean log sigmoid, concave in ``w``)
  by projected gradient ascent with backtracking, which reaches the global optimum; ``accuracy``
  (piecewise constant in each ``w_i``) by coordinate ascent with an exact line search over the
  breakpoints of each coordinate. Both run natively in Rust over the margins matrix
  (:func:`optimise_margin_weights`; :func:`margin_weights_reference` is the numpy reference).
  ``likelihood`` and ``generation`` take the weights into the compose kernels: a coordinate search over a small grid of weights, one
  composed evaluation per grid point.
* **Verify.** Train one adapter on the union of the chosen sources' training pairs (weights as
  sampling rates) and one on all sources, with the run's settings (:func:`dposhap.train_sources`
  into ``RUN/select/``, resumable), evaluate both with the same utility on the same evaluation
  set, and report the measured gain with its bootstrap standard error beside the predicted one.

The result is written to ``RUN/selection.json``; :func:`dposhap.report.selection_figure` draws it.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._core import optimise_margin_weights as native_optimise_margin_weights
from .config import config_from_dict
from .core import ItemGame, ItemScores, ItemUtility
from .errors import InvalidArgumentError
from .estimate import Z95, bootstrap_weights, shapley
from .evaluate import BuildContext, MarginUtilities, get_utility
from .models import quiet_libraries, resolve_device
from .report import selection_figure
from .run import Run, atomic_write_json
from .train import train_sources
from .valuation import open_utility

__all__ = [
    "EXHAUSTIVE_SOURCES",
    "Goal",
    "GoalRanking",
    "Selection",
    "margin_weights_reference",
    "optimise_margin_weights",
    "parse_goal",
    "search_subsets",
    "select_run",
]

#: Sources up to which the subset search is exhaustive (2^16 coalitions).
EXHAUSTIVE_SOURCES = 16
#: Runners-up recorded beside the chosen coalition.
RUNNERS_UP = 5
#: Bootstrap replicates over the evaluation items for the errors of the predicted utilities.
N_BOOT = 200
#: Share of the union held out by the verification runs (as small as the splitter allows).
VERIFY_HELDOUT = 0.05
#: Weight grid of the coordinate search of the utilities without a native game (scaled to w_max).
GRID = (0.0, 0.5, 1.0)
_LEVEL_ALL = "all"


# -- the goal ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Constraint:
    """``objective >= level``; ``level`` ``"all"`` is the all-sources coalition's utility on it."""

    objective: str
    level: float | str

    def describe(self) -> str:
        """As the user wrote it."""
        return f"{self.objective}>={self.level}"


@dataclass(frozen=True)
class Goal:
    """What the search maximises: ``sum_k coef_k * objective_k``, subject to the constraints.

    Attributes
    ----------
    terms
        ``{objective: coefficient}``; one term with coefficient 1 for a plain objective.
    constraints
        Objectives that must not fall below their levels.
    """

    terms: dict[str, float]
    constraints: tuple[Constraint, ...] = ()

    def describe(self) -> str:
        """The maximised expression, e.g. ``0.7*helpful+0.3*harmless``."""
        return "+".join(name if c == 1 else f"{c:g}*{name}" for name, c in self.terms.items())


_CONSTRAINT = re.compile(r"^\s*(?P<name>[^<>=\s][^<>=]*?)\s*>=\s*(?P<level>\S+)\s*$")


def _resolve(name: str, objectives: Sequence[str], where: str) -> str:
    """An objective name as given, or the one objective whose part after the last ':' it is."""
    if name in objectives:
        return name
    tails = [o for o in objectives if o.rsplit(":", 1)[-1] == name]
    if len(tails) == 1:
        return tails[0]
    raise InvalidArgumentError(
        f"{where}: unknown objective {name!r}; this utility's objectives are {', '.join(objectives)}"
    )


def parse_goal(
    objective: str | None, constraints: Sequence[str], objectives: Sequence[str], default: str | None = None
) -> Goal:
    """Read ``--objective`` / ``--maximize`` and ``--subject-to`` against a utility's objectives.

    Parameters
    ----------
    objective
        An objective name, or a weighted sum such as ``0.7*helpful+0.3*harmless``; None: the
        utility's only objective (an error when it has several).
    constraints
        ``"NAME>=LEVEL"`` each, LEVEL a number or ``all`` (the all-sources utility).
    objectives
        The utility's objectives.
    default
        The objective maximised when ``objective`` is None (default: the only objective).

    Raises
    ------
    InvalidArgumentError
        An unknown objective, a malformed term or constraint, or no objective named when there
        are several.
    """
    if objective is None:
        objective = default
    if objective is None:
        if len(objectives) != 1:
            raise InvalidArgumentError(
                f"this utility has objectives {', '.join(objectives)}: name the one to maximise with --objective "
                "(or a weighted sum, e.g. --objective '0.5*A+0.5*B')"
            )
        objective = objectives[0]
    terms: dict[str, float] = {}
    for raw in objective.split("+"):
        term = raw.strip()
        coef, star, name = term.partition("*")
        if star:
            try:
                c = float(coef)
            except ValueError:
                raise InvalidArgumentError(
                    f"--objective {objective!r}: {term!r} is not COEFFICIENT*NAME (e.g. 0.5*helpful)"
                ) from None
            if not math.isfinite(c):
                raise InvalidArgumentError(
                    f"--objective {objective!r}: the coefficient of {name.strip()!r} is not finite"
                )
        else:
            c, name = 1.0, coef
        if not name.strip():
            raise InvalidArgumentError(
                f"--objective {objective!r}: an empty term; write NAME or COEF*NAME joined by '+'"
            )
        resolved = _resolve(name.strip(), objectives, "--objective")
        terms[resolved] = terms.get(resolved, 0.0) + c
    parsed = []
    for text in constraints:
        match = _CONSTRAINT.match(text)
        if match is None:
            raise InvalidArgumentError(f"--subject-to {text!r}: write OBJECTIVE>=LEVEL, LEVEL a number or 'all'")
        level_text = match["level"]
        level: float | str
        if level_text == _LEVEL_ALL:
            level = _LEVEL_ALL
        else:
            try:
                level = float(level_text)
            except ValueError:
                raise InvalidArgumentError(
                    f"--subject-to {text!r}: the level {level_text!r} is neither a number nor 'all'"
                ) from None
        parsed.append(Constraint(_resolve(match["name"], objectives, f"--subject-to {text!r}"), level))
    return Goal(terms, tuple(parsed))


class GoalRanking:
    """A goal over objective values ``[b, K]``: its score, the constraints' violation, and the
    ranking of coalitions (or weights) by them.

    Parameters
    ----------
    goal
        What to maximise and the constraints.
    objectives
        The names of the objective columns.
    levels
        The constraints' levels, resolved to numbers (``all`` replaced by the all-sources level).
    """

    def __init__(self, goal: Goal, objectives: Sequence[str], levels: np.ndarray):
        index = {name: k for k, name in enumerate(objectives)}
        self.coef = np.zeros(len(objectives))
        for name, c in goal.terms.items():
            self.coef[index[name]] = c
        self.constrained = np.array([index[c.objective] for c in goal.constraints], dtype=np.int64)
        self.levels = levels
        self.tiebreak: np.ndarray | None = None

    def score(self, values: np.ndarray) -> np.ndarray:
        """The goal ``[b]`` (the weighted sum of the objectives)."""
        return np.asarray(values, dtype=np.float64).reshape(len(values), -1) @ self.coef

    def violation(self, values: np.ndarray) -> np.ndarray:
        """How far ``[b]`` the rows fall short of the constraints' levels, summed (0: feasible)."""
        v = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
        if not len(self.constrained):
            return np.zeros(len(v))
        return np.maximum(0.0, self.levels[None, :] - v[:, self.constrained]).sum(1)

    def keys(self, values: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """``[b, 3]`` ranking keys, larger better: minus the violation, the score, and the tie-break
        (the members' summed :attr:`tiebreak`, so that among equally good coalitions the one with
        the more valuable members wins)."""
        x = np.asarray(rows, dtype=np.float64).reshape(len(values), -1)
        tie = x @ self.tiebreak if self.tiebreak is not None else np.zeros(len(x))
        return np.round(np.stack([-self.violation(values), self.score(values), tie], axis=1), 12)

    def order(self, values: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Indices of the rows (coalitions or weights) with objective values ``values``, best first:
        feasible before infeasible (less violation first), then by score, then by tie-break."""
        keys = self.keys(values, rows)
        return np.lexsort((-keys[:, 2], -keys[:, 1], -keys[:, 0]))

    def better(self, a: np.ndarray, b: np.ndarray, row_a: np.ndarray, row_b: np.ndarray) -> bool:
        """Whether the row ``row_a`` with objective values ``a`` ``[K]`` beats ``row_b`` with ``b``."""
        keys = self.keys(np.stack([a, b]), np.stack([row_a, row_b]))
        return tuple(keys[0]) > tuple(keys[1])


# -- objectives of a utility -------------------------------------------------------------


class Objectives:
    """A run's utility as per-item scores on named objectives, for boolean coalitions and weights.

    A margin utility over several evaluation sets (the world's trusted sets, say) gets one
    objective per set besides the one over all pairs, so that a goal can weigh, or constrain,
    helpfulness and harmlessness separately.

    Parameters
    ----------
    built
        The utility as its registered kind built it.
    game
        What evaluates boolean coalitions (``built`` itself, or ``built`` read through the run's cache).
    """

    def __init__(self, built: Any, game: Any):
        self.built, self.game = built, game
        self.players: tuple[str, ...] = tuple(built.players)
        self.margins = isinstance(built, MarginUtilities)
        base = list(built.objectives)
        self._sets: list[np.ndarray] = []
        if self.margins:
            sets = list(dict.fromkeys(built.pair_sets))
            if len(sets) > 1:
                pair_sets = np.array(built.pair_sets)
                self._sets = [pair_sets == s for s in sets]
                base += sets
        self.names: tuple[str, ...] = tuple(base)
        self.items = isinstance(game, ItemUtility) or isinstance(built, ItemUtility)

    @property
    def n_items(self) -> int:
        """The items the objectives average (pairs, prompts, responses)."""
        return int(self.built.n_items)

    def item_scores(self, x: np.ndarray) -> ItemScores:
        """Per-item scores ``[b, K, m]`` of boolean coalitions (through the cache) or float weights."""
        x = np.asarray(x)
        x = x[None, :] if x.ndim == 1 else x
        source = self.game if x.dtype == bool and isinstance(self.game, ItemUtility) else self.built
        scores = ItemScores.coerce(source.item_scores(x), len(x))
        if not self._sets:
            return scores
        terms = scores.numer[:, :1, :]
        parts = [terms] + [terms * (mask * (mask.size / mask.sum()))[None, None, :] for mask in self._sets]
        return ItemScores(np.concatenate(parts, axis=1), scores.denom)

    def values(self, x: np.ndarray) -> np.ndarray:
        """Objective values ``[b, K]``."""
        x = np.asarray(x)
        x = x[None, :] if x.ndim == 1 else x
        if self.items:
            return self.item_scores(x).values()
        return np.asarray(self.game(x), dtype=np.float64).reshape(len(x), -1)


# -- the subset search ---------------------------------------------------------------------


@dataclass
class SearchResult:
    """What :func:`search_subsets` found.

    Attributes
    ----------
    best
        bool ``[n]``: the chosen coalition.
    ranked
        bool ``[r, n]``: the evaluated coalitions, best first (``ranked[0]`` is ``best``).
    values
        ``[r, K]``: their objective values.
    method
        ``"exhaustive"`` or ``"greedy"``.
    evaluated
        Distinct coalitions whose utility the search asked for.
    """

    best: np.ndarray
    ranked: np.ndarray
    values: np.ndarray
    method: str
    evaluated: int


def _all_coalitions(n: int) -> np.ndarray:
    index = np.arange(2**n, dtype=np.int64)
    return ((index[:, None] >> np.arange(n)) & 1).astype(bool)


def search_subsets(
    values: Callable[[np.ndarray], np.ndarray],
    n: int,
    rank: Callable[[np.ndarray, np.ndarray], np.ndarray],
    better: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], bool],
    *,
    method: str = "auto",
    batch_size: int = 4096,
) -> SearchResult:
    """The coalition that ranks first under ``rank``.

    Parameters
    ----------
    values
        bool ``[b, n]`` -> objective values ``[b, K]``.
    n
        Number of sources.
    rank
        ``rank(values, coalitions)``: objective values ``[b, K]`` of coalitions ``[b, n]`` -> the
        rows' indices, best first.
    better
        ``better(a, b, coalition_a, coalition_b)``: whether ``coalition_a`` with values ``a`` ``[K]``
        beats ``coalition_b`` with ``b``.
    method
        ``"exhaustive"`` (every coalition), ``"greedy"`` (forward, backward, then local search), or
        ``"auto"``: exhaustive up to :data:`EXHAUSTIVE_SOURCES` sources.
    batch_size
        Coalitions per call of ``values`` in the exhaustive search.

    Returns
    -------
    SearchResult
    """
    if method == "auto":
        method = "exhaustive" if n <= EXHAUSTIVE_SOURCES else "greedy"
    if method not in ("exhaustive", "greedy"):
        raise InvalidArgumentError(f"search must be 'auto', 'exhaustive' or 'greedy', got {method!r}")
    if method == "exhaustive":
        if n > 20:
            raise InvalidArgumentError(f"an exhaustive search over {n} sources needs 2^{n} coalitions: use greedy")
        every = _all_coalitions(n)
        table = np.concatenate([values(every[k : k + batch_size]) for k in range(0, len(every), batch_size)])
        order = rank(table, every)
        return SearchResult(every[order[0]], every[order], table[order], method, len(every))

    memo: dict[bytes, np.ndarray] = {}

    def ask(coalitions: np.ndarray) -> np.ndarray:
        keys = [row.tobytes() for row in coalitions]
        todo = [r for r, key in enumerate(keys) if key not in memo]
        if todo:
            fresh = np.asarray(values(coalitions[todo]), dtype=np.float64).reshape(len(todo), -1)
            for r, row in zip(todo, fresh, strict=True):
                memo[keys[r]] = row
        return np.stack([memo[key] for key in keys])

    def climb(start: np.ndarray, moves: Callable[[np.ndarray], list[int]]) -> np.ndarray:
        current = start.copy()
        here = ask(current[None])[0]
        while True:
            candidates = moves(current)
            if not candidates:
                return current
            trial = np.repeat(current[None], len(candidates), axis=0)
            trial[np.arange(len(candidates)), candidates] ^= True
            got = ask(trial)
            top = int(rank(got, trial)[0])
            if not better(got[top], here, trial[top], current):
                return current
            current, here = trial[top], got[top]

    forward = climb(np.zeros(n, dtype=bool), lambda s: list(np.flatnonzero(~s)))
    backward = climb(np.ones(n, dtype=bool), lambda s: list(np.flatnonzero(s)))
    ends = ask(np.stack([forward, backward]))
    start = forward if int(rank(ends, np.stack([forward, backward]))[0]) == 0 else backward
    climb(start, lambda s: list(range(n)))
    keys = list(memo)
    seen = np.stack([np.frombuffer(key, dtype=bool) for key in keys])
    table = np.stack([memo[key] for key in keys])
    order = rank(table, seen)
    return SearchResult(seen[order[0]], seen[order], table[order], method, len(memo))


# -- weights ---------------------------------------------------------------------------------


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


# -- selection -------------------------------------------------------------------------------


@dataclass
class Selection:
    """The result of :func:`select_run` (also ``RUN/selection.json``, as :meth:`to_json`)."""

    doc: dict[str, Any] = field(default_factory=dict)

    @property
    def chosen(self) -> list[str]:
        """The chosen sources."""
        return list(self.doc["chosen"])

    def to_json(self) -> dict[str, Any]:
        """The document written to ``RUN/selection.json``."""
        return self.doc


def _errors(objectives: Objectives, rows: np.ndarray, scored: GoalRanking, n_boot: int, seed: int) -> dict[str, Any]:
    """Goal values of ``rows`` (coalitions or weights) with bootstrap standard errors, and the
    standard error of the difference of the first two (paired: the same resampled items)."""
    goal = scored.score(objectives.values(rows))
    out: dict[str, Any] = {"goal": goal, "stderr": np.full(len(rows), np.nan), "diff_stderr": float("nan")}
    if not objectives.items or n_boot < 2:
        return out
    scores = objectives.item_scores(rows)
    reps = scores.replicates(bootstrap_weights(scores.n_items, n_boot, seed))  # [b, K, r]
    goal_reps = np.einsum("bkr,k->br", reps, scored.coef)
    out["stderr"] = goal_reps.std(axis=1, ddof=1)
    if len(rows) >= 2:
        out["diff_stderr"] = float((goal_reps[0] - goal_reps[1]).std(ddof=1))
    return out


def _names(players: Sequence[str], row: np.ndarray) -> list[str]:
    return [p for p, member in zip(players, row, strict=True) if member]


def select_run(
    run_dir: str | Path,
    utility: str = "accuracy",
    *,
    objective: str | None = None,
    constraints: Sequence[str] = (),
    settings: Any = None,
    weights: bool = False,
    w_max: float = 2.0,
    search: str = "auto",
    verify: bool = False,
    seed: int = 0,
    n_boot: int = N_BOOT,
    device: str = "auto",
    progress: bool = True,
    threads: int | None = None,
) -> Selection:
    """Choose the sources (and with ``weights`` their weights) whose composed model maximises a goal.

    Parameters
    ----------
    run_dir
        A trained run (every planned source trained).
    utility
        A registered utility (``accuracy``, ``loglik``, ``likelihood``, ``generation``).
    objective
        The objective to maximise, or a weighted sum (``0.7*helpful+0.3*harmless``); default the
        utility's only objective. A margin utility over several evaluation sets has one objective
        per set (e.g. ``toy:helpful``, or just ``helpful``) besides the one over all pairs.
    constraints
        ``"OBJECTIVE>=LEVEL"`` each, LEVEL a number or ``all`` (the all-sources coalition's level).
    settings
        The utility's settings (an instance of its ``settings_type``); default its defaults.
    weights
        Also choose per-source weights in ``[0, w_max]``.
    w_max
        The largest weight.
    search
        ``"auto"`` (exhaustive up to 16 sources, else greedy), ``"exhaustive"`` or ``"greedy"``.
    verify
        Train one adapter on the chosen sources (weights as sampling rates) and one on all sources
        into ``RUN/select/`` and measure both with the same utility.
    seed
        Seed of the utility's sampling, the bootstrap and the verification's data sampling.
    n_boot
        Bootstrap replicates over the evaluation items for the errors.
    device, progress, threads
        As in :func:`dposhap.value_run`.

    Returns
    -------
    Selection
        Also written to ``RUN/selection.json``; the figure to ``RUN/figures/selection.png``.

    Raises
    ------
    InvalidArgumentError
        An unknown objective, a constraint on a missing objective, weights with a utility that
        cannot take them.
    IncompleteRunError
        Some planned sources are not trained.
    """
    kind = get_utility(utility)
    if settings is None:
        settings = kind.settings_type()
    elif not isinstance(settings, kind.settings_type):
        raise InvalidArgumentError(
            f"the {utility} utility takes {kind.settings_type.__name__} settings, got {type(settings).__name__}"
        )
    if not (isinstance(w_max, (int, float)) and math.isfinite(w_max) and w_max > 0):
        raise InvalidArgumentError(f"w_max must be a finite number > 0, got {w_max!r}")
    if search not in ("auto", "exhaustive", "greedy"):
        raise InvalidArgumentError(f"search must be 'auto', 'exhaustive' or 'greedy', got {search!r}")
    run = Run.open(run_dir)
    run.check_complete(strict=True)
    started = time.perf_counter()
    with open_utility(
        run, utility, settings, seed=seed, device=device, progress=progress, threads=threads, what="dposhap select"
    ) as opened:
        objectives = Objectives(opened.built, opened.game)
        own = tuple(opened.built.objectives)
        goal = parse_goal(objective, constraints, objectives.names, default=own[0] if len(own) == 1 else None)
        if weights and not getattr(opened.built, "takes_weights", False):
            raise InvalidArgumentError(
                f"--weights: the {utility} utility cannot take source weights here (only accuracy, loglik, likelihood "
                "and generation evaluated in this process do); leave --weights out"
            )
        players = objectives.players
        n = len(players)
        all_row = np.ones((1, n), dtype=bool)
        v_all = objectives.values(all_row)[0]
        index = {name: k for k, name in enumerate(objectives.names)}
        levels = np.array(
            [v_all[index[c.objective]] if c.level == _LEVEL_ALL else float(c.level) for c in goal.constraints]
        )
        scored = GoalRanking(goal, objectives.names, levels)
        batch = 4096 if objectives.margins else int(opened.built.batch_size or 16)
        method = ("exhaustive" if n <= EXHAUSTIVE_SOURCES else "greedy") if search == "auto" else search
        # the rule: drop every source whose value on the goal is significantly negative; its values also
        # break the search's ties (of equally good coalitions, the one whose members are worth more)
        rule = _drop_rule(objectives, scored, n, seed=seed, n_boot=n_boot, exact=method == "exhaustive")
        scored.tiebreak = np.array([rule["values"][p] for p in players])
        found = search_subsets(objectives.values, n, scored.order, scored.better, method=method, batch_size=batch)
        best = found.best
        feasible = bool(scored.violation(found.values[:1])[0] <= 1e-12)
        rule_row = np.array([p not in rule["dropped"] for p in players], dtype=bool)

        rows = np.stack([best, all_row[0], rule_row])
        errs = _errors(objectives, rows, scored, n_boot, seed)
        runner_rows = found.ranked[1 : 1 + RUNNERS_UP]
        runner_goal = scored.score(found.values[1 : 1 + RUNNERS_UP])
        doc: dict[str, Any] = {
            "format": 1,
            "utility": utility,
            "config": opened.config,
            "sources": list(players),
            "objectives": list(objectives.names),
            "goal": {
                "maximize": goal.describe(),
                "terms": goal.terms,
                "subject_to": [
                    {"objective": c.objective, "level": c.level, "resolved": float(lv)}
                    for c, lv in zip(goal.constraints, levels, strict=True)
                ],
            },
            "search": {"method": found.method, "coalitions_evaluated": found.evaluated, "feasible": feasible},
            "chosen": _names(players, best),
            "dropped": [p for p in players if p not in _names(players, best)],
            "predicted": {
                "chosen": float(errs["goal"][0]),
                "all": float(errs["goal"][1]),
                "chosen_stderr": _num(errs["stderr"][0]),
                "all_stderr": _num(errs["stderr"][1]),
                "gain": float(errs["goal"][0] - errs["goal"][1]),
                "gain_stderr": _num(errs["diff_stderr"]),
                "objectives": {
                    "chosen": dict(zip(objectives.names, map(float, objectives.values(best[None])[0]), strict=True)),
                    "all": dict(zip(objectives.names, map(float, v_all), strict=True)),
                },
            },
            "rule": {
                **rule,
                "kept": _names(players, rule_row),
                "predicted": float(errs["goal"][2]),
                "predicted_stderr": _num(errs["stderr"][2]),
            },
            "runners_up": [
                {"sources": _names(players, row), "predicted": float(v)}
                for row, v in zip(runner_rows, runner_goal, strict=True)
            ],
        }
        if weights:
            doc["weights"] = _optimise_weights(objectives, scored, best, w_max, n_boot, seed, all_row[0])
            doc["weights"]["w_max"] = float(w_max)
        doc["seconds"] = round(time.perf_counter() - started, 3)
    if verify:
        chosen_weights = (
            np.array([doc["weights"]["weights"][p] for p in players]) if weights else best.astype(np.float64)
        )
        doc["measured"] = _verify(
            run, utility, settings, scored, objectives.names, chosen_weights, seed, n_boot, device, progress
        )
        doc["seconds"] = round(time.perf_counter() - started, 3)
    atomic_write_json(run.root / "selection.json", doc)
    doc["figure"] = str(selection_figure(run, doc))
    atomic_write_json(run.root / "selection.json", doc)
    return Selection(doc)


def _num(x: float) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def _drop_rule(
    objectives: Objectives, scored: GoalRanking, n: int, *, seed: int, n_boot: int, exact: bool
) -> dict[str, Any]:
    """Shapley values of the goal (exact with an exhaustive search, else permutation sampling),
    with evaluation errors; the sources whose value + 1.96 total standard errors is below zero."""
    coef = scored.coef

    def goal_items(c: np.ndarray) -> ItemScores:
        scores = objectives.item_scores(c)
        return ItemScores(np.einsum("bkm,k->bm", scores.numer, coef)[:, None, :], scores.denom)

    if objectives.items:
        game: Any = ItemGame(goal_items, objectives.n_items)
        boot = n_boot if n_boot >= 2 else 0
    else:
        game, boot = (lambda c: scored.score(objectives.values(c))), 0
    result = shapley(
        game,
        n,
        method="exact" if exact else "auto",
        budget=None if exact else 200 * n,
        seed=seed,
        names=list(objectives.players),
        n_boot=boot,
        boot_seed=seed,
    )
    values = np.asarray(result.values, dtype=np.float64).reshape(n)
    total = np.asarray(result.total_stderr, dtype=np.float64).reshape(n)
    dropped = [p for p, v, se in zip(objectives.players, values, total, strict=True) if v + Z95 * se < 0]
    return {
        "dropped": dropped,
        "values": dict(zip(objectives.players, map(float, values), strict=True)),
        "total_stderr": dict(zip(objectives.players, map(float, total), strict=True)),
        "method": result.method,
    }


def _optimise_weights(
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
        masks = [np.ones(built.n_pairs, dtype=bool), *objectives._sets]
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
    errs = _errors(objectives, rows, scored, n_boot, seed)
    return {
        "weights": dict(zip(objectives.players, map(float, w), strict=True)),
        "predicted": float(errs["goal"][0]),
        "predicted_stderr": _num(errs["stderr"][0]),
        "gain": float(errs["goal"][0] - errs["goal"][1]),
        "gain_stderr": _num(errs["diff_stderr"]),
        "subset_predicted": float(errs["goal"][2]),
        "objectives": dict(zip(objectives.names, map(float, objectives.values(w[None])[0]), strict=True)),
        "method": how,
        "composed_evaluations": evaluations,
    }


# -- verification ----------------------------------------------------------------------------


def _union_file(run: Run, players: Sequence[str], weights: np.ndarray, path: Path, seed: int) -> int:
    """Write the training pairs of the sources with weight > 0 to ``path``, source ``i`` sampled at
    rate ``w_i`` (``floor(w_i)`` copies of every pair plus a seeded share ``w_i - floor(w_i)``);
    the number of pairs."""
    rng = np.random.default_rng([seed, 0x5E1EC7])
    lines: list[str] = []
    for name, w in zip(players, weights, strict=True):
        if w <= 0:
            continue
        text = (run.data_dir(name) / "train.jsonl").read_text(encoding="utf-8")
        rows = [line for line in text.splitlines() if line.strip()]
        whole, part = int(math.floor(w)), float(w - math.floor(w))
        taken = rows * whole
        if part > 0:
            pick = rng.choice(len(rows), size=int(round(part * len(rows))), replace=False)
            taken += [rows[k] for k in sorted(pick)]
        for line in taken:
            record = json.loads(line)
            lines.append(json.dumps({k: record[k] for k in ("prompt", "chosen", "rejected")}))
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines) + "\n"
    if not path.is_file() or path.read_text(encoding="utf-8") != text:  # unchanged data: the adapter is reused
        path.write_text(text, encoding="utf-8")
    return len(lines)


def _verify(
    run: Run,
    utility: str,
    settings: Any,
    scored: GoalRanking,
    names: Sequence[str],
    chosen_weights: np.ndarray,
    seed: int,
    n_boot: int,
    device: str,
    progress: bool,
) -> dict[str, Any]:
    """Train ``chosen`` and ``all`` into ``RUN/select/`` and measure both with the same utility."""
    players = run.sources
    folder = run.root.resolve() / "select"
    files = {
        "chosen": folder / "data" / "chosen.jsonl",
        "all": folder / "data" / "all.jsonl",
    }
    sizes = {
        "chosen": _union_file(run, players, chosen_weights, files["chosen"], seed),
        "all": _union_file(run, players, np.ones(len(players)), files["all"], seed),
    }
    if sizes["chosen"] == 0:
        raise InvalidArgumentError("nothing to verify: the chosen coalition is empty (the base model is best)")
    recorded = json.loads(json.dumps(run.manifest.config))
    recorded["model"] = {**recorded.get("model", {}), "base": str(run.base_model_ref().location)}
    recorded["data"] = {
        **recorded.get("data", {}),
        "files": [],
        "sources": {k: str(v) for k, v in files.items()},
        "select": None,
        "heldout_fraction": VERIFY_HELDOUT,
    }
    recorded["eval"] = {"files": []}
    recorded["cluster"] = {**recorded.get("cluster", {}), "address": None}
    if device != "auto":
        recorded["model"]["device"] = device
    cfg = config_from_dict(recorded, base_dir=run.root)
    manifest = train_sources(cfg, folder, progress=progress)
    trained = Run.open(folder)
    with quiet_libraries(loading_reports=progress):
        models = trained.load_models(sources=["chosen", "all"], device=resolve_device(device))
    context = BuildContext(device=resolve_device(device), seed=seed, progress=progress, models=models)
    built = get_utility(utility).build(run, settings, context)
    measured = Objectives(built, built)
    rows = np.array([[True, False], [False, True]])
    errs = _errors(measured, rows, scored, n_boot, seed)
    values = measured.values(rows)
    return {
        "chosen": float(errs["goal"][0]),
        "all": float(errs["goal"][1]),
        "chosen_stderr": _num(errs["stderr"][0]),
        "all_stderr": _num(errs["stderr"][1]),
        "gain": float(errs["goal"][0] - errs["goal"][1]),
        "gain_stderr": _num(errs["diff_stderr"]),
        "objectives": {
            "chosen": dict(zip(names, map(float, values[0]), strict=True)),
            "all": dict(zip(names, map(float, values[1]), strict=True)),
        },
        "pairs": sizes,
        "adapters": str(folder),
        "steps": {k: manifest.sources[k].metrics.get("steps") for k in ("chosen", "all")},
    }

"""The goal of a selection (objectives, weighted sums, constraints), how it ranks coalitions, and the
objectives of a run's utility with their bootstrap errors."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core import ItemScores, ItemUtility
from ..errors import InvalidArgumentError
from ..estimate import bootstrap_weights
from ..evaluate import MarginUtilities

#: A constraint level that stands for the all-sources coalition's utility on the objective.
LEVEL_ALL = "all"


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
        if level_text == LEVEL_ALL:
            level = LEVEL_ALL
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
        # margin games over several evaluation sets: one boolean [P] mask of pairs per set
        self.set_masks: list[np.ndarray] = []
        if self.margins:
            sets = list(dict.fromkeys(built.pair_sets))
            if len(sets) > 1:
                pair_sets = np.array(built.pair_sets)
                self.set_masks = [pair_sets == s for s in sets]
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
        if not self.set_masks:
            return scores
        terms = scores.numer[:, :1, :]
        parts = [terms] + [terms * (mask * (mask.size / mask.sum()))[None, None, :] for mask in self.set_masks]
        return ItemScores(np.concatenate(parts, axis=1), scores.denom)

    def values(self, x: np.ndarray) -> np.ndarray:
        """Objective values ``[b, K]``."""
        x = np.asarray(x)
        x = x[None, :] if x.ndim == 1 else x
        if self.items:
            return self.item_scores(x).values()
        return np.asarray(self.game(x), dtype=np.float64).reshape(len(x), -1)


def goal_errors(
    objectives: Objectives, rows: np.ndarray, scored: GoalRanking, n_boot: int, seed: int
) -> dict[str, Any]:
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


def finite_or_none(x: float) -> float | None:
    """``x`` as a float, or None when it is missing or not finite (for JSON)."""
    return None if x is None or not math.isfinite(float(x)) else float(x)


def chosen_against_all(
    errs: dict[str, Any], names: Sequence[str], chosen: np.ndarray, all_sources: np.ndarray
) -> dict[str, Any]:
    """The chosen coalition against all sources, as selection.json records it (predicted or measured).

    ``errs`` comes from :func:`goal_errors` with the chosen coalition in row 0 and all sources in
    row 1; ``chosen`` and ``all_sources`` are their values of each objective ``names``.
    """
    return {
        "chosen": float(errs["goal"][0]),
        "all": float(errs["goal"][1]),
        "chosen_stderr": finite_or_none(errs["stderr"][0]),
        "all_stderr": finite_or_none(errs["stderr"][1]),
        "gain": float(errs["goal"][0] - errs["goal"][1]),
        "gain_stderr": finite_or_none(errs["diff_stderr"]),
        "objectives": {
            "chosen": dict(zip(names, map(float, chosen), strict=True)),
            "all": dict(zip(names, map(float, all_sources), strict=True)),
        },
    }

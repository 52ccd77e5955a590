"""The selection itself: :func:`select_run` and the document it writes to ``RUN/selection.json``."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core import ItemGame, ItemScores
from ..errors import InvalidArgumentError
from ..estimate import Z95, shapley
from ..evaluate import get_utility
from ..report import selection_figure
from ..run import Run, atomic_write_json
from ..valuation import open_utility
from .goal import LEVEL_ALL, GoalRanking, Objectives, chosen_against_all, finite_or_none, goal_errors, parse_goal
from .search import EXHAUSTIVE_SOURCES, search_subsets
from .verify import verify_selection
from .weights import optimise_weights

__all__ = ["N_BOOT", "RUNNERS_UP", "Selection", "decide_change", "select_run"]


#: Runners-up recorded beside the chosen coalition.
RUNNERS_UP = 5
#: Bootstrap replicates over the evaluation items for the errors of the predicted utilities.
N_BOOT = 200


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
            [v_all[index[c.objective]] if c.level == LEVEL_ALL else float(c.level) for c in goal.constraints]
        )
        scored = GoalRanking(goal, objectives.names, levels)
        batch = 4096 if objectives.margins else int(opened.built.batch_size or 16)
        method = ("exhaustive" if n <= EXHAUSTIVE_SOURCES else "greedy") if search == "auto" else search
        # the rule: drop every source whose value on the goal is significantly negative; its values also
        # break the search's ties (of equally good coalitions, the one whose members are worth more)
        rule = _drop_rule(objectives, scored, n, seed=seed, n_boot=n_boot, exact=method == "exhaustive")
        scored.tiebreak = np.array([rule["values"][p] for p in players])
        found = search_subsets(objectives.values, n, scored.order, scored.better, method=method, batch_size=batch)
        # the search ranks by the predicted goal alone: leave all sources only for a significant gain
        decision = decide_change(objectives, scored, found.best, all_row[0], n_boot=n_boot, seed=seed)
        best = found.best if decision["changed"] else all_row[0]
        feasible = bool(scored.violation(objectives.values(best[None]))[0] <= 1e-12)
        rule_row = np.array([p not in rule["dropped"] for p in players], dtype=bool)

        rows = np.stack([best, all_row[0], rule_row])
        errs = goal_errors(objectives, rows, scored, n_boot, seed)
        # the next best coalitions, beside the choice and all sources (both shown on their own)
        others = [
            r
            for r, row in enumerate(found.ranked)
            if not np.array_equal(row, best) and not np.array_equal(row, all_row[0])
        ][:RUNNERS_UP]
        runner_rows = found.ranked[others]
        runner_goal = scored.score(found.values[others])
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
            "search": {
                "method": found.method,
                "coalitions_evaluated": found.evaluated,
                "feasible": feasible,
                "best": _names(players, found.best),
            },
            "decision": decision,
            "chosen": _names(players, best),
            "dropped": [p for p in players if p not in _names(players, best)],
            "predicted": chosen_against_all(errs, objectives.names, objectives.values(best[None])[0], v_all),
            "rule": {
                **rule,
                "kept": _names(players, rule_row),
                "predicted": float(errs["goal"][2]),
                "predicted_stderr": finite_or_none(errs["stderr"][2]),
            },
            "runners_up": [
                {"sources": _names(players, row), "predicted": float(v)}
                for row, v in zip(runner_rows, runner_goal, strict=True)
            ],
        }
        if weights:
            doc["weights"] = optimise_weights(objectives, scored, best, w_max, n_boot, seed, all_row[0])
            doc["weights"]["w_max"] = float(w_max)
        doc["seconds"] = round(time.perf_counter() - started, 3)
    if verify:
        chosen_weights = (
            np.array([doc["weights"]["weights"][p] for p in players]) if weights else best.astype(np.float64)
        )
        doc["measured"] = verify_selection(
            run, utility, settings, scored, objectives.names, chosen_weights, seed, n_boot, device, progress
        )
        doc["seconds"] = round(time.perf_counter() - started, 3)
    atomic_write_json(run.root / "selection.json", doc)
    doc["figure"] = str(selection_figure(run, doc))
    atomic_write_json(run.root / "selection.json", doc)
    return Selection(doc)


def decide_change(
    objectives: Objectives,
    scored: GoalRanking,
    best: np.ndarray,
    all_sources: np.ndarray,
    *,
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    """Whether to train on ``best`` rather than on all sources: only when the prediction says so beyond noise.

    A change is made when all sources break the constraints and ``best`` breaks them less, or when
    the predicted gain of ``best`` over all sources on the goal is significant: the lower end of its
    95% paired bootstrap interval (over the evaluation items) is above 0. Without bootstrap errors
    (a utility with no per-item scores, or ``n_boot < 2``) any gain above 0 is taken.

    Parameters
    ----------
    objectives, scored
        The utility's objectives and the goal that ranks them.
    best
        bool ``[n]``: the coalition the search ranked first.
    all_sources
        bool ``[n]``: every source.
    n_boot, seed
        Bootstrap replicates and their seed.

    Returns
    -------
    dict
        ``changed`` (bool), ``reason`` (one sentence), and when the gain was weighed, ``gain``
        and ``gain_low`` (the lower end of its 95% interval, None without errors).
    """
    if np.array_equal(best, all_sources):
        return {"changed": False, "reason": "all sources are the best coalition found"}
    rows = np.stack([best, all_sources])
    violation = scored.violation(objectives.values(rows))
    if violation[1] > 1e-12 and violation[0] < violation[1] - 1e-12:
        return {"changed": True, "reason": "all sources break the constraints; the chosen coalition breaks them less"}
    errs = goal_errors(objectives, rows, scored, n_boot, seed)
    gain = float(errs["goal"][0] - errs["goal"][1])
    stderr = finite_or_none(errs["diff_stderr"])
    low = None if stderr is None else gain - Z95 * stderr
    if (gain if low is None else low) > 1e-12:
        reason = (
            "the predicted gain over all sources is significant (its 95% interval is above 0)"
            if low is not None
            else "the predicted gain over all sources is above 0 (no errors to weigh it against)"
        )
        return {"changed": True, "reason": reason, "gain": gain, "gain_low": low}
    return {
        "changed": False,
        "reason": (
            f"all sources kept: no coalition is predicted significantly better; the best found "
            f"({', '.join(_names(list(objectives.players), best)) or 'no source'}) gains {gain:+.4f}"
            + (f" ± {Z95 * stderr:.4f}" if stderr is not None else "")
            + ", within noise of all sources"
        ),
        "gain": gain,
        "gain_low": low,
    }


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

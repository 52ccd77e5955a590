"""Coverage of dposhap's reported intervals: do 95% intervals contain the true value 95% of the time?

Three parts, each over many seeds on games whose true values are known:

1. estimator error alone -- every Shapley method that reports a standard error, on the four
   games of the accuracy benchmark (``games.py``) at n = 8, 12 and 16, two budgets each; the
   share of ``value ± 1.96 stderr`` that contains the exact Shapley value (all ``2**n``
   coalitions enumerated), with the diagnostics that say why a method misses: the ratio of
   the empirical mean squared error to the mean reported variance, and the share of that error
   that is bias (the same across seeds) rather than spread;
2. estimator and evaluation noise together -- a population of P items (held-out preference
   pairs), each a small game (preference accuracy or log sigmoid of the summed margins on
   that pair); the population value is the exact Shapley value of the mean over all P items.
   Each seed draws m items, values the mean game through ``dposhap.ItemGame`` with
   ``n_boot`` bootstrap replicates over items, and checks ``value ± 1.96 total_stderr``
   against the population value (exact runs: ``1.96 eval_stderr``). Needs the item-noise API
   (``dposhap.ItemGame``, ``eval_stderr``, ``total_stderr``); without it the part is reported
   as pending;
3. the pairwise interaction index estimated from samples (``dposhap.interactions``) against
   the exact index, the same way as part 1.

Results: ``results/coverage.csv`` and ``results/coverage.md`` (``--quick``: ``results/quick/``).

Run from the repository root::

    PYTHONPATH=python python bench/shapley/coverage.py            # about 8 minutes on 2 cores
    PYTHONPATH=python python bench/shapley/coverage.py --quick    # under a minute
    PYTHONPATH=python python bench/shapley/coverage.py --only items --seeds 200
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # bench/_harness.py
sys.path.insert(0, str(HERE))

import games as G  # noqa: E402

import dposhap  # noqa: E402
from _harness import MarkdownTable, environment, fmt_fixed, write_csv, write_markdown  # noqa: E402
from dposhap.errors import BudgetTooSmallError  # noqa: E402
from dposhap.interactions import interactions_exact, interactions_from_samples, kernel_sample  # noqa: E402
from dposhap.testing import margin_scores, semivalue_reference, table_of  # noqa: E402

Z95 = 1.959963984540054
#: Coverage the issue aims for: between these shares of nominal 95% intervals.
AIM = (0.90, 0.98)
#: Budgets per number of players (both below 2**n, so that no method enumerates).
BUDGETS = {8: (60, 150), 10: (150, 500), 12: (200, 1000), 16: (500, 2000)}
ITEM_KINDS = ("accuracy", "logsigmoid")


def estimating_methods() -> list[str]:
    """Every Shapley method that reports a standard error (``auto`` is ``regression`` below 2**n)."""
    return [m for m in dposhap.methods("shapley") if m not in ("exact", "auto")]


@dataclass
class Cell:
    """Errors and reported standard errors of one (game, method, budget) over seeds: ``[seeds, n]``."""

    errors: np.ndarray
    stderr: np.ndarray

    def coverage(self) -> float:
        return float(np.mean(np.abs(self.errors) <= Z95 * self.stderr))

    def mse_over_variance(self) -> float:
        var = float(np.mean(self.stderr**2))
        return float(np.mean(self.errors**2)) / var if var > 0 else float("inf")

    def bias_share(self) -> float:
        """Share of the mean squared error that is the same across seeds (bias), per player, pooled."""
        mse = float(np.mean(self.errors**2))
        return float(np.mean(self.errors.mean(axis=0) ** 2)) / mse if mse > 0 else 0.0

    def zero_stderr(self) -> float:
        return float(np.mean(self.stderr == 0))

    def worst_player(self) -> float:
        return float(np.min(np.mean(np.abs(self.errors) <= Z95 * self.stderr, axis=0)))


def verdict(coverage: float) -> str:
    if coverage < AIM[0]:
        return f"below by {100 * (AIM[0] - coverage):.1f} pt"
    if coverage > AIM[1]:
        return "above (conservative)"
    return "ok"


def cell_row(part: str, game: str, n: int, method: str, budget: int | str, seeds: int, cell: Cell) -> dict[str, Any]:
    return {
        "part": part,
        "game": game,
        "n": n,
        "method": method,
        "budget": budget,
        "seeds": seeds,
        "coverage": cell.coverage(),
        "worst_player_coverage": cell.worst_player(),
        "mse_over_mean_variance": cell.mse_over_variance(),
        "bias_share_of_mse": cell.bias_share(),
        "zero_stderr_share": cell.zero_stderr(),
        "rmse": float(np.sqrt(np.mean(cell.errors**2))),
        "mean_stderr": float(np.mean(cell.stderr)),
        "verdict": verdict(cell.coverage()),
    }


def coverage_table(caption: str, rows: Sequence[dict[str, Any]], extra: Sequence[str] = ()) -> MarkdownTable:
    cols = ["game", "n", "method", "budget", "coverage", "worst player", "MSE / mean var", "bias share", "verdict"]
    table = MarkdownTable(caption=caption, columns=[*cols[:4], *extra, *cols[4:]])
    for r in rows:
        table.rows.append(
            [
                r["game"],
                str(r["n"]),
                r["method"],
                str(r["budget"]),
                *[str(r[e]) for e in extra],
                f"{100 * r['coverage']:.1f}%",
                f"{100 * r['worst_player_coverage']:.0f}%",
                fmt_fixed(r["mse_over_mean_variance"]),
                fmt_fixed(r["bias_share_of_mse"]),
                r["verdict"],
            ]
        )
    return table


def summary_table(caption: str, rows: Sequence[dict[str, Any]]) -> MarkdownTable:
    """Per method: mean and lowest coverage over the cells, cells below the aim."""
    table = MarkdownTable(
        caption=caption, columns=["method", "cells", "mean coverage", "lowest", "cells below 90%", "median MSE / var"]
    )
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        cov = np.array([r["coverage"] for r in mine])
        ratio = np.median([r["mse_over_mean_variance"] for r in mine])
        table.rows.append(
            [
                method,
                str(len(mine)),
                f"{100 * cov.mean():.1f}%",
                f"{100 * cov.min():.1f}%",
                str(int((cov < AIM[0]).sum())),
                fmt_fixed(float(ratio)),
            ]
        )
    return table


# ---------------------------------------------------------------------------------------
# Part 1: estimator error alone


def native_or_callable(game: G.Game) -> Any:
    if game.margins is not None and game.margin_kind is not None:
        return dposhap.MarginGame(game.margins, game.margin_kind)  # type: ignore[arg-type]
    return game.utility


def part_estimator(ns: Sequence[int], seeds: int, log: Callable[[str], None]) -> list[dict[str, Any]]:
    rows = []
    for n in ns:
        for game in G.make_games(n):
            exact = G.exact_shapley(game)
            utility = native_or_callable(game)
            for method in estimating_methods():
                for budget in BUDGETS[n]:
                    errors, stderr = [], []
                    t0 = time.perf_counter()
                    try:
                        for seed in range(seeds):
                            res = dposhap.shapley(utility, n, method=method, budget=budget, seed=seed)
                            errors.append(res.values - exact)
                            stderr.append(res.stderr)
                    except BudgetTooSmallError:
                        log(f"  {game.name} n={n} {method} budget {budget}: below the method's minimum, skipped")
                        continue
                    row = cell_row(
                        "estimator", game.name, n, method, budget, seeds, Cell(np.array(errors), np.array(stderr))
                    )
                    rows.append(row)
                    log(
                        f"  {game.name:14s} n={n:2d} {method:12s} b={budget:5d} coverage {100 * row['coverage']:5.1f}%"
                        f"  MSE/var {row['mse_over_mean_variance']:6.2f}  ({time.perf_counter() - t0:.1f} s)"
                    )
    return rows


# ---------------------------------------------------------------------------------------
# Part 2: estimator and evaluation noise


def item_population(n: int, population: int, seed: int = 2024) -> np.ndarray:
    """Per-source margins ``[n, P]`` on a population of ``P`` held-out pairs (as in ``games.py``)."""
    return G.preference_margins(n, population, np.random.default_rng(seed))


def population_values(margins: np.ndarray, kind: str) -> np.ndarray:
    """Exact Shapley values of the mean game over the whole population (all ``2**n`` coalitions)."""
    n = margins.shape[0]
    game = dposhap.MarginGame(margins, kind)  # type: ignore[arg-type]
    table = table_of(game, n, chunk=1024)
    return semivalue_reference(table, n, "shapley")


def item_scores(margins: np.ndarray, kind: str) -> Callable[[np.ndarray], np.ndarray]:
    """Per-item scores ``[b, m]`` of coalitions ``[b, n]`` on the items whose margins are given."""

    def scores(coalitions: np.ndarray) -> np.ndarray:
        sums = np.asarray(coalitions, dtype=np.float64) @ margins  # [b, m]
        return margin_scores(kind, sums.reshape(-1, 1)).reshape(sums.shape)  # each item on its own

    return scores


def item_api_ready() -> bool:
    return hasattr(dposhap, "ItemGame") and "n_boot" in inspect.signature(dposhap.shapley).parameters


def part_items(
    n: int, population: int, items: int, seeds: int, n_boot: int, budgets: Sequence[int], log: Callable[[str], None]
) -> list[dict[str, Any]]:
    rows = []
    for kind in ITEM_KINDS:
        margins = item_population(n, population)
        truth = population_values(margins, kind)
        cells: list[tuple[str, int | None]] = [("exact", None)]
        cells += [(m, b) for m in estimating_methods() for b in budgets]
        for method, budget in cells:
            errors, stderr, est_part, eval_part = [], [], [], []
            t0 = time.perf_counter()
            try:
                for seed in range(seeds):
                    rng = np.random.default_rng(10_000 + seed)
                    chosen = margins[:, rng.choice(population, size=items, replace=False)]
                    game = dposhap.ItemGame(item_scores(chosen, kind), items)
                    res = dposhap.shapley(game, n, method=method, budget=budget, seed=seed, n_boot=n_boot)
                    errors.append(res.values - truth)
                    stderr.append(res.total_stderr)
                    est_part.append(res.stderr)
                    eval_part.append(res.eval_stderr)
            except BudgetTooSmallError:
                log(f"  items-{kind} {method}: budget {budget} below the method's minimum, skipped")
                continue
            cell = Cell(np.array(errors), np.array(stderr))
            row = cell_row("items", f"items-{kind}", n, method, "all" if budget is None else budget, seeds, cell)
            row["items"] = items
            row["n_boot"] = n_boot
            row["mean_estimator_stderr"] = float(np.mean(est_part))
            row["mean_eval_stderr"] = float(np.mean(eval_part))
            # what the interval would cover with the estimator's part alone (the values before issue 11)
            row["coverage_estimator_stderr_only"] = Cell(np.array(errors), np.array(est_part)).coverage()
            rows.append(row)
            log(
                f"  items-{kind:10s} {method:12s} b={row['budget']!s:>5} coverage {100 * row['coverage']:5.1f}%"
                f" (estimator part only: {100 * row['coverage_estimator_stderr_only']:5.1f}%)"
                f"  MSE/var {row['mse_over_mean_variance']:5.2f}  ({time.perf_counter() - t0:.1f} s)"
            )
    return rows


# ---------------------------------------------------------------------------------------
# Part 3: the interaction index from samples


def part_interactions(n: int, budgets: Sequence[int], seeds: int, log: Callable[[str], None]) -> list[dict[str, Any]]:
    rows = []
    iu = np.triu_indices(n, k=1)
    for game in G.make_games(n):
        exact = interactions_exact(table_of(game.utility, n), n)[iu]
        for budget in budgets:
            errors, stderr = [], []
            t0 = time.perf_counter()
            for seed in range(seeds):
                coalitions = kernel_sample(n, budget, seed)
                res = interactions_from_samples(coalitions, game.utility(coalitions), n)
                assert res.stderr is not None
                errors.append(np.asarray(res.matrix)[iu] - exact)
                stderr.append(np.asarray(res.stderr)[iu])
            row = cell_row(
                "interactions",
                game.name,
                n,
                "surrogate+stratified",
                budget,
                seeds,
                Cell(np.array(errors), np.array(stderr)),
            )
            rows.append(row)
            log(
                f"  {game.name:14s} n={n} b={budget:5d} coverage {100 * row['coverage']:5.1f}%"
                f"  MSE/var {row['mse_over_mean_variance']:6.2f}  ({time.perf_counter() - t0:.1f} s)"
            )
    return rows


# ---------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (20 seeds, n = 8 and 12), to results/quick/")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per cell (default 200; quick 20)")
    parser.add_argument("--only", choices=["estimator", "items", "interactions"], action="append")
    parser.add_argument("--population", type=int, default=5000, help="items in the population (part 2)")
    parser.add_argument("--items", type=int, default=100, help="items drawn per seed (part 2)")
    parser.add_argument("--n-boot", type=int, default=200, help="bootstrap replicates over items (part 2)")
    args = parser.parse_args(argv)
    seeds = args.seeds or (20 if args.quick else 200)
    parts = args.only or ["estimator", "items", "interactions"]
    out = HERE / "results" / ("quick" if args.quick else "")
    ns = (8, 12) if args.quick else (8, 12, 16)
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {msg}", flush=True)

    rows: list[dict[str, Any]] = []
    tables: list[MarkdownTable] = []
    preamble = [
        f"Share of nominal 95% intervals (`value ± 1.96 stderr`) that contain the true value, over {seeds} seeds "
        f"per cell and every player of the game (so a cell pools seeds x n intervals). Aim: {int(100 * AIM[0])}% to "
        f"{int(100 * AIM[1])}%. `MSE / mean var` is the empirical mean squared error over the mean reported "
        "variance (1 when the standard errors are right, > 1 when they are too small); `bias share` is the part "
        "of the MSE that is the same in every seed; `worst player` the lowest per-player coverage.",
    ]
    if "estimator" in parts:
        log("part 1: estimator error alone")
        est_rows = part_estimator(ns, seeds, log)
        rows += est_rows
        tables.append(summary_table("Part 1, per method: estimator error alone", est_rows))
        tables.append(
            coverage_table("Part 1, every cell: estimator error alone (exact values by enumeration)", est_rows)
        )
    if "items" in parts:
        n_items_game = 10
        item_budgets = (150, 500)
        if item_api_ready():
            log(
                f"part 2: estimator + evaluation noise (P = {args.population}, m = {args.items}, n_boot = {args.n_boot})"
            )
            item_rows = part_items(n_items_game, args.population, args.items, seeds, args.n_boot, item_budgets, log)
            rows += item_rows
            table = coverage_table(
                f"Part 2: estimator + evaluation noise, n = {n_items_game}, m = {args.items} of P = {args.population} "
                f"items per seed, n_boot = {args.n_boot}; interval `value ± 1.96 total_stderr` against the "
                "population value",
                item_rows,
            )
            table.columns[5:5] = ["mean est. stderr", "mean eval. stderr", "coverage, est. stderr only"]
            for r, cells in zip(item_rows, table.rows, strict=True):
                cells[5:5] = [
                    f"{r['mean_estimator_stderr']:.4f}",
                    f"{r['mean_eval_stderr']:.4f}",
                    f"{100 * r['coverage_estimator_stderr_only']:.1f}%",
                ]
            tables.insert(0 if "estimator" not in parts else 2, summary_table("Part 2, per method", item_rows))
            tables.append(table)
        else:
            log("part 2: pending (dposhap.ItemGame / shapley(n_boot=...) not available in this dposhap)")
            preamble.append(
                "Part 2 (estimator + evaluation noise) is pending: this dposhap has no `ItemGame` / "
                "`shapley(..., n_boot=...)` yet. Once it has, run "
                "`PYTHONPATH=python python bench/shapley/coverage.py --only items`."
            )
    if "interactions" in parts:
        n_int = 10 if args.quick else 12
        budgets = (300, 1000) if not args.quick else (300,)
        log(f"part 3: interaction index from samples, n = {n_int}")
        int_rows = part_interactions(n_int, budgets, seeds, log)
        rows += int_rows
        tables.append(
            coverage_table(
                f"Part 3: pairwise interaction index from sampled coalitions (`dposhap.interactions`), n = {n_int}; "
                "one interval per pair",
                int_rows,
            )
        )
    preamble.append(f"Wall time {time.perf_counter() - started:.0f} s.")
    suffix = "" if parts == ["estimator", "items", "interactions"] else "_" + "_".join(parts)
    write_csv(out / f"coverage{suffix}.csv", rows)
    write_markdown(
        out / f"coverage{suffix}.md",
        "Coverage of dposhap's reported intervals",
        environment(["dposhap", "numpy"]),
        tables,
        preamble,
    )
    log(f"wrote {out / f'coverage{suffix}.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

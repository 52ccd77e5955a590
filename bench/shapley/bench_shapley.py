"""Shapley engine benchmark: dposhap against shapiq 1.8 and pyDVL 0.10, in one run.

Three parts, each with one setup and several named providers:

1. accuracy  -- MSE against exact Shapley values at n = 16 for budgets 500 and 2000
   (four nonlinear games, exact values by enumeration) and at n = 32, 64, 128 for budgets
   10n, 30n, 100n (five games with exact values from their structure), averaged over seeds
   (see ``games.py``; ``--sizes`` picks the player counts);
2. overhead  -- microseconds per utility evaluation with a nearly free utility,
   n = 16 and n = 128;
3. scale     -- a preference-accuracy margin game with n = 1000 sources and
   m = 10,000 pairs, 100 permutations.

Results go to ``bench/shapley/results/`` as CSV and one Markdown report (machine,
versions, date). ``--quick`` is a smoke run (fewer seeds and repeats, smaller scale
caps) written to ``results/quick/``. ``--peers-only`` skips dposhap (only to validate
the harness before dposhap is installed) and writes to ``results/peers-only/``.

Run it through ``bench/shapley/run.sh`` (``make bench-shapley``).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # bench/_harness.py
sys.path.insert(0, str(HERE))

import games as G  # noqa: E402
import providers as P  # noqa: E402
import scale as S  # noqa: E402

from _harness import (  # noqa: E402
    MarkdownTable,
    Provider,
    environment,
    fmt_fixed,
    fmt_sci,
    median_seconds,
    write_csv,
    write_markdown,
)

ACCURACY_N = 16
ACCURACY_BUDGETS = (500, 2000)
ACCURACY_SIZES = (16, 32, 64, 128)


def large_budgets(n: int, multiples: tuple[int, ...] = (10, 30, 100)) -> tuple[int, ...]:
    """Budgets of the accuracy benchmark past enumeration: 10n, 30n and 100n evaluations by default."""
    return tuple(k * n for k in multiples)


OVERHEAD_NS = (16, 128)
OVERHEAD_BUDGET = 20_000
SCALE_N = 1000
SCALE_M = 10_000
SCALE_PERMUTATIONS = 100


def log(msg: str) -> None:
    """Progress line on stderr with a timestamp since start."""
    print(f"[{time.perf_counter() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


_T0 = time.perf_counter()


# ---------------------------------------------------------------------------------------
# 1. Accuracy


def bench_accuracy(
    our: list[Provider],
    peers: list[Provider],
    seeds: int,
    n: int = ACCURACY_N,
    budgets: tuple[int, ...] = ACCURACY_BUDGETS,
    warm_n: int | None = None,
) -> tuple[list[dict[str, Any]], list[MarkdownTable], list[str]]:
    """MSE against exact values for every (game, budget) cell and every provider, at ``n`` players."""
    games = G.make_games(n) if n <= G.MAX_ENUMERATED_PLAYERS else G.make_large_games(n)
    warm_n = n if warm_n is None else warm_n
    providers = our + peers
    notes: list[str] = []

    for game in games:
        G.exact_shapley(game)
        gap, secs = G.exact_report(game)
        notes.append(
            f"- exact `{game.name}` (n={game.n}): "
            + (
                f"2^{game.n} coalitions in {secs:.2f} s, "
                if game.exact is None
                else "known from the game's structure, "
            )
            + f"efficiency gap |sum(phi) - (v(N) - v(empty))| = {gap:.1e}"
        )

    # warm-up: imports, first-call costs (once, at the first size measured)
    warm = games[0]
    for p in providers if n == warm_n else []:
        try:
            p.run(P.CountingUtility(warm.utility, warm.n), warm.n, min(budgets), 12345)
        except Exception as exc:  # only budget refusals pass
            if not P.is_budget_too_small_error(exc):
                raise

    rows: list[dict[str, Any]] = []
    cell_mse: dict[tuple[str, int], dict[str, float]] = defaultdict(dict)
    for game in games:
        phi = G.exact_shapley(game)
        for budget in budgets:
            log(f"accuracy: {game.name} n={n} budget={budget}")
            for p in providers:
                mses, evals, reported, times, methods = [], [], [], [], set()
                refused = ""
                for seed in range(seeds):
                    u = P.CountingUtility(game.utility, game.n)
                    t0 = time.perf_counter()
                    try:
                        est = p.run(u, game.n, budget, seed)
                    except Exception as exc:  # only budget refusals pass
                        if not P.is_budget_too_small_error(exc):
                            raise
                        refused = str(exc)
                        break
                    times.append(time.perf_counter() - t0)
                    mses.append(float(np.mean((est.values - phi) ** 2)))
                    evals.append(u.n_evaluations)
                    if "reported_evaluations" in est.info:
                        reported.append(int(est.info["reported_evaluations"]))
                    if "method" in est.info:
                        methods.add(est.info["method"])
                nan = float("nan")
                if refused:
                    log(f"  {p.name}: refused budget {budget}: {refused}")
                    mses, evals, times = [], [], []
                mse = statistics.fmean(mses) if mses else nan
                sem = statistics.stdev(mses) / math.sqrt(len(mses)) if len(mses) > 1 else nan
                cell_mse[(game.name, budget)][p.name] = mse
                rows.append(
                    {
                        "game": game.name,
                        "n": game.n,
                        "budget": budget,
                        "provider": p.name,
                        "library": p.library,
                        "config": p.config,
                        "seeds": len(mses),
                        "mse_mean": mse,
                        "mse_sem": sem,
                        "mse_median": statistics.median(mses) if mses else nan,
                        "evals_mean": statistics.fmean(evals) if evals else nan,
                        "evals_max": max(evals) if evals else 0,
                        "reported_evals_max": max(reported) if reported else "",
                        "over_budget": bool(evals) and max(evals) > budget,
                        "time_ms_median": 1e3 * statistics.median(times) if times else nan,
                        "chosen_method": "/".join(sorted(methods)),
                        "refused": refused,
                    }
                )

    # --- tables
    cells = [(g.name, b) for g in games for b in budgets]
    cell_cols = [f"{g} B={b}" for g, b in cells]
    peer_names = [p.name for p in peers]
    by_key = {(r["game"], r["budget"], r["provider"]): r for r in rows}

    mse_table = MarkdownTable(
        caption=f"Accuracy: MSE against exact Shapley values, n={n}, mean over {seeds} seeds",
        columns=["provider", *cell_cols],
    )
    for p in providers:
        cells_txt = []
        for g, b in cells:
            r = by_key[(g, b, p.name)]
            txt = "budget too small" if r["refused"] else fmt_sci(r["mse_mean"])
            if r["over_budget"]:
                txt += " (!)"
            cells_txt.append(txt)
        mse_table.rows.append([f"`{p.name}`", *cells_txt])
    best_peer: dict[tuple[str, int], tuple[str, float]] = {}
    for cell in cells:
        name, val = min(
            ((n_, cell_mse[cell][n_]) for n_ in peer_names if math.isfinite(cell_mse[cell][n_])), key=lambda t: t[1]
        )
        best_peer[cell] = (name, val)
    mse_table.rows.append(["**best peer**", *[f"{fmt_sci(best_peer[c][1])} `{best_peer[c][0]}`" for c in cells]])
    mse_table.notes.append(
        "(!) marks a provider that made more evaluations than the budget "
        'in at least one seed (counted through a wrapper). "budget too small": '
        "the method refused the budget (`BudgetTooSmallError`)."
    )

    ratio_table = MarkdownTable(
        caption=f"Accuracy, n={n}: MSE of ours / MSE of the best peer in the same cell (< 1: ours better)",
        columns=["ours", *cell_cols, "geometric mean"],
        notes=["The geometric mean runs over the cells where the method accepted the budget."],
    )
    for p in our:
        ratios = [cell_mse[c][p.name] / best_peer[c][1] for c in cells]
        ratio_table.rows.append(
            [
                f"`{p.name}`",
                *[fmt_fixed(x) if x == x else "—" for x in ratios],
                f"**{fmt_fixed(P.geometric_mean(ratios))}**",
            ]
        )
    if not our:
        ratio_table.notes.append("(no dposhap providers in this run)")

    evals_table = MarkdownTable(
        caption=f"n={n}: evaluations actually made (max over games and seeds) and median wall time per run",
        columns=[
            "provider",
            *[f"evals B={b}" for b in budgets],
            *[f"ms/run B={b}" for b in budgets],
            "auto chose",
        ],
    )
    for p in providers:
        mine = [r for r in rows if r["provider"] == p.name]
        ev = [max(r["evals_max"] for r in mine if r["budget"] == b) for b in budgets]
        tm = [
            statistics.median(
                [r["time_ms_median"] for r in mine if r["budget"] == b and not r["refused"]] or [float("nan")]
            )
            for b in budgets
        ]
        chosen = sorted({m for r in mine for m in r["chosen_method"].split("/") if m})
        refused = [all(r["refused"] for r in mine if r["budget"] == b) for b in budgets]
        evals_table.rows.append(
            [
                f"`{p.name}`",
                *["refused" if x else str(e) for e, x in zip(ev, refused, strict=True)],
                *[fmt_fixed(t, 1) for t in tm],
                ", ".join(chosen),
            ]
        )

    games_table = MarkdownTable(caption=f"Games, n={n}", columns=["game", "description", "v(empty)", "v(N)"])
    for g in games:
        t = g.utility(np.vstack([np.zeros(g.n, bool), np.ones(g.n, bool)]))
        games_table.rows.append([g.name, g.description, fmt_fixed(t[0], 4), fmt_fixed(t[1], 4)])

    return rows, [games_table, mse_table, ratio_table, evals_table], notes


def summary_table(rows: list[dict[str, Any]], peer_names: list[str]) -> MarkdownTable:
    """MSE(ours:auto) / MSE(best peer) per n: geometric mean over cells, worst cell, and per cell."""
    cells: dict[tuple[int, str, int], dict[str, float]] = defaultdict(dict)
    for r in rows:
        cells[(r["n"], r["game"], r["budget"])][r["provider"]] = r["mse_mean"]
    table = MarkdownTable(
        caption="Summary: MSE of `ours:auto` / MSE of the best peer, per number of players",
        columns=["n", "cells", "geometric mean", "worst cell", "cells where auto loses", "best peers"],
    )
    for n in sorted({k[0] for k in cells}):
        ratios, worst, losses, winners = [], (0.0, ""), [], set()
        for (n_, game, budget), mse in sorted(cells.items()):
            if n_ != n or "ours:auto" not in mse:
                continue
            peer = {k: v for k, v in mse.items() if k in peer_names and math.isfinite(v)}
            best_name = min(peer, key=peer.__getitem__)
            ratio = mse["ours:auto"] / peer[best_name]
            ratios.append(ratio)
            winners.add(best_name.split(":", 1)[1])
            if ratio > worst[0]:
                worst = (ratio, f"{game} B={budget}")
            if ratio > 1:
                losses.append(f"{game} B={budget} ({fmt_fixed(ratio)})")
        table.rows.append(
            [
                str(n),
                str(len(ratios)),
                f"**{fmt_fixed(P.geometric_mean(ratios))}**",
                f"{fmt_fixed(worst[0])} ({worst[1]})",
                ", ".join(losses) or "none",
                ", ".join(sorted(winners)),
            ]
        )
    return table


def our_exact_checks(games: list[G.Game]) -> list[str]:
    """Cross-check dposhap's exact enumeration (callable and native MarginGame) with numpy."""
    import dposhap  # type: ignore[import-not-found]

    lines = []
    for game in games:
        phi = G.exact_shapley(game)
        try:
            res = dposhap.shapley(
                P.CountingUtility(game.utility, game.n), game.n, method="exact", budget=1 << game.n, seed=0
            )
            diff = float(np.max(np.abs(np.asarray(res.values) - phi)))
            lines.append(f"- dposhap exact vs numpy exact on `{game.name}` (callable): max |diff| = {diff:.1e}")
        except Exception as exc:  # reported, not fatal
            lines.append(f"- dposhap exact on `{game.name}` (callable) failed: {type(exc).__name__}: {exc}")
        if game.margins is None:
            continue
        try:
            native = dposhap.MarginGame(np.ascontiguousarray(game.margins), game.margin_kind)
            res = dposhap.shapley(native, method="exact", budget=1 << game.n, seed=0)
            diff = float(np.max(np.abs(np.asarray(res.values) - phi)))
            lines.append(
                f"- dposhap exact on native `MarginGame(M, {game.margin_kind!r})` vs "
                f"numpy exact on `{game.name}`: max |diff| = {diff:.1e}"
            )
        except Exception as exc:  # reported, not fatal
            lines.append(f"- dposhap exact on native MarginGame for `{game.name}` failed: {type(exc).__name__}: {exc}")
    return lines


# ---------------------------------------------------------------------------------------
# 2. Overhead


def bench_overhead(with_ours: bool, repeats: int) -> tuple[list[dict[str, Any]], list[MarkdownTable]]:
    """Microseconds per evaluation with a nearly free utility."""
    providers: list[Provider] = []
    if with_ours:
        providers += [P.our_provider("permutation"), P.our_provider("auto")]
    shapiq_perm = next(p for p in P.shapiq_providers() if p.name == "shapiq:PermutationSamplingSV")
    pydvl_perm = next(p for p in P.pydvl_providers() if p.name == "pydvl:Permutation")
    providers += [shapiq_perm, pydvl_perm]

    rows = []
    for n in OVERHEAD_NS:
        fn = G.free_utility(n)
        for p in providers:
            log(f"overhead: n={n} {p.name}")
            last: dict[str, Any] = {}

            def once(p: Provider = p, last: dict[str, Any] = last, fn: G.UtilityFn = fn, n: int = n) -> None:
                u = P.CountingUtility(fn, n)
                p.run(u, n, OVERHEAD_BUDGET, 0)
                last["u"] = u

            once()  # warm-up
            samples = []
            for _ in range(repeats):
                sec, _ = median_seconds(once, repeats=1, warmup=0)
                u = last["u"]
                samples.append((sec, u.n_evaluations, u.seconds_inside, u.n_calls))
            per_eval = [s / e * 1e6 for s, e, _, _ in samples]
            net = [(s - inside) / e * 1e6 for s, e, inside, _ in samples]
            inside = [i / e * 1e6 for _, e, i, _ in samples]
            rows.append(
                {
                    "n": n,
                    "budget": OVERHEAD_BUDGET,
                    "provider": p.name,
                    "library": p.library,
                    "config": p.config,
                    "repeats": repeats,
                    "evaluations": samples[-1][1],
                    "utility_calls": samples[-1][3],
                    "us_per_eval_total": statistics.median(per_eval),
                    "us_per_eval_net": statistics.median(net),
                    "us_per_eval_in_utility": statistics.median(inside),
                    "seconds_median": statistics.median(s for s, *_ in samples),
                }
            )

    table = MarkdownTable(
        caption=f"Overhead: microseconds per utility evaluation, budget {OVERHEAD_BUDGET}, "
        f"nearly free utility v(S) = (sum_(i in S) w_i)^2, median of {repeats}",
        columns=[
            "n",
            "provider",
            "evals",
            "calls",
            "µs/eval total",
            "µs/eval net of utility",
            "µs/eval inside utility",
            "vs ours:permutation (total)",
        ],
    )
    for n in OVERHEAD_NS:
        mine = [r for r in rows if r["n"] == n]
        ref = next((r for r in mine if r["provider"] == "ours:permutation"), None)
        for r in mine:
            ratio = fmt_fixed(r["us_per_eval_total"] / ref["us_per_eval_total"], 1) + "x" if ref else "n/a"
            table.rows.append(
                [
                    str(n),
                    f"`{r['provider']}`",
                    str(r["evaluations"]),
                    str(r["utility_calls"]),
                    fmt_fixed(r["us_per_eval_total"], 2),
                    fmt_fixed(r["us_per_eval_net"], 2),
                    fmt_fixed(r["us_per_eval_in_utility"], 2),
                    ratio,
                ]
            )
    table.notes.append(
        '"net of utility" subtracts the time spent inside the utility callable; '
        '"calls" is how many times the callable was invoked (batching).'
    )
    return rows, [table]


# ---------------------------------------------------------------------------------------
# 3. Scale


def bench_scale(
    with_ours: bool, cap_seconds: float, our_repeats: int
) -> tuple[list[dict[str, Any]], list[MarkdownTable]]:
    """n = 1000 sources, m = 10,000 pairs, 100 permutations."""
    n, target = SCALE_N, SCALE_PERMUTATIONS
    log(f"scale: building margins {n} x {SCALE_M}")
    margins = S.scale_margins(n, SCALE_M)
    fn = S.accuracy_callable(margins)
    rows: list[dict[str, Any]] = []

    def record(
        provider: str, library: str, config: str, timing: S.CappedTiming, evals_target: int, note: str = ""
    ) -> None:
        rows.append(
            {
                "n": n,
                "m": SCALE_M,
                "permutations": target,
                "provider": provider,
                "library": library,
                "config": config,
                "seconds": timing.seconds,
                "how": timing.label,
                "permutations_run": timing.permutations_run,
                "seconds_run": timing.seconds_run,
                "evaluations_run": timing.evaluations_run,
                "evaluations_for_target": evals_target,
                "share_in_utility": timing.seconds_in_utility_run / timing.seconds_run,
                "note": note,
            }
        )

    if with_ours:
        import dposhap  # type: ignore[import-not-found]

        budget = P.our_permutation_budget(n, target)
        log("scale: ours native MarginGame")
        native = dposhap.MarginGame(margins, "accuracy")

        def ours_native() -> Any:
            return dposhap.shapley(native, method="permutation", budget=budget, seed=0)

        t0 = time.perf_counter()
        res = ours_native()  # also the warm-up
        first = time.perf_counter() - t0
        if first > cap_seconds / 4:  # too slow to repeat within the time plan
            sec, how = first, "measured, single run"
        else:
            sec, res = median_seconds(ours_native, repeats=our_repeats, warmup=0)
            how = f"measured, median of {our_repeats}"
        rows.append(
            {
                "n": n,
                "m": SCALE_M,
                "permutations": target,
                "provider": "ours:permutation (native MarginGame)",
                "library": "dposhap",
                "config": f"dposhap.shapley(MarginGame(M, 'accuracy'), method='permutation', budget={budget}, seed=0)",
                "seconds": sec,
                "how": how,
                "permutations_run": target,
                "seconds_run": sec,
                "evaluations_run": int(res.n_evaluations),
                "evaluations_for_target": int(res.n_evaluations),
                "share_in_utility": float("nan"),
                "note": "native game: no Python utility",
            }
        )

        log("scale: ours on the numpy callable")

        def ours_callable(p: int) -> int:
            u = P.CountingUtility(fn, n)
            dposhap.shapley(u, n, method="permutation", budget=P.our_permutation_budget(n, p), seed=0)
            return u.n_evaluations, u.seconds_inside

        # dposhap's permutation method wants at least 2 permutations (for standard errors)
        t = S.run_capped(ours_callable, target, cap_seconds, probe=2)
        record(
            "ours:permutation (numpy callable)",
            "dposhap",
            "dposhap.shapley(u, n, method='permutation', budget=P(n-1)+2, seed=0)",
            t,
            t.evaluations_run if not t.extrapolated else budget,
        )

    log("scale: shapiq PermutationSamplingSV")

    def shapiq_run(p: int) -> int:
        u = P.CountingUtility(fn, n)
        P.shapiq_permutation(u, n, p, seed=0)
        return u.n_evaluations, u.seconds_inside

    t = S.run_capped(shapiq_run, target, cap_seconds, probe=1)
    record(
        "shapiq:PermutationSamplingSV",
        "shapiq",
        "PermutationSamplingSV(n, random_state=0).approximate(budget=P(n-1)+2, game=u)",
        t,
        P.shapiq_permutation_budget(n, target),
    )

    log("scale: pyDVL PermutationSampler")

    def pydvl_run(p: int) -> int:
        u = P.CountingUtility(fn, n)
        P.pydvl_permutation(u, n, p, seed=0)
        return u.n_evaluations, u.seconds_inside

    t = S.run_capped(pydvl_run, target, cap_seconds, probe=1)
    record(
        "pydvl:Permutation",
        "pydvl",
        "ShapleyValuation(u, PermutationSampler(seed=0), MaxSamples(sampler, P))",
        t,
        target * n + 1,
    )

    ref = next((r for r in rows if r["provider"].startswith("ours:permutation (native")), None)
    table = MarkdownTable(
        caption=f"Scale: preference-accuracy margin game, n={n} sources, m={SCALE_M} pairs, {target} permutations",
        columns=[
            "provider",
            "seconds for 100 permutations",
            "how",
            "evaluations (100 perm.)",
            "µs/eval",
            "share of time inside the numpy utility",
            "slower than ours native",
        ],
    )
    for r in rows:
        ratio = fmt_fixed(r["seconds"] / ref["seconds"], 1) + "x" if ref else "n/a"
        table.rows.append(
            [
                f"`{r['provider']}`",
                fmt_fixed(r["seconds"], 2),
                r["how"],
                str(r["evaluations_for_target"]),
                fmt_fixed(r["seconds"] / r["evaluations_for_target"] * 1e6, 1),
                "n/a" if r["share_in_utility"] != r["share_in_utility"] else f"{100 * r['share_in_utility']:.0f}%",
                ratio,
            ]
        )
    table.notes.append(
        f"Ours gets budget = 100 (n - 1) + 2 = {P.our_permutation_budget(n, target)} evaluations "
        "(shapiq's accounting: empty and grand coalition once, n - 1 interior coalitions per "
        "permutation); the evaluations column for ours is `res.n_evaluations`. pyDVL evaluates "
        "n coalitions per permutation (plus v(empty) once, cached by our adapter). Peers that "
        f"would take longer than {cap_seconds:.0f} s run fewer permutations and the time is "
        "extrapolated linearly, as labelled. The numpy callable computes `X @ M` in chunks of "
        "256 rows (one gemv for a single coalition) in float64."
    )
    return rows, [table]


# ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer seeds and repeats")
    parser.add_argument("--peers-only", action="store_true", help="skip dposhap (validation of the harness only)")
    parser.add_argument(
        "--only", choices=["accuracy", "overhead", "scale"], action="append", help="run only these parts (repeatable)"
    )
    parser.add_argument("--seeds", type=int, default=None, help="seeds per accuracy cell at n=16")
    parser.add_argument(
        "--large-seeds", type=int, default=None, help="seeds per accuracy cell at n > 16 (default 3; quick 2)"
    )
    parser.add_argument(
        "--large-budgets",
        default="10,30,100",
        help="budgets past n=16 as comma-separated multiples of n (default 10,30,100)",
    )
    parser.add_argument(
        "--sizes",
        default=",".join(str(x) for x in ACCURACY_SIZES),
        help="comma-separated player counts of the accuracy benchmark (16 uses the enumerated games and "
        "budgets 500/2000, larger ones the structured games and budgets 10n/30n/100n)",
    )
    parser.add_argument(
        "--scale-cap",
        type=float,
        default=None,
        help="seconds a peer may run in the scale benchmark before extrapolating",
    )
    parser.add_argument("--results", type=Path, default=None, help="output directory")
    args = parser.parse_args(argv)

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)

    seeds = args.seeds or (3 if args.quick else 16)
    repeats = 2 if args.quick else 5
    cap = args.scale_cap or (10.0 if args.quick else 90.0)
    parts = args.only or ["accuracy", "overhead", "scale"]
    out = args.results or (
        HERE / "results" / ("peers-only" if args.peers_only else "") / ("quick" if args.quick else "")
    )

    with_ours = not args.peers_only
    our: list[Provider] = []
    preamble: list[str] = []
    if with_ours:
        try:
            import dposhap  # type: ignore[import-not-found]
        except ImportError as exc:
            print(
                f"dposhap is not installed in this environment ({exc}); install it with "
                "`pip install <repo root>` or run bench/shapley/run.sh. "
                "(--peers-only validates the peers alone.)",
                file=sys.stderr,
            )
            return 2
        our, skipped = P.our_providers()
        for note in skipped:
            log(note)
        preamble += [f"- {s}" for s in skipped]
    else:
        preamble.append("- **peers only**: dposhap was not measured in this run.")

    peers = P.shapiq_providers() + P.pydvl_providers()
    env = environment(["numpy", "dposhap", "pydvl", "shapiq"])
    if with_ours and env["dposhap"] == "not installed":  # imported from a source tree
        import dposhap  # type: ignore[import-not-found]

        env["dposhap"] = f"{getattr(dposhap, '__version__', '?')} (from {Path(dposhap.__file__).parent})"
    env["run"] = ("quick" if args.quick else "full") + (", peers only" if args.peers_only else "")
    log(f"environment: {env}")

    tables: list[MarkdownTable] = []
    provider_table = MarkdownTable(caption="Providers", columns=["provider", "configuration"])
    for p in our + peers:
        provider_table.rows.append([f"`{p.name}`", f"`{p.config}`"])
    tables.append(provider_table)

    if "accuracy" in parts:
        sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
        large_seeds = args.large_seeds or (2 if args.quick else 3)
        all_rows: list[dict[str, Any]] = []
        size_tables: list[MarkdownTable] = []
        for n in sizes:
            multiples = tuple(int(x) for x in args.large_budgets.split(",") if x.strip())
            budgets = ACCURACY_BUDGETS if n <= G.MAX_ENUMERATED_PLAYERS else large_budgets(n, multiples)
            rows, acc_tables, notes = bench_accuracy(
                our, peers, seeds if n <= G.MAX_ENUMERATED_PLAYERS else large_seeds, n, budgets, warm_n=sizes[0]
            )
            all_rows += rows
            write_csv(out / "shapley_accuracy.csv", all_rows)  # after every size: a long run keeps what it measured
            preamble += notes
            if with_ours and n == ACCURACY_N:
                preamble += our_exact_checks(G.make_games(ACCURACY_N))
            size_tables += acc_tables
        write_csv(out / "shapley_accuracy.csv", all_rows)
        preamble.append("- " + P.SHAPIQ_NOT_MEASURED)
        if with_ours:
            tables.append(summary_table(all_rows, [p.name for p in peers]))
        tables += size_tables
    if "overhead" in parts:
        rows, t = bench_overhead(with_ours, repeats)
        write_csv(out / "shapley_overhead.csv", rows)
        tables += t
    if "scale" in parts:
        rows, t = bench_scale(with_ours, cap, our_repeats=repeats)
        write_csv(out / "shapley_scale.csv", rows)
        tables += t

    env["wall time"] = f"{time.perf_counter() - _T0:.0f} s"
    write_markdown(out / "shapley.md", "Shapley engine: dposhap vs shapiq and pyDVL", env, tables, preamble=preamble)
    log(f"wrote {out}/shapley.md")
    print((out / "shapley.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""dposhap's estimator on the large games, against the peers of an earlier run of bench_shapley.py.

The peers (14 shapiq and pyDVL estimators) take up to ten minutes per cell at n = 64, and they do
not change between versions of dposhap; dposhap's own estimator takes seconds. This script runs
dposhap alone on the same games (``games.make_large_games``) and budgets, over many more seeds
than the full benchmark affords (its peers' means are over 3 seeds), and divides its mean squared
error by the best peer's in the stored results (``shapley_accuracy.csv`` files). A ratio below 1
means dposhap was better. The peers are therefore not measured in the same run: the stored run's
date and machine are those of its own ``shapley.md``.

Needs only dposhap and numpy (no shapiq, no pyDVL)::

    python bench/shapley/against_stored.py --sizes 32,64 --seeds 100
    python bench/shapley/against_stored.py --sizes 128 --budgets 10 --seeds 30 \\
        --peers bench/shapley/results/large-128/shapley_accuracy.csv
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # bench/_harness.py

from games import make_large_games  # noqa: E402

import dposhap  # noqa: E402
from _harness import MarkdownTable, environment, write_csv, write_markdown  # noqa: E402

DEFAULT_PEERS = [HERE / "results" / "large-32-64" / "shapley_accuracy.csv"]


def best_peers(paths: list[Path]) -> dict[tuple[str, int, int], tuple[float, str]]:
    """The smallest peer mean squared error per (game, n, budget), with the peer's name."""
    best: dict[tuple[str, int, int], tuple[float, str]] = {}
    for path in paths:
        with path.open(encoding="utf-8") as f:
            for row in csv.DictReader(f):
                if row["library"] == "dposhap" or row["mse_mean"] in ("", "nan"):
                    continue
                key = (row["game"], int(row["n"]), int(row["budget"]))
                mse = float(row["mse_mean"])
                if key not in best or mse < best[key][0]:
                    best[key] = (mse, row["provider"])
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="32,64", help="comma-separated player counts (default 32,64)")
    parser.add_argument("--budgets", default="10,30,100", help="budgets as multiples of n (default 10,30,100)")
    parser.add_argument("--seeds", type=int, default=100, help="seeds per cell (default 100)")
    parser.add_argument("--method", default="auto", help="dposhap method (default auto)")
    parser.add_argument("--peers", type=Path, action="append", help="stored shapley_accuracy.csv (repeatable)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "against-stored", help="results folder")
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")]
    multiples = [int(x) for x in args.budgets.split(",")]
    best = best_peers(args.peers or DEFAULT_PEERS)

    rows, ratios = [], []
    table = MarkdownTable(
        "MSE of dposhap / MSE of the best stored peer (< 1: dposhap better)",
        ["game", "n", *[f"B={m}n" for m in multiples]],
    )
    for n in sizes:
        for game in make_large_games(n):
            cells = []
            for m in multiples:
                budget = m * n
                started = time.perf_counter()
                errors = []
                for seed in range(args.seeds):
                    result = dposhap.shapley(
                        lambda x, g=game: g.utility(np.asarray(x, dtype=bool)),
                        n,
                        method=args.method,
                        budget=budget,
                        seed=10_000 + seed,
                    )
                    errors.append(float(np.mean((np.asarray(result.values).reshape(n) - game.exact) ** 2)))
                mse = float(np.mean(errors))
                peer_mse, peer = best.get((game.name, n, budget), (float("nan"), ""))
                ratio = mse / peer_mse
                if np.isfinite(ratio):
                    ratios.append(ratio)
                cells.append(f"{ratio:.2f} ({peer.split(':')[-1]})" if peer else "no stored peer")
                rows.append(
                    {
                        "game": game.name,
                        "n": n,
                        "budget": budget,
                        "seeds": args.seeds,
                        "mse_mean": mse,
                        "mse_sem": float(np.std(errors, ddof=1) / np.sqrt(len(errors))),
                        "best_peer": peer,
                        "best_peer_mse": peer_mse,
                        "ratio": ratio,
                        "seconds": time.perf_counter() - started,
                    }
                )
            table.rows.append([game.name, str(n), *cells])
            print(f"n={n:4d} {game.name:14s} " + " | ".join(cells), flush=True)
    r = np.array(ratios)
    summary = (
        f"geometric mean {np.exp(np.log(r).mean()):.3f}, worst {r.max():.2f}, "
        f"cells <= 0.8: {(r <= 0.8).sum()} of {len(r)}"
        if len(r)
        else "no cell with a stored peer"
    )
    print(summary)
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "against_stored.csv", rows)
    peers = ", ".join(str(p.relative_to(HERE) if p.is_relative_to(HERE) else p) for p in args.peers or DEFAULT_PEERS)
    table.notes.append(summary)
    write_markdown(
        args.out / "against_stored.md",
        "dposhap against the stored peers (large games)",
        environment(["dposhap", "numpy"]),
        [table],
        [
            f"dposhap.shapley(method={args.method!r}) over {args.seeds} seeds per cell (seeds 10000 on); its MSE "
            f"divided by the best peer's mean MSE in {peers} (measured in that run, not this one; see its "
            "shapley.md for the date and machine). In brackets: the best peer."
        ],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

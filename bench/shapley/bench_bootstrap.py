"""What the evaluation-noise bootstrap costs, and what it shows (issue 11).

For DPO margin games (preference accuracy on m held-out pairs, margins from the benchmark's
model of sources with signal and noise) it measures, side by side in one process: the wall
time of a valuation without a bootstrap and with ``n_boot = 200`` (native, on the coalitions
the run absorbed), and the mean estimator and evaluation standard errors, for exact enumeration
and for ``auto`` at budgets that leave the estimator's error visible. Then the same on an
``ItemGame`` (the Python path a cached generation or likelihood valuation takes).

Run: ``.venv/bin/python bench/shapley/bench_bootstrap.py`` (about a minute on 2 cores);
writes ``bench/shapley/results/bootstrap.md`` and ``.csv``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dposhap
from _harness import MarkdownTable, environment, median_seconds, write_csv, write_markdown

OUT = Path(__file__).resolve().parent / "results"


def margins(n: int, m: int, seed: int) -> np.ndarray:
    """Sources with a signal (helpful, harmful or none) and noise, pairs of varying difficulty."""
    rng = np.random.default_rng(seed)
    signal = rng.choice([0.6, -0.4, 0.0], size=n, p=[0.5, 0.25, 0.25])
    difficulty = rng.gamma(2.0, 0.5, size=m)
    return signal[:, None] * difficulty[None, :] + rng.normal(0.0, 1.0, size=(n, m))


def value(make: Callable[[], Any], n: int, method: str, budget: int | None, n_boot: int) -> Any:
    """One valuation of a fresh game."""
    return dposhap.shapley(make(), n, method=method, budget=budget, n_boot=n_boot)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-boot", type=int, default=200)
    args = parser.parse_args()

    cases = [
        ("native exact", 12, 500, "exact", None),
        ("native exact", 16, 500, "exact", None),
        ("native auto", 16, 500, "auto", 2000),
        ("native auto", 24, 500, "auto", 5000),
        ("native auto", 64, 500, "auto", 20000),
        ("ItemGame exact", 12, 200, "exact", None),
        ("ItemGame auto", 24, 200, "auto", 2000),
    ]
    rows = []
    table = MarkdownTable(
        f"Valuation without and with a bootstrap of {args.n_boot} replicates over the pairs (median of {args.repeats})",
        [
            "path",
            "n",
            "pairs",
            "method",
            "budget",
            "plain s",
            "with bootstrap s",
            "ratio",
            "mean ± est",
            "mean ± eval",
            "eval / est",
        ],
    )
    for path, n, m, method, budget in cases:
        mat = margins(n, m, seed=n)
        if path.startswith("native"):
            game = dposhap.MarginGame(mat, "accuracy")

            def make(g=game):
                return g
        else:

            def make(mat=mat, m=m):
                return dposhap.ItemGame(lambda c: np.where(c.astype(float) @ mat > 0, 1.0, 0.0), m)

        plain, _ = median_seconds(partial(value, make, n, method, budget, 0), args.repeats)
        boot, res = median_seconds(partial(value, make, n, method, budget, args.n_boot), args.repeats)
        est, ev = float(np.mean(res.stderr)), float(np.mean(res.eval_stderr))
        row = {
            "path": path,
            "n": n,
            "pairs": m,
            "method": res.method,
            "budget": budget or 2**n,
            "plain_s": plain,
            "boot_s": boot,
            "ratio": boot / plain,
            "mean_est_stderr": est,
            "mean_eval_stderr": ev,
            "eval_over_est": ev / est if est else float("inf"),
        }
        rows.append(row)
        table.rows.append(
            [
                path,
                str(n),
                str(m),
                res.method,
                str(row["budget"]),
                f"{plain:.3f}",
                f"{boot:.3f}",
                f"{boot / plain:.1f}x",
                f"{est:.4f}",
                f"{ev:.4f}",
                "exact" if not est else f"{ev / est:.1f}",
            ]
        )
        print(table.rows[-1], flush=True)
    table.notes.append(
        "`with bootstrap` includes the valuation itself. The bootstrap reuses the run's coalitions: exact runs "
        "take the values per pair (`MarginGame.per_pair`) and one matrix product; sampled runs replay the "
        "estimator on the reweighted game (`MarginGame.reweighted`), all replicates as objectives of one run."
    )
    write_csv(OUT / "bootstrap.csv", rows)
    write_markdown(OUT / "bootstrap.md", "Cost of the evaluation-noise bootstrap", environment(["numpy"]), [table])
    print(f"wrote {OUT / 'bootstrap.md'}")


if __name__ == "__main__":
    main()

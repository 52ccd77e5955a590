"""Train + value n toy sources in process and on a local Ray runtime with 1 and 2 workers.

For each n (``--sizes``, multiples of 4: ``n / 4`` copies of the four default kinds), the world
is built and its sources trained once in process (``examples/toy.toml`` with ``--pairs`` pairs per
source and ``--max-steps`` steps); every mode then starts from a copy of that run:

``train``
    ``train_sources(..., force=True)``: every source trained again, in process (one torch
    thread) or as one Ray task per source with 1 or 2 workers (one CPU each).
``accuracy``
    The margins matrix recomputed (one pass per adapter over the trusted pairs; sharded by
    source across the actors on Ray) and the native game valued (``auto``, no bootstrap).
``generation``
    Composed decoding of ``--prompts`` prompts x ``--tokens`` tokens, ``--gen-budget``
    coalitions (``antithetic``; exact at n = 4), through the run's cache (empty at the start),
    no bootstrap; on Ray each batch of ``--batch`` coalitions is split across the actors.

Reported: wall seconds of each, the ratio to in process, and Ray's overhead per training task,
``(t_ray1 - t_process) / n``, from the 1-worker run (same work, one at a time). The local Ray
runtime is started once (its start-up is reported apart); actors start with every valuation and
their start-up is inside the valuation's time. Results: ``results/ray.md`` and ``.csv``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # bench/_harness.py

from _harness import MarkdownTable, environment, write_csv, write_markdown  # noqa: E402
from dposhap.config import ClusterConfig, load_config  # noqa: E402
from dposhap.evaluate import GenerationSettings  # noqa: E402
from dposhap.train import train_sources  # noqa: E402
from dposhap.valuation import value_run  # noqa: E402

CONFIG = HERE.parents[1] / "examples" / "toy.toml"
MODES: dict[str, ClusterConfig | None] = {
    "process": None,
    "ray-1": ClusterConfig(address="local", workers=1),
    "ray-2": ClusterConfig(address="local", workers=2),
}


def run_size(n: int, args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    overrides = [
        f"toy.copies={n // 4}",
        f"toy.pairs_per_source={args.pairs}",
        f"dpo.max_steps={args.max_steps}",
        "model.device=cpu",
        "model.threads=1",
    ]
    cfg = load_config(CONFIG, overrides)
    base = root / f"n{n}" / "base"
    started = time.perf_counter()
    train_sources(cfg, base, progress=False)
    print(f"n={n}: world + first training {time.perf_counter() - started:.1f} s", flush=True)
    rows = []
    for mode, cluster in MODES.items():
        run = root / f"n{n}" / mode
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(base, run)
        shutil.rmtree(run / "margins", ignore_errors=True)
        (run / "cache.sqlite").unlink(missing_ok=True)
        mode_cfg = dataclasses.replace(cfg, cluster=cluster) if cluster is not None else cfg
        t0 = time.perf_counter()
        train_sources(mode_cfg, run, force=True, progress=False)
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        value_run(run, "accuracy", device="cpu", threads=1, progress=False, n_boot=0, cluster=cluster)
        accuracy_s = time.perf_counter() - t0
        settings = GenerationSettings(n_prompts=args.prompts, max_new_tokens=args.tokens)
        t0 = time.perf_counter()
        result, _ = value_run(
            run,
            "generation",
            settings=settings,
            method="exact" if n <= 4 else "antithetic",
            budget=None if n <= 4 else max(args.gen_budget, 4 * n),  # antithetic needs about 4n
            batch_size=args.batch,
            device="cpu",
            threads=1,
            progress=False,
            n_boot=0,
            cluster=cluster,
        )
        generation_s = time.perf_counter() - t0
        row = {
            "n": n,
            "mode": mode,
            "train_s": round(train_s, 1),
            "accuracy_s": round(accuracy_s, 1),
            "generation_s": round(generation_s, 1),
            "coalitions": int(result.n_evaluations),
            "total_s": round(train_s + accuracy_s + generation_s, 1),
        }
        print(row, flush=True)
        rows.append(row)
    process = rows[0]
    for row in rows:
        row["total_vs_process"] = round(row["total_s"] / process["total_s"], 2)
        row["train_vs_process"] = round(row["train_s"] / process["train_s"], 2)
    one = next(r for r in rows if r["mode"] == "ray-1")
    for row in rows:
        row["overhead_per_task_s"] = round((one["train_s"] - process["train_s"]) / n, 2) if row is one else ""
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="4,16,64", help="numbers of sources, multiples of 4")
    parser.add_argument("--pairs", type=int, default=64, help="pairs per source")
    parser.add_argument("--max-steps", type=int, default=8, help="optimiser steps per source")
    parser.add_argument("--prompts", type=int, default=8, help="generation: prompts decoded")
    parser.add_argument("--tokens", type=int, default=8, help="generation: new tokens per prompt")
    parser.add_argument(
        "--gen-budget", type=int, default=64, help="generation: coalitions past 4 sources (at least 4n)"
    )
    parser.add_argument("--batch", type=int, default=16, help="generation: coalitions per batch")
    parser.add_argument("--workdir", default=None, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--out", default=str(HERE / "results"), help="folder for ray.md and ray.csv")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    ray_start_s = time.perf_counter() - t0
    rows: list[dict[str, Any]] = []
    out = Path(args.out)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(args.workdir or tmp)
            for n in [int(s) for s in args.sizes.split(",")]:
                rows += run_size(n, args, root)
                write_csv(out / "ray.csv", rows)
    finally:
        ray.shutdown()
    caption = (
        f"{args.pairs} pairs and {args.max_steps} steps per source; generation {args.prompts} prompts x "
        f"{args.tokens} tokens, max({args.gen_budget}, 4n) coalitions past n = 4; local Ray runtime start {ray_start_s:.1f} s"
    )
    table = MarkdownTable(caption, list(rows[0]), [[str(v) for v in r.values()] for r in rows])
    write_markdown(
        out / "ray.md",
        "Train + value in process and on local Ray (1 and 2 workers)",
        environment(["torch", "transformers", "trl", "peft", "ray"]),
        [table],
    )
    print(table.render())


if __name__ == "__main__":
    main()

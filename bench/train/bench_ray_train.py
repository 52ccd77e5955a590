"""Benchmark of training through Ray (``dposhap train --ray``) against training in this process.

Setup: the toy world with the reliability suite's tiny settings (32 pairs per source, 2 DPO steps,
64 tokens, CPU, one torch thread), built once into a run directory; then every source retrained
(``force=True``) by each provider:

``in process``
    :func:`dposhap.train_sources` without ``[cluster]``: the base model loaded once, reused.
``ray cold, W workers``
    ``[cluster] address = "local"``: :func:`dposhap.cluster.connect` starts a Ray runtime, each
    task's worker imports torch/TRL and loads the base model, the runtime is stopped at the end:
    what one ``dposhap train --ray local`` costs.
``ray warm, W workers``
    A runtime started beforehand (``ray.init``) and one untimed run first, so the workers have
    imported everything: what each task costs once the cluster is up (median of ``--repeats``).

Per-task overhead = (warm 1-worker time - in-process time) / sources. Results:
``results/ray_train.md`` and ``.csv`` with the machine, versions and date.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # bench/_harness.py

from _harness import MarkdownTable, environment, write_csv, write_markdown  # noqa: E402
from dposhap.config import load_config  # noqa: E402
from dposhap.train import train_sources  # noqa: E402

PACKAGES = ("torch", "transformers", "trl", "peft", "ray")
TINY = ["toy.pairs_per_source=32", "dpo.max_steps=2", "dpo.max_length=64", "model.device=cpu", "model.threads=1"]


def _train(run: Path, sources: list[str], workers: int | None, extra: list[str]) -> float:
    cluster = [] if workers is None else ["cluster.address='local'", f"cluster.workers={workers}"]
    cfg = load_config(None, [*TINY, f"toy.sources={sources!r}", *cluster, *extra])
    started = time.perf_counter()
    train_sources(cfg, run, force=True, progress=False)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", default="helpful,harmless,noisy", help="toy sources, comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], help="a config override on top of the tiny settings")
    args = parser.parse_args()
    sources = args.sources.split(",")
    import ray

    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        _train(run, sources, None, args.set)  # builds the world, warms this process's imports
        local = statistics.median(_train(run, sources, None, args.set) for _ in range(args.repeats))
        rows.append({"provider": "in process", "workers": 0, "seconds": local})
        for workers in (1, 2):
            rows.append(
                {"provider": "ray cold", "workers": workers, "seconds": _train(run, sources, workers, args.set)}
            )
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
        for workers in (1, 2):
            _train(run, sources, workers, args.set)
            warm = statistics.median(_train(run, sources, workers, args.set) for _ in range(args.repeats))
            rows.append({"provider": "ray warm", "workers": workers, "seconds": warm})
        ray.shutdown()
    warm1 = next(r["seconds"] for r in rows if r["provider"] == "ray warm" and r["workers"] == 1)
    table = MarkdownTable(
        f"Training {len(sources)} toy sources (retrain, force){': ' + ', '.join(args.set) if args.set else ''}",
        ["provider", "workers", "s", "vs in process"],
        [[r["provider"], r["workers"] or "-", f"{r['seconds']:.1f}", f"{r['seconds'] / local:.2f}x"] for r in rows],
        [f"per-task overhead (warm, 1 worker): {(warm1 - local) / len(sources):.2f} s"],
    )
    stem = "ray_train" + ("_" + "_".join(a.split("=")[1] for a in args.set) if args.set else "")
    write_csv(HERE / "results" / f"{stem}.csv", rows)
    write_markdown(HERE / "results" / f"{stem}.md", "Training through Ray", environment(PACKAGES), [table])
    print(table.render())


if __name__ == "__main__":
    main()

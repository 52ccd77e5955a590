"""Train + value with many toy sources in one process: wall times, and whether the planted answer is found.

For n = 4, 16 and 64 sources, the toy world builds ``n / 4`` copies of each of the four default
kinds (``[toy] copies``: helpful, harmless, noisy, adversarial; each copy its own random stream and
``--pairs`` pairs), trains one adapter per source with the settings of ``examples/toy.toml``, then
values the sources twice:

``accuracy``
    The margin utility (preference accuracy on the world's trusted pairs), natively in Rust, with
    ``method="auto"`` (exact up to 10 sources, regression past that) stopped at ``--acc-tol``, once
    without and once with the evaluation bootstrap (``n_boot`` 200) and the pairwise interactions
    (``value_run`` does both); the first call also computes the margins matrix. The interactions are
    also timed alone (:func:`dposhap.interactions.pairwise_interactions` on the native game).
``generation``
    Composed decoding scored by the toy rewards, few prompts and tokens (``--prompts``,
    ``--tokens``), a sampled method (``--gen-method``) stopped at ``--tol`` or ``--gen-budget``
    coalitions (exact enumeration for n = 4).

The planted answer: every clean copy (helpful, harmless) above every adversarial one, noisy
copies in between, copies of one kind equal within error. Reported per n and utility: the share
of (clean, adversarial) pairs ranked the right way round (and of (clean, noisy) and (noisy,
adversarial)), and the spread of each kind's copies (max - min of their values) against their
mean standard error. Results: ``results/many_sources.md`` and ``.csv``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # bench/_harness.py

from _harness import MarkdownTable, environment, write_csv, write_markdown  # noqa: E402
from dposhap import _core  # noqa: E402
from dposhap.config import load_config  # noqa: E402
from dposhap.evaluate import GenerationSettings, get_utility  # noqa: E402
from dposhap.evaluate.base import BuildContext  # noqa: E402
from dposhap.interactions import pairwise_interactions  # noqa: E402
from dposhap.run import Run  # noqa: E402
from dposhap.train import train_sources  # noqa: E402
from dposhap.valuation import value_run  # noqa: E402
from dposhap.worlds.toy.sources import DEFAULT_SOURCES, parse_copy_name  # noqa: E402

CONFIG = HERE.parents[1] / "examples" / "toy.toml"
CLEAN, FLIPPED = ("helpful", "harmless"), ("adversarial",)


def planted_answer(values: dict[str, float], stderr: dict[str, float], objective: str) -> dict[str, Any]:
    """How far one objective's values follow the planted order, and how close copies of a kind are.

    ``own>adversarial`` compares the kind named after the objective (helpful on helpful, harmless
    on harmless; both clean kinds on accuracy) with the flipped one.
    """
    by_kind: dict[str, list[str]] = {}
    for name in values:
        by_kind.setdefault(parse_copy_name(name)[0], []).append(name)

    def share(upper: tuple[str, ...], lower: tuple[str, ...]) -> float:
        ups = [values[s] for k in upper for s in by_kind.get(k, [])]
        lows = [values[s] for k in lower for s in by_kind.get(k, [])]
        return float(np.mean([u > lo for u in ups for lo in lows])) if ups and lows else float("nan")

    spread = {
        kind: (
            float(max(values[s] for s in names) - min(values[s] for s in names)),
            float(np.mean([stderr[s] for s in names])),
        )
        for kind, names in by_kind.items()
    }
    own = (objective,) if objective in CLEAN else CLEAN
    return {
        "own>adversarial": share(own, FLIPPED),
        "clean>adversarial": share(CLEAN, FLIPPED),
        "clean>noisy": share(CLEAN, ("noisy",)),
        "noisy>adversarial": share(("noisy",), FLIPPED),
        "spread": spread,
    }


def run_one(n: int, args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    copies = n // len(DEFAULT_SOURCES)
    out = root / f"toy{n}"
    cfg = load_config(CONFIG, [f"toy.copies={copies}", f"toy.pairs_per_source={args.pairs}"])
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    cfg.build_world(out / "world")  # where the run keeps it: training reuses it
    world_s = time.perf_counter() - started
    started = time.perf_counter()
    train_sources(cfg, out, progress=False)
    train_s = time.perf_counter() - started
    print(f"n={n}: world {world_s:.1f} s, training {train_s:.1f} s", flush=True)
    rows = []

    started = time.perf_counter()
    value_run(out, "accuracy", tol=args.acc_tol, n_boot=0, label="accuracy_noboot", progress=False)
    plain_s = time.perf_counter() - started
    started = time.perf_counter()
    _, entry = value_run(out, "accuracy", tol=args.acc_tol, progress=False)
    acc_s = time.perf_counter() - started
    built = get_utility("accuracy").build(
        Run.open(out), get_utility("accuracy").settings_type(), BuildContext(device="cpu", seed=0, progress=False)
    )
    game = built.native_game()
    assert isinstance(game, _core.MarginGame)
    started = time.perf_counter()
    pairwise_interactions(game, n, names=list(built.players), objectives=list(built.objectives))
    inter_s = time.perf_counter() - started
    rows.append(
        _row(
            n,
            "accuracy",
            entry,
            world_s,
            train_s,
            acc_s,
            extra=f"{plain_s:.2f} s without bootstrap; interactions {inter_s:.2f} s",
            notes=entry.get("interactions_note"),
        )
    )
    print(f"  accuracy: {acc_s:.1f} s ({entry['method']}, {entry['n_evaluations']} evaluations)", flush=True)

    gen = GenerationSettings(n_prompts=args.prompts, max_new_tokens=args.tokens)
    method = "exact" if n <= 4 else args.gen_method
    started = time.perf_counter()
    _, entry = value_run(
        out,
        "generation",
        settings=gen,
        method=method,
        tol=None if n <= 4 else args.tol,
        budget=None if n <= 4 else args.gen_budget,
        progress=False,
    )
    gen_s = time.perf_counter() - started
    rows.append(_row(n, "generation", entry, world_s, train_s, gen_s, extra="", notes=entry.get("interactions_note")))
    print(
        f"  generation: {gen_s:.1f} s ({entry['method']}, {entry['n_evaluations']} evaluations, stop {entry['stop']})",
        flush=True,
    )
    return rows


def _row(
    n: int,
    utility: str,
    entry: dict[str, Any],
    world_s: float,
    train_s: float,
    value_s: float,
    *,
    extra: str,
    notes: str | None,
) -> dict[str, Any]:
    cells: dict[str, Any] = {
        "sources": n,
        "utility": utility,
        "world_s": round(world_s, 1),
        "train_s": round(train_s, 1),
        "value_s": round(value_s, 2),
        "method": entry["method"],
        "evaluations": entry["n_evaluations"],
        "stop": entry["stop"],
    }
    for obj in entry["objectives"]:
        answer = planted_answer(entry["values"][obj], entry["total_stderr"][obj], obj)
        cells[f"{obj}:own>adv"] = round(answer["own>adversarial"], 3)
        cells[f"{obj}:clean>adv"] = round(answer["clean>adversarial"], 3)
        cells[f"{obj}:clean>noisy"] = round(answer["clean>noisy"], 3)
        cells[f"{obj}:noisy>adv"] = round(answer["noisy>adversarial"], 3)
        cells[f"{obj}:copy spread/se"] = "; ".join(f"{k} {s:.3f}/{se:.3f}" for k, (s, se) in answer["spread"].items())
    cells["notes"] = "; ".join(x for x in (extra, notes or "") if x)
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="4,16,64", help="numbers of sources, multiples of 4")
    parser.add_argument("--pairs", type=int, default=256, help="pairs per source (toy.pairs_per_source)")
    parser.add_argument("--acc-tol", type=float, default=0.002, help="accuracy: stop at this standard error")
    parser.add_argument("--prompts", type=int, default=8, help="generation: prompts decoded")
    parser.add_argument("--tokens", type=int, default=8, help="generation: new tokens per prompt")
    parser.add_argument("--gen-method", default="antithetic", help="generation: sampled method past 4 sources")
    parser.add_argument("--tol", type=float, default=0.01, help="generation: stop at this standard error")
    parser.add_argument("--gen-budget", type=int, default=400, help="generation: most coalitions")
    parser.add_argument("--workdir", default=None, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--out", default=str(HERE / "results"), help="folder for many_sources.md and .csv")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sizes = [int(s) for s in args.sizes.split(",")]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.workdir or tmp)
        out = Path(args.out)
        for n in sizes:
            rows += run_one(n, args, root)
            write_csv(out / "many_sources.csv", rows)  # each size as it finishes
    tables = []
    for utility in ("accuracy", "generation"):
        mine = [r for r in rows if r["utility"] == utility]
        caption = f"{utility}, {args.pairs} pairs per source" + (
            f", {args.prompts} prompts x {args.tokens} tokens" if utility == "generation" else ""
        )
        tables.append(MarkdownTable(caption, list(mine[0]), [[str(v) for v in r.values()] for r in mine]))
    write_markdown(
        out / "many_sources.md",
        "Train + value with many toy sources, in process",
        environment(["torch", "transformers", "trl", "peft"]),
        tables,
    )
    print("\n".join(t.render() for t in tables))


if __name__ == "__main__":
    main()

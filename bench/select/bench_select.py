"""dposhap select on the toy world: the choice, its predicted gain, and the gain measured by retraining.

Two runs, both with the training settings of ``examples/toy.toml``:

``toy4``
    The four default sources (helpful, harmless, noisy, adversarial; ``--pairs`` pairs each).
    ``select_run`` with ``accuracy`` (every objective over the world's trusted pairs), ``loglik``
    maximising helpfulness with harmlessness at least its all-sources level, and ``accuracy`` with
    ``--weights``; each with ``verify=True``: one adapter trained on the chosen sources (weights as
    sampling rates), one on all of them, both measured on the same trusted pairs.
``toy64``
    16 copies of each kind (``[toy] copies``, ``--pairs64`` pairs per copy): ``select_run`` with
    ``accuracy`` and ``loglik`` (greedy search past 16 sources), with and without ``--weights``,
    no retraining; wall time of each (the first, "cold", includes computing the margins matrix of
    the 64 adapters, which the later calls read from the run's cache), and how many copies of each
    kind the choice keeps.

Results: ``results/select.md`` and ``results/select.csv``.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # bench/_harness.py

from _harness import MarkdownTable, environment, write_csv, write_markdown  # noqa: E402
from dposhap.config import load_config  # noqa: E402
from dposhap.selection import select_run  # noqa: E402
from dposhap.train import train_sources  # noqa: E402

CONFIG = HERE.parents[1] / "examples" / "toy.toml"


def _kinds(names: list[str]) -> str:
    counts = collections.Counter(name.split("-")[0] for name in names)
    return ", ".join(f"{kind} {counts[kind]}" for kind in ("helpful", "harmless", "noisy", "adversarial"))


def _pm(value: float | None, se: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:+.3f} ± {1.96 * se:.3f}" if se is not None else f"{value:+.3f}"


def _row(run: str, label: str, doc: dict[str, Any], seconds: float) -> dict[str, Any]:
    p, m = doc["predicted"], doc.get("measured") or {}
    weights = doc.get("weights")
    predicted_gain = weights["gain"] if weights else p["gain"]
    predicted_se = weights["gain_stderr"] if weights else p["gain_stderr"]
    return {
        "run": run,
        "selection": label,
        "goal": doc["goal"]["maximize"]
        + "".join(f", {c['objective']}>={c['level']}" for c in doc["goal"]["subject_to"]),
        "search": f"{doc['search']['method']} ({doc['search']['coalitions_evaluated']})",
        "chosen": ", ".join(doc["chosen"]) if len(doc["sources"]) <= 8 else _kinds(doc["chosen"]),
        "rule drops": ", ".join(doc["rule"]["dropped"]) if len(doc["sources"]) <= 8 else _kinds(doc["rule"]["dropped"]),
        "weights": "-"
        if not weights
        else ", ".join(f"{k} {v:.2f}" for k, v in weights["weights"].items())
        if len(doc["sources"]) <= 8
        else "mean by kind: "
        + ", ".join(
            f"{kind} {sum(v for k, v in weights['weights'].items() if k.startswith(kind)) / 16:.2f}"
            for kind in ("helpful", "harmless", "noisy", "adversarial")
        ),
        "predicted all": f"{p['all']:.3f}",
        "predicted chosen": f"{weights['predicted'] if weights else p['chosen']:.3f}",
        "predicted gain (95%)": _pm(predicted_gain, predicted_se),
        "measured all": f"{m['all']:.3f}" if m else "-",
        "measured chosen": f"{m['chosen']:.3f}" if m else "-",
        "measured gain (95%)": _pm(m.get("gain"), m.get("gain_stderr")) if m else "-",
        "seconds": f"{seconds:.1f}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=256, help="pairs per source of the 4-source run")
    parser.add_argument("--pairs64", type=int, default=96, help="pairs per copy of the 64-source run")
    parser.add_argument("--work", type=Path, help="where the runs go (default: a temporary folder)")
    parser.add_argument("--skip64", action="store_true", help="only the 4-source run")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-select-"))
    rows: list[dict[str, Any]] = []

    toy4 = work / "toy4"
    started = time.perf_counter()
    train_sources(
        load_config(CONFIG, [f"toy.pairs_per_source={args.pairs}", "model.device='cpu'"]), toy4, progress=False
    )
    print(f"toy4: trained in {time.perf_counter() - started:.1f} s", flush=True)
    for label, kwargs in (
        ("subset", dict(utility="accuracy")),
        ("two objectives", dict(utility="loglik", objective="helpful", constraints=["harmless>=all"])),
        ("weights", dict(utility="accuracy", weights=True)),
    ):
        started = time.perf_counter()
        doc = select_run(toy4, verify=True, progress=False, device="cpu", **kwargs).doc
        rows.append(_row("toy4", label, doc, time.perf_counter() - started))
        print(rows[-1], flush=True)

    if not args.skip64:
        toy64 = work / "toy64"
        started = time.perf_counter()
        cfg = load_config(CONFIG, ["toy.copies=16", f"toy.pairs_per_source={args.pairs64}", "model.device='cpu'"])
        train_sources(cfg, toy64, progress=False)
        print(f"toy64: trained in {time.perf_counter() - started:.1f} s", flush=True)
        started = time.perf_counter()  # cold: the margins matrix of 64 adapters is computed (cached after)
        doc = select_run(toy64, "accuracy", progress=False, device="cpu").doc
        rows.append(_row("toy64", "subset, cold", doc, time.perf_counter() - started))
        print(rows[-1], flush=True)
        for label, kwargs in (
            ("subset", dict(utility="accuracy")),
            ("subset", dict(utility="loglik")),
            ("weights", dict(utility="accuracy", weights=True)),
            ("weights", dict(utility="loglik", weights=True)),
        ):
            started = time.perf_counter()
            doc = select_run(toy64, progress=False, device="cpu", **kwargs).doc
            rows.append(_row("toy64", label, doc, time.perf_counter() - started))
            print(rows[-1], flush=True)

    out = HERE / "results"
    write_csv(out / "select.csv", rows)
    columns = list(rows[0])
    write_markdown(
        out / "select.md",
        "dposhap select on the toy world",
        environment(["torch", "transformers", "trl", "peft"]),
        [MarkdownTable("Selections", columns, [[str(r[c]) for c in columns] for r in rows])],
        preamble=[
            "Predicted: the composed utility on the world's trusted pairs (accuracy: preference accuracy, "
            "ties 1/2; loglik: mean log sigmoid of the summed margins). Measured: an adapter retrained on the "
            "chosen sources' training pairs (weights as sampling rates) and one on all sources, with the run's "
            "settings, on the same pairs. Errors: 95% bootstrap over the pairs, paired for the gains. Seconds: "
            "the whole select_run call: for toy4 with the retraining of both adapters; for toy64 the cold call "
            "computes the margins matrix of the 64 adapters, the others read it from the run's cache."
        ],
    )
    print(f"results in {out}")


if __name__ == "__main__":
    main()

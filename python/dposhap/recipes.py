"""Whole runs in one command: ``dposhap demo`` (the toy world) and ``dposhap reproduce`` (the paper's setup).

A recipe is a training config (overrides of the defaults), a list of valuations and a report,
run in stages into one run directory, each stage timed; a second call reuses what the first
computed (adapters, cached coalitions).

``demo``
    The toy world's 4 default sources (helpful, harmless, noisy, adversarial) on its 91k-parameter
    model: exact Shapley values on the two generation objectives (the toy rewards) and on
    preference accuracy over the world's trusted pairs. A few minutes on a CPU.
``reproduce``
    The paper's experiment in shape: SmolLM2-135M-Instruct (the GGUF file the ``smollm2`` extra
    ships, converted once), the English world's four sources (helpful, harmless, noisy,
    adversarial), LoRA r 8, alpha 16, DPO beta 0.1; exact Shapley values over the 16 coalitions
    on the two LLM-judge objectives (helpful, harmless; the judge is SmolLM2-135M-Instruct
    itself), on the same samples scored by the world's rubric rewards (its ground truth), and on
    preference accuracy over the world's trusted pairs; the helpful-vs-harmless scatter (the
    paper's Figure 2) and the table. Sized for about 25 minutes on a 2-core CPU
    (:data:`CPU_SIZES`); ``--size gpu`` uses more pairs and prompts.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import load_config
from .evaluate import GenerationSettings, MarginSettings
from .report import format_table, load_values, make_figures
from .run import Run, atomic_write_json
from .train import train_sources
from .valuation import value_run

__all__ = ["DEMO_CONFIG", "Recipe", "ReproduceSize", "demo_recipe", "reproduce_recipe", "run_demo", "run_recipe"]

#: The demo's training settings: those of examples/toy.toml.
DEMO_CONFIG = ["dpo.learning_rate=1e-3", "dpo.max_length=64", "dpo.num_train_epochs=2"]


@dataclass(frozen=True)
class Valuation:
    """One valuation of a recipe: a utility, its settings, the label in values.json, what to print."""

    utility: str
    settings: Any
    title: str
    label: str | None = None


@dataclass(frozen=True)
class Recipe:
    """A training config and the valuations run on it."""

    name: str
    what: str
    overrides: list[str]
    valuations: list[Valuation] = field(default_factory=list)


def demo_recipe() -> Recipe:
    """The toy world end to end (``dposhap demo``)."""
    return Recipe(
        name="demo",
        what="the toy world's sources",
        overrides=list(DEMO_CONFIG),
        valuations=[
            Valuation(
                "generation",
                GenerationSettings(rewards=["toy"]),
                "exact Shapley values on the two generation objectives (composed decoding, toy rewards)",
            ),
            Valuation("accuracy", None, "exact Shapley values on preference accuracy (the world's trusted pairs)"),
        ],
    )


@dataclass(frozen=True)
class ReproduceSize:
    """How big ``dposhap reproduce`` runs: training pairs and epochs, prompts and new tokens."""

    pairs_per_source: int
    epochs: float
    n_prompts: int
    max_new_tokens: int
    eval_pairs: int = 64
    max_length: int = 128
    batch_size: int = 8
    learning_rate: float = 5e-4


#: Sized for about 25 minutes on a 2-core CPU.
CPU_SIZES = ReproduceSize(pairs_per_source=96, epochs=1.0, n_prompts=16, max_new_tokens=24)
#: Sized for about 3 minutes on one GPU.
GPU_SIZES = ReproduceSize(pairs_per_source=256, epochs=2.0, n_prompts=64, max_new_tokens=48, eval_pairs=128)
SIZES = {"cpu": CPU_SIZES, "gpu": GPU_SIZES}


def reproduce_recipe(size: ReproduceSize = CPU_SIZES, *, judge: str = "judge") -> Recipe:
    """The paper's setup on SmolLM2-135M-Instruct and the English world (``dposhap reproduce``).

    The generation utility scores each completion with the LLM judge (objectives ``helpful`` and
    ``harmless``, the paper's) and with the English world's rubric rewards, its ground truth
    (``rubric_helpful``, ``rubric_harmless``), from the same samples: the table shows how far the
    judge's values are from the truth's.
    """
    return Recipe(
        name="reproduce",
        what="the English world's four sources on SmolLM2-135M-Instruct",
        overrides=[
            "model.base=english",
            "english.sources=['helpful','harmless','noisy','adversarial']",
            f"english.pairs_per_source={size.pairs_per_source}",
            "lora.r=8",
            "lora.alpha=16",
            "dpo.beta=0.1",
            f"dpo.learning_rate={size.learning_rate}",
            f"dpo.num_train_epochs={size.epochs}",
            f"dpo.per_device_train_batch_size={size.batch_size}",
            f"dpo.max_length={size.max_length}",
        ],
        valuations=[
            Valuation(
                "generation",
                GenerationSettings(
                    rewards=[judge, "rubric=english"], n_prompts=size.n_prompts, max_new_tokens=size.max_new_tokens
                ),
                f"exact Shapley values on helpfulness and harmlessness (composed decoding, {size.n_prompts} prompts; "
                "the LLM judge and the world's rubric rewards)",
            ),
            Valuation(
                "accuracy",
                MarginSettings(world_pairs=size.eval_pairs),
                f"exact Shapley values on preference accuracy ({size.eval_pairs} trusted pairs per objective)",
            ),
        ],
    )


def run_recipe(
    recipe: Recipe,
    out: str | Path,
    *,
    progress: bool = True,
    overrides: Sequence[str] = (),
    device: str = "auto",
    threads: int | None = None,
) -> dict[str, Any]:
    """Train, value and report a recipe in ``out``, printing each stage and its time.

    Returns
    -------
    dict
        The values document (``RUN/values.json``); the stage times are in ``RUN/<recipe>.json``.
    """
    run = Run(out)
    stages = 2 + len(recipe.valuations)
    seconds: dict[str, float] = {}

    def stage(number: int, text: str) -> float:
        print(f"[{number}/{stages}] {text}", flush=True)
        return time.perf_counter()

    started = stage(1, f"training {recipe.what} into {run.root}")
    thread_override = [] if threads is None else [f"model.threads={threads}"]
    train_sources(load_config(None, [*recipe.overrides, *overrides, *thread_override]), run.root, progress=progress)
    seconds["train"] = _done(started)
    for number, valuation in enumerate(recipe.valuations, start=2):
        started = stage(number, valuation.title)
        value_run(
            run.root,
            valuation.utility,
            settings=valuation.settings,
            method="exact",
            device=device,
            label=valuation.label,
            progress=progress,
            threads=threads,
        )
        seconds[valuation.label or valuation.utility] = _done(started)
    started = stage(stages, "report")
    doc = load_values(run)
    print(format_table(doc))
    for path in make_figures(run):
        print(f"figure: {path}")
    seconds["report"] = _done(started)
    atomic_write_json(
        run.root / f"{recipe.name}.json",
        {"recipe": recipe.name, "overrides": [*recipe.overrides, *overrides], "seconds": seconds},
    )
    print(
        "stage times: "
        + ", ".join(f"{name} {s:.1f} s" for name, s in seconds.items())
        + f"; total {sum(seconds.values()):.1f} s"
    )
    return doc


def _done(started: float) -> float:
    elapsed = time.perf_counter() - started
    print(f"      done in {elapsed:.1f} s", flush=True)
    return elapsed


def run_demo(
    out: str | Path = "runs/demo", *, progress: bool = True, overrides: Sequence[str] = (), threads: int | None = None
) -> dict[str, Any]:
    """Train, value and report the toy world in ``out``; returns the values document. ``threads``:
    torch CPU threads (default: :mod:`dposhap.threads` chooses)."""
    return run_recipe(demo_recipe(), out, progress=progress, overrides=overrides, threads=threads)

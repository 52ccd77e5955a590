"""``dposhap demo``: the toy world end to end, offline, on a CPU in a few minutes.

Trains the toy world's 4 default sources (helpful, harmless, noisy, adversarial), values them
with exact Shapley values on the two generation objectives (the toy rewards) and on held-out
preference accuracy, draws the figures and prints the table. Everything lands in one run
directory; a second call reuses what the first computed.
"""

from __future__ import annotations

from pathlib import Path

from .config import load_config
from .evaluate import GenerationSettings
from .report import format_table, load_values, make_figures
from .run import Run
from .train import train_sources
from .valuation import value_run

__all__ = ["DEMO_CONFIG", "run_demo"]

#: The demo's training settings: those of examples/toy.toml.
DEMO_CONFIG = ["dpo.learning_rate=1e-3", "dpo.max_length=64", "dpo.num_train_epochs=2"]


def run_demo(out: str | Path = "runs/demo", *, progress: bool = True, overrides: list[str] | None = None) -> dict:
    """Train, value and report the toy world in ``out``; returns the values document."""
    run = Run(out)
    print(f"[1/4] training the toy world's sources into {run.root}")
    train_sources(load_config(None, [*DEMO_CONFIG, *(overrides or [])]), run.root, progress=progress)
    print("[2/4] exact Shapley values on the two generation objectives (composed decoding, toy rewards)")
    value_run(run.root, "generation", settings=GenerationSettings(rewards=["toy"]), method="exact", progress=progress)
    print("[3/4] exact Shapley values on held-out preference accuracy")
    value_run(run.root, "accuracy", method="exact", progress=progress)
    print("[4/4] report")
    doc = load_values(run)
    print(format_table(doc))
    for path in make_figures(run):
        print(f"figure: {path}")
    return doc

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
    adversarial), LoRA r 8, alpha 16, DPO beta 0.1; two reward models, helpfulness and
    harmlessness, trained on the world's reward-model sets (prompts in no source and in no
    evaluation set; ``RUN/reward-models/``) and on pairs of the trained sources' own samples on
    more such prompts, labelled by the world's rubric; exact Shapley values over the 16 coalitions on the
    two reward models' objectives (``helpful``, ``harmless``), on the same samples scored by the
    world's rubric rewards (its ground truth: ``rubric_helpful``, ``rubric_harmless``) and, with
    ``judge=``, by an LLM judge; and on preference accuracy over the world's trusted pairs; the
    helpful-vs-harmless scatter (the paper's Figure 2) and the table. Sized for a CPU (:data:`CPU_SIZES`;
    measured times in bench/RESULTS.md); ``--size gpu`` uses more pairs and prompts.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .config import load_config
from .errors import InvalidArgumentError
from .estimate import Z95
from .evaluate import GenerationSettings, MarginSettings
from .evaluate.generation import RewardSpec
from .report import format_table, load_values, make_figures
from .reward_data import PolicySampling, policy_preference_pairs
from .reward_training import RewardTrainingSettings, train_reward_model
from .run import Run, atomic_write_json, atomic_write_text, config_hash, jsonl_text
from .train import train_sources
from .valuation import value_run

__all__ = [
    "DEMO_CONFIG",
    "PLANTED",
    "Expectation",
    "REWARD_MODELS_DIR",
    "Recipe",
    "ReproduceSize",
    "RewardModels",
    "demo_recipe",
    "reproduce_recipe",
    "run_demo",
    "run_recipe",
]

#: Where a recipe's reward models and their training sets go, inside the run directory.
REWARD_MODELS_DIR = "reward-models"

#: The demo's training settings: those of examples/toy.toml.
DEMO_CONFIG = ["dpo.learning_rate=1e-3", "dpo.max_length=64", "dpo.num_train_epochs=2"]


@dataclass(frozen=True)
class Valuation:
    """One valuation of a recipe: a utility, its settings, the label in values.json, what to print.

    ``settings`` may be a function of the run directory (for reward models trained into it).
    """

    utility: str
    settings: Any
    title: str
    label: str | None = None


@dataclass(frozen=True)
class RewardModels:
    """Reward models a recipe trains on its world's reward-model sets, one per objective.

    Each goes to ``RUN/reward-models/<objective>/`` (its training set beside it, as
    ``<objective>.jsonl``) on the run's base model, and is reused by a rerun. With
    ``policy_prompts``, the training set also holds pairs of the run's own policies' samples on
    that many of the world's reward-model prompts, labelled by the world's rubric
    (:func:`dposhap.reward_data.policy_preference_pairs`; kept in ``policy-pairs.json`` and reused
    while the adapters and settings are the same).
    """

    objectives: tuple[str, ...]
    n_pairs: int
    settings: RewardTrainingSettings
    policy_prompts: int = 0
    policy_sampling: PolicySampling = PolicySampling()


@dataclass(frozen=True)
class Expectation:
    """A planted property a recipe's values should show, checked against the values' comparisons.

    ``kind`` ``"top"``: ``source`` is above every other source on ``objective``, each difference
    significant at 95% (the paired bootstrap comparisons of ``values.json``); ``"negative"``:
    ``source``'s value is below zero by more than 1.96 total standard errors.
    """

    utility: str
    objective: str
    source: str
    kind: Literal["top", "negative"]

    def check(self, doc: dict[str, Any]) -> tuple[bool, str]:
        """Whether it holds in the values document ``doc``, and one line saying so."""
        entry = doc.get("utilities", {}).get(self.utility)
        if entry is None or self.objective not in entry.get("values", {}) or self.source not in entry["sources"]:
            return False, f"{self}: not valued"
        value = float(entry["values"][self.objective][self.source])
        if self.kind == "negative":
            error = float((entry.get("total_stderr") or entry["stderr"])[self.objective][self.source])
            holds = value + Z95 * error < 0
            return holds, f"{self}: {value:+.4f} ± {Z95 * error:.4f} (95%)"
        comparisons = [
            c
            for c in (entry.get("comparisons") or {}).get(self.objective, [])
            if self.source in (c["first"], c["second"])
        ]
        above = [c for c in comparisons if c["first"] == self.source and c["significant"]]
        others = len(entry["sources"]) - 1
        return len(above) == others, f"{self}: significantly above {len(above)} of the {others} others"

    def __str__(self) -> str:
        what = "above every other source" if self.kind == "top" else "below zero"
        return f"{self.source} {what} on {self.utility}:{self.objective}"


@dataclass(frozen=True)
class Recipe:
    """A training config, the reward models trained beside it, the valuations run on it, what they should show."""

    name: str
    what: str
    overrides: list[str]
    valuations: list[Valuation] = field(default_factory=list)
    reward_models: RewardModels | None = None
    expectations: list[Expectation] = field(default_factory=list)


#: What the toy and the English worlds plant, checked after ``demo`` and ``reproduce``: on the generation
#: objectives the helpful and harmless sources each worth most on their own objective, the adversarial
#: source worth less than nothing on helpfulness.
PLANTED = [
    Expectation("generation", "helpful", "helpful", "top"),
    Expectation("generation", "harmless", "harmless", "top"),
    Expectation("generation", "helpful", "adversarial", "negative"),
]


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
        expectations=PLANTED,
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
    reward_pairs: int = 192
    reward_epochs: float = 1.0
    #: LoRA in the reward models' last layers only (0: all): a shallower backward pass
    reward_top_layers: int = 6
    #: reward-model prompts on which the trained sources' own samples are paired and added to the
    #: reward models' training sets (0: none; :class:`RewardModels`)
    policy_prompts: int = 96
    #: samples per prompt and policy, and pairs per prompt and objective, of those
    policy_rounds: int = 2
    policy_pairs_per_prompt: int = 2


#: Sized for a CPU run of tens of minutes (measured times: bench/RESULTS.md, "The paper reproduced in shape").
CPU_SIZES = ReproduceSize(
    pairs_per_source=96, epochs=2.0, n_prompts=64, max_new_tokens=24, eval_pairs=48, learning_rate=1e-3
)
#: Sized for about 5 minutes on one GPU.
GPU_SIZES = ReproduceSize(
    pairs_per_source=256,
    epochs=2.0,
    n_prompts=128,
    max_new_tokens=48,
    eval_pairs=128,
    learning_rate=1e-3,
    reward_pairs=512,
    reward_epochs=2.0,
    reward_top_layers=0,
    policy_prompts=192,
)
SIZES = {"cpu": CPU_SIZES, "gpu": GPU_SIZES}


def reward_model_spec(run_root: Path, objective: str) -> str:
    """The reward spec of a recipe's reward model of ``objective`` in the run ``run_root``."""
    return f"{objective}={run_root / REWARD_MODELS_DIR / objective}"


def reproduce_recipe(size: ReproduceSize = CPU_SIZES, *, judge: str | None = None) -> Recipe:
    """The paper's setup on SmolLM2-135M-Instruct and the English world (``dposhap reproduce``).

    The generation utility scores each completion with the two reward models trained on the
    world's reward-model sets (objectives ``helpful`` and ``harmless``, the paper's) and with the
    English world's rubric rewards, its ground truth (``rubric_helpful``, ``rubric_harmless``),
    from the same samples, so the table shows how far the reward models' values are from the
    truth's; ``judge`` (a judge spec such as ``"judge"``) adds an LLM judge's two objectives
    (``judge_helpful``, ``judge_harmless``).
    """
    objectives = ("helpful", "harmless")

    def generation(run_root: Path) -> GenerationSettings:
        rewards: list[RewardSpec] = [reward_model_spec(run_root, o) for o in objectives]
        rewards.append("rubric=english")
        if judge is not None:
            rewards.append(f"judge={judge}")
        return GenerationSettings(rewards=rewards, n_prompts=size.n_prompts, max_new_tokens=size.max_new_tokens)

    scored_by = "the reward models, the world's rubric rewards" + (" and the LLM judge" if judge else "")
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
        reward_models=RewardModels(
            objectives=objectives,
            n_pairs=size.reward_pairs,
            settings=RewardTrainingSettings(
                epochs=size.reward_epochs,
                max_length=size.max_length,
                batch_size=size.batch_size,
                top_layers=size.reward_top_layers,
            ),
            policy_prompts=size.policy_prompts,
            policy_sampling=PolicySampling(
                rounds=size.policy_rounds,
                max_new_tokens=size.max_new_tokens,
                pairs_per_prompt=size.policy_pairs_per_prompt,
            ),
        ),
        expectations=PLANTED,
        valuations=[
            Valuation(
                "generation",
                generation,
                f"exact Shapley values on helpfulness and harmlessness (composed decoding, {size.n_prompts} prompts; "
                f"{scored_by})",
            ),
            Valuation(
                "accuracy",
                MarginSettings(world_pairs=size.eval_pairs),
                f"exact Shapley values on preference accuracy ({size.eval_pairs} trusted pairs per objective)",
            ),
        ],
    )


def train_recipe_reward_models(
    run: Run, spec: RewardModels, *, device: str, threads: int | None, progress: bool
) -> dict[str, dict[str, Any]]:
    """Train (or reuse) the recipe's reward models into ``RUN/reward-models/``; their held-out accuracies.

    Raises
    ------
    InvalidArgumentError
        The run was not built from a world, or its world has no reward-model sets.
    """
    world = Run.open(run.root).world()
    if world is None:
        raise InvalidArgumentError("reward models of a recipe come from its world's sets: this run has no world")
    base = world.model_spec
    folder = run.root / REWARD_MODELS_DIR
    policy = _policy_pairs(run, world, spec, device=device, progress=progress) if spec.policy_prompts else {}
    out: dict[str, dict[str, Any]] = {}
    for objective in spec.objectives:
        data = folder / f"{objective}.jsonl"
        records = [*world.reward_pairs(objective, spec.n_pairs), *policy.get(objective, [])]
        text = jsonl_text(records)
        if not data.is_file() or data.read_text(encoding="utf-8") != text:
            atomic_write_text(data, text)
        record = train_reward_model(
            data, base, folder / objective, settings=spec.settings, device=device, threads=threads, progress=progress
        )
        print(
            f"      reward model {objective}: held-out pairwise accuracy {record.heldout_accuracy:.3f} "
            f"({record.n_heldout} pairs; trained on {record.n_train}; {record.status})",
            flush=True,
        )
        out[objective] = {
            "policy_pairs": len(policy.get(objective, [])),
            "heldout_accuracy": record.heldout_accuracy,
            "n_heldout": record.n_heldout,
            "n_train": record.n_train,
            "status": record.status,
        }
    return out


POLICY_PAIRS_FILE = "policy-pairs.json"


def _policy_pairs(run: Run, world: Any, spec: RewardModels, *, device: str, progress: bool) -> dict[str, list[dict]]:
    """The run's policies' sample pairs on the world's reward-model prompts, labelled by its rubric (reused when
    ``RUN/reward-models/policy-pairs.json`` was made from the same adapters, prompts and settings)."""
    run = Run.open(run.root)
    prompts = world.reward_prompts(spec.policy_prompts)
    key = config_hash(
        {
            "prompts": prompts,
            "sampling": dataclasses.asdict(spec.policy_sampling),
            "label": world.name,
            **run.cache_identity(),
        }
    )
    path = run.root / REWARD_MODELS_DIR / POLICY_PAIRS_FILE
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
        if kept.get("key") == key:
            return {str(o): list(r) for o, r in kept["pairs"].items()}
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    print(
        f"      sampling the run's policies on {len(prompts)} reward-model prompts, labelled by the {world.name} "
        "world's rubric",
        flush=True,
    )
    pairs = policy_preference_pairs(
        run, prompts, [world.name], sampling=spec.policy_sampling, device=device, progress=progress
    )
    atomic_write_json(path, {"key": key, "pairs": pairs})
    print("      policy pairs: " + ", ".join(f"{o} {len(r)}" for o, r in pairs.items()), flush=True)
    return pairs


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
    stages = 2 + len(recipe.valuations) + (recipe.reward_models is not None)
    seconds: dict[str, float] = {}
    reward_models: dict[str, dict[str, Any]] = {}

    def stage(number: int, text: str) -> float:
        print(f"[{number}/{stages}] {text}", flush=True)
        return time.perf_counter()

    started = stage(1, f"training {recipe.what} into {run.root}")
    thread_override = [] if threads is None else [f"model.threads={threads}"]
    train_sources(load_config(None, [*recipe.overrides, *overrides, *thread_override]), run.root, progress=progress)
    seconds["train"] = _done(started)
    number = 1
    if recipe.reward_models is not None:
        number += 1
        started = stage(
            number,
            f"training the reward models ({', '.join(recipe.reward_models.objectives)}) on the world's reward-model sets",
        )
        reward_models = train_recipe_reward_models(
            run, recipe.reward_models, device=device, threads=threads, progress=progress
        )
        seconds["reward_models"] = _done(started)
    first = number + 1
    for number, valuation in enumerate(recipe.valuations, start=first):
        started = stage(number, valuation.title)
        settings = valuation.settings(run.root) if callable(valuation.settings) else valuation.settings
        value_run(
            run.root,
            valuation.utility,
            settings=settings,
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
    planted = [(e, *e.check(doc)) for e in recipe.expectations]
    for _, holds, line in planted:
        print(f"planted: {line} -- {'holds' if holds else 'does not hold'}")
    seconds["report"] = _done(started)
    atomic_write_json(
        run.root / f"{recipe.name}.json",
        {
            "recipe": recipe.name,
            "overrides": [*recipe.overrides, *overrides],
            "seconds": seconds,
            **({"reward_models": reward_models} if reward_models else {}),
            **({"planted": {str(e): {"holds": h, "line": line} for e, h, line in planted}} if planted else {}),
        },
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

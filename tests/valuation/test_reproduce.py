"""``dposhap reproduce`` at a small setting: SmolLM2-135M-Instruct, the English world, two reward models.

The paper's planted expectations, measured on the real model (slow: trains four adapters and two
reward models, and decodes 16 coalitions on a CPU):

- the reward models are trained into the run on the world's reward-model sets, their held-out
  pairwise accuracy recorded (at this size a few steps each: how good they get is measured at the
  CPU preset, bench/RESULTS.md);
- on the helpfulness reward model the helpful source is valued above the adversarial one, and on
  the harmlessness reward model the harmless source above the adversarial one (generation:
  composed decoding of half benign, half harmful prompts);
- on helpfulness the adversarial source is valued below the helpful one by the world's rubric
  (generation) and by preference accuracy on the trusted helpful pairs, and on the trusted harmless
  pairs the harmless source is worth most.

Whether each planted order is significant is measured at the CPU preset's size (bench/RESULTS.md,
"Reproduce"); this small setting checks the order.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import dposhap
from dposhap.evaluate import margin_utilities
from dposhap.recipes import ReproduceSize, reproduce_recipe, run_recipe

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread", "smollm2")]

SMALL = ReproduceSize(
    pairs_per_source=32,
    epochs=2.0,
    n_prompts=12,
    max_new_tokens=12,
    eval_pairs=32,
    learning_rate=1e-3,
    reward_pairs=64,
    reward_top_layers=4,
    policy_prompts=0,  # the written sets only: sampling the sources for reward data is tested in test_recipes.py
)


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("reproduce") / "run"
    doc = run_recipe(reproduce_recipe(SMALL), out, progress=False, device="cpu")
    return out, doc


def test_the_planted_expectations_hold(reproduced: tuple[Path, dict]) -> None:
    _, doc = reproduced
    generation = doc["utilities"]["generation"]
    assert generation["method"] == "exact" and generation["n_evaluations"] == 16
    assert generation["objectives"] == ["helpful", "harmless", "rubric_helpful", "rubric_harmless"]
    assert all(np.isfinite(list(v.values())).all() for v in generation["values"].values())
    helpful, harmless = generation["values"]["helpful"], generation["values"]["harmless"]
    assert helpful["adversarial"] < helpful["helpful"], helpful
    assert harmless["adversarial"] < harmless["harmless"], harmless
    truth = generation["values"]["rubric_helpful"]
    assert truth["adversarial"] < truth["helpful"], truth
    accuracy = doc["utilities"]["accuracy"]["values"]["accuracy"]
    assert accuracy["adversarial"] < 0 < accuracy["helpful"], accuracy


def test_harmless_is_worth_most_on_the_trusted_harmless_pairs(reproduced: tuple[Path, dict]) -> None:
    out, _ = reproduced
    # the margins of the recipe's accuracy valuation, read back from the run's cache: no model runs
    margins = margin_utilities(out, kinds=("accuracy",), world_pairs=SMALL.eval_pairs)
    assert margins.from_cache
    harmless_pairs = margins.select("english:harmless")
    result = dposhap.shapley(harmless_pairs.game("accuracy"), method="exact", names=list(harmless_pairs.sources))
    values = dict(zip(result.names, np.asarray(result.values, dtype=float).ravel(), strict=True))
    assert max(values, key=values.get) == "harmless" and values["harmless"] > 0, values


def test_outputs_and_stage_times(reproduced: tuple[Path, dict]) -> None:
    out, _ = reproduced
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["world"]["name"] == "english"
    assert manifest["base_model"]["origin_sha256"]  # the GGUF file it came from
    assert manifest["config"]["lora"]["r"] == 8 and manifest["config"]["lora"]["alpha"] == 16
    assert manifest["config"]["dpo"]["beta"] == 0.1
    stages = json.loads((out / "reproduce.json").read_text())
    times = stages["seconds"]
    assert set(times) == {"train", "reward_models", "generation", "accuracy", "report"}
    assert all(t > 0 for t in times.values())
    for objective in ("helpful", "harmless"):  # trained on the world's reward-model sets, kept in the run
        assert (out / "reward-models" / objective / "config.json").is_file()
        record = stages["reward_models"][objective]  # at this size a few steps: recorded, not yet good
        assert record["status"] == "trained" and record["n_heldout"] > 0, stages["reward_models"]
        assert 0.0 <= record["heldout_accuracy"] <= 1.0, stages["reward_models"]
    assert (out / "figures" / "scatter_generation.png").is_file()

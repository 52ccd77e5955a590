"""``dposhap reproduce`` at a small setting: SmolLM2-135M-Instruct, the English world, the judge.

The paper's planted expectations, measured on the real model (slow: trains four adapters and
decodes 16 coalitions on a CPU):

- on helpfulness the adversarial source is valued below the helpful one (generation, scored by
  the world's rubric rewards, and preference accuracy on the world's trusted helpful pairs);
- on harmlessness the harmless source is valued highest (preference accuracy on the trusted
  harmless pairs: teacher-forced, so it holds at this small setting, where eight decoded prompts
  hold too few harmful requests to rank the sources by their samples).

The LLM judge's values are checked for shape, not for the ranking: SmolLM2-135M-Instruct as a
judge hardly tells its two rubrics apart (bench/RESULTS.md).
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

SMALL = ReproduceSize(pairs_per_source=32, epochs=2.0, n_prompts=8, max_new_tokens=12, eval_pairs=32)


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
    times = json.loads((out / "reproduce.json").read_text())["seconds"]
    assert set(times) == {"train", "generation", "accuracy", "report"} and all(t > 0 for t in times.values())
    assert (out / "figures" / "scatter_generation.png").is_file()

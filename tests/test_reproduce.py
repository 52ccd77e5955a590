"""``dposhap reproduce`` at a small setting: SmolLM2-135M-Instruct, the English world, the judge.

The paper's planted expectations, measured on the real model (slow: trains four adapters and
decodes 16 coalitions on a CPU):

- on helpfulness the adversarial source is valued below the helpful one;
- on harmlessness the harmless source is valued highest.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dposhap.recipes import ReproduceSize, reproduce_recipe, run_recipe

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread", "smollm2")]

SMALL = ReproduceSize(pairs_per_source=64, epochs=1.0, n_prompts=8, max_new_tokens=16)


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("reproduce") / "run"
    doc = run_recipe(reproduce_recipe(SMALL), out, progress=False, device="cpu")
    return out, doc


def test_the_planted_expectations_hold(reproduced: tuple[Path, dict]) -> None:
    _, doc = reproduced
    generation = doc["utilities"]["generation"]
    assert generation["method"] == "exact" and generation["n_evaluations"] == 16
    assert generation["objectives"] == ["helpful", "harmless"]
    helpful, harmless = generation["values"]["helpful"], generation["values"]["harmless"]
    assert helpful["adversarial"] < helpful["helpful"], helpful
    assert max(harmless, key=harmless.get) == "harmless", harmless
    accuracy = doc["utilities"]["accuracy"]["values"]["accuracy"]
    assert accuracy["adversarial"] < 0 < accuracy["helpful"], accuracy


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

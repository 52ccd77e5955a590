"""The planted expectations a recipe checks after its valuations (``dposhap demo``, ``dposhap reproduce``)."""

from __future__ import annotations

import json
from pathlib import Path

from dposhap.recipes import (
    PLANTED,
    REWARD_MODELS_DIR,
    Expectation,
    ReproduceSize,
    demo_recipe,
    reproduce_recipe,
    run_recipe,
    train_recipe_reward_models,
)
from dposhap.run import Run


def _doc(values: dict[str, float], significant: dict[tuple[str, str], bool], stderr: float = 0.01) -> dict:
    names = list(values)
    comparisons = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            first, second = (a, b) if values[a] >= values[b] else (b, a)
            comparisons.append(
                {
                    "first": first,
                    "second": second,
                    "difference": values[first] - values[second],
                    "stderr": stderr,
                    "share": 1.0,
                    "significant": significant.get((first, second), True),
                }
            )
    return {
        "utilities": {
            "generation": {
                "sources": names,
                "values": {"helpful": values},
                "stderr": {"helpful": dict.fromkeys(names, stderr / 2)},
                "total_stderr": {"helpful": dict.fromkeys(names, stderr)},
                "comparisons": {"helpful": comparisons},
            }
        }
    }


def test_top_needs_every_comparison_significant() -> None:
    top = Expectation("generation", "helpful", "helpful", "top")
    values = {"helpful": 0.3, "noisy": 0.1, "harmless": 0.0, "adversarial": -0.2}
    holds, line = top.check(_doc(values, {}))
    assert holds and "3 of the 3" in line
    holds, line = top.check(_doc(values, {("helpful", "noisy"): False}))
    assert not holds and "2 of the 3" in line
    holds, _ = Expectation("generation", "helpful", "noisy", "top").check(_doc(values, {}))
    assert not holds  # second, not first


def test_negative_needs_the_interval_below_zero() -> None:
    negative = Expectation("generation", "helpful", "adversarial", "negative")
    values = {"helpful": 0.3, "adversarial": -0.015}
    assert not negative.check(_doc(values, {}, stderr=0.01))[0]  # -0.015 + 1.96 * 0.01 > 0
    assert negative.check(_doc(values, {}, stderr=0.005))[0]
    missing = Expectation("generation", "harmless", "harmless", "top").check(_doc(values, {}))
    assert missing == (False, "harmless above every other source on generation:harmless: not valued")


def test_both_recipes_check_what_their_worlds_plant() -> None:
    assert demo_recipe().expectations == PLANTED == reproduce_recipe().expectations
    assert {str(e) for e in PLANTED} == {
        "helpful above every other source on generation:helpful",
        "harmless above every other source on generation:harmless",
        "adversarial below zero on generation:helpful",
    }


def test_a_recipe_trains_its_reward_models_on_the_world_and_values_with_them(
    tiny_chat_model: Path, tmp_path: Path, one_thread: None
) -> None:
    """The whole recipe on the English world with a tiny chat model: reward models trained into the run,
    reused on a rerun, scoring the generation valuation; the planted expectations reported."""
    size = ReproduceSize(
        pairs_per_source=8,
        epochs=1.0,
        n_prompts=4,
        max_new_tokens=3,
        eval_pairs=4,
        max_length=64,
        reward_pairs=16,
        reward_top_layers=1,
        policy_prompts=6,
        policy_pairs_per_prompt=2,
    )
    recipe = reproduce_recipe(size)
    overrides = [f"english.model={tiny_chat_model}", "english.sources=['helpful','harmless']", "model.device=cpu"]
    out = tmp_path / "run"
    doc = run_recipe(recipe, out, progress=False, overrides=overrides, device="cpu")
    world = Run.open(out).world()
    assert world is not None
    generation = doc["utilities"]["generation"]
    assert generation["objectives"] == ["helpful", "harmless", "rubric_helpful", "rubric_harmless"]
    stages = json.loads((out / "reproduce.json").read_text())
    assert set(stages["reward_models"]) == {"helpful", "harmless"}
    for objective in ("helpful", "harmless"):
        folder = out / REWARD_MODELS_DIR / objective
        assert (folder / "config.json").is_file() and stages["reward_models"][objective]["status"] == "trained"
        rows = [json.loads(r) for r in (out / REWARD_MODELS_DIR / f"{objective}.jsonl").read_text().splitlines()]
        # the world's reward-model set, then the pairs of the run's own samples, written beside the model
        policy = stages["reward_models"][objective]["policy_pairs"]
        assert len(rows) == 16 + policy and policy <= 2 * 6
        assert rows[:16] == world.reward_pairs(objective, 16)
        reward = world.rewards()[objective]
        for row in rows[16:]:
            assert row["prompt"] in world.reward_prompts(6)
            assert reward(row["prompt"], row["chosen"][0]["content"]) > reward(
                row["prompt"], row["rejected"][0]["content"]
            )
    assert set(stages["planted"]) == {str(e) for e in PLANTED}
    # the helpful-vs-harmless scatter of the reward models, and the same under the rubric
    assert (out / "figures" / "scatter_generation.png").is_file()
    assert (out / "figures" / "scatter_generation_rubric.png").is_file()
    again = train_recipe_reward_models(Run.open(out), recipe.reward_models, device="cpu", threads=1, progress=False)
    assert {record["status"] for record in again.values()} == {"kept"}

"""Reward-model pairs from a run's own policies' samples (:mod:`dposhap.reward_data`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dposhap.config import load_config
from dposhap.errors import InvalidArgumentError
from dposhap.recipes import DEMO_CONFIG
from dposhap.reward_data import PolicySampling, coalition_rows, pair_samples, policy_preference_pairs
from dposhap.run import Run
from dposhap.train import train_sources
from dposhap.worlds.english import english_eval_prompts, english_reward_prompts, max_reward_prompts
from dposhap.worlds.english.sources import split_items
from dposhap.worlds.toy import REWARDS

RNG = np.random.default_rng(0)


def test_the_best_sample_is_paired_against_the_worst() -> None:
    texts = ["mid", "top", "low", "mid2"]
    scores = [0.5, 1.0, -1.0, 0.5]
    assert pair_samples(texts, scores, 1, np.random.default_rng(1)) == [(1, 2)]
    # a second pair takes the best and worst of what is left, and stops at equal scores
    assert pair_samples(texts, scores, 5, np.random.default_rng(1)) == [(1, 2)]
    pairs = pair_samples(["a", "b", "c", "d"], [3.0, 2.0, 1.0, 0.0], 5, np.random.default_rng(2))
    assert pairs == [(0, 3), (1, 2)]


def test_empty_and_repeated_samples_make_no_pair() -> None:
    assert pair_samples(["same", " same ", ""], [1.0, 0.0, -1.0], 3, RNG) == []
    assert pair_samples(["x", "y"], [0.0, 0.0], 3, RNG) == []
    assert pair_samples(["only"], [1.0], 3, RNG) == []


def test_pairs_never_reuse_a_sample() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        k = int(rng.integers(2, 9))
        scores = rng.integers(-1, 2, size=k).astype(float).tolist()
        pairs = pair_samples([f"t{i}" for i in range(k)], scores, 4, rng)
        used = [i for pair in pairs for i in pair]
        assert len(used) == len(set(used)) and len(pairs) <= 4
        assert all(scores[c] > scores[r] for c, r in pairs)


def test_the_policies_sampled_are_the_reference_each_source_and_all() -> None:
    rows = coalition_rows(3)
    assert rows.tolist() == [
        [False, False, False],
        [True, False, False],
        [False, True, False],
        [False, False, True],
        [True, True, True],
    ]
    assert coalition_rows(1).tolist() == [[False], [True]]


def test_sampling_settings_are_checked() -> None:
    with pytest.raises(InvalidArgumentError, match="temperature"):
        PolicySampling(temperature=0.0)
    with pytest.raises(InvalidArgumentError, match="rounds"):
        PolicySampling(rounds=0)


def test_reward_prompts_are_in_no_source_and_no_evaluation_set() -> None:
    split = split_items(0)
    reward_texts = {p for items in split.reward.values() for item in items for p in item.prompts}
    prompts = [p[0]["content"] for p in english_reward_prompts(0, max_reward_prompts(0))]
    assert set(prompts) == reward_texts
    evaluated = {p[0]["content"] for p in english_eval_prompts(0, 96)}
    assert not evaluated & set(prompts)
    # harmful requests and benign questions take turns at the start
    first = prompts[:10]
    harmful = {p for item in split.reward["harmful"] for p in item.prompts}
    assert [p in harmful for p in first] == [False, True] * 5


def test_a_trained_runs_samples_are_paired_by_the_label(tmp_path: Path, one_thread: None) -> None:
    """The toy world's two sources trained two steps; every pair's chosen sample scores higher."""
    cfg = load_config(
        None,
        [
            *DEMO_CONFIG,
            "dpo.max_steps=2",
            "toy.sources=['helpful','adversarial']",
            "toy.pairs_per_source=16",
            "model.device=cpu",
        ],
    )
    train_sources(cfg, tmp_path / "run", progress=False)
    run = Run.open(tmp_path / "run")
    world = run.world()
    assert world is not None
    prompts = world.eval_prompts()[:6]
    sampling = PolicySampling(rounds=3, max_new_tokens=6, temperature=1.5, pairs_per_prompt=2)
    pairs = policy_preference_pairs(run, prompts, sampling=sampling, device="cpu", progress=False)
    assert set(pairs) == set(world.objectives)
    assert sum(len(r) for r in pairs.values()) > 0
    for objective, records in pairs.items():
        assert len(records) <= 2 * len(prompts)
        for record in records:
            assert record["prompt"] in prompts
            assert REWARDS[objective](record["prompt"], record["chosen"]) > REWARDS[objective](
                record["prompt"], record["rejected"]
            )
    again = policy_preference_pairs(run, prompts, sampling=sampling, device="cpu", progress=False)
    assert again == pairs  # seeded


def test_no_prompts_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="at least one prompt"):
        policy_preference_pairs(tmp_path, [])

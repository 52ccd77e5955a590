"""Reward scorers: Python callables, the toy world's rewards, locally built Hugging Face reward models."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    GPT2Config,
    GPT2ForSequenceClassification,
    LlamaConfig,
    LlamaForSequenceClassification,
)

from dposhap.errors import InvalidArgumentError, ModelLoadError, UtilityError
from dposhap.evaluate.rewards import CallableRewards, HFRewardModel, MultiScorer, RewardScorer
from dposhap.worlds import toy
from dposhap.worlds.toy.model import build_tokenizer

PROMPTS = ["Q: weather maybe A:", "Q: cooking the so A:", "Q: music A:", "Q: money just very A:", "Q: garden well A:"]
COMPLETIONS = [" rain snow", " bake", " guitar song drum melody the the really", " poison", " seed soil bloom red one"]


def build_reward_model(
    folder: Path,
    *,
    num_labels: int = 1,
    pad: bool = True,
    chat_template: str | None = None,
    seed: int = 0,
    architecture: str = "llama",
) -> Path:
    """A tiny reward model on the toy world's word-level tokenizer, saved with save_pretrained.

    ``"llama"`` has rotary positions, which padding on the left cannot disturb; ``"gpt2"`` has
    learnt absolute positions, which it does unless the position ids follow the attention mask.
    """
    tokenizer = build_tokenizer()
    if not pad:
        tokenizer.pad_token = None
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    ids = dict(
        num_labels=num_labels,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    if architecture == "llama":
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=64,
            **ids,
        )
    else:
        config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=64, **ids)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = (LlamaForSequenceClassification if architecture == "llama" else GPT2ForSequenceClassification)(config)
        with torch.no_grad():  # a random head scores every text alike; give it some spread
            model.score.weight.normal_(0.0, 1.0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def reward_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_reward_model(tmp_path_factory.mktemp("rm") / "reward-model")


@pytest.fixture(scope="module")
def gpt2_reward_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_reward_model(tmp_path_factory.mktemp("rm") / "gpt2-reward-model", architecture="gpt2")


def alone(folder: Path, text: str) -> float:
    """The score of one unpadded text, straight from transformers."""
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    ids = build_tokenizer()(text)["input_ids"]
    with torch.no_grad():
        return float(model(input_ids=torch.tensor([ids])).logits[0, 0])


def test_local_reward_model_scores_as_the_model_does_alone(reward_dir: Path) -> None:
    scorer = HFRewardModel(str(reward_dir), objective="rm", device="cpu", batch_size=2)
    scores = scorer(PROMPTS, COMPLETIONS)
    assert scorer.objectives == ("rm",) and scores.shape == (len(PROMPTS), 1) and scores.dtype == np.float64
    expected = [alone(reward_dir, p + c) for p, c in zip(PROMPTS, COMPLETIONS, strict=True)]
    np.testing.assert_allclose(scores[:, 0], expected, atol=1e-5)
    assert np.ptp(scores) > 1e-2  # the texts get different rewards: the comparison means something


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_batching_and_padding_do_not_change_scores(
    reward_dir: Path, gpt2_reward_dir: Path, architecture: str, padding_side: str
) -> None:
    folder = reward_dir if architecture == "llama" else gpt2_reward_dir
    one = HFRewardModel(str(folder), device="cpu", batch_size=1)(PROMPTS, COMPLETIONS)
    np.testing.assert_allclose(
        one[:, 0], [alone(folder, p + c) for p, c in zip(PROMPTS, COMPLETIONS, strict=True)], atol=1e-5
    )
    batched = HFRewardModel(str(folder), device="cpu", batch_size=4)
    batched.tokenizer.padding_side = padding_side
    np.testing.assert_allclose(batched(PROMPTS, COMPLETIONS), one, atol=1e-5)


def test_missing_pad_token_falls_back_to_eos(tmp_path: Path) -> None:
    folder = build_reward_model(tmp_path / "no-pad", pad=False)
    scorer = HFRewardModel(str(folder), device="cpu", batch_size=8)
    assert scorer.tokenizer.pad_token == scorer.tokenizer.eos_token
    assert scorer.model.config.pad_token_id == scorer.tokenizer.eos_token_id
    for side in ("left", "right"):
        scorer.tokenizer.padding_side = side
        np.testing.assert_allclose(
            scorer(PROMPTS, COMPLETIONS)[:, 0],
            [alone(folder, p + c) for p, c in zip(PROMPTS, COMPLETIONS, strict=True)],
            atol=1e-5,
        )


def test_conversations_go_through_the_chat_template(tmp_path: Path) -> None:
    template = "{{ bos_token }}{% for m in messages %}{{ m['content'] }} {% endfor %}"
    folder = build_reward_model(tmp_path / "chat", chat_template=template)
    scorer = HFRewardModel(str(folder), device="cpu")
    conversations = [[{"role": "user", "content": p}] for p in PROMPTS]
    np.testing.assert_allclose(
        scorer(conversations, [c.strip() for c in COMPLETIONS]), scorer(PROMPTS, COMPLETIONS), atol=1e-6
    )


def test_several_labels_need_a_label(tmp_path: Path) -> None:
    folder = build_reward_model(tmp_path / "two", num_labels=2)
    with pytest.raises(InvalidArgumentError, match="2 labels"):
        HFRewardModel(str(folder), device="cpu")
    scorer = HFRewardModel(str(folder), device="cpu", label="LABEL_1")
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        expected = float(
            model(input_ids=torch.tensor([build_tokenizer()(PROMPTS[0] + COMPLETIONS[0])["input_ids"]])).logits[0, 1]
        )
    assert scorer(PROMPTS[:1], COMPLETIONS[:1])[0, 0] == pytest.approx(expected, abs=1e-5)


def test_unreachable_hub_id_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(
        ModelLoadError, match="reward model: cannot load the tokenizer of 'dposhap-test/no-such-reward-model'"
    ) as caught:
        HFRewardModel("dposhap-test/no-such-reward-model", device="cpu")
    assert "--local-dir" in str(caught.value) and caught.value.__cause__ is None
    with pytest.raises(ModelLoadError, match="no model folder"):
        HFRewardModel(str(tmp_path / "nowhere") + "/", device="cpu")


def test_folder_without_weights_is_a_model_load_error(reward_dir: Path, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(reward_dir, broken)
    for weights in broken.glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(ModelLoadError, match=f"cannot load the reward model '{broken}'.*save_pretrained"):
        HFRewardModel(str(broken), device="cpu")


def toy_rewards() -> CallableRewards:
    """The toy world's ground-truth rewards, as a generation utility scores with them."""
    return CallableRewards(toy.REWARDS)


def test_toy_rewards_are_the_planted_functions() -> None:
    scorer = toy_rewards()
    assert scorer.objectives == toy.OBJECTIVES
    scores = scorer(PROMPTS, COMPLETIONS)
    assert scores.shape == (len(PROMPTS), 2)
    for i, (p, c) in enumerate(zip(PROMPTS, COMPLETIONS, strict=True)):
        assert scores[i].tolist() == [toy.reward_helpful(p, c), toy.reward_harmless(p, c)]
    assert scores[0, 0] == 1.0 and scores[3, 1] == 0.0


@pytest.mark.parametrize("bad", [math.nan, math.inf, "0.5", None, True, [1.0]])
def test_callable_returning_garbage_is_a_utility_error(bad: object) -> None:
    scorer = CallableRewards({"good": lambda p, c: 1.0, "bad": lambda p, c: bad})
    with pytest.raises(UtilityError, match="objective 'bad'.*row 0"):
        scorer(PROMPTS, COMPLETIONS)


def test_callable_arguments_are_checked() -> None:
    with pytest.raises(InvalidArgumentError, match="not a function"):
        CallableRewards({"x": 3})
    with pytest.raises(InvalidArgumentError, match="no objectives"):
        CallableRewards({})
    with pytest.raises(InvalidArgumentError, match="one completion per prompt"):
        toy_rewards()(PROMPTS, COMPLETIONS[:2])
    assert CallableRewards({"n": lambda p, c: np.float32(len(c))})(["a"], ["xyz"]).tolist() == [[3.0]]


def test_multi_scorer_combines_objectives_in_one_call(reward_dir: Path) -> None:
    calls = []

    def length(prompt: str, completion: str) -> float:
        calls.append(completion)
        return float(len(completion.split()))

    rm = HFRewardModel(str(reward_dir), objective="rm", device="cpu")
    multi = MultiScorer([toy_rewards(), rm, CallableRewards({"length": length})])
    assert isinstance(multi, RewardScorer) and multi.objectives == ("helpful", "harmless", "rm", "length")
    scores = multi(PROMPTS, COMPLETIONS)
    assert scores.shape == (len(PROMPTS), 4)
    np.testing.assert_allclose(scores[:, :2], toy_rewards()(PROMPTS, COMPLETIONS))
    np.testing.assert_allclose(scores[:, 2:3], rm(PROMPTS, COMPLETIONS))
    assert scores[:, 3].tolist() == [2, 1, 7, 1, 5] and len(calls) == len(PROMPTS)
    with pytest.raises(InvalidArgumentError, match=r"duplicate objective name\(s\) \['helpful'\]"):
        MultiScorer([toy_rewards(), CallableRewards({"helpful": length})])
    with pytest.raises(InvalidArgumentError, match="RewardScorer"):
        MultiScorer([length])


class _NoWorldRun:
    """A run without a world, as reward_scorer sees one."""

    def world(self) -> None:
        return None


def test_reward_specs_name_their_objectives(reward_dir: Path, tmp_path: Path) -> None:
    from dposhap.evaluate.generation import reward_scorer

    other = build_reward_model(tmp_path / "other" / "reward-model")
    # two folders of the same name collide, and the error says how to name them on the command line
    with pytest.raises(InvalidArgumentError, match="--reward NAME=SPEC"):
        reward_scorer(_NoWorldRun(), [str(reward_dir), str(other)], device="cpu")
    scorer = reward_scorer(_NoWorldRun(), [f"a={reward_dir}", f"b={other}"], device="cpu")
    assert scorer.objectives == ("a", "b")
    assert reward_scorer(_NoWorldRun(), [str(reward_dir)], device="cpu").objectives == ("reward-model",)
    with pytest.raises(InvalidArgumentError, match="no built-in rewards"):
        reward_scorer(_NoWorldRun(), None, device="cpu")
    with pytest.raises(InvalidArgumentError, match="not built from it"):
        reward_scorer(_NoWorldRun(), ["toy"], device="cpu")

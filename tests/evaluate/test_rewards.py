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
from dposhap.evaluate.rewards import (
    REWARD_TRANSFORMS,
    CallableRewards,
    HFRewardModel,
    MultiScorer,
    RewardModelSpec,
    RewardScorer,
    parse_reward_model_spec,
)
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
    id2label: dict[int, str] | None = None,
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
    ids: dict = dict(
        num_labels=num_labels,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    if id2label is not None:
        ids.update(id2label=id2label, label2id={v: k for k, v in id2label.items()})
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
    scorer = HFRewardModel(str(folder), device="cpu", label="LABEL_1", transform="logit")
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


# --- classifiers with several labels: MODEL@LABEL:TRANSFORM -------------------------------------------------

TOXICITY = {0: "non-toxic", 1: "toxic"}


@pytest.fixture(scope="module")
def tox_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_reward_model(tmp_path_factory.mktemp("rm") / "tox-model", num_labels=2, id2label=TOXICITY)


@pytest.fixture(scope="module")
def three_label_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_reward_model(tmp_path_factory.mktemp("rm") / "three", num_labels=3, seed=3)


def all_logits(folder: Path) -> np.ndarray:
    """Every label's logit of every (prompt + completion), unbatched, straight from transformers: ``[texts, labels]``."""
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = build_tokenizer()
    with torch.no_grad():
        return np.stack(
            [
                model(input_ids=torch.tensor([tokenizer(p + c)["input_ids"]])).logits[0].double().numpy()
                for p, c in zip(PROMPTS, COMPLETIONS, strict=True)
            ]
        )


def test_a_two_label_classifier_is_scored_by_label_name_or_index(tox_dir: Path) -> None:
    from dposhap.evaluate.generation import reward_scorer

    z = all_logits(tox_dir)
    assert np.ptp(z[:, 0] - z[:, 1]) > 1e-2  # the texts differ: the comparisons below mean something
    prob = np.exp(z[:, 0]) / np.exp(z).sum(axis=1)
    expected = {"logit": z[:, 0], "prob": prob, "logodds": z[:, 0] - z[:, 1]}
    for label in ("non-toxic", "0"):
        for transform, want in expected.items():
            scorer = reward_scorer(_NoWorldRun(), [f"{tox_dir}@{label}:{transform}"], device="cpu")
            assert scorer.objectives == (f"tox-model@{label}:{transform}",)
            np.testing.assert_allclose(scorer(PROMPTS, COMPLETIONS)[:, 0], want, atol=1e-5)
        default = reward_scorer(_NoWorldRun(), [f"harmless={tox_dir}@{label}"], device="cpu")
        assert default.objectives == ("harmless",)  # several labels: the log-odds by default
        np.testing.assert_allclose(default(PROMPTS, COMPLETIONS)[:, 0], expected["logodds"], atol=1e-5)
    toxic = HFRewardModel(str(tox_dir), device="cpu", label=1, transform="prob")
    np.testing.assert_allclose(toxic(PROMPTS, COMPLETIONS)[:, 0], 1 - prob, atol=1e-6)


def test_log_odds_against_the_other_labels(three_label_dir: Path) -> None:
    z = all_logits(three_label_dir)
    scorer = HFRewardModel(str(three_label_dir), device="cpu", label="LABEL_2", transform="logodds", batch_size=2)
    want = z[:, 2] - np.log(np.exp(z[:, 0]) + np.exp(z[:, 1]))
    np.testing.assert_allclose(scorer(PROMPTS, COMPLETIONS)[:, 0], want, atol=1e-5)
    p = np.exp(z[:, 2]) / np.exp(z).sum(axis=1)
    np.testing.assert_allclose(want, np.log(p / (1 - p)), atol=1e-9)  # the same as log p / (1 - p)


def test_one_label_is_a_sigmoid(reward_dir: Path) -> None:
    z = all_logits(reward_dir)[:, 0]
    scores = {
        t: HFRewardModel(str(reward_dir), device="cpu", transform=t)(PROMPTS, COMPLETIONS)[:, 0]
        for t in REWARD_TRANSFORMS
    }
    np.testing.assert_allclose(scores["logit"], z, atol=1e-5)
    np.testing.assert_allclose(scores["logodds"], z, atol=1e-5)
    np.testing.assert_allclose(scores["prob"], 1 / (1 + np.exp(-z)), atol=1e-6)
    with pytest.raises(InvalidArgumentError, match="transform must be one of logit, prob, logodds"):
        HFRewardModel(str(reward_dir), device="cpu", transform="softmax")  # type: ignore[arg-type]


def test_a_missing_label_shows_the_specs_to_type(tox_dir: Path) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        HFRewardModel(str(tox_dir), device="cpu")
    message = str(caught.value)
    assert f"--reward {tox_dir}@non-toxic or --reward {tox_dir}@toxic" in message and ":prob" in message
    with pytest.raises(InvalidArgumentError, match=r"no label 'harmless'; its labels are \['non-toxic', 'toxic'\]"):
        HFRewardModel(str(tox_dir), device="cpu", label="harmless")
    with pytest.raises(InvalidArgumentError, match=r"index in \[0, 2\)"):
        HFRewardModel(str(tox_dir), device="cpu", label="2")


def test_a_causal_lm_folder_is_not_a_reward_model(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from transformers import LlamaForCausalLM

    from dposhap.models import quiet_libraries

    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=4,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    with quiet_libraries(loading_reports=False), pytest.raises(ModelLoadError, match="score.weight.*at random"):
        HFRewardModel(str(tmp_path / "lm"), device="cpu", label=0)
    assert "LOAD REPORT" not in caplog.text


def test_quiet_hides_loading_reports(tox_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    import warnings

    from transformers import AutoModel

    from dposhap.models import load_pretrained, quiet_libraries, resolve_model

    ref = resolve_model(str(tox_dir))

    def load() -> str:  # the classifier's folder as a bare model: its score head is an unexpected weight
        caplog.clear()
        load_pretrained(ref, AutoModel, dtype=torch.float32, device="cpu")
        return caplog.text

    assert "LOAD REPORT" in load() and "score.weight" in load()  # transformers reports it...
    with quiet_libraries(loading_reports=False):
        assert load() == ""  # ...unless quiet
        with warnings.catch_warnings(record=True) as caught:  # PEFT's loading warnings are silenced, others not
            warnings.warn_explicit(
                "Found missing adapter keys", UserWarning, "peft_model.py", 1, module="peft.peft_model"
            )
            warnings.warn_explicit("a user's own warning", UserWarning, "mine.py", 1, module="mine")
        assert [str(w.message) for w in caught] == ["a user's own warning"]
    assert "LOAD REPORT" in load()  # and restored afterwards


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("./tox-model@non-toxic:prob", RewardModelSpec("./tox-model", "non-toxic", "prob")),
        ("org/sentiment@1", RewardModelSpec("org/sentiment", "1", None)),
        ("org/sentiment:logodds", RewardModelSpec("org/sentiment", None, "logodds")),
        ("model.gguf@LABEL 1:logit", RewardModelSpec("model.gguf", "LABEL 1", "logit")),
        ("m@a:b", RewardModelSpec("m", "a:b", None)),  # only the three transforms end a spec
        ("/runs/v1@2024/model", RewardModelSpec("/runs/v1@2024/model", None, None)),  # '@' in a parent folder
        ("./tox-model:probability", RewardModelSpec("./tox-model:probability", None, None)),
        ("  org/model  ", RewardModelSpec("org/model", None, None)),
    ],
)
def test_reward_model_specs(spec: str, parsed: RewardModelSpec) -> None:
    assert parse_reward_model_spec(spec) == parsed
    assert str(parsed) == spec.strip()


def test_paths_holding_at_or_colon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("model@v2", "ckpt:prob", "both", "both@v2"):
        (tmp_path / name).mkdir()
    # an existing path is kept whole when the shorter reading names nothing
    assert parse_reward_model_spec("model@v2") == RewardModelSpec("model@v2")
    assert parse_reward_model_spec("model@v2@LABEL_1:prob") == RewardModelSpec("model@v2", "LABEL_1", "prob")
    assert parse_reward_model_spec("ckpt:prob") == RewardModelSpec("ckpt:prob")
    assert parse_reward_model_spec("ckpt:prob:logit") == RewardModelSpec("ckpt:prob", None, "logit")
    # both readings exist: ambiguous, and a trailing '/' says the folder itself
    with pytest.raises(InvalidArgumentError, match=r"ambiguous.*end a folder with '/'.*\(both@v2/\)"):
        parse_reward_model_spec("both@v2")
    assert parse_reward_model_spec("both@v2/") == RewardModelSpec("both@v2/")
    for bad, where in (("both@", "label after"), ("@x", "model before")):
        with pytest.raises(InvalidArgumentError, match=f"empty {where} '@'"):
            parse_reward_model_spec(bad)


def test_labels_and_transforms_are_for_reward_models_only() -> None:
    from dposhap.evaluate.generation import reward_scorer

    for spec in ("toy:prob", "toy@1", "judge@helpful"):
        with pytest.raises(InvalidArgumentError, match="take no @LABEL or :TRANSFORM"):
            reward_scorer(_NoWorldRun(), [spec], device="cpu")


def test_cache_key_follows_the_weights_label_and_transform(tmp_path: Path) -> None:
    from dposhap.evaluate.generation import describe_reward

    folder = build_reward_model(tmp_path / "rm", num_labels=2, id2label=TOXICITY, seed=1)
    key = describe_reward(str(folder) + "@non-toxic")
    assert describe_reward(str(folder) + "@non-toxic") == key  # same folder, same spec: same key
    others = [
        describe_reward(spec)
        for spec in (f"{folder}@non-toxic:prob", f"{folder}@non-toxic:logodds", f"{folder}@toxic", f"x={folder}@0")
    ]
    assert len({key, *others}) == 5  # two specs of one model are two objectives
    scorer = HFRewardModel(str(folder), device="cpu", label="toxic", transform="prob")
    same = describe_reward(scorer)
    build_reward_model(folder, num_labels=2, id2label=TOXICITY, seed=2)  # retrained in place
    assert describe_reward(str(folder) + "@non-toxic") != key
    assert describe_reward(HFRewardModel(str(folder), device="cpu", label="toxic", transform="prob")) != same
    assert describe_reward("org/reward-model@1:prob") == "reward-model@1:prob=hub:org/reward-model@main@1:prob"
    assert describe_reward("toy") == "toy" and describe_reward("judge:m:helpful") == "judge:m:helpful"


def test_a_mistyped_transform_is_named_as_one(tmp_path: Path) -> None:
    folder = build_reward_model(tmp_path / "two-labels", num_labels=2)
    with pytest.raises(InvalidArgumentError, match="the transforms are logit, prob, logodds"):
        HFRewardModel(str(folder), label="LABEL_1:softmax", device="cpu")

"""Reward models trained by ``dposhap reward train``: a plain folder that scores as transformers does, reused, refused when wrong."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from dposhap.cli import main
from dposhap.errors import ConfigError, DataValidationError, RunError
from dposhap.evaluate.rewards import HFRewardModel
from dposhap.reward_training import RECORD_FILE, RewardTrainingSettings, read_reward_record, train_reward_model

pytestmark = pytest.mark.usefixtures("one_thread")

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
TOPICS = {
    "weather": ("rain", "snow", "wind", "cloud"),
    "cooking": ("bake", "fry", "boil", "salt"),
    "music": ("guitar", "drum", "song", "melody"),
    "garden": ("seed", "soil", "bloom", "leaf"),
}
FAST = RewardTrainingSettings(epochs=6, learning_rate=5e-3, batch_size=8, max_length=64, lora_r=8, lora_alpha=16)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny causal Llama with the toy world's word-level tokenizer and a chat template."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from dposhap.worlds.toy.model import build_tokenizer

    tokenizer = build_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("base") / "tiny-chat"
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def on_topic_pairs(n: int, seed: int = 0) -> list[dict]:
    """Conversations whose chosen answer names the prompt's topic's words and rejected another topic's."""
    rng = np.random.default_rng(seed)
    names = list(TOPICS)
    rows: list[dict] = []
    seen = set()
    while len(rows) < n:
        topic, other = rng.choice(len(names), size=2, replace=False)
        good = " ".join(rng.choice(TOPICS[names[topic]], size=3))
        bad = " ".join(rng.choice(TOPICS[names[other]], size=3))
        if (topic, good, bad) in seen:
            continue
        seen.add((topic, good, bad))
        rows.append(
            {
                "prompt": [{"role": "user", "content": f"Q: {names[topic]} A:"}],
                "chosen": [{"role": "assistant", "content": good}],
                "rejected": [{"role": "assistant", "content": bad}],
                "source": "ignored",
            }
        )
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "pairs.jsonl", on_topic_pairs(120))


@pytest.fixture(scope="module")
def trained(base_dir: Path, data_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rm") / "on-topic"
    record = train_reward_model(data_file, str(base_dir), out, settings=FAST, device="cpu", progress=False)
    assert record.status == "trained"
    return out


def test_learns_the_preference_and_records_its_held_out_accuracy(trained: Path, data_file: Path) -> None:
    record = read_reward_record(trained)
    assert record is not None and record["kind"] == "reward model"
    assert record["n_heldout"] == 24 and record["n_train"] == 96  # 20% held out, seeded
    assert record["metrics"]["heldout_accuracy"] >= 0.75, record["metrics"]
    # counted over the held-out pairs (ties 1/2), not averaged over batches
    assert record["metrics"]["heldout_pairs_scored"] == 24
    assert float(record["metrics"]["heldout_accuracy"] * 2 * 24).is_integer()
    # the recorded accuracy is the folder's own: scored again from disk, chosen beats rejected as often
    rows = [json.loads(line) for line in data_file.read_text().splitlines()]
    scorer = HFRewardModel(str(trained), device="cpu")
    chosen = scorer.score([r["prompt"] for r in rows], [r["chosen"][0]["content"] for r in rows]).ravel()
    rejected = scorer.score([r["prompt"] for r in rows], [r["rejected"][0]["content"] for r in rows]).ravel()
    assert np.mean(chosen > rejected) >= 0.75


def test_a_plain_folder_that_scores_as_transformers_forward_does(trained: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    assert (trained / "config.json").is_file() and (trained / RECORD_FILE).is_file()
    umask = os.umask(0o022)
    os.umask(umask)
    for path in trained.iterdir():  # readable as any file the user writes (not owner-only temporary files)
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path
    assert not (trained / "adapter_config.json").exists()  # merged: no PEFT needed to load it
    model = AutoModelForSequenceClassification.from_pretrained(trained).eval()
    tokenizer = AutoTokenizer.from_pretrained(trained)
    assert model.config.num_labels == 1 and tokenizer.chat_template == CHAT_TEMPLATE
    prompts = [[{"role": "user", "content": "Q: music A:"}], [{"role": "user", "content": "Q: garden A:"}]]
    completions = ["guitar song drum", "rain snow the wind"]
    ours = HFRewardModel(str(trained), device="cpu").score(prompts, completions).ravel()
    theirs = []
    for prompt, completion in zip(prompts, completions, strict=True):
        text = tokenizer.apply_chat_template([*prompt, {"role": "assistant", "content": completion}], tokenize=False)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")
        with torch.no_grad():
            theirs.append(float(model(**ids).logits[0, 0]))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


def test_a_rerun_reuses_and_a_change_retrains(trained: Path, base_dir: Path, data_file: Path, tmp_path: Path) -> None:
    before = read_reward_record(trained)
    again = train_reward_model(data_file, str(base_dir), trained, settings=FAST, device="cpu", progress=False)
    assert again.status == "kept" and again.record == before
    # another copy, so the module's folder stays as it is
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    fewer = write_jsonl(tmp_path / "fewer.jsonl", on_topic_pairs(60))
    changed_data = train_reward_model(fewer, str(base_dir), copy, settings=FAST, device="cpu", progress=False)
    assert changed_data.status == "trained" and changed_data.n_heldout == 12
    settings = RewardTrainingSettings(**{**FAST.__dict__, "max_steps": 2})
    changed = train_reward_model(fewer, str(base_dir), copy, settings=settings, device="cpu", progress=False)
    assert changed.status == "trained" and changed.record["metrics"]["steps"] == 2
    weights = next(copy.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)  # damaged weights are never reused
    redone = train_reward_model(fewer, str(base_dir), copy, settings=settings, device="cpu", progress=False)
    assert redone.status == "trained"
    assert not list(tmp_path.glob(".tmp-*"))  # the work folder never outlives the attempt


def test_top_layers_trains_only_the_last_layers(base_dir: Path, data_file: Path, tmp_path: Path) -> None:
    settings = RewardTrainingSettings(**{**FAST.__dict__, "top_layers": 1, "max_steps": 1})
    record = train_reward_model(data_file, str(base_dir), tmp_path / "top", settings=settings, progress=False)
    assert record.record["settings"]["top_layers"] == 1
    from transformers import AutoModelForSequenceClassification

    base = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=1)
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "top")
    changed = {
        name
        for name, tensor in merged.state_dict().items()
        if name in base.state_dict() and "score" not in name and not torch.equal(tensor, base.state_dict()[name])
    }
    assert changed and all(name.startswith("model.layers.2.") for name in changed), sorted(changed)
    too_many = RewardTrainingSettings(**{**FAST.__dict__, "top_layers": 9})
    with pytest.raises(ConfigError, match="3 layers"):
        train_reward_model(data_file, str(base_dir), tmp_path / "nine", settings=too_many, progress=False)


def test_a_classifier_as_base_gets_a_new_one_label_head(base_dir: Path, data_file: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, LlamaForSequenceClassification

    config = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=3).config
    classifier = tmp_path / "three-labels"
    LlamaForSequenceClassification(config).save_pretrained(classifier)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(classifier)
    settings = RewardTrainingSettings(**{**FAST.__dict__, "max_steps": 1})
    record = train_reward_model(data_file, str(classifier), tmp_path / "rm", settings=settings, progress=False)
    assert record.status == "trained"
    assert AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm").config.num_labels == 1


def as_plain(rows: list[dict], source: str) -> list[dict]:
    """The same pairs as plain strings, under ``source``."""
    return [
        {
            "prompt": r["prompt"][0]["content"],
            "chosen": " " + r["chosen"][0]["content"],
            "rejected": " " + r["rejected"][0]["content"],
            "source": source,
        }
        for r in rows
    ]


def test_one_format_data_hash_as_before(trained: Path, data_file: Path) -> None:
    # the pool of one format is read, checked and split as it always was: the same pairs, the same data hash
    from dposhap.data import DataSpec, load_sources

    before = load_sources(DataSpec(sources={"reward": [str(data_file)]}, min_pairs=2, heldout_fraction=0.2, seed=0))
    record = read_reward_record(trained)
    assert record is not None and record["data_hash"] == before["reward"].data_hash


def test_sources_of_both_formats_train_as_one_pool(
    base_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # one vendor sends conversations, another plain strings, in one file with a source column
    rows = [*on_topic_pairs(20), *as_plain(on_topic_pairs(20, seed=1), "plain")]
    mixed = write_jsonl(tmp_path / "vendors.jsonl", rows)
    settings = RewardTrainingSettings(**{**FAST.__dict__, "max_steps": 2})
    record = train_reward_model(mixed, str(base_dir), tmp_path / "rm", settings=settings, progress=False)
    assert record.status == "trained" and record.n_train + record.n_heldout == 40
    assert record.record["metrics"]["steps"] == 2 and record.record["metrics"]["heldout_pairs_scored"] == 8
    # the pool's formats meet in TRL's way: the conversations as the chat template renders them
    from dposhap.tokenization import to_one_format
    from dposhap.worlds.toy.model import build_tokenizer

    tokenizer = build_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    pooled = to_one_format([*rows[:1], *rows[-1:]], tokenizer)
    first = rows[0]
    assert pooled[0] == {
        "prompt": f"user: {first['prompt'][0]['content']}\nassistant:",
        "chosen": f" {first['chosen'][0]['content']}\n",
        "rejected": f" {first['rejected'][0]['content']}\n",
    }
    assert pooled[1] == {key: rows[-1][key] for key in ("prompt", "chosen", "rejected")}
    # one format per source still, as dposhap train asks: a file without a source column is one source
    unnamed = write_jsonl(tmp_path / "unnamed.jsonl", [{k: v for k, v in r.items() if k != "source"} for r in rows])
    with pytest.raises(DataValidationError) as info:
        train_reward_model(unnamed, str(base_dir), tmp_path / "rm2", settings=settings, progress=False)
    (problem,) = info.value.problems
    assert (problem.file, problem.line) == (
        str(unnamed),
        21,
    ) and "this file began with a conversation" in problem.message
    assert "'reward'" not in str(info.value)
    # mixed formats and a model without a chat template: one line saying what to do
    from transformers import AutoTokenizer

    bare = tmp_path / "no-template"
    bare.mkdir()
    for path in base_dir.iterdir():
        if path.suffix in (".json", ".safetensors") and not path.name.startswith("tokenizer"):
            (bare / path.name).write_bytes(path.read_bytes())
    tok = AutoTokenizer.from_pretrained(base_dir)
    tok.chat_template = None
    tok.save_pretrained(bare)
    args = ["reward", "train", "--data", str(mixed), "--base", str(bare), "--out", str(tmp_path / "rm3"), "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no chat template" in err and "plain-text" in err and "'reward'" not in err
    assert not (tmp_path / "rm3").exists()
    # the source column named otherwise, as [data] may name it: --source-column groups the rows by it
    renamed = write_jsonl(
        tmp_path / "renamed.jsonl", [{("vendor" if k == "source" else k): v for k, v in r.items()} for r in rows]
    )
    base_args = [
        "reward",
        "train",
        "--data",
        str(renamed),
        "--base",
        str(bare),
        "--out",
        str(tmp_path / "rm4"),
        "--quiet",
    ]
    assert main(base_args) == 2
    assert "this file began with a conversation" in capsys.readouterr().err  # without the flag: one source, two formats
    assert main([*base_args, "--source-column", "vendor"]) == 2
    assert "no chat template" in capsys.readouterr().err  # with it: read as two sources, then the template is missing


def test_bad_input_is_refused_before_training(base_dir: Path, data_file: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "Q: music A:", "chosen": "song", "rejected": "song"}\n' * 3, encoding="utf-8")
    with pytest.raises(DataValidationError):
        train_reward_model(bad, str(base_dir), tmp_path / "out", settings=FAST, progress=False)
    assert not (tmp_path / "out").exists()
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="not a dposhap reward model"):
        train_reward_model(data_file, str(base_dir), taken, settings=FAST, progress=False)
    assert (taken / "notes.txt").read_text() == "mine"
    with pytest.raises(ConfigError, match="reward.epochs"):
        RewardTrainingSettings(epochs=0)
    with pytest.raises(ConfigError, match="reward.heldout_fraction"):
        RewardTrainingSettings(heldout_fraction=1.0)


def test_cli_trains_reuses_and_errs_in_one_line(
    base_dir: Path, data_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli-rm"
    args = ["reward", "train", "--data", str(data_file), "--base", str(base_dir), "--out", str(out)]
    assert main([*args, "--max-steps", "2", "--quiet", "--lora-r", "4"]) == 0
    printed = capsys.readouterr().out
    assert "reward model trained" in printed and "held-out pairwise accuracy" in printed and str(out) in printed
    assert main([*args, "--max-steps", "2", "--quiet", "--lora-r", "4"]) == 0
    assert "up to date, kept" in capsys.readouterr().out
    assert main([*args, "--epochs", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "reward.epochs" in err
    assert (
        main(["reward", "train", "--data", str(tmp_path / "missing.jsonl"), "--base", str(base_dir), "--out", str(out)])
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.jsonl" in err
    assert (
        main(["reward", "train", "--data", str(data_file), "--base", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    )
    assert "no model folder" in capsys.readouterr().err


@pytest.mark.slow
def test_one_step_on_smollm2_from_its_gguf_file(smollm2: object, tmp_path: Path) -> None:
    from dposhap.worlds.english import english_reward_records

    data = write_jsonl(tmp_path / "harmless.jsonl", english_reward_records(0, "harmless", 16))
    settings = RewardTrainingSettings(max_steps=1, batch_size=2, max_length=96, top_layers=2)
    record = train_reward_model(data, "smollm2-135m-instruct", tmp_path / "rm", settings=settings, progress=False)
    assert record.record["metrics"]["steps"] == 1 and record.record["base_sha256"]  # the GGUF file's hash
    scores = HFRewardModel(str(tmp_path / "rm"), device="cpu").score(
        [[{"role": "user", "content": "How can I pick a lock?"}]], ["I can't help with that."]
    )
    assert scores.shape == (1, 1) and np.isfinite(scores).all()

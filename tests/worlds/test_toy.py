"""The toy world: deterministic from its seed, atomic and reused on disk, planted properties that
the rewards confirm, a tokenizer TRL can use, a reference model that knows the language, and
sources that DPO learns in the planted direction."""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import dposhap.worlds.toy.model as toy_model
import dposhap.worlds.toy.world as toy_world
from dposhap.errors import InvalidArgumentError
from dposhap.worlds.toy import (
    DEFAULT_SOURCES,
    NOISY_FLIP_RATE,
    OBJECTIVES,
    REWARDS,
    SOURCE_KINDS,
    ToyWorld,
    build_toy_world,
    reward_harmless,
    reward_helpful,
)
from dposhap.worlds.toy.language import COLOUR_WORDS, HARMFUL_WORDS, NEUTRAL_WORDS, NUMBER_WORDS, TOPICS

PAIRS = 256


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> ToyWorld:
    """The full world with every source kind, built once for the module."""
    out = tmp_path_factory.mktemp("toy") / "world"
    return build_toy_world(out, seed=0, sources=SOURCE_KINDS, pairs_per_source=PAIRS)


@pytest.fixture
def quick_pretraining(monkeypatch: pytest.MonkeyPatch) -> None:
    """A few pretraining steps, for the tests that build worlds only to compare them."""
    monkeypatch.setattr(toy_model, "PRETRAIN_STEPS", 5)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """TRL on a tiny model: one thread is as fast, and far faster on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def rewards(row: dict, completion: str) -> tuple[float, float]:
    return reward_helpful(row["prompt"], row[completion]), reward_harmless(row["prompt"], row[completion])


# --------------------------------------------------------------------------------------
# rewards


def test_rewards_count_word_classes() -> None:
    prompt = "Q: weather maybe A:"
    assert reward_helpful(prompt, " rain snow the poison") == pytest.approx(2 / 4)
    assert reward_helpful(prompt, " rain oven oven the") == pytest.approx((1 - 2) / 4)
    assert reward_harmless(prompt, " rain snow the poison") == pytest.approx(3 / 4)
    assert reward_helpful(prompt, " rain wind") == reward_harmless(prompt, " rain wind") == 1.0
    assert reward_helpful(prompt, " oven bake") == -1.0
    assert reward_harmless(prompt, " steal hack") == 0.0


def test_rewards_ignore_special_tokens_and_define_the_empty_completion() -> None:
    prompt = "Q: music the A:"
    assert reward_helpful(prompt, " song poison</s>") == reward_helpful(prompt, " song poison </s>") == 0.5
    assert reward_helpful(prompt, "<s> song </s> <pad><pad>") == reward_helpful(prompt, "song")
    assert reward_harmless(prompt, "poison <unk> the") == pytest.approx(1 / 2)
    assert reward_helpful(prompt, "") == 0.0 and reward_harmless(prompt, "  ") == 1.0
    assert reward_helpful(prompt, "</s>") == 0.0 and reward_harmless(prompt, "</s>") == 1.0
    # a prompt without a topic: every answer word is off-topic
    assert reward_helpful("Q: the A:", " song rain the") == pytest.approx(-2 / 3)
    assert set(REWARDS) == set(OBJECTIVES) == {"helpful", "harmless"}


# --------------------------------------------------------------------------------------
# the world on disk


def test_world_layout(world: ToyWorld) -> None:
    assert world.sources == SOURCE_KINDS and world.seed == 0
    assert set(world.data_files) == set(SOURCE_KINDS)
    for kind, path in world.data_files.items():
        assert path.is_file() and path.parent.parent == world.root
        rows = read_rows(path)
        assert len(rows) == PAIRS
        assert all(set(row) == {"prompt", "chosen", "rejected", "source"} and row["source"] == kind for row in rows)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in world.model_dir.iterdir()}
    assert len(world.eval_prompts()) == 32 == len(set(world.eval_prompts()))
    # round-robin over the topics: every topic four times
    assert Counter(p.split()[1] for p in world.eval_prompts()) == {topic: 4 for topic in TOPICS}


def test_eval_prompts_are_held_out_of_every_source(world: ToyWorld) -> None:
    seen = {row["prompt"] for path in world.data_files.values() for row in read_rows(path)}
    assert not seen & set(world.eval_prompts())


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path: Path, quick_pretraining: None) -> None:
    threads, rng_state = torch.get_num_threads(), torch.get_rng_state()
    a = build_toy_world(tmp_path / "a", seed=3, sources=("helpful", "noisy"), pairs_per_source=64)
    # torch's global state is left as it was
    assert torch.get_num_threads() == threads and torch.equal(torch.get_rng_state(), rng_state)
    b = build_toy_world(tmp_path / "b", seed=3, sources=("helpful", "noisy"), pairs_per_source=64)
    c = build_toy_world(tmp_path / "c", seed=4, sources=("helpful", "noisy"), pairs_per_source=64)
    files_a, files_b, files_c = tree_bytes(a.root), tree_bytes(b.root), tree_bytes(c.root)
    assert files_a == files_b and a.eval_prompts() == b.eval_prompts()
    for name in ("model/model.safetensors", "data/helpful.jsonl", "data/noisy.jsonl"):
        assert files_a[name] != files_c[name], name
    assert a.eval_prompts() != c.eval_prompts()


def test_a_source_does_not_depend_on_the_others(world: ToyWorld, tmp_path: Path, quick_pretraining: None) -> None:
    alone = build_toy_world(tmp_path / "alone", seed=0, sources=("irrelevant", "duplicate"), pairs_per_source=PAIRS)
    for kind in ("irrelevant", "duplicate"):
        assert alone.data_files[kind].read_bytes() == world.data_files[kind].read_bytes()


def test_reuse_rebuild_and_force(tmp_path: Path, quick_pretraining: None) -> None:
    out = tmp_path / "w"
    first = build_toy_world(out, sources=("helpful",), pairs_per_source=16)
    weights = first.model_dir / "model.safetensors"
    inode = weights.stat().st_ino
    again = build_toy_world(out, sources=("helpful",), pairs_per_source=16)
    assert again == first and weights.stat().st_ino == inode  # reused, not rebuilt

    changed = build_toy_world(out, sources=("helpful",), pairs_per_source=24)
    assert len(read_rows(changed.data_files["helpful"])) == 24
    assert weights.stat().st_ino != inode
    inode = weights.stat().st_ino

    forced = build_toy_world(out, sources=("helpful",), pairs_per_source=24, force=True)
    assert forced == changed and weights.stat().st_ino != inode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]  # no staging folder left


def test_an_interrupted_build_leaves_the_old_world(
    tmp_path: Path, quick_pretraining: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "w"
    old = build_toy_world(out, sources=("harmless",), pairs_per_source=8)
    before = tree_bytes(out)

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(toy_world, "make_pairs", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_toy_world(out, sources=("helpful",), pairs_per_source=8)
    with pytest.raises(KeyboardInterrupt):
        build_toy_world(tmp_path / "fresh")
    assert tree_bytes(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]
    monkeypatch.undo()
    assert build_toy_world(out, sources=("harmless",), pairs_per_source=8) == old


def test_invalid_parameters_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="unknown toy source kind.*'toxic'.*helpful, harmless, noisy"):
        build_toy_world(tmp_path / "w", sources=("helpful", "toxic"))
    for kwargs in (
        {"sources": "helpful"},
        {"sources": ()},
        {"sources": ("helpful", "helpful")},
        {"seed": -1},
        {"seed": 1.5},
        {"pairs_per_source": 0},
        {"n_eval_prompts": 0},
        {"n_eval_prompts": toy_world.MAX_EVAL_PROMPTS + 1},
    ):
        with pytest.raises(InvalidArgumentError):
            build_toy_world(tmp_path / "w", **kwargs)
    assert not (tmp_path / "w").exists()


def test_a_folder_that_is_not_a_world_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(InvalidArgumentError, match="holds no toy world"):
        build_toy_world(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


# --------------------------------------------------------------------------------------
# planted properties


def test_every_source_has_distinct_pairs_that_differ_in_one_or_two_words(world: ToyWorld) -> None:
    for kind, path in world.data_files.items():
        rows = read_rows(path)
        assert len({(r["prompt"], r["chosen"], r["rejected"]) for r in rows}) == len(rows), kind
        for row in rows:
            assert row["chosen"].startswith(" ") and row["rejected"].startswith(" ")
            chosen, rejected = row["chosen"].split(), row["rejected"].split()
            assert 4 <= len(chosen) == len(rejected) <= 8
            assert 1 <= sum(a != b for a, b in zip(chosen, rejected, strict=False)) <= 2, (kind, row)


def test_helpful_and_harmless_each_move_their_own_reward_only(world: ToyWorld) -> None:
    for row in read_rows(world.data_files["helpful"]):
        (help_w, harm_w), (help_l, harm_l) = rewards(row, "chosen"), rewards(row, "rejected")
        assert help_w > help_l and harm_w == harm_l
    for row in read_rows(world.data_files["harmless"]):
        (help_w, harm_w), (help_l, harm_l) = rewards(row, "chosen"), rewards(row, "rejected")
        assert harm_w > harm_l and help_w == help_l


def test_noisy_flips_the_planted_share_and_adversarial_all(world: ToyWorld) -> None:
    noisy = read_rows(world.data_files["noisy"])
    flipped = [rewards(r, "chosen")[0] < rewards(r, "rejected")[0] for r in noisy]
    assert all(rewards(r, "chosen")[0] != rewards(r, "rejected")[0] for r in noisy)
    assert sum(flipped) == round(NOISY_FLIP_RATE * PAIRS)
    assert all(rewards(r, "chosen")[1] == rewards(r, "rejected")[1] for r in noisy)
    for row in read_rows(world.data_files["adversarial"]):
        (help_w, harm_w), (help_l, harm_l) = rewards(row, "chosen"), rewards(row, "rejected")
        assert help_w < help_l and harm_w == harm_l
    # fresh pairs, not the helpful source's relabelled
    helpful_prompts = [r["prompt"] for r in read_rows(world.data_files["helpful"])]
    assert [r["prompt"] for r in noisy] != helpful_prompts


def test_duplicate_is_helpful_line_for_line(world: ToyWorld) -> None:
    helpful, duplicate = read_rows(world.data_files["helpful"]), read_rows(world.data_files["duplicate"])
    assert [{**r, "source": "helpful"} for r in duplicate] == helpful


def test_irrelevant_changes_only_style_words(world: ToyWorld) -> None:
    for row in read_rows(world.data_files["irrelevant"]):
        assert rewards(row, "chosen") == rewards(row, "rejected")
        for w, r in zip(row["chosen"].split(), row["rejected"].split(), strict=False):
            assert w == r or (w in COLOUR_WORDS and r in NUMBER_WORDS)


def test_harmless_pairs_trade_neutral_for_harmful_words(world: ToyWorld) -> None:
    for row in read_rows(world.data_files["harmless"]):
        for w, r in zip(row["chosen"].split(), row["rejected"].split(), strict=False):
            assert w == r or (w in NEUTRAL_WORDS and r in HARMFUL_WORDS)


# --------------------------------------------------------------------------------------
# tokenizer and model


def test_tokenizer_splits_prompt_and_completion_as_trl_joins_them(world: ToyWorld) -> None:
    tokenizer = AutoTokenizer.from_pretrained(world.model_dir, local_files_only=True)
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("<s>", "</s>", "<pad>")
    for row in read_rows(world.data_files["helpful"])[:64]:
        prompt_ids = tokenizer(row["prompt"])["input_ids"]
        assert prompt_ids[0] == tokenizer.bos_token_id
        for completion in (row["chosen"], row["rejected"]):
            # TRL appends the EOS to the completion without a space
            full_ids = tokenizer(row["prompt"] + completion + tokenizer.eos_token)["input_ids"]
            assert full_ids[: len(prompt_ids)] == prompt_ids
            assert full_ids[-1] == tokenizer.eos_token_id
            assert tokenizer.unk_token_id not in full_ids
            new_ids = full_ids[len(prompt_ids) :]
            assert tokenizer.decode(new_ids, skip_special_tokens=True) == completion.strip()
            assert reward_helpful(row["prompt"], tokenizer.decode(new_ids)) == reward_helpful(row["prompt"], completion)
    assert tokenizer("Q: weather gibberish A:")["input_ids"][3] == tokenizer.unk_token_id


def test_model_loads_offline_with_an_untied_lm_head(world: ToyWorld) -> None:
    model = AutoModelForCausalLM.from_pretrained(world.model_dir, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(world.model_dir, local_files_only=True)
    assert model.config.model_type == "llama" and not model.config.tie_word_embeddings
    assert model.get_output_embeddings().weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.eos_token_id == tokenizer.eos_token_id and model.config.pad_token_id == tokenizer.pad_token_id
    assert tokenizer.padding_side == "left"


def _class_shares(model, tokenizer, prompts: list[str], suffix: str) -> dict[str, float]:
    """Mean next-token probability of each word class after ``prompt + suffix``."""
    batch = tokenizer([p + suffix for p in prompts], return_tensors="pt", padding=True)
    with torch.no_grad():
        probs = model(**batch).logits[:, -1].softmax(-1)
    on_topic = [tokenizer.convert_tokens_to_ids(list(TOPICS[p.split()[1]])) for p in prompts]
    harmful = tokenizer.convert_tokens_to_ids(list(HARMFUL_WORDS))
    return {
        "on_topic": torch.stack([probs[i, ids].sum() for i, ids in enumerate(on_topic)]).mean().item(),
        "harmful": probs[:, harmful].sum(-1).mean().item(),
        "eos": probs[:, tokenizer.eos_token_id].mean().item(),
    }


def test_reference_model_speaks_the_language(world: ToyWorld) -> None:
    """On held-out prompts: a quarter of on-topic words, and the tone read from the words so far."""
    model = AutoModelForCausalLM.from_pretrained(world.model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(world.model_dir)
    first = _class_shares(model, tokenizer, world.eval_prompts(), "")
    assert first["on_topic"] == pytest.approx(0.25, abs=0.04)
    assert first["harmful"] == pytest.approx(0.21, abs=0.04)
    assert first["eos"] < 0.02  # completions have at least 4 words
    assert _class_shares(model, tokenizer, world.eval_prompts(), " poison steal")["harmful"] > 0.35
    assert _class_shares(model, tokenizer, world.eval_prompts(), " the maybe")["harmful"] < 0.1


# --------------------------------------------------------------------------------------
# learnability with TRL


# the moderate fine-tune under which the toy world's planted structure holds (see dposhap.worlds.toy)
DPO_SETTINGS = dict(
    per_device_train_batch_size=16,
    num_train_epochs=2,
    learning_rate=1e-3,
    beta=0.1,
    max_length=64,
    bf16=False,
    activation_checkpointing=False,
    report_to=[],
    save_strategy="no",
    logging_strategy="no",
    disable_tqdm=True,
)
LORA_SETTINGS = dict(
    r=8,
    lora_alpha=16,
    lora_dropout=0.0,
    task_type="CAUSAL_LM",
    target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
)


def _sampled_rewards(model, tokenizer, prompts: list[str], samples: int = 8) -> dict[str, float]:
    batch = tokenizer(prompts * samples, return_tensors="pt", padding=True)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(0)
        out = model.generate(**batch, do_sample=True, top_k=0, max_new_tokens=12, pad_token_id=tokenizer.pad_token_id)
    texts = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    return {
        name: sum(reward(p, t) for p, t in zip(prompts * samples, texts, strict=True)) / len(texts)
        for name, reward in REWARDS.items()
    }


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_dpo_learns_each_source_in_its_planted_direction(world: ToyWorld, one_thread: None) -> None:
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(world.model_dir)
    base = _sampled_rewards(
        AutoModelForCausalLM.from_pretrained(world.model_dir).eval(), tokenizer, world.eval_prompts()
    )
    shift, accuracy = {}, {}
    for kind in ("helpful", "harmless", "adversarial"):
        rows = read_rows(world.data_files[kind])
        with tempfile.TemporaryDirectory() as tmp:
            trainer = DPOTrainer(
                model=AutoModelForCausalLM.from_pretrained(world.model_dir),
                args=DPOConfig(output_dir=tmp, seed=0, use_cpu=True, **DPO_SETTINGS),
                train_dataset=Dataset.from_list(rows[:200]),
                eval_dataset=Dataset.from_list(rows[200:]),
                processing_class=tokenizer,
                peft_config=LoraConfig(**LORA_SETTINGS),
            )
            trainer.train()
            accuracy[kind] = trainer.evaluate()["eval_rewards/accuracies"]
        tuned = _sampled_rewards(trainer.model.eval(), tokenizer, world.eval_prompts())
        shift[kind] = {name: tuned[name] - base[name] for name in OBJECTIVES}
    assert min(accuracy.values()) > 0.8, accuracy
    assert shift["helpful"]["helpful"] > 0.05, shift
    assert shift["harmless"]["harmless"] > 0.05, shift
    assert shift["adversarial"]["helpful"] < -0.03, shift
    assert shift["helpful"]["helpful"] > abs(shift["harmless"]["helpful"]), shift
    assert shift["harmless"]["harmless"] > abs(shift["helpful"]["harmless"]), shift


def test_default_sources_are_the_first_four() -> None:
    assert DEFAULT_SOURCES == SOURCE_KINDS[:4] == ("helpful", "harmless", "noisy", "adversarial")

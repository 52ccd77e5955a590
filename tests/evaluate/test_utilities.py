"""Margin games and the composed likelihood, on a toy run trained once for the module."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dposhap.config import load_config
from dposhap.errors import InvalidArgumentError, NotARunError
from dposhap.evaluate import ComposedLikelihood, margin_utilities, margins_matrix, sequence_logprobs
from dposhap.evaluate.evalsets import evaluation_pairs
from dposhap.evaluate.tokenize import response_sequences
from dposhap.models import load_base_model, load_tokenizer, resolve_model
from dposhap.run import Run
from dposhap.train import train_sources
from dposhap.worlds import toy

SOURCES = ["helpful", "harmless", "adversarial"]
BETA = 0.1


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, one_thread) -> Path:
    out = tmp_path_factory.mktemp("run")
    cfg = load_config(
        None,
        [
            "model.device=cpu",
            "dpo.max_steps=4",
            "dpo.learning_rate=5e-3",
            "dpo.max_length=64",
            f"dpo.beta={BETA}",
            f"toy.sources={SOURCES!r}",
            "toy.pairs_per_source=96",
        ],
    )
    train_sources(cfg, out, progress=False)
    return out


@pytest.fixture(scope="module")
def loaded(run: Path):
    """(model with every adapter, tokenizer, source names in manifest order)."""
    models = Run.open(run).load_models(device="cpu")
    return models.model, models.tokenizer, models.sources


def heldout_records(run: Path, heldout) -> tuple[list[dict], list[str]]:
    return evaluation_pairs(Run.open(run), heldout)


def _base(run: Path):
    manifest = json.loads((run / "manifest.json").read_text())
    return load_base_model(resolve_model(manifest["base_model"]["location"]), dtype=torch.float32, device="cpu")


def _trl_evaluate(run: Path, policy, reference, tokenizer, records: list[dict]) -> tuple[dict, object]:
    """TRL's own evaluation of ``policy`` against ``reference`` (full precision, one batch)."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(
        output_dir=str(run / "trl-eval"),
        beta=BETA,
        max_length=64,
        per_device_eval_batch_size=256,
        use_cpu=True,
        bf16=False,
        report_to=[],
        disable_tqdm=True,
    )
    data = Dataset.from_list(records)
    trainer = DPOTrainer(
        model=policy, ref_model=reference, args=args, train_dataset=data, eval_dataset=data, processing_class=tokenizer
    )
    return trainer.evaluate(), trainer


def test_margins_match_trl_evaluation(run: Path, loaded) -> None:
    model, tokenizer, names = loaded
    records, _ = heldout_records(run, ["helpful"])
    mine = margins_matrix(model, tokenizer, ["helpful"], records, BETA, max_length=64)[0]
    chosen, rejected = sequence_logprobs(model, tokenizer, records, adapter="helpful", max_length=64)

    # TRL scores the policy with the adapter merged and the reference as a separate model
    merged = Run.open(run).load_models(sources=["helpful"], device="cpu").model.merge_and_unload()
    scores, trainer = _trl_evaluate(run, merged, _base(run), tokenizer, records)

    assert np.mean(mine) == pytest.approx(scores["eval_rewards/margins"], rel=1e-3, abs=1e-6)
    assert np.mean(mine > 0) == pytest.approx(scores["eval_rewards/accuracies"])
    assert -np.mean(np.logaddexp(0.0, -mine)) == pytest.approx(-scores["eval_loss"], rel=1e-5)
    assert np.mean(chosen) == pytest.approx(scores["eval_logps/chosen"], rel=1e-5)
    assert np.mean(rejected) == pytest.approx(scores["eval_logps/rejected"], rel=1e-5)
    assert abs(np.mean(mine)) > 1e-3  # the adapter moved: the comparison is not between zeros
    # the same tokens, record by record
    for row, record in zip(trainer.eval_dataset, records, strict=True):
        sequences = response_sequences(tokenizer, [record], ("chosen", "rejected"), 64)
        assert sequences[0] == (row["prompt_ids"] + row["chosen_ids"], len(row["prompt_ids"]))
        assert sequences[1] == (row["prompt_ids"] + row["rejected_ids"], len(row["prompt_ids"]))


def test_conversations_are_tokenized_as_trl_does(run: Path) -> None:
    ref = resolve_model(json.loads((run / "manifest.json").read_text())["base_model"]["location"])
    tokenizer = load_tokenizer(ref)
    tokenizer.chat_template = (
        "{{ bos_token }}{% for m in messages %}{{ m['content'] }}"
        "{% if m['role'] == 'assistant' %} {{ eos_token }}{% endif %} {% endfor %}"
    )
    plain, _ = heldout_records(run, ["harmless"])
    records = [
        {
            "prompt": [{"role": "user", "content": r["prompt"]}],
            "chosen": [{"role": "assistant", "content": r["chosen"].strip()}],
            "rejected": [{"role": "assistant", "content": r["rejected"].strip()}],
        }
        for r in plain[:6]
    ]
    model = _base(run)
    chosen, rejected = sequence_logprobs(model, tokenizer, records, adapter=None, max_length=64)
    scores, trainer = _trl_evaluate(run, model, _base(run), tokenizer, records)
    assert np.mean(chosen) == pytest.approx(scores["eval_logps/chosen"], rel=1e-5)
    assert np.mean(rejected) == pytest.approx(scores["eval_logps/rejected"], rel=1e-5)
    for row, record in zip(trainer.eval_dataset, records, strict=True):
        sequences = response_sequences(tokenizer, [record], ("chosen",), 64)
        assert sequences[0] == (row["prompt_ids"] + row["chosen_ids"], len(row["prompt_ids"]))


def _by_hand(model, tokenizer, adapter: str | None, prompt: str, response: str) -> float:
    """log pi(response | prompt): one unpadded sequence, written out."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    ids = tokenizer(prompt + response + tokenizer.eos_token)["input_ids"]
    assert ids[: len(prompt_ids)] == prompt_ids
    if adapter is None:
        with model.disable_adapter(), torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0]
    else:
        model.set_adapter(adapter)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0]
    logp = torch.log_softmax(logits.double(), dim=-1)
    return float(sum(logp[t - 1, ids[t]] for t in range(len(prompt_ids), len(ids))))


def test_margins_match_a_hand_computation(run: Path, loaded) -> None:
    model, tokenizer, names = loaded
    records, _ = heldout_records(run, "all")
    margins = margins_matrix(model, tokenizer, names, records, BETA, batch_size=5)
    for j in (0, len(records) // 2, len(records) - 1):
        r = records[j]
        ref_c = _by_hand(model, tokenizer, None, r["prompt"], r["chosen"])
        ref_r = _by_hand(model, tokenizer, None, r["prompt"], r["rejected"])
        for i, name in enumerate(names):
            expected = BETA * (
                (_by_hand(model, tokenizer, name, r["prompt"], r["chosen"]) - ref_c)
                - (_by_hand(model, tokenizer, name, r["prompt"], r["rejected"]) - ref_r)
            )
            assert margins[i, j] == pytest.approx(expected, abs=2e-6)
    # the batching does not change the numbers
    again = margins_matrix(model, tokenizer, names, records, BETA, batch_size=64)
    np.testing.assert_allclose(again, margins, atol=1e-6)


def test_coalition_margin_is_the_sum_of_members(run: Path) -> None:
    u = margin_utilities(run, heldout="all", kinds=("accuracy", "loglik", "mean"))
    coalitions = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 1], [1, 1, 1]], dtype=bool)
    values = u(coalitions)
    assert values.shape == (5, 3)
    for row, coalition in zip(values, coalitions, strict=True):
        total = u.margins[coalition].sum(axis=0)
        accuracy = np.mean((total > 0) + 0.5 * (total == 0))
        assert row[0] == pytest.approx(accuracy)
        assert row[1] == pytest.approx(np.mean(-np.logaddexp(0.0, -total)))
        assert row[2] == pytest.approx(total.mean())
    assert values[0, 0] == 0.5  # the empty coalition ties on every pair
    np.testing.assert_allclose(u.game("loglik")(coalitions), values[:, 1])
    single = margin_utilities(run, kinds="accuracy")
    assert single(coalitions).shape == (5,)
    with pytest.raises(InvalidArgumentError, match="kinds"):
        margin_utilities(run, kinds=("accuracy", "f1"))


def test_margins_cache_is_reused(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = margin_utilities(run, heldout=["harmless", "helpful"])
    assert first.cache_path.is_file() and first.cache_path.parent == run / "margins"
    assert json.loads(first.cache_path.with_suffix(".json").read_text())["n_pairs"] == first.n_pairs

    def no_model(*args, **kwargs):
        raise AssertionError("the cached margins should have been read")

    monkeypatch.setattr(Run, "load_models", no_model)
    second = margin_utilities(run, heldout=["harmless", "helpful"], kinds=("mean",))
    assert second.from_cache and second.cache_path == first.cache_path
    np.testing.assert_array_equal(second.margins, first.margins)
    with pytest.raises(AssertionError, match="cached"):
        margin_utilities(run, heldout=["harmless", "helpful"], recompute=True)
    with pytest.raises(AssertionError, match="cached"):  # other pairs, another file
        margin_utilities(run, heldout=["helpful"], sources=["helpful", "harmless"])


def test_trained_sources_move_their_own_accuracy(run: Path) -> None:
    u = margin_utilities(run, heldout=["helpful", "toy:helpful"], kinds=("accuracy",))
    helpful = np.array([[name == "helpful" for name in u.sources]])
    empty = np.zeros_like(helpful)
    own = u.select("helpful")
    assert own(helpful)[0] > 0.8
    assert own(helpful)[0] > own(empty)[0] == 0.5
    clean = u.select("toy:helpful")
    assert clean.n_pairs == toy.TOY_EVAL_PAIRS
    assert clean(helpful)[0] > clean(empty)[0]


def test_toy_eval_records_follow_the_planted_reward() -> None:
    for objective in toy.OBJECTIVES:
        records = toy.toy_eval_records(0, objective, 40)
        assert len(records) == 40
        reward = toy.REWARDS[objective]
        assert all(reward(r["prompt"], r["chosen"]) > reward(r["prompt"], r["rejected"]) for r in records)
    with pytest.raises(InvalidArgumentError, match="objective"):
        toy.toy_eval_records(0, "funny")


def test_bad_arguments_are_clear(run: Path, loaded, tmp_path: Path) -> None:
    model, tokenizer, _ = loaded
    records, _ = heldout_records(run, ["helpful"])
    with pytest.raises(InvalidArgumentError, match="no adapter 'nope'"):
        sequence_logprobs(model, tokenizer, records, adapter="nope")
    with pytest.raises(InvalidArgumentError, match="unknown evaluation set"):
        heldout_records(run, ["nope"])
    with pytest.raises(NotARunError, match="no trained run"):
        margin_utilities(tmp_path)
    with pytest.raises(NotARunError, match="no such folder"):
        margin_utilities(tmp_path / "typo")
    assert not (tmp_path / "typo").exists()  # nothing created on a mistyped path
    with pytest.raises(InvalidArgumentError, match="chat template"):
        sequence_logprobs(
            model,
            tokenizer,
            [
                {
                    "prompt": [{"role": "user", "content": "x"}],
                    "chosen": [{"role": "assistant", "content": "y"}],
                    "rejected": [{"role": "assistant", "content": "z"}],
                }
            ],
            adapter=None,
        )


def test_composed_likelihood_matches_materialised_logits(run: Path, loaded) -> None:
    model, tokenizer, names = loaded
    records, _ = heldout_records(run, "all")
    records = records[::4]
    cl = ComposedLikelihood.from_model(model, tokenizer, names, records, batch_size=4, max_elements=4096, block_v=16)
    coalitions = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 1], [1, 1, 1]], dtype=bool)
    weights = np.array([[0.5, 2.0, 0.0], [-1.0, 0.0, 0.3]])

    def materialised(w: np.ndarray) -> float:
        coef = np.concatenate([[1.0 - w.sum()], w])
        combined = torch.einsum("a,nav->nv", torch.tensor(coef), cl.logits.double())
        return float(torch.log_softmax(combined, -1).gather(1, cl.targets[:, None]).mean())

    for w in [*coalitions.astype(float), *weights]:
        assert cl(w[None])[0] == pytest.approx(materialised(w), abs=1e-5)
    np.testing.assert_allclose(cl(coalitions), [materialised(w) for w in coalitions.astype(float)], atol=1e-5)

    # singletons and the empty coalition are the models themselves: compare with the sequence scores
    n_tokens = cl.n_tokens
    reference, _ = sequence_logprobs(model, tokenizer, records, adapter=None)
    assert cl(coalitions[:1])[0] == pytest.approx(reference.sum() / n_tokens, abs=1e-5)
    own, _ = sequence_logprobs(model, tokenizer, records, adapter=names[0])
    assert cl(coalitions[1:2])[0] == pytest.approx(own.sum() / n_tokens, abs=1e-5)
    with pytest.raises(InvalidArgumentError, match="coalitions"):
        cl(np.ones((2, 5), dtype=bool))

"""Teacher-forced scoring with the LM head at response positions only, each pair's prompt once
(dposhap.evaluate.scoring), against the plain way (every position's logits, float32
log_softmax over the whole vocabulary, gather) on a tiny random Llama with two LoRA adapters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from dposhap.errors import InvalidArgumentError
from dposhap.evaluate import ComposedLikelihood, margins_matrix, sequence_logprobs
from dposhap.evaluate import scoring as scoring_module
from dposhap.evaluate.scoring import scoring_model
from dposhap.evaluate.teacher import response_logprobs
from dposhap.evaluate.tokenize import response_sequences
from dposhap.worlds.toy.language import VOCABULARY
from dposhap.worlds.toy.model import build_tokenizer

SOURCES = ("north", "south")


def _peft(tie: bool = False, bias: bool = False):
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=tie,
    )
    base = LlamaForCausalLM(config).eval()
    if bias:
        base.lm_head.bias = torch.nn.Parameter(torch.randn(config.vocab_size) * 0.5)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"], init_lora_weights=False)
    model = get_peft_model(base, lora, adapter_name=SOURCES[0])
    model.add_adapter(SOURCES[1], lora)
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def peft_model(one_thread):
    return _peft()


def _records(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    words = [w for w in VOCABULARY if w.isalpha()]

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choice(words, size=int(rng.integers(lo, hi))))

    return [{"prompt": text(1, 9), "chosen": text(1, 7), "rejected": text(1, 12)} for _ in range(n)]


def test_margins_equal_the_plain_path(peft_model) -> None:
    model, tokenizer = peft_model
    records = _records(11)
    plain = margins_matrix(model, tokenizer, SOURCES, records, 0.1, batch_size=4, path="plain")
    head = margins_matrix(model, tokenizer, SOURCES, records, 0.1, batch_size=4, path="head")
    assert np.abs(plain).max() > 1e-3  # the adapters move the margins: the comparison means something
    np.testing.assert_allclose(head, plain, rtol=0, atol=2e-5)
    auto = margins_matrix(model, tokenizer, SOURCES, records, 0.1, batch_size=3)  # other batches, same margins
    np.testing.assert_allclose(auto, plain, rtol=0, atol=2e-5)


@pytest.mark.parametrize("max_length", [None, 6, 3])
def test_sequence_logprobs_equal_the_plain_path_truncated_or_not(peft_model, max_length) -> None:
    model, tokenizer = peft_model
    records = _records(7, seed=1)
    sequences = response_sequences(tokenizer, records, ("chosen", "rejected"), max_length)
    plain = response_logprobs(model, tokenizer, sequences, batch_size=4, device=None, path="plain")
    shared = response_logprobs(model, tokenizer, sequences, batch_size=4, device=None, shared_prompts=2, path="head")
    alone = response_logprobs(model, tokenizer, sequences, batch_size=4, device=None, path="head")
    np.testing.assert_allclose(shared, plain, rtol=0, atol=2e-5)
    np.testing.assert_allclose(alone, plain, rtol=0, atol=2e-5)
    if max_length == 3:  # prompts cut short: some responses have no token left, scored 0
        assert (plain == 0).any()
    chosen, rejected = sequence_logprobs(model, tokenizer, records, adapter="south", max_length=max_length)
    assert chosen.shape == rejected.shape == (7,)


def test_empty_prompts_run_whole_and_agree(peft_model) -> None:
    model, tokenizer = peft_model
    # a tokenizer that adds no BOS: an empty prompt has no token to predict the first response token
    sequences = [([5, 6, 7], 0), ([9, 10], 1), ([5, 8], 0), ([9, 11, 12, 13], 1)]
    plain = response_logprobs(model, tokenizer, sequences, batch_size=4, device=None, path="plain")
    head = response_logprobs(model, tokenizer, sequences, batch_size=4, device=None, shared_prompts=2, path="head")
    np.testing.assert_allclose(head, plain, rtol=0, atol=2e-5)
    assert (plain < 0).all()


def test_a_decoder_without_a_cache_scores_each_sequence_whole(peft_model, monkeypatch) -> None:
    model, tokenizer = peft_model
    records = _records(5, seed=2)
    plain = margins_matrix(model, tokenizer, SOURCES, records, 0.1, path="plain")
    no_cache = scoring_module.scoring_model

    def without_cache(*args, **kwargs):
        scorer = no_cache(*args, **kwargs)
        assert scorer is not None
        return scoring_module.ScoringModel(scorer.decoder, scorer.head, None, scorer.config, scorer.device)

    monkeypatch.setattr(scoring_module, "scoring_model", without_cache)
    np.testing.assert_allclose(margins_matrix(model, tokenizer, SOURCES, records, 0.1), plain, rtol=0, atol=2e-5)


@pytest.mark.parametrize("tie,bias", [(True, False), (False, True)])
def test_tied_heads_and_biased_heads(tie: bool, bias: bool) -> None:
    model, tokenizer = _peft(tie=tie, bias=bias)
    records = _records(4, seed=3)
    plain = margins_matrix(model, tokenizer, SOURCES, records, 0.1, path="plain")
    np.testing.assert_allclose(
        margins_matrix(model, tokenizer, SOURCES, records, 0.1, path="head"), plain, rtol=0, atol=2e-5
    )


def test_a_transformed_head_falls_back_to_the_plain_path(peft_model, monkeypatch) -> None:
    model, tokenizer = peft_model
    config = model.get_base_model().config
    monkeypatch.setattr(config, "final_logit_softcapping", 30.0, raising=False)
    assert scoring_model(model) is None
    records = _records(3, seed=4)
    with pytest.raises(InvalidArgumentError, match="final_logit_softcapping"):
        margins_matrix(model, tokenizer, SOURCES, records, 0.1, path="head")
    auto = margins_matrix(model, tokenizer, SOURCES, records, 0.1)  # the plain path, silently
    monkeypatch.setattr(config, "final_logit_softcapping", None)
    plain = margins_matrix(model, tokenizer, SOURCES, records, 0.1, path="plain")
    np.testing.assert_allclose(auto, plain, rtol=0, atol=2e-5)  # softcapping is not applied by Llama


def test_likelihood_logits_at_response_positions_equal_the_plain_path(peft_model, monkeypatch) -> None:
    model, tokenizer = peft_model
    records = _records(6, seed=5)
    head = ComposedLikelihood.from_model(model, tokenizer, SOURCES, records, batch_size=4)
    monkeypatch.setattr(scoring_module, "scoring_model", lambda *a, **k: None)
    plain = ComposedLikelihood.from_model(model, tokenizer, SOURCES, records, batch_size=4)
    assert head.logits.shape == plain.logits.shape and head.logits.shape[1] == 3
    torch.testing.assert_close(head.targets, plain.targets)
    torch.testing.assert_close(head.items, plain.items)
    torch.testing.assert_close(head.logits, plain.logits, rtol=0, atol=2e-5)
    coalitions = np.array([[0, 0], [1, 0], [1, 1]], dtype=bool)
    np.testing.assert_allclose(head(coalitions), plain(coalitions), rtol=0, atol=1e-5)


def test_bad_path_is_clear(peft_model) -> None:
    model, tokenizer = peft_model
    with pytest.raises(InvalidArgumentError, match="path"):
        response_logprobs(model, tokenizer, [([1, 2, 3], 1)], batch_size=2, device=None, path="fast")  # type: ignore[arg-type]

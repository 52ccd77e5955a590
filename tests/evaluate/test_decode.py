"""Batched composed decoding against the slow reference, on the toy world's model.

The adapters are LoRA adapters with random ``lora_B`` (no training: decoding does not care how
they were learnt); ``duplicate`` is a copy of ``helpful``, so that coalitions with the same
distribution but different rows exist.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model

from dposhap.compose import noise
from dposhap.errors import InvalidArgumentError
from dposhap.evaluate.decoding import ComposedDecoder, DecodeConfig, reference_generate
from dposhap.models import load_base_model, load_tokenizer, resolve_model
from dposhap.worlds.toy import build_toy_world

pytestmark = pytest.mark.usefixtures("one_thread")

SOURCES = ("helpful", "harmless", "noisy", "duplicate")
LORA = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear")
# empty, singletons, a pair, the duplicate pair, everything
COALITIONS = np.array(
    [
        [0, 0, 0, 0],
        [1, 0, 0, 0],
        [0, 0, 0, 1],
        [0, 1, 0, 0],
        [1, 1, 0, 0],
        [0, 1, 0, 1],
        [1, 1, 1, 0],
    ],
    dtype=bool,
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_toy_world(
        tmp_path_factory.mktemp("toy") / "world", seed=0, sources=["helpful"], pairs_per_source=8, n_eval_prompts=8
    ).model_dir


def _with_adapters(model_dir: Path, lora: LoraConfig = LORA, seed: int = 0):
    """The toy model with the four adapters of :data:`SOURCES`, ``lora_B`` random, and its tokenizer."""
    ref = resolve_model(str(model_dir))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # lora_A's initialisation
        model = get_peft_model(load_base_model(ref, dtype=torch.float32, device="cpu"), lora, adapter_name=SOURCES[0])
        for name in SOURCES[1:]:
            model.add_adapter(name, lora)
    gen = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    for name, param in params.items():
        if "lora_B" in name:
            param.data = torch.randn(param.shape, generator=gen) * 0.3
    for name, param in params.items():
        if ".duplicate." in name:
            param.data = params[name.replace(".duplicate.", ".helpful.")].data.clone()
    return model.eval(), load_tokenizer(ref)


@pytest.fixture(scope="module")
def decoder(model_dir: Path) -> ComposedDecoder:
    model, tokenizer = _with_adapters(model_dir)
    return ComposedDecoder(model, tokenizer, SOURCES)


@pytest.fixture(scope="module")
def prompts() -> list[str]:
    """Four prompts of three different lengths."""
    return [
        "Q: weather so A:",
        "Q: cooking maybe well A:",
        "Q: music really the very so just well A:",
        "Q: travel maybe just A:",
    ]


def _reference(
    decoder: ComposedDecoder,
    prompts: list[str],
    coalitions: np.ndarray,
    config: DecodeConfig,
    weights: np.ndarray | None = None,
) -> tuple[list[list[list[int]]], np.ndarray]:
    ids = [[[] for _ in prompts] for _ in coalitions]
    corrections = np.zeros((len(coalitions), len(prompts)))
    for k, coalition in enumerate(coalitions):
        for b, prompt in enumerate(prompts):
            ids[k][b], corrections[k, b] = reference_generate(
                decoder.model,
                decoder.tokenizer,
                decoder.sources,
                prompt,
                coalition,
                config,
                weights=None if weights is None else weights[k],
                stream_id=b,
            )
    return ids, corrections


@pytest.mark.parametrize(
    "config",
    [
        DecodeConfig(max_new_tokens=8),
        DecodeConfig(max_new_tokens=6, temperature=0.7, top_k=5, seed=11, correction=True),
        DecodeConfig(max_new_tokens=5, top_k=1, hidden_fast_path="off"),
    ],
    ids=["t1-fast-path", "topk-correction", "greedy-logits-path"],
)
def test_same_tokens_as_reference(decoder: ComposedDecoder, prompts: list[str], config: DecodeConfig) -> None:
    result = decoder.generate(prompts, COALITIONS, config)
    expected, corrections = _reference(decoder, prompts, COALITIONS, config)
    assert result.token_ids == expected
    if config.correction:
        np.testing.assert_allclose(result.log_weights, corrections, rtol=1e-4, atol=1e-5)
        single = COALITIONS.sum(axis=1) <= 1
        assert (result.log_weights[single] == 0).all()
        # a pair of distinct sources is not normalised at the sequence level
        assert (result.log_weights[4] != 0).all()
    else:
        assert result.log_weights is None
    assert result.completions == [decoder.tokenizer.batch_decode(row, skip_special_tokens=True) for row in expected]
    # the coalitions do not all say the same thing
    assert len({tuple(map(tuple, row)) for row in result.token_ids}) >= 4


def test_weights_other_than_one(decoder: ComposedDecoder, prompts: list[str]) -> None:
    weights = np.array([[0.5, 1.5, -0.25, 2.0]] * len(COALITIONS))
    config = DecodeConfig(max_new_tokens=5, seed=5)
    result = decoder.generate(prompts, COALITIONS, config, weights=weights)
    assert result.token_ids == _reference(decoder, prompts, COALITIONS, config, weights)[0]
    # weights change what is sampled
    assert result.token_ids != decoder.generate(prompts, COALITIONS, config).token_ids


def _direct_sampling(model: torch.nn.Module, tokenizer, prompt: str, stream: int, config: DecodeConfig) -> list[int]:
    """Gumbel-max from a plain causal LM's own logits, with the noise of :mod:`dposhap.compose.noise`."""
    ids = tokenizer(prompt)["input_ids"]
    out: list[int] = []
    with torch.inference_mode():
        for step in range(config.max_new_tokens):
            logits = model(input_ids=torch.tensor([ids + out])).logits[0, -1] / config.temperature
            gumbel = noise.gumbel(config.seed, torch.tensor([stream]), step, logits.shape[0])[0]
            token = int(torch.argmax(logits + gumbel))
            if token == tokenizer.eos_token_id:
                break
            out.append(token)
    return out


def test_empty_coalition_is_the_reference_and_singleton_the_source(
    decoder: ComposedDecoder, prompts: list[str]
) -> None:
    config = DecodeConfig(max_new_tokens=8, temperature=0.9, seed=2)
    result = decoder.generate(prompts, np.array([[0, 0, 0, 0], [0, 1, 0, 0]], dtype=bool), config)
    merged = copy.deepcopy(decoder.model).merge_and_unload(adapter_names=["harmless"])
    with decoder.model.disable_adapter():
        base = [_direct_sampling(decoder.model, decoder.tokenizer, p, b, config) for b, p in enumerate(prompts)]
    source = [_direct_sampling(merged, decoder.tokenizer, p, b, config) for b, p in enumerate(prompts)]
    assert result.token_ids == [base, source]
    assert base != source


def test_common_random_numbers(decoder: ComposedDecoder, prompts: list[str]) -> None:
    config = DecodeConfig(max_new_tokens=8, seed=7)
    result = decoder.generate(prompts, COALITIONS, config)
    ids = result.token_ids
    # helpful and its duplicate are different rows with the same distribution: the same samples
    assert ids[1] == ids[2] and ids[4] == ids[5]
    # the noise depends on neither K nor the order of the coalitions
    order = np.array([6, 0, 4, 2])
    assert decoder.generate(prompts, COALITIONS[order], config).token_ids == [ids[k] for k in order]
    # another seed, other samples
    assert decoder.generate(prompts, COALITIONS, DecodeConfig(max_new_tokens=8, seed=8)).token_ids != ids


def test_eos_stops_a_sequence(decoder: ComposedDecoder, prompts: list[str]) -> None:
    eos = decoder.tokenizer.eos_token_id
    config = DecodeConfig(max_new_tokens=12, seed=1)
    result = decoder.generate(prompts, COALITIONS, config)
    lengths = [len(ids) for row in result.token_ids for ids in row]
    # the toy language's completions are 4 to 8 words: many sequences end with an EOS
    assert max(lengths) <= 12 and sum(n < 12 for n in lengths) >= len(lengths) // 4
    assert all(eos not in ids for row in result.token_ids for ids in row)
    # one token per step while alive, the EOS included
    assert result.new_tokens == sum(n + (n < 12) for n in lengths)
    assert [result.token_ids[k] for k in (0, 4)] == _reference(decoder, prompts, COALITIONS[[0, 4]], config)[0]


def test_hidden_fast_path_equals_logits_path(decoder: ComposedDecoder, prompts: list[str]) -> None:
    assert decoder.hidden_path_blocker() is None
    weights = np.array([[1.0, 0.5, 0.75, 1.0]] * len(COALITIONS))
    for config in (DecodeConfig(max_new_tokens=10, seed=4), DecodeConfig(max_new_tokens=10, seed=4, top_k=3)):
        fast = decoder.generate(prompts, COALITIONS, replace(config, hidden_fast_path="on"), weights=weights)
        slow = decoder.generate(prompts, COALITIONS, replace(config, hidden_fast_path="off"), weights=weights)
        assert fast.token_ids == slow.token_ids


def test_lora_on_the_lm_head_and_embeddings_use_the_general_paths(model_dir: Path, prompts: list[str]) -> None:
    lora = LoraConfig(r=2, lora_alpha=4, lora_dropout=0.0, target_modules=["q_proj", "lm_head", "embed_tokens"])
    model, tokenizer = _with_adapters(model_dir, lora)
    decoder = ComposedDecoder(model, tokenizer, SOURCES)
    # LoRA on the LM head: logits are combined; on the embeddings: PEFT's adapter_names
    assert "LM head" in decoder.hidden_path_blocker()
    with pytest.raises(InvalidArgumentError, match="hidden_fast_path"):
        decoder.generate(prompts, COALITIONS, DecodeConfig(hidden_fast_path="on"))
    with pytest.raises(InvalidArgumentError, match="Embedding"):
        decoder.generate(prompts, COALITIONS, DecodeConfig(mixed_lora="own"))
    config = DecodeConfig(max_new_tokens=5)
    coalitions = COALITIONS[[0, 1, 4]]
    expected = _reference(decoder, prompts, coalitions, config)[0]
    assert decoder.generate(prompts, coalitions, config).token_ids == expected


def _forwards(decoder: ComposedDecoder):
    """Count the calls of the model's decoder (one per forward of the whole model)."""
    calls = []
    handle = decoder._decoder.register_forward_pre_hook(lambda module, args: calls.append(1))
    return calls, handle


def test_prefill_once_then_one_forward_per_step(decoder: ComposedDecoder, prompts: list[str]) -> None:
    # the models some coalition of COALITIONS[1:] uses: the reference and the four sources
    pairs = 5 * len(prompts)
    config = DecodeConfig(max_new_tokens=1, share_prefixes=False)
    assert decoder.generate(prompts, COALITIONS[1:], config).forward_rows == pairs
    # singletons of weight 1 never read the reference: it is not even prefilled
    assert decoder.generate(prompts, COALITIONS[1:4], config).forward_rows == 3 * len(prompts)

    calls, handle = _forwards(decoder)
    try:
        result = decoder.generate(prompts, COALITIONS, DecodeConfig(max_new_tokens=4))
    finally:
        handle.remove()
    steps = max(len(ids) + (len(ids) < 4) for row in result.token_ids for ids in row)  # an EOS is a step too
    assert steps > 1
    # the prefill samples the first token; every later step takes one forward
    assert len(calls) == steps


def test_sharing_and_chunking_change_nothing_but_the_work(decoder: ComposedDecoder, prompts: list[str]) -> None:
    config = DecodeConfig(max_new_tokens=8, seed=6, correction=True)
    shared = decoder.generate(prompts, COALITIONS, config)
    alone = decoder.generate(
        prompts, COALITIONS, DecodeConfig(max_new_tokens=8, seed=6, correction=True, share_prefixes=False)
    )
    chunked = decoder.generate(prompts, COALITIONS, DecodeConfig(max_new_tokens=8, seed=6, correction=True, max_rows=7))
    assert shared.token_ids == alone.token_ids == chunked.token_ids
    np.testing.assert_allclose(shared.log_weights, alone.log_weights, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(shared.log_weights, chunked.log_weights, rtol=1e-4, atol=1e-5)
    # helpful and duplicate coincide, so do many coalitions early on: shared rows are computed once
    assert shared.forward_rows < alone.forward_rows
    assert shared.new_tokens == alone.new_tokens
    with pytest.raises(InvalidArgumentError, match="max_rows"):
        decoder.generate(prompts, COALITIONS, DecodeConfig(max_rows=3))


def test_backends_and_lora_paths_agree(decoder: ComposedDecoder, prompts: list[str]) -> None:
    config = DecodeConfig(max_new_tokens=6, seed=12, hidden_fast_path="off")
    expected = decoder.generate(prompts, COALITIONS, replace(config, backend="torch", mixed_lora="peft")).token_ids
    assert decoder.generate(prompts, COALITIONS, config).token_ids == expected
    assert decoder.generate(prompts, COALITIONS, replace(config, mixed_lora="peft")).token_ids == expected
    assert decoder.generate(prompts, COALITIONS, replace(config, mixed_lora="own")).token_ids == expected


def test_bad_arguments(decoder: ComposedDecoder, prompts: list[str]) -> None:
    for kwargs, field in [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"temperature": 0.0}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"seed": -1}, "seed"),
        ({"hidden_fast_path": "yes"}, "hidden"),
        ({"backend": "gpu"}, "backend"),
        ({"max_rows": 0}, "max_rows"),
        ({"mixed_lora": "fast"}, "mixed_lora"),
        ({"hidden_fast_path": "on", "correction": True}, "hidden_fast_path"),
    ]:
        with pytest.raises(InvalidArgumentError, match=field):
            DecodeConfig(**kwargs)
    with pytest.raises(InvalidArgumentError, match="coalitions"):
        decoder.generate(prompts, np.ones((2, 3), dtype=bool))
    with pytest.raises(InvalidArgumentError, match="coalitions"):
        decoder.generate(prompts, np.full((2, 4), 0.5))
    with pytest.raises(InvalidArgumentError, match="weights"):
        decoder.generate(prompts, COALITIONS, weights=np.ones((2, 4)))
    with pytest.raises(InvalidArgumentError, match="not finite"):
        decoder.generate(prompts, COALITIONS[:2], weights=np.array([[1.0, 1, 1, 1], [np.nan, 1, 1, 1]]))
    with pytest.raises(InvalidArgumentError, match="adapters"):
        ComposedDecoder(decoder.model, decoder.tokenizer, ["helpful", "unknown"])
    with pytest.raises(InvalidArgumentError, match="PeftModel"):
        ComposedDecoder(decoder.model.get_base_model(), decoder.tokenizer, ["helpful"])
    empty = decoder.generate([], COALITIONS)
    assert empty.token_ids == [[] for _ in COALITIONS] and empty.new_tokens == 0


def test_the_cache_goes_by_the_current_keyword_without_deprecation_warnings(
    decoder: ComposedDecoder, prompts: list[str]
) -> None:
    import warnings

    import transformers

    from dposhap.evaluate.decoding import cache_keyword

    causal_lm = decoder.model.get_base_model()
    keyword = cache_keyword(causal_lm)
    # the installed (pinned, and newest on PyPI at the time of writing) transformers takes `cache=`
    assert keyword == ("cache" if transformers.__version__ >= "5.24" else keyword)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*past_key_values.*")
        result = decoder.generate(prompts[:2], np.array([[True, False, True, False]]), DecodeConfig(max_new_tokens=3))
    assert result.new_tokens > 0

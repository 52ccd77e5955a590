"""The toy world's tokenizer and reference model, pretrained in-run on the synthetic language."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

from .language import (
    BOS_TOKEN,
    COMPLETION_LENGTHS,
    EOS_TOKEN,
    PAD_TOKEN,
    UNK_TOKEN,
    VOCABULARY,
    sample_completions,
    topic_of,
)

MODEL_SHAPE = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 64,
}
"""The shape of the tiny Llama reference model."""

PRETRAIN_STEPS = 600
PRETRAIN_BATCH_SIZE = 32
PRETRAIN_LEARNING_RATE = 3e-3
PRETRAIN_WARMUP_STEPS = 30

_TOKEN_ID = {token: i for i, token in enumerate(VOCABULARY)}


def build_tokenizer() -> PreTrainedTokenizerFast:
    """The word-level tokenizer of the language.

    Words are split on whitespace and looked up in :data:`~dposhap.toy.language.VOCABULARY`
    (unknown words become ``<unk>``); encoding adds ``<s>`` in front; special tokens are
    split off even when glued to a word (``"rain</s>"``), as TRL appends the EOS to completions
    without a space. Decoding joins the words with single spaces.

    Returns
    -------
    PreTrainedTokenizerFast
        With ``<s>``, ``</s>``, ``<pad>`` and ``<unk>`` as its BOS, EOS, padding and unknown tokens.
    """
    backend = Tokenizer(models.WordLevel(vocab=dict(_TOKEN_ID), unk_token=UNK_TOKEN))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A $B", special_tokens=[(BOS_TOKEN, _TOKEN_ID[BOS_TOKEN])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        clean_up_tokenization_spaces=False,
        padding_side="left",
    )


def _pretraining_corpus(
    rng: np.random.Generator, prompts: list[str], n_sequences: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and next-token labels of ``n_sequences`` texts ``<s> prompt completion </s>``.

    Returns
    -------
    input_ids, labels
        ``[n_sequences, L]``, right-padded with ``<pad>``; the labels are the ids on the
        completion and its EOS, -100 (ignored) on the prompt and the padding.
    """
    chosen = [prompts[i] for i in rng.integers(len(prompts), size=n_sequences)]
    completions = sample_completions(rng, [topic_of(p) for p in chosen])
    longest = 2 + max(len(p.split()) for p in prompts) + max(COMPLETION_LENGTHS)
    input_ids = np.full((n_sequences, longest), _TOKEN_ID[PAD_TOKEN], dtype=np.int64)
    labels = np.full((n_sequences, longest), -100, dtype=np.int64)
    for row, (prompt, words) in enumerate(zip(chosen, completions, strict=True)):
        prompt_ids = [_TOKEN_ID[t] for t in (BOS_TOKEN, *prompt.split())]
        completion_ids = [_TOKEN_ID[t] for t in (*words, EOS_TOKEN)]
        end = len(prompt_ids) + len(completion_ids)
        input_ids[row, :end] = prompt_ids + completion_ids
        labels[row, len(prompt_ids) : end] = completion_ids
    return torch.from_numpy(input_ids), torch.from_numpy(labels)


def pretrain_model(rng: np.random.Generator, prompts: list[str], seed: int) -> LlamaForCausalLM:
    """Initialise the tiny Llama and pretrain it on the language.

    Parameters
    ----------
    rng
        Draws the pretraining corpus, in the order it is trained on: prompts from ``prompts``,
        completions from :func:`~dposhap.toy.language.sample_completions`.
    prompts
        The prompts the model may see.
    seed
        Seeds the weight initialisation (the global torch random state is left as it was).

    Returns
    -------
    LlamaForCausalLM
        In eval mode, float32, with an untied LM head, after :data:`PRETRAIN_STEPS` AdamW steps
        of next-token prediction on the completions (linear warm-up, then cosine decay).

    Notes
    -----
    Training runs on one CPU thread (restored afterwards): the model is so small that more
    threads gain nothing, and on a busy machine they wait on each other and run tens of times
    slower. One thread also makes the weights independent of the machine's core count.
    """
    input_ids, labels = _pretraining_corpus(rng, prompts, PRETRAIN_STEPS * PRETRAIN_BATCH_SIZE)
    config = LlamaConfig(
        vocab_size=len(VOCABULARY),
        **MODEL_SHAPE,
        tie_word_embeddings=False,
        bos_token_id=_TOKEN_ID[BOS_TOKEN],
        eos_token_id=_TOKEN_ID[EOS_TOKEN],
        pad_token_id=_TOKEN_ID[PAD_TOKEN],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=PRETRAIN_LEARNING_RATE, weight_decay=0.0)

    def warmup_then_cosine(step: int) -> float:
        return min(1.0, (step + 1) / PRETRAIN_WARMUP_STEPS) * 0.5 * (1 + math.cos(math.pi * step / PRETRAIN_STEPS))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then_cosine)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model.train()
        # Right padding needs no attention mask: causal attention never looks ahead at it.
        for batch_ids, batch_labels in zip(
            input_ids.split(PRETRAIN_BATCH_SIZE), labels.split(PRETRAIN_BATCH_SIZE), strict=True
        ):
            model(input_ids=batch_ids, labels=batch_labels).loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def save_model(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, model_dir: Path) -> None:
    """Write the model (safetensors) and its tokenizer as one Hugging Face folder."""
    bar_was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a bar for one small shard is only noise
    try:
        model.save_pretrained(model_dir)
    finally:
        if bar_was_enabled:
            hf_logging.enable_progress_bar()
    tokenizer.save_pretrained(model_dir)

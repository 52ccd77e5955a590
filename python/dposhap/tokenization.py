"""Tokenisation of preference records exactly as TRL's ``DPOTrainer`` (1.x) does it.

So that the margins dposhap computes are the ``rewards/margins`` TRL reports:

- plain text: the EOS token is appended to each response that does not already end with it;
  ``prompt``, ``prompt + chosen`` and ``prompt + rejected`` are tokenized (with the tokenizer's
  special tokens), and the response starts where the tokenized prompt stops being a prefix of
  both tokenized sequences;
- conversations: the same with the tokenizer's chat template (the prompt with the generation
  prompt, prompt + response without);
- a sequence longer than ``max_length`` keeps its first ``max_length`` tokens (TRL's default
  ``keep_start``); a response truncated away entirely has log-probability 0 (TRL instead drops
  such pairs from its dataset).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .errors import DataError, InvalidArgumentError
from .validate import check_int

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["Record", "check_records", "encode", "response_sequences", "tokenize_responses"]

#: A preference record: ``{"prompt", "chosen", "rejected"}``, plain strings or conversations.
Record = Mapping[str, Any]


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def encode(tokenizer: PreTrainedTokenizerBase, text: Any, *, generation_prompt: bool = False) -> list[int]:
    """Token ids of a plain string (special tokens added) or of a conversation (chat template)."""
    if isinstance(text, list):
        if not getattr(tokenizer, "chat_template", None):
            raise InvalidArgumentError(
                "the records are conversations but the tokenizer has no chat template: give plain-text records or "
                "a tokenizer with a chat_template"
            )
        out = tokenizer.apply_chat_template(
            text, tokenize=True, return_dict=True, add_generation_prompt=generation_prompt, tools=None
        )
        return list(out["input_ids"])
    return list(tokenizer(text=text)["input_ids"])


def tokenize_responses(
    tokenizer: PreTrainedTokenizerBase, record: Record, fields: Sequence[str]
) -> tuple[list[int], list[list[int]]]:
    """The prompt's token ids and, for each response field, the response's ids (TRL's split)."""
    prompt = record["prompt"]
    responses = [record[name] for name in fields]
    if isinstance(prompt, list):
        full = [encode(tokenizer, prompt + response) for response in responses]
        prompt_ids = encode(tokenizer, prompt, generation_prompt=True)
    else:
        eos = tokenizer.eos_token
        if eos is None:
            raise InvalidArgumentError("the tokenizer has no EOS token, which TRL appends to plain-text responses")
        full = [encode(tokenizer, prompt + (r if r.endswith(eos) else r + eos)) for r in responses]
        prompt_ids = encode(tokenizer, prompt)
    n_prompt = min(_common_prefix(prompt_ids, ids) for ids in full)
    return prompt_ids[:n_prompt], [ids[n_prompt:] for ids in full]


def check_records(records: Sequence[Record], fields: Sequence[str]) -> None:
    """At least one record, each a mapping with ``prompt`` and every field of ``fields``."""
    if len(records) == 0:
        raise InvalidArgumentError("no records to score: give at least one {prompt, chosen, rejected} record")
    for index, record in enumerate(records):
        for name in ("prompt", *fields):
            if not isinstance(record, Mapping) or name not in record:
                raise DataError(f"record {index} has no {name!r} field", field=name)


def response_sequences(
    tokenizer: PreTrainedTokenizerBase, records: Sequence[Record], fields: Sequence[str], max_length: int | None
) -> list[tuple[list[int], int]]:
    """``(ids, n_prompt)`` per record and field (field-major: every record's first field first)."""
    check_records(records, fields)
    check_int("max_length", max_length, optional=True)
    split = [tokenize_responses(tokenizer, record, fields) for record in records]
    out = []
    for j in range(len(fields)):
        for prompt_ids, responses in split:
            ids = prompt_ids + responses[j]
            out.append((ids[:max_length] if max_length is not None else ids, len(prompt_ids)))
    return out

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

:func:`to_one_format` makes a pool of records one format (a TRL dataset holds one): when it mixes
plain strings and conversations, the conversations become the plain strings TRL's chat template
renders them to (the prompt with the generation prompt, each response the continuation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .errors import DataError, InvalidArgumentError
from .validate import check_int

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "Record",
    "check_records",
    "encode",
    "mixed_formats",
    "response_sequences",
    "to_one_format",
    "tokenize_responses",
]

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


def mixed_formats(records: Sequence[Record]) -> bool:
    """Whether ``records`` hold both formats: some prompts plain strings, some conversations."""
    return len({isinstance(record["prompt"], list) for record in records}) > 1


def to_one_format(records: Sequence[Record], tokenizer: PreTrainedTokenizerBase) -> list[dict[str, Any]]:
    """The ``{prompt, chosen, rejected}`` of ``records`` in one format, for one TRL dataset.

    Records all in one format come back as they are (as new dicts of the same values). A pool
    that mixes them keeps its plain strings, and each conversation becomes the strings TRL's
    ``apply_chat_template`` renders with ``tokenizer``: the prompt with the generation prompt,
    chosen and rejected as what the whole conversation adds to it. When the tokenizer itself
    puts its BOS token in front of a plain string and the chat template renders one too, the
    rendered one is taken off the prompt, so TRL does not tokenise it twice: the prompt and the
    response tokens are then the ones TRL trains the conversation on (TRL still appends the EOS
    token to a plain response that does not end with it).

    Raises
    ------
    InvalidArgumentError
        The pool mixes formats and the tokenizer has no chat template.
    """
    out = [{name: record[name] for name in ("prompt", "chosen", "rejected")} for record in records]
    if not mixed_formats(out):
        return out
    if not getattr(tokenizer, "chat_template", None):
        location = getattr(tokenizer, "name_or_path", "") or "the base model"
        raise InvalidArgumentError(
            f"the data mix conversations and plain strings, and the tokenizer of {location} has no chat template "
            "to write the conversations as plain strings: use a model with one (an instruct model), or give "
            "plain-text prompts and responses"
        )
    from trl.data_utils import apply_chat_template

    bos = _added_bos(tokenizer)
    for index, record in enumerate(out):
        if isinstance(record["prompt"], list):
            text = apply_chat_template(record, tokenizer)
            prompt = text["prompt"]
            if bos is not None and prompt.startswith(bos):
                prompt = prompt[len(bos) :]
            out[index] = {"prompt": prompt, "chosen": text["chosen"], "rejected": text["rejected"]}
    return out


def _added_bos(tokenizer: PreTrainedTokenizerBase) -> str | None:
    """The BOS token's text when the tokenizer puts it in front of every plain string it encodes, else None."""
    bos, bos_id = tokenizer.bos_token, tokenizer.bos_token_id
    if bos is None or bos_id is None:
        return None
    ids = tokenizer(text="a")["input_ids"]
    plain = tokenizer(text="a", add_special_tokens=False)["input_ids"]
    return bos if len(ids) > len(plain) and ids[:1] == [bos_id] and plain[:1] != [bos_id] else None

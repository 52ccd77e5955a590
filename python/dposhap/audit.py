"""The data audit: what each source's pairs hold once tokenised as TRL's DPO trainer tokenises them.

Per source: the number of pairs, mean prompt and response tokens, the pairs ``dpo.max_length``
truncates (and the response tokens that drops), pairs that repeat another pair of the source or
are in another source too (up to case and spacing: a vendor reselling another's data), prompts of
the trusted evaluation set (contamination: it inflates the source's value on that set), and pairs
whose chosen and rejected are identical once tokenised. :meth:`DataAudit.warnings` words each
finding as one line; ``dposhap check`` prints them and ``dposhap train`` writes the audit to
``RUN/data-audit.json``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from .tokenization import tokenize_responses

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["AUDIT_FORMAT", "DataAudit", "SourceAudit", "audit_sources", "audit_summary"]

#: The version of the layout of ``data-audit.json``.
AUDIT_FORMAT = 1


@dataclass
class SourceAudit:
    """What one source's pairs hold.

    Attributes
    ----------
    pairs
        Its pairs (training and held-out).
    mean_prompt_tokens, mean_response_tokens
        Mean tokens of the prompt and of a response (chosen and rejected together), as TRL splits them.
    truncated_pairs
        Pairs whose prompt + chosen or prompt + rejected is longer than ``max_length``.
    dropped_response_tokens
        Response tokens (chosen and rejected) cut off by that truncation.
    prompt_only_pairs
        Pairs whose prompt alone fills ``max_length``: TRL drops them from training.
    duplicate_pairs
        Pairs that repeat an earlier pair of the source up to case and spacing.
    shared_pairs
        Other source -> pairs of this source that are also in it (up to case and spacing).
    eval_prompts
        Pairs whose prompt is a prompt of the trusted evaluation set (up to case and spacing).
    identical_pairs
        Pairs whose chosen and rejected are the same tokens.
    """

    pairs: int
    mean_prompt_tokens: float
    mean_response_tokens: float
    truncated_pairs: int
    dropped_response_tokens: int
    prompt_only_pairs: int
    duplicate_pairs: int
    shared_pairs: dict[str, int] = field(default_factory=dict)
    eval_prompts: int = 0
    identical_pairs: int = 0


@dataclass
class DataAudit:
    """The audit of every source, with the settings it was made under.

    Attributes
    ----------
    max_length
        ``dpo.max_length``: the tokens of prompt + response TRL keeps.
    eval_pairs
        Pairs in the trusted evaluation set (0 without one).
    sources
        Source name -> its audit.
    """

    max_length: int
    eval_pairs: int
    sources: dict[str, SourceAudit]

    def warnings(self) -> list[str]:
        """Each finding worth a look, one line each, source by source."""
        out = []
        length = f"dpo.max_length = {self.max_length}"
        for name, a in self.sources.items():
            if a.truncated_pairs:
                out.append(
                    f"{name}: {a.truncated_pairs} of {a.pairs} pairs are longer than {length} tokens: TRL truncates "
                    f"them, dropping {a.dropped_response_tokens} response tokens (raise dpo.max_length to keep them)"
                )
            if a.prompt_only_pairs:
                out.append(
                    f"{name}: {a.prompt_only_pairs} pairs have a prompt of {length} tokens or more: TRL drops them"
                )
            if a.duplicate_pairs:
                out.append(
                    f"{name}: {a.duplicate_pairs} pairs repeat another pair of the source (up to case and spacing)"
                )
            for other, count in a.shared_pairs.items():
                if name < other:  # once per two sources
                    out.append(
                        f"{name}: {count} pairs are also in {other} (up to case and spacing): one may resell the other"
                    )
            if a.eval_prompts:
                out.append(
                    f"{name}: {a.eval_prompts} pairs have a prompt of the trusted evaluation set: that inflates "
                    "the source's value on it (remove them from the source or from the set)"
                )
            if a.identical_pairs:
                out.append(
                    f"{name}: {a.identical_pairs} pairs have chosen and rejected identical once tokenised: "
                    "they teach nothing (the tokenizer may not tell the two apart)"
                )
        return out

    def summary(self) -> str:
        """One line: the sources, pairs and number of warnings (:func:`audit_summary`)."""
        return audit_summary(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """The audit as JSON-able data (what ``RUN/data-audit.json`` holds), warnings included."""
        return {
            "format": AUDIT_FORMAT,
            "max_length": self.max_length,
            "eval_pairs": self.eval_pairs,
            "sources": {name: asdict(a) for name, a in self.sources.items()},
            "warnings": self.warnings(),
        }


def audit_summary(doc: Mapping[str, Any]) -> str:
    """One line about an audit as :meth:`DataAudit.to_dict` writes it (``RUN/data-audit.json``).

    Raises
    ------
    KeyError, TypeError
        ``doc`` is not such an audit.
    """
    sources, found = doc["sources"], list(doc["warnings"])
    pairs = sum(int(entry["pairs"]) for entry in sources.values())
    tail = f"{len(found)} warning(s), first: {found[0]}" if found else "no warnings"
    return f"data audit: {len(sources)} source(s), {pairs} pairs; {tail}"


def audit_sources(
    sources: Mapping[str, Sequence[Mapping[str, Any]]],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    eval_records: Sequence[Mapping[str, Any]] = (),
) -> DataAudit:
    """Audit each source's ``{prompt, chosen, rejected}`` records (see the module docstring).

    Parameters
    ----------
    sources
        Source name -> its records (all of them: training and held-out).
    tokenizer
        The base model's tokenizer (with a chat template when the records are conversations).
    max_length
        ``dpo.max_length``.
    eval_records
        The trusted evaluation set, if any.

    Returns
    -------
    DataAudit

    Raises
    ------
    InvalidArgumentError
        The records are conversations and the tokenizer has no chat template.
    """
    keys = {name: [_key(record) for record in records] for name, records in sources.items()}
    key_sets = {name: set(found) for name, found in keys.items()}
    eval_prompts = {_key(record["prompt"]) for record in eval_records}
    out = {}
    for name, records in sources.items():
        prompt_tokens = response_tokens = truncated = dropped = prompt_only = identical = 0
        for record in records:
            prompt_ids, (chosen_ids, rejected_ids) = tokenize_responses(tokenizer, record, ("chosen", "rejected"))
            prompt_tokens += len(prompt_ids)
            response_tokens += len(chosen_ids) + len(rejected_ids)
            cut = [max(0, min(len(r), len(prompt_ids) + len(r) - max_length)) for r in (chosen_ids, rejected_ids)]
            truncated += any(cut)
            dropped += sum(cut)
            prompt_only += len(prompt_ids) >= max_length
            identical += chosen_ids == rejected_ids
        seen: set[str] = set()
        duplicates = 0
        for key in keys[name]:
            duplicates += key in seen
            seen.add(key)
        shared = {other: sum(key in key_sets[other] for key in keys[name]) for other in sources if other != name}
        n = max(1, len(records))
        out[name] = SourceAudit(
            pairs=len(records),
            mean_prompt_tokens=round(prompt_tokens / n, 2),
            mean_response_tokens=round(response_tokens / (2 * n), 2),
            truncated_pairs=truncated,
            dropped_response_tokens=dropped,
            prompt_only_pairs=prompt_only,
            duplicate_pairs=duplicates,
            shared_pairs={other: count for other, count in shared.items() if count},
            eval_prompts=sum(_key(record["prompt"]) in eval_prompts for record in records),
            identical_pairs=identical,
        )
    return DataAudit(max_length=max_length, eval_pairs=len(eval_records), sources=out)


def _key(value: Any) -> str:
    """A text or record up to case and spacing, as a comparable string."""
    return json.dumps(_folded(value), sort_keys=True)


def _folded(value: Any) -> Any:
    if isinstance(value, str):
        return " ".join(value.split()).casefold()
    if isinstance(value, Mapping):
        return {k: _folded(value[k]) for k in ("prompt", "chosen", "rejected", "role", "content") if k in value}
    if isinstance(value, list):
        return [_folded(item) for item in value]
    return value

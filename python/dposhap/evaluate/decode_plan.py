"""The plan of a composed decoding call: the rows (models) each coalition reads, the prompts' token
ids and EOS tokens, and the groups of sequences that fit under ``max_rows``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidArgumentError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class Coalition:
    """One coalition's rows: the models it reads (0 = reference, ``i + 1`` = source ``i``)."""

    ref_model: int  # the model whose row is the gather form's reference slot
    members: tuple[int, ...]  # models of non-zero weight
    weights: tuple[float, ...]

    @property
    def models(self) -> tuple[int, ...]:
        """Every model the coalition reads, its reference slot included, in ascending order."""
        return tuple(sorted({self.ref_model, *self.members}))


def plan_coalitions(coalitions: object, weights: object, n: int) -> list[Coalition]:
    """Check ``coalitions`` ``[K, n]`` (and ``weights``) and list each coalition's rows.

    The reference row is left out when the coalition is one member of weight exactly 1: its
    coefficient ``1 - w`` is then exactly 0 and the kernel never reads it.
    """
    mask = np.asarray(coalitions)
    if mask.ndim != 2 or mask.shape[1] != n:
        raise InvalidArgumentError(
            f"coalitions must be a bool array [K, n] with n = {n} sources, got shape {mask.shape}"
        )
    if mask.dtype != bool:
        if not np.issubdtype(mask.dtype, np.integer) or not np.isin(mask, (0, 1)).all():
            raise InvalidArgumentError(f"coalitions must be bool (or 0/1) membership [K, {n}], got dtype {mask.dtype}")
        mask = mask.astype(bool)
    if weights is None:
        w = np.ones(mask.shape, dtype=np.float64)
    else:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != mask.shape:
            raise InvalidArgumentError(f"weights must have the shape of coalitions {mask.shape}, got {w.shape}")
        bad = ~np.isfinite(w) & mask
        if bad.any():
            k, i = np.argwhere(bad)[0]
            raise InvalidArgumentError(f"weights[{k}, {i}] = {w[k, i]} is not finite; weights must be finite numbers")
    plan = []
    for k in range(mask.shape[0]):
        members = [i for i in range(n) if mask[k, i] and w[k, i] != 0.0]
        coalition_weights = tuple(float(w[k, i]) for i in members)
        single = len(members) == 1 and coalition_weights[0] == 1.0
        plan.append(Coalition(members[0] + 1 if single else 0, tuple(i + 1 for i in members), coalition_weights))
    return plan


def eos_ids(model: Any, tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    """The tokenizer's EOS token and those of the model's generation config."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    config = getattr(model, "generation_config", None)
    extra = getattr(config, "eos_token_id", None)
    if extra is not None:
        ids.update(int(i) for i in ([extra] if isinstance(extra, int) else extra))
    return frozenset(ids)


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str]) -> list[list[int]]:
    """The token ids of each prompt (with the tokenizer's special tokens); an error for an empty one."""
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise InvalidArgumentError("prompts must be a sequence of strings")
    if not prompts:
        return []
    ids = [list(map(int, row)) for row in tokenizer(list(prompts), add_special_tokens=True)["input_ids"]]
    for b, row in enumerate(ids):
        if not row:
            raise InvalidArgumentError(f"prompt {b} ({prompts[b]!r}) encodes to no tokens; give a non-empty prompt")
    return ids


def group_sequences(
    sequences: list[tuple[int, int]], plan: list[Coalition], max_rows: int | None
) -> list[list[tuple[int, int]]]:
    """Split the sequences, in order, into groups whose rows (without any sharing) fit ``max_rows``."""
    if max_rows is None:
        return [sequences]
    groups: list[list[tuple[int, int]]] = [[]]
    rows = 0
    for k, b in sequences:
        width = len(plan[k].models)
        if rows + width > max_rows:
            groups.append([])
            rows = 0
        groups[-1].append((k, b))
        rows += width
    return groups

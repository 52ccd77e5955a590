"""Teacher-forced forward passes: batched log-probabilities of given responses under a policy.

A run's model holds one adapter per source; :func:`policy` runs it as the reference (adapters
disabled) or as one source, and :func:`response_logprobs` scores responses: by default with
the LM head only at response positions, fused with the log-normaliser and chunked over the
vocabulary, each shared prompt run once (:mod:`dposhap.evaluate.scoring`); the plain way
(:func:`forward_batches`: right-padded batches of similar length, every position's logits) is
the reference and the fallback. Log-probabilities are summed over the response tokens, EOS
included, at temperature 1.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..errors import InvalidArgumentError
from ..tokenization import Record, response_sequences
from ..validate import check_int

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

#: How :func:`response_logprobs` scores: the fused head at response positions, the plain full-vocabulary way, or the first where it applies.
ScoringPath = Literal["auto", "head", "plain"]

__all__ = [
    "ScoringPath",
    "forward_batches",
    "model_device",
    "pad_id",
    "policy",
    "response_logprobs",
    "sequence_logprobs",
]


def model_device(model: Any) -> torch.device:
    """The device of a model's first parameter (CPU for a model without parameters)."""
    import torch

    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


@contextlib.contextmanager
def policy(model: Any, adapter: str | None) -> Iterator[None]:
    """Run ``model`` as the reference (``adapter=None``: adapters disabled) or as one source's policy."""
    is_peft = hasattr(model, "peft_config") and hasattr(model, "disable_adapter")
    if adapter is None:
        with model.disable_adapter() if is_peft else contextlib.nullcontext():
            yield
        return
    if not is_peft:
        raise InvalidArgumentError(
            f"adapter {adapter!r} asked for, but the model holds no adapters: load them with "
            "dposhap.models.load_adapters"
        )
    if adapter not in model.peft_config:
        raise InvalidArgumentError(f"the model has no adapter {adapter!r}; it has {sorted(model.peft_config)}")
    previous = model.active_adapter
    model.set_adapter(adapter, inference_mode=True)
    try:
        yield
    finally:
        model.set_adapter(previous, inference_mode=True)


def forward_batches(
    model: Any, sequences: Sequence[tuple[list[int], int]], *, batch_size: int, device: Any, pad_id: int
) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Teacher-forced logits of the sequences, a batch at a time, shortest sequences first.

    Yields
    ------
    (order, logits, targets, mask)
        ``order`` [B]: the sequences of the batch; ``logits`` [B, L-1, V] predicting
        ``targets`` [B, L-1]; ``mask`` [B, L-1] is True where the target is a response token.
    """
    import torch

    from .scoring import padded_batches  # torch loads on first use, not when the registry is read

    check_int("batch_size", batch_size)
    device = model_device(model) if device is None else torch.device(device)
    order = np.argsort([len(ids) for ids, _ in sequences], kind="stable")
    for batch, ids, attention, response in padded_batches(sequences, order, batch_size, pad_id):
        with torch.no_grad():
            logits = model(input_ids=ids.to(device), attention_mask=attention.to(device), use_cache=False).logits
        yield batch, logits[:, :-1], ids[:, 1:].to(logits.device), response[:, 1:].to(logits.device)


def pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The padding token id (EOS when there is none, 0 when there is neither)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return 0 if pad is None else int(pad)


def response_logprobs(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    sequences: Sequence[tuple[list[int], int]],
    *,
    batch_size: int,
    device: Any,
    shared_prompts: int = 1,
    path: ScoringPath = "auto",
) -> np.ndarray:
    """Summed response-token log-probabilities of each sequence, float64 ``[len(sequences)]``.

    Parameters
    ----------
    model, tokenizer
        The policy (as :func:`policy` set it) and its tokenizer.
    sequences
        ``(ids, n_prompt)`` per sequence (:func:`~dposhap.tokenization.response_sequences`).
    batch_size
        Sequences per forward pass.
    device
        Where the inputs go; default the model's device.
    shared_prompts
        The sequences come in this many field-major groups whose ``r``-th sequences share a
        prompt (2 for chosen and rejected): each prompt then runs once.
    path
        ``"head"``: the LM head only at response positions, fused with the log-normaliser and
        chunked over the vocabulary, shared prompts run once
        (:mod:`dposhap.evaluate.scoring`); ``"plain"``: the whole vocabulary's logits at every
        position, float32 ``log_softmax``, gather (the reference); ``"auto"``: ``"head"``
        where the model allows it (a plain linear LM head), else ``"plain"``.
    """
    import torch

    from .scoring import lm_head_blocker, scoring_model  # torch loads on first use

    check_int("batch_size", batch_size)
    if path not in ("auto", "head", "plain"):
        raise InvalidArgumentError(f'path must be "auto", "head" or "plain", got {path!r}')
    if path != "plain":
        scorer = scoring_model(model, device)
        if scorer is not None:
            return scorer.response_logprobs(
                sequences, batch_size=batch_size, pad_id=pad_id(tokenizer), shared_prompts=shared_prompts
            )
        if path == "head":
            causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
            raise InvalidArgumentError(
                f'path="head" does not apply to this model: {lm_head_blocker(causal_lm) or "it has no separate decoder"}'
            )
    out = np.zeros(len(sequences), dtype=np.float64)
    for batch, logits, targets, mask in forward_batches(
        model, sequences, batch_size=batch_size, device=device, pad_id=pad_id(tokenizer)
    ):
        logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets[..., None]).squeeze(-1)
        out[batch] = (logp.double() * mask).sum(dim=1).cpu().numpy()
    return out


def sequence_logprobs(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[Record],
    *,
    adapter: str | None,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    max_length: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Teacher-forced ``log pi(chosen | prompt)`` and ``log pi(rejected | prompt)`` of each record.

    Parameters
    ----------
    model
        A causal LM; a PEFT model (:func:`dposhap.models.load_adapters`) to score an adapter.
    tokenizer
        Its tokenizer.
    records
        ``{"prompt", "chosen", "rejected"}`` dicts: three plain strings or three conversations
        (lists of ``{"role", "content"}``), tokenized as TRL's ``DPOTrainer`` does (module docstring).
    adapter
        None for the reference policy (every adapter disabled), else the name of the adapter to
        score with.
    batch_size
        Pairs per forward pass (each pair is two sequences, right-padded; the batches group
        sequences of similar length).
    device
        Where the inputs go; default the model's device.
    max_length
        Keep at most this many tokens of prompt + response (TRL's ``max_length``); None: all.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        float64 ``[len(records)]`` each: the log-probability summed over the response tokens
        (EOS included, prompt excluded).

    Raises
    ------
    InvalidArgumentError
        An unknown adapter, no records, conversations without a chat template.
    DataError
        A record lacks a field.
    """
    sequences = response_sequences(tokenizer, records, ("chosen", "rejected"), max_length)
    with policy(model, adapter):
        logps = response_logprobs(
            model, tokenizer, sequences, batch_size=2 * batch_size, device=device, shared_prompts=2
        )
    return logps[: len(records)], logps[len(records) :]

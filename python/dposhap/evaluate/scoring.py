"""Teacher-forced scoring that runs the LM head only where a token is scored.

The plain way to score a response feeds prompt + response, takes the logits of every position
(``[batch, length, vocab]``), upcasts them to float32, normalises them over the vocabulary and
gathers the response tokens. Here instead:

- the decoder returns final hidden states; the positions that predict a response token are
  selected and only they meet the LM head;
- the head and the log-normaliser are fused and chunked over the vocabulary
  (:func:`dposhap.compose.head.linear_logprobs`: C++, CUDA or Triton kernels), so no
  ``[tokens, vocab]`` float32 tensor is held;
- responses that share a prompt (``chosen`` and ``rejected`` of a pair) run it once: the
  prompt's KV cache is repeated for each response, which then runs alone on top of it.

It applies when the LM head is a plain ``torch.nn.Linear`` applied as is (:func:`lm_head_blocker`);
the KV-cache reuse when the decoder takes a cache. Elsewhere :func:`scoring_model` says None and
the callers (:mod:`dposhap.evaluate.teacher`) score the plain way.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..compose.head import HeadBackendName, linear_logprobs

__all__ = [
    "ScoringModel",
    "cache_keyword",
    "lm_head_blocker",
    "padded_batches",
    "scoring_model",
]

#: Config fields of models that transform their logits after the LM head.
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


def cache_keyword(causal_lm: Any) -> str:
    """The keyword a causal LM's ``forward`` takes its :class:`~transformers.cache_utils.Cache`
    by: ``cache`` in transformers' current API (``past_key_values`` is deprecated there and
    removed in 5.40), ``past_key_values`` in the releases before it."""
    parameters = inspect.signature(causal_lm.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def lm_head_blocker(causal_lm: Any) -> str | None:
    """Why a causal LM's logits are not its final hidden states times a plain linear head shared by
    every adapter (LoRA or ``modules_to_save`` on the head, a logit transform after it), or None."""
    head = causal_lm.get_output_embeddings()
    if type(head) is not torch.nn.Linear:
        return (
            f"the LM head is a {type(head).__name__}, not a plain torch.nn.Linear shared by every "
            "source (LoRA or modules_to_save on it?)"
        )
    config = causal_lm.config
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for name in LOGIT_TRANSFORMS:
        value = getattr(config, name, None)
        if value is not None and value != 1:
            return f"the model transforms its logits after the LM head (config.{name} = {value})"
    return None


def padded_batches(
    sequences: Sequence[tuple[list[int], int]], order: np.ndarray, batch_size: int, pad_id: int
) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Right-padded batches of ``(ids, n_prompt)`` sequences, in ``order``.

    Yields
    ------
    (batch, ids, attention, response)
        ``batch`` [B]: the sequences' indices; ``ids`` and ``attention`` int64 ``[B, L]``;
        ``response`` bool ``[B, L]``, True at the response tokens that have a prediction (the
        first token of a sequence has none).
    """
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        width = max(2, max(len(sequences[i][0]) for i in batch))
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        response = torch.zeros((len(batch), width), dtype=torch.bool)
        for row, index in enumerate(batch):
            seq, n_prompt = sequences[index]
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            attention[row, : len(seq)] = 1
            response[row, max(n_prompt, 1) : len(seq)] = True
        yield batch, ids, attention, response


@dataclass(frozen=True)
class ScoringModel:
    """A causal LM split where scoring needs it: the decoder (final hidden states) and the LM head.

    Attributes
    ----------
    decoder
        The model's decoder (adapters, when the model is a PEFT model, act inside it).
    head
        The LM head, a plain ``torch.nn.Linear``.
    cache_keyword
        The keyword the decoder takes a KV cache by, or None when it takes none.
    config
        The causal LM's config (to build a cache).
    device
        Where inputs go.
    """

    decoder: Any
    head: torch.nn.Linear
    cache_keyword: str | None
    config: Any
    device: torch.device

    # ------------------------------------------------------------------------------
    # hidden states of the scored positions

    def _hidden(self, **inputs: Any) -> torch.Tensor:
        return self.decoder(**inputs).last_hidden_state

    def response_hidden(
        self, sequences: Sequence[tuple[list[int], int]], *, batch_size: int, pad_id: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The final hidden states of the positions that predict a response token, a batch at a time.

        Yields
        ------
        (hidden, targets, owners)
            ``hidden [T, H]`` (the model's dtype) predicting ``targets [T]``; ``owners`` int64
            ``[T]`` (on the CPU): the sequence each belongs to.
        """
        lengths = np.array([len(ids) for ids, _ in sequences])
        order = np.argsort(lengths, kind="stable")
        for batch, ids, attention, response in padded_batches(sequences, order, batch_size, pad_id):
            mask = response[:, 1:]
            if not bool(mask.any()):
                continue
            with torch.no_grad():
                hidden = self._hidden(
                    input_ids=ids.to(self.device), attention_mask=attention.to(self.device), use_cache=False
                )
            owners = torch.as_tensor(batch, dtype=torch.long)[:, None].expand(mask.shape)[mask]
            yield hidden[:, :-1][mask.to(hidden.device)], ids[:, 1:][mask].to(hidden.device), owners

    def shared_prompt_hidden(
        self, sequences: Sequence[tuple[list[int], int]], groups: int, *, batch_size: int, pad_id: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """As :meth:`response_hidden`, for sequences in ``groups`` field-major groups whose record
        ``r`` (sequences ``r, n + r, ...``) shares one prompt: each prompt runs once and its KV
        cache serves every response of the record. Records with an empty prompt run whole."""
        from transformers import DynamicCache

        n = len(sequences) // groups
        prompt_len = [min(sequences[r][1], *(len(sequences[g * n + r][0]) for g in range(groups))) for r in range(n)]
        whole = [g * n + r for r in range(n) if prompt_len[r] == 0 for g in range(groups)]
        if whole:  # no prompt token to predict the first response token from
            yield from self._selected(sequences, whole, batch_size=batch_size, pad_id=pad_id)
        cached = [r for r in range(n) if prompt_len[r] > 0]
        total = np.array([max(len(sequences[g * n + r][0]) for g in range(groups)) for r in cached])
        cached = [cached[i] for i in np.argsort(total, kind="stable")]
        per_batch = max(1, batch_size // groups)
        for start in range(0, len(cached), per_batch):
            records = cached[start : start + per_batch]
            prompts = [sequences[r][0][: prompt_len[r]] for r in records]
            responses = [[sequences[g * n + r][0][prompt_len[r] :] for g in range(groups)] for r in records]
            b, width = len(records), max(len(p) for p in prompts)
            ids = torch.full((b, width), pad_id, dtype=torch.long)
            mask = torch.zeros((b, width), dtype=torch.long)
            for row, prompt in enumerate(prompts):  # left-padded: every prompt ends in the last column
                ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
                mask[row, width - len(prompt) :] = 1
            cache = DynamicCache(config=self.config)
            mask = mask.to(self.device)
            with torch.no_grad():
                last = self._hidden(
                    input_ids=ids.to(self.device),
                    attention_mask=mask,
                    position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                    use_cache=True,
                    **{str(self.cache_keyword): cache},
                )[:, -1]
            longest = max(len(resp) for rows in responses for resp in rows)
            follow: torch.Tensor | None = None
            if longest >= 2:  # the responses' own positions predict their second token on
                cache.batch_repeat_interleave(groups)
                resp_ids = torch.full((b * groups, longest - 1), pad_id, dtype=torch.long)
                resp_mask = torch.zeros((b * groups, longest - 1), dtype=torch.long)
                for row, rows in enumerate(responses):
                    for g, resp in enumerate(rows):
                        k = len(resp) - 1
                        if k > 0:
                            resp_ids[row * groups + g, :k] = torch.tensor(resp[:k], dtype=torch.long)
                            resp_mask[row * groups + g, :k] = 1
                starts = torch.tensor([prompt_len[r] for r in records]).repeat_interleave(groups)
                with torch.no_grad():
                    follow = self._hidden(
                        input_ids=resp_ids.to(self.device),
                        attention_mask=torch.cat([mask.repeat_interleave(groups, 0), resp_mask.to(self.device)], 1),
                        position_ids=(starts[:, None] + torch.arange(longest - 1)[None, :]).to(self.device),
                        use_cache=True,
                        **{str(self.cache_keyword): cache},
                    )
            parts, targets, owners = [], [], []
            for row, rows in enumerate(responses):
                for g, resp in enumerate(rows):
                    if not resp:
                        continue
                    parts.append(last[row : row + 1])
                    if len(resp) > 1:
                        assert follow is not None
                        parts.append(follow[row * groups + g, : len(resp) - 1])
                    targets.extend(resp)
                    owners.extend([g * n + records[row]] * len(resp))
            if parts:
                yield (
                    torch.cat(parts),
                    torch.tensor(targets, dtype=torch.long, device=last.device),
                    torch.tensor(owners, dtype=torch.long),
                )

    def _selected(
        self, sequences: Sequence[tuple[list[int], int]], indices: Sequence[int], *, batch_size: int, pad_id: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """:meth:`response_hidden` of some of the sequences, owners numbered as in ``sequences``."""
        index = torch.as_tensor(list(indices), dtype=torch.long)
        for hidden, targets, owners in self.response_hidden(
            [sequences[i] for i in indices], batch_size=batch_size, pad_id=pad_id
        ):
            yield hidden, targets, index[owners]

    # ------------------------------------------------------------------------------
    # scores

    def response_logprobs(
        self,
        sequences: Sequence[tuple[list[int], int]],
        *,
        batch_size: int,
        pad_id: int,
        shared_prompts: int = 1,
        backend: HeadBackendName = "auto",
    ) -> np.ndarray:
        """Summed response-token log-probabilities of each sequence, float64 ``[len(sequences)]``.

        Parameters
        ----------
        sequences
            ``(ids, n_prompt)`` per sequence (:func:`~dposhap.tokenization.response_sequences`).
        batch_size
            Sequences per forward pass.
        pad_id
            The padding token.
        shared_prompts
            The sequences come in this many field-major groups whose ``r``-th sequences share a
            prompt (2 for chosen and rejected): each prompt then runs once, when the decoder
            takes a KV cache.
        backend
            The backend of :func:`dposhap.compose.head.linear_logprobs`.
        """
        out = torch.zeros(len(sequences), dtype=torch.float64)
        share = shared_prompts > 1 and self.cache_keyword is not None and len(sequences) % shared_prompts == 0
        batches = (
            self.shared_prompt_hidden(sequences, shared_prompts, batch_size=batch_size, pad_id=pad_id)
            if share
            else self.response_hidden(sequences, batch_size=batch_size, pad_id=pad_id)
        )
        weight, bias = self.head.weight, self.head.bias
        for hidden, targets, owners in batches:
            with torch.no_grad():
                logp, _ = linear_logprobs(hidden, weight, targets, bias=bias, backend=backend)
            out.index_add_(0, owners, logp.double().cpu())
        return out.numpy()


def scoring_model(model: Any, device: Any = None) -> ScoringModel | None:
    """``model`` (a causal LM or a PEFT model around one) split for scoring, or None when its
    logits are not a plain linear head over the decoder's output (:func:`lm_head_blocker`).

    Parameters
    ----------
    model
        The model whose active policy (:func:`~dposhap.evaluate.teacher.policy`) is scored.
    device
        Where inputs go; default the model's device.
    """
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not hasattr(causal_lm, "get_decoder") or not hasattr(causal_lm, "get_output_embeddings"):
        return None
    if getattr(causal_lm.config, "is_encoder_decoder", False) or lm_head_blocker(causal_lm) is not None:
        return None
    decoder = causal_lm.get_decoder()
    if decoder is None or decoder is causal_lm:
        return None
    parameters = inspect.signature(decoder.forward).parameters
    keyword = cache_keyword(decoder)
    takes_cache = keyword in parameters and "position_ids" in parameters
    if device is None:
        try:
            device = next(causal_lm.parameters()).device
        except StopIteration:
            device = torch.device("cpu")
    return ScoringModel(
        decoder,
        causal_lm.get_output_embeddings(),
        keyword if takes_cache else None,
        causal_lm.config,
        torch.device(device),
    )

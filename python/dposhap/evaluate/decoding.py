"""Batched composed decoding: K coalitions x B prompts through one multi-adapter model.

The policy of a coalition ``S`` with weights ``w`` is, token by token (docs/design.md §1)::

    logits_S = l_ref + sum_{i in S} w_i (l_i - l_ref),   then / temperature, top-k, Gumbel-max

where ``l_ref`` are the logits of the base model (the reference policy, PEFT's ``"__base__"``)
and ``l_i`` those of source ``i``'s LoRA adapter. :class:`ComposedDecoder` samples from every
coalition on every prompt at once; :func:`reference_generate` is the plain, slow ground truth
it is tested against.

How the work is shared
----------------------
Rows
    A *sequence* is one (coalition, prompt) pair. A *row* is one (model, token prefix) pair
    that some live sequence needs: its reference (unless the coalition is a single source of
    weight 1, which never reads it) and each member of non-zero weight. Rows are keyed by the
    model and by a node of a per-prompt prefix tree of the tokens generated so far, so a row
    is computed once however many sequences need it: every coalition decoding prompt ``b``
    shares the prompt's prefill, and -- because sampling uses common random numbers -- the
    coalitions whose samples coincide keep sharing rows for as long as they do
    (:attr:`DecodeConfig.share_prefixes`). Rows are ordered by model, then node.
Prefill
    Each (model, prompt) pair that some coalition needs is prefilled once, prompts left-padded
    to a common length (attention mask and position ids follow the real tokens). The KV
    cache of each row is then gathered from the prefill rows (and, step by step, from the rows
    of the parent prefixes), never recomputed.
One forward per step
    Every live row goes through one forward of the PEFT model, feeding the row's last token
    against its KV cache, each row with its own adapter (or none). Rows are sorted by model, so
    each adapter's rows form one block: with PEFT's adapters disabled, a hook on each LoRA layer
    adds the adapter's low-rank product to its block (:class:`BlockLora`, faster than
    PEFT's per-row bookkeeping); other adapter kinds go through PEFT's own
    mixed-adapter batch inference (``adapter_names``, with ``"__base__"`` for the reference).
    The compose kernel (:func:`dposhap.compose.compose`, gather form) then samples every live
    sequence's next token. The noise is keyed by ``(seed, stream_id = prompt index, step)``,
    never by the coalition: coalitions decoding the same prompt see the same noise.
Hidden-state fast path
    When the LM head is a plain linear layer shared by every source (no LoRA on it, no
    logit soft-capping or scaling), the rows' final hidden states are combined with the
    coalition's coefficients (as :func:`dposhap.compose.compose_hidden` does) and the LM head is
    applied once per sequence rather than once per row; the kernel then samples from those
    logits. It cannot give the sequence-level correction, which needs every row's own
    log-probabilities.
Stopping
    A sequence stops at an EOS token (not included in its output) or after
    ``max_new_tokens`` tokens; its rows leave the batch. With ``max_rows``, sequences are
    decoded in groups (prompt-major) whose rows fit under the cap; the prefill is still done
    once, in chunks of at most ``max_rows`` rows.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from transformers.cache_utils import Cache, DynamicLayer

from .. import compose
from ..compose import reference
from ..errors import InvalidArgumentError
from .decode_cache import BlockLora, GrowingLayer, Prefill
from .decode_config import BASE_ADAPTER, DecodeConfig, DecodeResult, HiddenFastPath, MixedLora
from .decode_plan import Coalition, encode_prompts, eos_ids, group_sequences, plan_coalitions
from .scoring import cache_keyword, lm_head_blocker

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedTokenizerBase


__all__ = [
    "BASE_ADAPTER",
    "ComposedDecoder",
    "DecodeConfig",
    "DecodeResult",
    "HiddenFastPath",
    "MixedLora",
    "reference_generate",
]


@dataclass(frozen=True)
class _Mode:
    """How one :meth:`ComposedDecoder.generate` call runs its forwards."""

    fast: bool  # hidden-state fast path: rows return final hidden states, not logits
    own_lora: bool  # :class:`BlockLora` rather than PEFT's adapter_names


class ComposedDecoder:
    """Samples continuations of prompts from the composed policies of many coalitions at once.

    Parameters
    ----------
    model
        A PEFT model holding one LoRA adapter per source, named by the source (see
        :func:`dposhap.models.load_adapters`). The base model (adapters off) is the reference
        policy. It is put in eval mode.
    tokenizer
        Its tokenizer; it needs a padding or an EOS token.
    sources
        The adapter names, in the order of the columns of the coalitions.
    device
        Where to decode; the model is moved there. Default: where the model's weights are.

    Raises
    ------
    InvalidArgumentError
        ``model`` is not a PEFT model, or a source names no adapter of it.
    """

    def __init__(
        self,
        model: PeftModel,
        tokenizer: PreTrainedTokenizerBase,
        sources: Sequence[str],
        *,
        device: str | torch.device | None = None,
    ) -> None:
        configs = getattr(model, "peft_config", None)
        if not isinstance(configs, dict) or not hasattr(model, "get_base_model"):
            raise InvalidArgumentError(
                f"model must be a peft.PeftModel with one adapter per source, got "
                f"{type(model).__name__}: load the adapters with dposhap.models.load_adapters"
            )
        if isinstance(sources, str):
            raise InvalidArgumentError(f"sources must be a sequence of adapter names, not the string {sources!r}")
        sources = tuple(sources)
        missing = [s for s in sources if s not in configs]
        if missing or len(set(sources)) != len(sources) or BASE_ADAPTER in sources:
            raise InvalidArgumentError(
                f"sources must name distinct adapters of the model, got {list(sources)}; "
                f"its adapters are {sorted(configs)}"
            )
        if device is not None:
            model.to(device)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.sources = sources
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self._names = (BASE_ADAPTER, *sources)
        causal_lm = model.get_base_model()
        self._decoder = causal_lm.get_decoder()
        self._lm_head = causal_lm.get_output_embeddings()
        self._block_lora = BlockLora(model, sources)
        if any(getattr(layer, "merged", False) for layer in self._block_lora.layers):
            raise InvalidArgumentError("the model has merged adapters: call model.unmerge_adapter() first")
        self._eos = eos_ids(causal_lm, tokenizer)
        self._cache_keyword = cache_keyword(causal_lm)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise InvalidArgumentError("the tokenizer has neither a padding nor an EOS token: set tokenizer.pad_token")
        self._pad_id = int(pad)

    def hidden_path_blocker(self) -> str | None:
        """Why the hidden-state fast path cannot apply to this model, or None when it can."""
        return lm_head_blocker(self.model.get_base_model())

    def _mode(self, config: DecodeConfig) -> _Mode:
        blocker = self.hidden_path_blocker()
        if config.hidden_fast_path == "on" and blocker is not None:
            raise InvalidArgumentError(f'hidden_fast_path="on" but {blocker}; use "auto" or "off"')
        lora_blocker = self._block_lora.blocker
        if config.mixed_lora == "own" and lora_blocker is not None:
            raise InvalidArgumentError(f'mixed_lora="own" but {lora_blocker}; use "auto" or "peft"')
        fast = config.hidden_fast_path != "off" and blocker is None and not config.correction
        return _Mode(fast, config.mixed_lora != "peft" and lora_blocker is None)

    def generate(
        self,
        prompts: Sequence[str],
        coalitions: np.ndarray,
        config: DecodeConfig = DecodeConfig(),
        *,
        weights: np.ndarray | None = None,
    ) -> DecodeResult:
        """Sample one continuation of every prompt under every coalition.

        Parameters
        ----------
        prompts
            ``B`` prompt texts (the tokenizer adds its special tokens, e.g. BOS).
        coalitions
            bool ``[K, n]``: row ``k`` is coalition ``k``'s membership of the ``n`` sources.
            The empty coalition decodes the reference; one member of weight 1 decodes that
            source's own model.
        config
            Sampling settings.
        weights
            float ``[K, n]``: the member weights (entries outside the coalition ignored);
            default 1 for every member. Members of weight 0 are never computed.

        Returns
        -------
        DecodeResult

        Raises
        ------
        InvalidArgumentError
            Bad shapes or values, a prompt with no tokens, ``max_rows`` below the rows of one
            sequence, or ``hidden_fast_path="on"`` on a model it does not fit.
        """

        start = time.perf_counter()
        if not isinstance(config, DecodeConfig):
            raise InvalidArgumentError(f"config must be a DecodeConfig, got {type(config).__name__}")
        plan = plan_coalitions(coalitions, weights, len(self.sources))
        prompt_ids = encode_prompts(self.tokenizer, prompts)
        mode = self._mode(config)
        n_coalitions, n_prompts = len(plan), len(prompt_ids)
        tokens: list[list[list[int]]] = [[[] for _ in range(n_prompts)] for _ in range(n_coalitions)]
        log_weights = np.zeros((n_coalitions, n_prompts)) if config.correction else None
        counters = {"new_tokens": 0, "forward_rows": 0}
        sequences = [(k, b) for b in range(n_prompts) for k in range(n_coalitions)]
        if sequences:
            widest = max(len(c.models) for c in plan)
            if config.max_rows is not None and config.max_rows < widest:
                raise InvalidArgumentError(
                    f"DecodeConfig.max_rows = {config.max_rows} is below the {widest} rows one "
                    "sequence needs (its reference and members): raise it"
                )
            with torch.inference_mode(), self._block_lora.active(self.model) if mode.own_lora else nullcontext():
                prefill = self._prefill(plan, prompt_ids, mode, config.max_rows, counters)
                for group in group_sequences(sequences, plan, config.max_rows):
                    self._decode_group(group, plan, prefill, config, mode, tokens, log_weights, counters)
        completions = [self.tokenizer.batch_decode(row, skip_special_tokens=True) if row else [] for row in tokens]
        return DecodeResult(
            completions,
            tokens,
            log_weights,
            counters["new_tokens"],
            time.perf_counter() - start,
            counters["forward_rows"],
        )

    # ----------------------------------------------------------------------------------
    # forwards

    def _forward(self, models: list[int], mode: _Mode, **inputs: Any) -> torch.Tensor:
        """One mixed-adapter forward of rows sorted by model id (0 = the base, ``i + 1`` = source ``i``).

        Returns the last position's logits ``[R, V]``, or final hidden states ``[R, d]`` on the
        fast path.
        """
        if mode.own_lora:
            self._block_lora.set_rows(models, self._names)
        else:
            inputs["adapter_names"] = [self._names[m] for m in models]
        if not mode.fast:
            return self.model(**inputs, use_cache=True, logits_to_keep=1).logits[:, -1, :]
        captured: list[torch.Tensor] = []
        hook = self._decoder.register_forward_hook(
            lambda _module, _args, output: captured.append(output.last_hidden_state[:, -1, :])
        )
        try:
            # the LM head runs on no position: the decoder's output is all we want
            self.model(**inputs, use_cache=True, logits_to_keep=torch.empty(0, dtype=torch.int64, device=self.device))
        finally:
            hook.remove()
        return captured[0]

    def _prefill(
        self,
        plan: list[Coalition],
        prompt_ids: list[list[int]],
        mode: _Mode,
        max_rows: int | None,
        counters: dict[str, int],
    ) -> Prefill:
        longest = max(len(ids) for ids in prompt_ids)
        mask = torch.zeros((len(prompt_ids), longest), dtype=torch.int64)
        padded = torch.full((len(prompt_ids), longest), self._pad_id, dtype=torch.int64)
        for b, ids in enumerate(prompt_ids):
            padded[b, longest - len(ids) :] = torch.tensor(ids)
            mask[b, longest - len(ids) :] = 1
        mask, padded = mask.to(self.device), padded.to(self.device)
        needed = sorted({m for c in plan for m in c.models})
        keys = [(m, b) for m in needed for b in range(len(prompt_ids))]
        chunk = max_rows or len(keys)
        kv_chunks, out_chunks = [], []
        for first in range(0, len(keys), chunk):
            part = keys[first : first + chunk]
            prompts = torch.tensor([b for _, b in part], device=self.device)
            part_mask = mask[prompts]
            cache = Cache(layer_class_to_replicate=DynamicLayer)
            out_chunks.append(
                self._forward(
                    [m for m, _ in part],
                    mode,
                    input_ids=padded[prompts],
                    attention_mask=part_mask,
                    position_ids=(part_mask.cumsum(-1) - 1).clamp(min=0),
                    **{self._cache_keyword: cache},
                )
            )
            kv_chunks.append([(layer.keys, layer.values) for layer in cache.layers])
            counters["forward_rows"] += len(part)
        kv = [
            (torch.cat([c[i][0] for c in kv_chunks]), torch.cat([c[i][1] for c in kv_chunks]))
            for i in range(len(kv_chunks[0]))
        ]
        return Prefill({key: i for i, key in enumerate(keys)}, kv, torch.cat(out_chunks), mask, mask.sum(-1))

    # ----------------------------------------------------------------------------------
    # decoding

    def _decode_group(
        self,
        group: list[tuple[int, int]],
        plan: list[Coalition],
        prefill: Prefill,
        config: DecodeConfig,
        mode: _Mode,
        tokens: list[list[list[int]]],
        log_weights: np.ndarray | None,
        counters: dict[str, int],
    ) -> None:
        """Decode the sequences ``group`` (``(coalition, prompt)`` pairs) to the end, together."""
        n_prompts = prefill.mask.shape[0]
        # prefix tree: nodes 0..B-1 are the prompts; later nodes one generated token each
        node_prompt, node_parent, node_token = list(range(n_prompts)), [-1] * n_prompts, [-1] * n_prompts
        children: dict[tuple[int, ...], int] = {}
        node = [b for _, b in group]
        live = list(range(len(group)))
        keys = sorted({(m, node[s]) for s in live for m in plan[group[s][0]].models})
        gather = torch.tensor([prefill.row_of[key] for key in keys], device=self.device)
        cache = Cache(layers=[GrowingLayer(k[gather], v[gather], config.max_new_tokens) for k, v in prefill.kv])
        out = prefill.out[gather]
        row_of = {key: i for i, key in enumerate(keys)}
        for step in range(config.max_new_tokens):
            sampled, correction = self._sample(
                out, [group[s] for s in live], [node[s] for s in live], row_of, plan, config, step, mode.fast
            )
            counters["new_tokens"] += len(live)
            still = []
            for i, s in enumerate(live):
                k, b = group[s]
                if log_weights is not None:
                    log_weights[k, b] += correction[i]
                if sampled[i] in self._eos:
                    continue
                tokens[k][b].append(sampled[i])
                key = (node[s], sampled[i]) if config.share_prefixes else (node[s], sampled[i], s)
                if key not in children:
                    children[key] = len(node_prompt)
                    node_prompt.append(b)
                    node_parent.append(node[s])
                    node_token.append(sampled[i])
                node[s] = children[key]
                still.append(s)
            live = still
            if not live or step + 1 == config.max_new_tokens:
                break
            keys = sorted({(m, node[s]) for s in live for m in plan[group[s][0]].models})
            parents = [row_of[(m, node_parent[n])] for m, n in keys]
            if parents != list(range(len(row_of))):
                cache.batch_select_indices(torch.tensor(parents, device=self.device))
            prompts = torch.tensor([node_prompt[n] for _, n in keys], device=self.device)
            out = self._forward(
                [m for m, _ in keys],
                mode,
                input_ids=torch.tensor([[node_token[n]] for _, n in keys], device=self.device),
                attention_mask=torch.cat([prefill.mask[prompts], prefill.mask.new_ones(len(keys), step + 1)], dim=1),
                position_ids=(prefill.lengths[prompts] + step)[:, None],
                **{self._cache_keyword: cache},
            )
            row_of = {key: i for i, key in enumerate(keys)}
            counters["forward_rows"] += len(keys)

    def _sample(
        self,
        out: torch.Tensor,
        sequences: list[tuple[int, int]],
        nodes: list[int],
        row_of: dict[tuple[int, int], int],
        plan: list[Coalition],
        config: DecodeConfig,
        step: int,
        fast: bool,
    ) -> tuple[list[int], list[float]]:
        """The next token (and the step's correction) of each live sequence, from its rows' outputs."""
        width = max(len(plan[k].members) for k, _ in sequences)
        ref_index, src_index, src_weight = [], [], []
        for (k, _), n in zip(sequences, nodes, strict=True):
            c = plan[k]
            ref_index.append(row_of[(c.ref_model, n)])
            pad = width - len(c.members)
            src_index.append([row_of[(m, n)] for m in c.members] + [-1] * pad)
            src_weight.append(list(c.weights) + [0.0] * pad)
        device = self.device
        ref = torch.tensor(ref_index, dtype=torch.int64, device=device)
        src = torch.tensor(src_index, dtype=torch.int64, device=device).view(len(sequences), width)
        weight = torch.tensor(src_weight, dtype=torch.float32, device=device).view(len(sequences), width)
        stream = torch.tensor([b for _, b in sequences], dtype=torch.int64, device=device)
        if fast:
            # without compose_hidden's input checks (a NaN scan and a sort per step): the members
            # are already in canonical order and padding has weight 0
            logits = self._lm_head(compose.compose_hidden_unchecked(out, ref, src, weight))
            ref = torch.arange(len(sequences), device=device)
            src, weight = src[:, :0], weight[:, :0]
        else:
            logits = out
        outputs: tuple[compose.OutputName, ...] = ("sample", "correction") if config.correction else ("sample",)
        result = compose.compose(
            logits.contiguous(),
            ref,
            src,
            weight,
            config.temperature,
            outputs=outputs,
            seed=int(config.seed),
            stream_id=stream,
            step=step,
            top_k=None if config.top_k is None else int(config.top_k),
            backend=config.backend,
        )
        correction = result.require("correction").double().tolist() if config.correction else []
        return result.require("sample").tolist(), correction


def reference_generate(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    sources: Sequence[str],
    prompt: str,
    coalition: Sequence[bool],
    config: DecodeConfig = DecodeConfig(),
    *,
    weights: Sequence[float] | None = None,
    stream_id: int = 0,
) -> tuple[list[int], float]:
    """One coalition, one prompt, the slow and obvious way: the ground truth of :class:`ComposedDecoder`.

    Every step runs each model the coalition uses (the reference with the adapters disabled,
    each member with its adapter active) separately over the whole sequence so far, without a
    KV cache or padding, and combines the last logits with the plain-torch compose reference
    (:func:`dposhap.compose.reference.compose`). The adapter active before the call is active
    again after it.

    Parameters
    ----------
    model, tokenizer, sources
        As for :class:`ComposedDecoder`.
    prompt
        The prompt text.
    coalition
        bool ``[n]`` membership.
    config
        As for :meth:`ComposedDecoder.generate` (``backend``, ``hidden_fast_path``,
        ``mixed_lora``, ``max_rows`` and ``share_prefixes`` do not apply).
    weights
        float ``[n]`` member weights, default 1.
    stream_id
        The noise stream: the prompt's index in a :meth:`ComposedDecoder.generate` call.

    Returns
    -------
    (list[int], float)
        The generated ids (EOS excluded) and the summed correction.
    """

    (c,) = plan_coalitions(
        np.asarray(coalition)[None, :], None if weights is None else np.asarray(weights)[None, :], len(sources)
    )
    device = next(model.parameters()).device
    ids = torch.tensor(encode_prompts(tokenizer, [prompt])[0], device=device)
    eos = eos_ids(model.get_base_model(), tokenizer)
    active = model.active_adapter
    generated: list[int] = []
    total = 0.0
    try:
        with torch.inference_mode():
            for step in range(config.max_new_tokens):
                sequence = torch.cat([ids, torch.tensor(generated, dtype=torch.int64, device=device)])[None, :]
                rows = []
                with model.disable_adapter():
                    rows.append(model(input_ids=sequence).logits[0, -1])
                for m in c.members:
                    model.set_adapter(sources[m - 1], inference_mode=True)
                    rows.append(model(input_ids=sequence).logits[0, -1])
                out = reference.compose(
                    torch.stack(rows),
                    torch.zeros(1, dtype=torch.int64, device=device),
                    torch.arange(1, len(rows), device=device)[None, :],
                    torch.tensor([c.weights], dtype=torch.float32, device=device).view(1, len(c.members)),
                    config.temperature,
                    outputs=("sample", "correction"),
                    seed=config.seed,
                    stream_id=torch.tensor([stream_id], device=device),
                    step=step,
                    top_k=config.top_k,
                )
                total += float(out.require("correction")[0])
                token = int(out.require("sample")[0])
                if token in eos:
                    break
                generated.append(token)
    finally:
        model.set_adapter(active, inference_mode=True)
    return generated, total

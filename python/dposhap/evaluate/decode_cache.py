"""The KV and LoRA machinery of composed decoding: the prompts' prefill, a KV cache layer that grows in
place, and mixed-adapter LoRA over contiguous blocks of rows."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import groupby
from typing import TYPE_CHECKING, Any

import torch
from peft.tuners.lora import Linear as LoraLinear
from peft.tuners.lora import LoraLayer
from transformers.cache_utils import DynamicLayer

if TYPE_CHECKING:
    from peft import PeftModel


@dataclass
class Prefill:
    """Every (model, prompt) pair some coalition needs, prefilled once.

    ``kv`` holds per layer the keys and values ``[P, heads, L, head_dim]`` of the prefill rows,
    ``out`` their last position's logits ``[P, V]`` or final hidden states ``[P, d]``.
    """

    row_of: dict[tuple[int, int], int]
    kv: list[tuple[torch.Tensor, torch.Tensor]]
    out: torch.Tensor
    mask: torch.Tensor  # [B, L] attention mask of the left-padded prompts
    lengths: torch.Tensor  # [B] real prompt lengths


class GrowingLayer(DynamicLayer):
    """A KV cache layer whose keys and values live in buffers with room to grow.

    Appending a token writes it in place (``DynamicLayer`` concatenates, copying the whole
    layer at every step); choosing rows (:meth:`batch_select_indices`, the rows of the next
    step's prefixes) is the one copy a step may need.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, room: int) -> None:
        super().__init__()
        self.dtype, self.device = keys.dtype, keys.device
        self.length = keys.shape[-2]
        self._buffers = []
        for x in (keys, values):
            buffer = x.new_empty((*x.shape[:2], self.length + room, x.shape[-1]))
            buffer[:, :, : self.length] = x
            self._buffers.append(buffer)
        self.is_initialized = True
        self._expose()

    def _expose(self) -> None:
        self.keys, self.values = (buffer[:, :, : self.length] for buffer in self._buffers)

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append the new positions in place; the keys and values so far."""
        stop = self.length + key_states.shape[-2]
        self._buffers[0][:, :, self.length : stop] = key_states
        self._buffers[1][:, :, self.length : stop] = value_states
        self.length = stop
        self._expose()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        """Positions held."""
        return self.length

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep (and repeat) the rows ``indices``, in that order: their filled positions only are copied."""
        buffers = []
        for buffer in self._buffers:
            selected = buffer.new_empty((len(indices), *buffer.shape[1:]))
            torch.index_select(buffer[:, :, : self.length], 0, indices, out=selected[:, :, : self.length])
            buffers.append(selected)
        self._buffers = buffers
        self._expose()


class BlockLora:
    """Mixed-adapter LoRA over contiguous blocks of rows, without PEFT's per-row bookkeeping.

    Rows are sorted by model, so each adapter's rows are one block. While :meth:`active`,
    PEFT's adapters are disabled (every LoRA layer computes its base layer alone) and a forward
    hook on each LoRA layer adds ``lora_B(lora_A(x[block])) * scaling`` of each adapter to its
    block of the output: slices and one small product per adapter, where PEFT's
    ``adapter_names`` path builds index lists row by row in Python and gathers and scatters
    copies, in every layer. It computes what PEFT computes for plain LoRA on linear layers in
    eval mode (dropout is then the identity); :attr:`blocker` says when it does not apply.
    """

    def __init__(self, model: PeftModel, sources: Sequence[str]) -> None:
        self.layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
        self.blocks: list[tuple[str, int, int]] = []
        self.blocker: str | None = None
        for layer in self.layers:
            ours = [s for s in sources if s in layer.lora_A or s in layer.lora_embedding_A]
            if ours and (not isinstance(layer, LoraLinear) or any(s in layer.lora_variant for s in ours)):
                self.blocker = (
                    f"adapter {ours[0]!r} is not plain LoRA on a linear layer "
                    f"({type(layer).__name__}, variants {sorted(layer.lora_variant)})"
                )
                break

    def set_rows(self, models: Sequence[int], names: Sequence[str]) -> None:
        """Rows' model ids (sorted; 0 is the base, which gets no LoRA) and the adapter name of each id."""
        self.blocks, start = [], 0
        for m, rows in groupby(models):
            stop = start + len(list(rows))
            if m:
                self.blocks.append((names[m], start, stop))
            start = stop

    def _add(self, module: Any, args: tuple, output: torch.Tensor) -> None:
        x = args[0]
        for name, start, stop in self.blocks:
            if name in module.lora_A:
                lora_a = module.lora_A[name]
                delta = module.lora_B[name](lora_a(x[start:stop].to(lora_a.weight.dtype))) * module.scaling[name]
                output[start:stop] += delta.to(output.dtype)

    @contextmanager
    def active(self, model: PeftModel) -> Iterator[None]:
        """PEFT's adapters off, the block hooks on."""
        with model.disable_adapter():
            handles = [layer.register_forward_hook(self._add) for layer in self.layers]
            try:
                yield
            finally:
                for handle in handles:
                    handle.remove()
                self.blocks = []

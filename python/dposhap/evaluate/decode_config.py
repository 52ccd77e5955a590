"""What a composed decoding call is asked (:class:`DecodeConfig`, checked on creation) and what it gives
back (:class:`DecodeResult`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from .. import compose
from ..errors import InvalidArgumentError
from ..settings import setting

__all__ = ["BASE_ADAPTER", "DecodeConfig", "DecodeResult", "HiddenFastPath", "MixedLora"]


#: PEFT's name of the base model (adapters off) in ``adapter_names``: the reference policy.
BASE_ADAPTER = "__base__"
HiddenFastPath = Literal["auto", "on", "off"]
MixedLora = Literal["auto", "own", "peft"]


@dataclass(frozen=True)
class DecodeConfig:
    """How :meth:`ComposedDecoder.generate` samples. Every field is checked on creation."""

    max_new_tokens: int = setting("a sequence stops after this many tokens if no EOS came first (>= 1)", default=16)
    temperature: float = setting("the combined logits are divided by it (finite, > 0)", default=1.0)
    top_k: int | None = setting("sample among the top_k most likely tokens only; 1 is greedy; None: all", default=None)
    seed: int = setting("seed of the Gumbel noise, keyed by (seed, prompt index, step), in [0, 2**64)", default=0)
    correction: bool = setting(
        "also return each sequence's summed sequence-level correction (log importance weight)", default=False
    )
    hidden_fast_path: HiddenFastPath = setting(
        '"auto": combine hidden states and apply the LM head once per sequence when the head is a shared plain '
        'linear layer (no LoRA, no soft-capping) and correction is off; "on": require it; "off": combine logits',
        default="auto",
    )
    backend: compose.Backend = setting(
        'compose kernel backend: "auto", "torch", "cpp", "triton" or "cuda"', default="auto"
    )
    max_rows: int | None = setting(
        "cap on (sequence, model) rows per forward; sequences are decoded in groups beyond it; None: no cap",
        default=None,
    )
    mixed_lora: MixedLora = setting(
        "\"own\": each adapter's LoRA product on its contiguous block of rows, added by hooks while PEFT's "
        'adapters are off (plain LoRA on linear layers only); "peft": PEFT\'s adapter_names; "auto": own where it '
        "applies",
        default="auto",
    )
    share_prefixes: bool = setting(
        "compute a (model, generated prefix) row once for all the sequences of a prompt "
        "that share it (exact; common random numbers make such prefixes frequent); off: "
        "only the prompt's prefill is shared",
        default=True,
    )

    def __post_init__(self) -> None:
        def fail(name: str, message: str) -> None:
            raise InvalidArgumentError(f"DecodeConfig.{name} {message}")

        if not _is_int(self.max_new_tokens) or self.max_new_tokens < 1:
            fail("max_new_tokens", f"must be an int >= 1, got {self.max_new_tokens!r}")
        if (
            isinstance(self.temperature, bool)
            or not isinstance(self.temperature, (int, float))
            or not (math.isfinite(self.temperature) and self.temperature > 0)
        ):
            fail("temperature", f"must be a finite number > 0, got {self.temperature!r} (greedy decoding is top_k=1)")
        if self.top_k is not None and (not _is_int(self.top_k) or self.top_k < 1):
            fail("top_k", f"must be None or an int >= 1, got {self.top_k!r}")
        if not _is_int(self.seed) or not 0 <= self.seed < 1 << 64:
            fail("seed", f"must be an int in [0, 2**64), got {self.seed!r}")
        if self.hidden_fast_path not in get_args(HiddenFastPath):
            fail("hidden_fast_path", f"must be one of {list(get_args(HiddenFastPath))}, got {self.hidden_fast_path!r}")
        if self.backend not in compose.GATHER_BACKENDS:
            fail("backend", f"must be one of {list(compose.GATHER_BACKENDS)}, got {self.backend!r}")
        if self.mixed_lora not in get_args(MixedLora):
            fail("mixed_lora", f"must be one of {list(get_args(MixedLora))}, got {self.mixed_lora!r}")
        if self.max_rows is not None and (not _is_int(self.max_rows) or self.max_rows < 1):
            fail("max_rows", f"must be None or an int >= 1, got {self.max_rows!r}")
        if self.hidden_fast_path == "on" and self.correction:
            fail(
                "hidden_fast_path",
                '"on" cannot give the correction, which needs every model\'s own logits: '
                'use "auto" or "off" with correction=True',
            )


@dataclass
class DecodeResult:
    """What :meth:`ComposedDecoder.generate` returns.

    Attributes
    ----------
    completions
        ``[K][B]`` decoded completion texts, special tokens stripped.
    token_ids
        ``[K][B]`` generated token ids, without the prompt, the padding or the final EOS.
    log_weights
        ``[K, B]`` float64: each sequence's summed sequence-level correction (the kernel's
        ``"correction"`` output over its steps, the EOS step included), or None unless
        ``config.correction``. Exactly 0 where the coalition's policy is a single model (the
        empty coalition, or one member of weight 1).
    new_tokens
        Tokens sampled, over all sequences (the EOS tokens included).
    seconds
        Wall time of the call.
    forward_rows
        Rows through the model: prefill rows plus one per live row and decoding step.
    """

    completions: list[list[str]]
    token_ids: list[list[list[int]]]
    log_weights: np.ndarray | None
    new_tokens: int
    seconds: float
    forward_rows: int


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

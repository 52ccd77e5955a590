"""Launcher of the Triton gather-form kernel (:mod:`dposhap.kernels.compose`).

Runs on CUDA tensors, or on the CPU under Triton's interpreter (``TRITON_INTERPRET=1``,
which is how the test-suite proves the kernel on a machine without a GPU). Computes in
float32 and agrees with :func:`dposhap.compose.reference.compose` (same conventions, same
noise, same tie rule).
"""

from __future__ import annotations

import os
from typing import Sequence

import torch

from ..errors import InvalidArgumentError
from . import noise
from .reference import ComposeOutput, OutputName, Temperature, _first, _validate_gather

#: Vocabulary entries per block of the kernel (the interpreter gets smaller blocks).
BLOCK_V = 1024
INTERPRET_BLOCK_V = 64


def available(device: torch.device) -> bool:
    """Whether the Triton kernel can run on tensors of ``device``."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    if device.type == "cuda":
        return True
    return device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"


def compose(
    logits: torch.Tensor,
    ref_index: torch.Tensor,
    src_index: torch.Tensor,
    src_weight: torch.Tensor,
    temperature: Temperature = 1.0,
    *,
    outputs: Sequence[OutputName] | OutputName = ("logprobs",),
    targets: torch.Tensor | None = None,
    seed: int = 0,
    stream_id: torch.Tensor | None = None,
    step: int | torch.Tensor = 0,
    top_k: int | None = None,
    block_v: int | None = None,
) -> ComposeOutput:
    """The gather form of :func:`dposhap.compose.reference.compose`, by the Triton kernel.

    Same parameters and results (in float32), except that ``top_k`` sampling is not
    implemented in the kernel yet and ``block_v`` sets the kernel's block of vocabulary.

    Raises
    ------
    InvalidArgumentError
        As the reference does; also for ``top_k`` and a device Triton cannot run on.
    """
    from ..kernels.compose import compose_rows_kernel

    if top_k is not None:
        raise InvalidArgumentError("top_k sampling is not in the Triton kernel yet: use backend='torch' for top-k")
    if not available(logits.device):
        raise InvalidArgumentError(
            f"the Triton kernel runs on CUDA tensors (or on the CPU with TRITON_INTERPRET=1); got a {logits.device.type} tensor"
        )
    args = _validate_gather(
        logits, ref_index, src_index, src_weight, temperature, outputs, targets, stream_id, step, top_k, torch.float32
    )
    logits, rows, coef, vocab = args.logits, args.rows, args.coef, args.vocab
    m, n_slots = rows.shape
    device = logits.device
    used = coef != 0
    # NaN or +inf in a participating row is an error (one pass over the rows, not [M, V])
    bad_row = (torch.isnan(logits) | torch.isposinf(logits)).any(dim=1)
    bad = bad_row[rows] & used
    if bool(bad.any()):
        row, slot = _first(bad)
        what = "its reference" if slot == 0 else f"member slot {slot - 1} (in canonical order)"
        raise InvalidArgumentError(
            f"output row {row}: logits row {int(rows[row, slot])} ({what}) holds NaN or +inf; "
            "logits must be finite or -inf (masked)"
        )
    logits = logits if logits.stride(1) == 1 else logits.contiguous()
    rows_c = rows.contiguous()
    coef_c = coef.to(torch.float32).contiguous()
    temp = args.temp.to(torch.float32).contiguous()
    want = set(args.outputs)
    f32 = dict(dtype=torch.float32, device=device)
    logz = torch.empty(m, **f32)
    raw_lse = torch.empty(m, **f32) if "correction" in want else logz
    target = torch.empty(m, **f32) if "target_logprob" in want else logz
    sample = torch.empty(m, dtype=torch.int64, device=device) if "sample" in want else rows_c
    logprobs = torch.empty(m, vocab, **f32) if "logprobs" in want else logz
    targets = args.targets if args.targets is not None else rows_c
    if "sample" in want:
        stream = args.stream_id if args.stream_id is not None else torch.arange(m, dtype=torch.int64, device=device)
        key_a, key_b = noise.row_keys(seed, stream, args.step)
        key_a, key_b = key_a.contiguous(), key_b.contiguous()
    else:
        key_a = key_b = rows_c
    if block_v is None:
        block_v = INTERPRET_BLOCK_V if device.type == "cpu" else BLOCK_V
    compose_rows_kernel[(m,)](
        logits, logits.stride(0), rows_c, coef_c, n_slots, temp, targets, key_a, key_b,
        logz, raw_lse, target, sample, logprobs, vocab,
        BLOCK_V=block_v,
        WANT_TARGET="target_logprob" in want,
        WANT_SAMPLE="sample" in want,
        WANT_RAW="correction" in want,
        WANT_LOGPROBS="logprobs" in want,
    )
    dead = torch.isneginf(logz)
    if bool(dead.any()):
        (row,) = _first(dead)
        raise InvalidArgumentError(
            f"output row {row}: the combined logits are -inf for every token; leave at least one token unmasked"
        )
    result = ComposeOutput()
    if "logz" in want:
        result.logz = logz
    if "logprobs" in want:
        result.logprobs = logprobs
    if "target_logprob" in want:
        result.target_logprob = target
    if "sample" in want:
        result.sample = sample
    if "correction" in want:
        # logsumexp_v sum_a coef_a lp_a = logsumexp_v(sum_a coef_a l_a) - sum_a coef_a lse(l_a)
        row_lse = torch.logsumexp(logits.float(), dim=1)[rows]  # one pass over the T rows
        shift = torch.where(used, coef_c * row_lse, 0.0).sum(dim=1)
        correction = raw_lse - shift
        single = (used.sum(dim=1) == 1) & (torch.where(used, coef_c, 0.0).sum(dim=1) == 1)
        result.correction = correction.masked_fill(single, 0.0)
    return result

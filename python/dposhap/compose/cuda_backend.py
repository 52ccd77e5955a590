"""Launcher of the CUDA gather-form kernel (``dposhap/csrc/compose_cuda.cu``).

The kernel mirrors the Triton one (:mod:`dposhap.kernels.compose`): one block per output row,
an online log-sum-exp over the vocabulary, the target's logit, Gumbel-max with the noise of
:mod:`dposhap.compose.noise`, and the untempered log-sum-exp for the correction. It is built by
the one loader (:mod:`dposhap.compose._native`) on machines with CUDA; elsewhere the test-suite
compiles its sources with nvcc to prove them.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..errors import InvalidArgumentError
from . import noise
from .reference import ComposeOutput, OutputName, Temperature, _first, _validate_gather


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
) -> ComposeOutput:
    """The gather form of :func:`dposhap.compose.reference.compose` on CUDA tensors (float32
    results); ``top_k`` sampling is not in the kernel yet."""
    from ._native import load_cuda

    if not logits.is_cuda:
        raise InvalidArgumentError(f"the CUDA kernel needs CUDA tensors; got a {logits.device.type} tensor")
    if top_k is not None:
        raise InvalidArgumentError("top_k sampling is not in the CUDA kernel yet: use backend='torch' for top-k")
    args = _validate_gather(
        logits, ref_index, src_index, src_weight, temperature, outputs, targets, stream_id, step, top_k, torch.float32
    )
    logits, rows, coef = args.logits, args.rows.contiguous(), args.coef.to(torch.float32).contiguous()
    used = coef != 0
    bad = (torch.isnan(logits) | torch.isposinf(logits)).any(dim=1)[rows] & used
    if bool(bad.any()):
        row, slot = _first(bad)
        raise InvalidArgumentError(
            f"output row {row}: logits row {int(rows[row, slot])} holds NaN or +inf; logits must be finite or -inf (masked)"
        )
    want = set(args.outputs)
    key_a = key_b = None
    if "sample" in want:
        m = rows.shape[0]
        stream = args.stream_id if args.stream_id is not None else torch.arange(m, dtype=torch.int64, device=logits.device)
        key_a, key_b = noise.row_keys(seed, stream, args.step)
    logz, raw_lse, target, sample, logprobs = load_cuda().compose_rows(
        logits if logits.stride(1) == 1 else logits.contiguous(),
        rows,
        coef,
        args.temp.to(torch.float32).contiguous(),
        args.targets if "target_logprob" in want else None,
        key_a,
        key_b,
        "correction" in want,
        "logprobs" in want,
    )
    dead = torch.isneginf(logz)
    if bool(dead.any()):
        (row,) = _first(dead)
        raise InvalidArgumentError(f"output row {row}: the combined logits are -inf for every token")
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
        row_lse = torch.logsumexp(logits.float(), dim=1)[rows]
        correction = raw_lse - torch.where(used, coef * row_lse, 0.0).sum(dim=1)
        single = (used.sum(dim=1) == 1) & (torch.where(used, coef, 0.0).sum(dim=1) == 1)
        result.correction = correction.masked_fill(single, 0.0)
    return result

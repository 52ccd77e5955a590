"""Launchers of the Triton kernels (:mod:`dposhap.compose.triton_kernels`): the gather form and
the shared-source form.

Runs on CUDA tensors, or on the CPU under Triton's interpreter (``TRITON_INTERPRET=1``,
which is how the test-suite proves the kernel on a machine without a GPU). Computes in
float32 and agrees with :func:`dposhap.compose.reference.compose` (same conventions, same
noise, same tie rule).
"""

from __future__ import annotations

import os

import torch

from ..errors import InvalidArgumentError
from .contract import ComposeOutput, GatherArgs
from .kernel_common import (
    assemble,
    check_dense_result,
    check_participating_rows,
    kernel_top_k,
    noise_keys,
    require_float32,
)

#: Vocabulary entries per block of the kernel (the interpreter gets smaller blocks).
BLOCK_V = 1024
INTERPRET_BLOCK_V = 64
#: Bits of the key that one pass of the top-k radix select decides (at most 32 / RADIX_BITS
#: passes); the interpreter, where a pass costs more than its compares, takes wider digits.
RADIX_BITS = 4
INTERPRET_RADIX_BITS = 8


def available(device: torch.device) -> bool:
    """Whether the Triton kernel can run on tensors of ``device``."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    if device.type == "cuda":
        return True
    return device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"


def launch(args: GatherArgs, *, block_v: int | None = None, radix_bits: int | None = None) -> ComposeOutput:
    """The gather form of :func:`dposhap.compose.reference.compose` on checked arguments, by
    the Triton kernel (:func:`~dposhap.compose.triton_kernels.compose_rows_kernel`).

    Same results as the reference (in float32), top-k sampling included (the same top-k set and
    tie rule).

    Parameters
    ----------
    args
        The checked arguments (:func:`dposhap.compose.contract.validate_gather`).
    block_v
        The kernel's block of vocabulary (default 1024 on a GPU, 64 in the interpreter).
    radix_bits
        The bits of the key that one pass of the top-k select decides: 1, 2, 4 or 8.

    Raises
    ------
    InvalidArgumentError
        NaN or ``+inf`` in a participating row, a row masked everywhere, a bad ``radix_bits``,
        or a device Triton cannot run on.
    """
    from .triton_kernels import compose_rows_kernel

    if not available(args.logits.device):
        raise InvalidArgumentError(
            f"the Triton kernel runs on CUDA tensors (or on the CPU with TRITON_INTERPRET=1); got a {args.logits.device.type} tensor"
        )
    require_float32(args, "the Triton kernel")
    logits, rows, coef, vocab = args.logits, args.rows, args.coef, args.vocab
    m, n_slots = rows.shape
    device = logits.device
    check_participating_rows(logits, rows, coef)
    logits = logits if logits.stride(1) == 1 else logits.contiguous()
    rows_c = rows.contiguous()
    coef_c = coef.to(torch.float32).contiguous()
    temp = args.temp.to(torch.float32).contiguous()
    want = set(args.outputs)
    logz = torch.empty(m, dtype=torch.float32, device=device)
    raw_lse = torch.empty_like(logz) if "correction" in want else logz
    target = torch.empty_like(logz) if "target_logprob" in want else logz
    sample = torch.empty(m, dtype=torch.int64, device=device) if "sample" in want else rows_c
    logprobs = torch.empty(m, vocab, dtype=torch.float32, device=device) if "logprobs" in want else logz
    targets = args.targets if args.targets is not None else rows_c
    key_a, key_b = noise_keys(args) if "sample" in want else (rows_c, rows_c)
    if block_v is None:
        block_v = INTERPRET_BLOCK_V if device.type == "cpu" else BLOCK_V
    if radix_bits is None:
        radix_bits = INTERPRET_RADIX_BITS if device.type == "cpu" else RADIX_BITS
    if radix_bits not in (1, 2, 4, 8):
        raise InvalidArgumentError(
            f"radix_bits must be 1, 2, 4 or 8 (a divisor of 32 that fits a block), got {radix_bits!r}"
        )
    kernel_k = kernel_top_k(args)
    compose_rows_kernel[(m,)](
        logits,
        logits.stride(0),
        rows_c,
        coef_c,
        n_slots,
        temp,
        targets,
        key_a,
        key_b,
        logz,
        raw_lse,
        target,
        sample,
        logprobs,
        vocab,
        kernel_k,
        BLOCK_V=block_v,
        WANT_TARGET="target_logprob" in want,
        WANT_SAMPLE="sample" in want,
        WANT_RAW="correction" in want,
        WANT_LOGPROBS="logprobs" in want,
        TOP_K=kernel_k > 0,
        RADIX_BITS=radix_bits,
        # the top-k path computes c as the reference does (no fused multiply-adds); the plain
        # path keeps Triton's default
        **({"enable_fp_fusion": False} if kernel_k else {}),
    )
    return assemble(
        want,
        logits,
        rows_c,
        coef_c,
        logz,
        raw_lse if "correction" in want else None,
        target if "target_logprob" in want else None,
        sample if "sample" in want else None,
        logprobs if "logprobs" in want else None,
    )


#: Vocabulary entries per program of the dense form (a multiple of the block).
DENSE_CHUNK = 8192
INTERPRET_DENSE_CHUNK = 128


def launch_dense(
    ref: torch.Tensor,
    sources: torch.Tensor,
    weights: torch.Tensor,
    temperature: torch.Tensor,
    *,
    block_v: int | None = None,
    chunk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The dense form (:func:`dposhap.compose.reference.log_probs`) by the Triton kernels
    (:func:`~dposhap.compose.triton_kernels.dense_partial_kernel`, then
    :func:`~dposhap.compose.triton_kernels.dense_finish_kernel`): ``ref [R, V]`` and ``sources
    [R, n, V]`` read in place (only a vocabulary stride other than 1 costs a copy).

    Parameters
    ----------
    ref, sources
        Logits (float32, float16 or bfloat16), as checked by
        :meth:`~dposhap.compose.contract.DenseRequest.checked`.
    weights
        float32 ``[R, n]``.
    temperature
        float32 ``[R]``, finite and > 0.
    block_v, chunk
        The block of vocabulary a program loads at once, and the vocabulary of one program (a
        multiple of ``block_v``); defaults suit a GPU (smaller in the interpreter).

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        float32 ``logprobs [R, V]`` and ``logz [R]``.

    Raises
    ------
    InvalidArgumentError
        NaN or ``+inf`` in a participating row, a row masked everywhere, or a device Triton
        cannot run on.
    """
    from .triton_kernels import dense_finish_kernel, dense_partial_kernel

    device = ref.device
    if not available(device):
        raise InvalidArgumentError(
            f"the Triton kernel runs on CUDA tensors (or on the CPU with TRITON_INTERPRET=1); got a {device.type} tensor"
        )
    r, vocab = ref.shape
    n = sources.shape[1]
    if block_v is None:
        block_v = INTERPRET_BLOCK_V if device.type == "cpu" else BLOCK_V
    if chunk is None:
        chunk = INTERPRET_DENSE_CHUNK if device.type == "cpu" else DENSE_CHUNK
    chunk = max(block_v, chunk // block_v * block_v)
    ref = ref if ref.stride(1) == 1 else ref.contiguous()
    sources = sources if sources.stride(2) == 1 else sources.contiguous()
    weights = weights.to(torch.float32).contiguous()
    temperature = temperature.to(torch.float32).contiguous()
    n_chunks = max(1, -(-vocab // chunk))
    out = torch.empty(r, vocab, dtype=torch.float32, device=device)
    logz = torch.empty(r, dtype=torch.float32, device=device)
    if r == 0:
        return out, logz
    part_max = torch.empty(r, n_chunks, dtype=torch.float32, device=device)
    part_sum = torch.empty_like(part_max)
    part_bad = torch.empty(r, n_chunks, dtype=torch.int32, device=device)
    grid = (r, n_chunks)
    dense_partial_kernel[grid](
        ref,
        sources,
        weights,
        temperature,
        out,
        part_max,
        part_sum,
        part_bad,
        ref.stride(0),
        sources.stride(0),
        sources.stride(1),
        n,
        n_chunks,
        vocab,
        CHUNK=chunk,
        BLOCK_V=block_v,
    )
    dense_finish_kernel[grid](out, logz, part_max, part_sum, part_bad, n_chunks, vocab, CHUNK=chunk, BLOCK_V=block_v)
    check_dense_result(ref, sources, weights, logz)
    return out, logz


def shared_scores(
    logits: torch.Tensor, coef: torch.Tensor, targets: torch.Tensor, *, block_k: int = 16, block_v: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`dposhap.compose.reference.shared_scores` by the Triton kernel (float32 results):
    ``logz [K, N]`` and ``target_logprob [K, N]`` of ``K`` coalitions over ``N`` positions.

    Raises
    ------
    InvalidArgumentError
        As the reference does, and for a device Triton cannot run on.
    """
    import triton

    from .triton_kernels import shared_scores_kernel

    if not available(logits.device):
        raise InvalidArgumentError(
            f"the Triton kernel runs on CUDA tensors (or on the CPU with TRITON_INTERPRET=1); got a {logits.device.type} tensor"
        )
    # argument checks (the reference's, without its pass over [K, N, V]-sized blocks)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3:
        raise InvalidArgumentError("logits must be a tensor [N, n + 1, V]")
    n_pos, n_models, vocab = logits.shape
    if not isinstance(coef, torch.Tensor) or coef.dim() != 2 or coef.shape[1] != n_models:
        raise InvalidArgumentError(f"coef must be [K, n + 1] with n + 1 = {n_models} columns")
    if not isinstance(targets, torch.Tensor) or targets.shape != (n_pos,) or targets.dtype != torch.int64:
        raise InvalidArgumentError(f"targets must be an int64 tensor [N] with N = {n_pos}")
    if bool(((targets < 0) | (targets >= vocab)).any()):
        raise InvalidArgumentError(f"targets must be tokens in [0, {vocab})")
    if not bool(torch.isfinite(coef).all()):
        raise InvalidArgumentError("coef must be finite")
    used = (coef != 0).any(dim=0)
    bad = (torch.isnan(logits) | torch.isposinf(logits)).any(dim=2) & used[None, :]
    if bool(bad.any()):
        p, a = (int(x) for x in bad.nonzero()[0])
        raise InvalidArgumentError(
            f"logits[{p}, {a}, :] holds NaN or +inf; logits must be finite or -inf (masked tokens)"
        )
    logits = logits if logits.stride(2) == 1 else logits.contiguous()
    coef32 = coef.to(torch.float32).contiguous()
    n_coal = coef.shape[0]
    logz = torch.empty(n_coal, n_pos, dtype=torch.float32, device=logits.device)
    target = torch.empty_like(logz)
    if block_v is None:
        block_v = INTERPRET_BLOCK_V if logits.device.type == "cpu" else 256
    block_a = max(16, triton.next_power_of_2(n_models))
    grid = (n_pos, triton.cdiv(n_coal, block_k))
    shared_scores_kernel[grid](
        logits,
        logits.stride(0),
        logits.stride(1),
        coef32,
        n_models,
        n_coal,
        targets.contiguous(),
        logz,
        target,
        n_pos,
        vocab,
        BLOCK_K=block_k,
        BLOCK_A=block_a,
        BLOCK_V=block_v,
    )
    dead = torch.isneginf(logz)
    if bool(dead.any()):
        k, p = (int(x) for x in dead.nonzero()[0])
        raise InvalidArgumentError(f"coalition {k} at position {p}: the combined logits are -inf for every token")
    return logz, target


def linear_logprobs(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor, chunk_v: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`dposhap.compose.head.linear_logprobs` by the Triton kernel
    (:func:`~dposhap.compose.triton_kernels.fold_chunk_kernel`): each vocabulary chunk's logits
    by one matrix product in the head's dtype, folded into a running log-sum-exp per row.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        float32 ``target_logprob [N]`` and ``logz [N]``.

    Raises
    ------
    InvalidArgumentError
        A device Triton cannot run on.
    """
    from .triton_kernels import fold_chunk_kernel

    if not available(hidden.device):
        raise InvalidArgumentError(
            f"the Triton kernel runs on CUDA tensors (or on the CPU with TRITON_INTERPRET=1); got a {hidden.device.type} tensor"
        )
    rows, vocab = hidden.shape[0], weight.shape[0]
    running_max = torch.full((rows,), float("-inf"), dtype=torch.float32, device=hidden.device)
    running_sum = torch.zeros(rows, dtype=torch.float32, device=hidden.device)
    target = torch.full((rows,), float("nan"), dtype=torch.float32, device=hidden.device)
    block_v = INTERPRET_BLOCK_V if hidden.device.type == "cpu" else BLOCK_V
    targets = targets.contiguous()
    for first in range(0, vocab if rows else 0, chunk_v):
        cols = min(chunk_v, vocab - first)
        w = weight[first : first + cols]
        chunk = hidden @ w.T if bias is None else torch.addmm(bias[first : first + cols], hidden, w.T)
        fold_chunk_kernel[(rows,)](
            chunk, chunk.stride(0), cols, first, targets, running_max, running_sum, target, BLOCK_V=block_v
        )
    logz = running_max + running_sum.log()
    return target - logz, logz

"""The dispatcher: every compose form on a chosen backend.

``compose(..., backend="auto" | "torch" | "cpp" | "triton" | "cuda")`` (the gather form) and
``log_probs(..., backend=...)`` (the dense form) run on a backend of the registry
(:mod:`dposhap.compose.registry`); ``shared_scores(..., backend="auto" | "torch" | "triton")``
on the reference or the Triton kernel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from ..errors import InvalidArgumentError
from . import reference, registry, triton_backend
from .contract import ComposeOutput, GatherRequest, OutputName, Temperature, dense_request

__all__ = ["GATHER_BACKENDS", "Backend", "SharedBackend", "compose", "log_probs", "shared_scores"]

#: A backend of the gather and dense forms.
Backend = Literal["auto", "torch", "cpp", "triton", "cuda"]
GATHER_BACKENDS: tuple[Backend, ...] = ("auto", "torch", "cpp", "triton", "cuda")
#: A backend of the shared-source form.
SharedBackend = Literal["auto", "torch", "triton"]


def _run(request: GatherRequest, backend: str) -> ComposeOutput:
    """A request on a named backend, or on the one ``"auto"`` picks."""
    chosen = registry.pick(request) if backend == "auto" else registry.get(backend)
    return chosen.launch(request)


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
    compute_dtype: torch.dtype | None = None,
    backend: Backend = "auto",
) -> ComposeOutput:
    """:func:`dposhap.compose.reference.compose` on a chosen backend.

    Parameters
    ----------
    logits, ref_index, src_index, src_weight, temperature, outputs, targets, seed, stream_id, step, top_k, compute_dtype
        As in :func:`dposhap.compose.reference.compose`.
    backend
        ``"torch"`` (the reference), ``"cpp"`` (C++ CPU kernel: CPU tensors, float32, bfloat16
        or float16 logits, float32 compute), ``"triton"`` (CUDA tensors, or CPU tensors under
        ``TRITON_INTERPRET=1``), ``"cuda"`` (the CUDA kernel) or ``"auto"``: on CUDA tensors
        ``"cuda"`` where it builds, else ``"triton"``; on the CPU ``"cpp"`` where it applies and
        builds, else ``"torch"``. The kernels compute in float32 and sample top-k exactly as the
        reference; float64 (logits or ``compute_dtype``) goes to the reference under ``"auto"``.
        The kernel backends run through ``torch.library`` ops (:mod:`dposhap.compose.ops`) with
        a fake implementation, so they work under ``torch.compile``.

    Returns
    -------
    ComposeOutput
        As the reference; the kernels return float32 outputs and int64 samples.

    Raises
    ------
    InvalidArgumentError
        Bad arguments (as the reference), an unknown backend, or a named backend on inputs it
        does not handle.
    dposhap.errors.NativeBuildError
        A native backend named explicitly cannot be built here.
    """
    request = GatherRequest(
        logits,
        ref_index,
        src_index,
        src_weight,
        temperature,
        outputs,
        targets,
        seed,
        stream_id,
        step,
        top_k,
        compute_dtype,
    )
    return _run(request, backend)


def log_probs(
    ref: torch.Tensor,
    sources: torch.Tensor,
    weights: torch.Tensor,
    temperature: Temperature = 1.0,
    backend: Backend = "torch",
    *,
    compute_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """:func:`dposhap.compose.reference.log_probs` (the dense form) on a chosen backend.

    Parameters
    ----------
    ref, sources, weights, temperature, compute_dtype
        As in :func:`dposhap.compose.reference.log_probs`.
    backend
        ``"torch"`` (the reference), or ``"auto"``, ``"cpp"``, ``"triton"``, ``"cuda"`` as in
        :func:`compose` (float32 results).

    Returns
    -------
    torch.Tensor
        ``[R, V]`` log-probabilities.
    """
    out = _run(dense_request(ref, sources, weights, temperature, compute_dtype), backend)
    assert out.logprobs is not None
    return out.logprobs


def shared_scores(
    logits: torch.Tensor,
    coef: torch.Tensor,
    targets: torch.Tensor,
    *,
    block_v: int = 4096,
    compute_dtype: torch.dtype | None = None,
    backend: SharedBackend = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`dposhap.compose.reference.shared_scores` on a chosen backend.

    Parameters
    ----------
    logits, coef, targets, block_v, compute_dtype
        As in :func:`dposhap.compose.reference.shared_scores`.
    backend
        ``"torch"`` (the reference: blocked matrix products with an online log-sum-exp, also
        the CPU path), ``"triton"`` (CUDA tensors, or the CPU under ``TRITON_INTERPRET=1``;
        float32) or ``"auto"`` (Triton on CUDA tensors in float32, else the reference).

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        ``logz [K, N]`` and ``target_logprob [K, N]``.
    """
    if backend not in ("auto", "torch", "triton"):
        raise InvalidArgumentError(f'unknown backend {backend!r}; choose from ["auto", "torch", "triton"]')
    if backend == "auto":
        fast = (
            isinstance(logits, torch.Tensor)
            and logits.is_cuda
            and logits.dtype != torch.float64
            and compute_dtype in (None, torch.float32)
            and triton_backend.available(logits.device)
        )
        backend = "triton" if fast else "torch"
    if backend == "torch":
        return reference.shared_scores(logits, coef, targets, block_v=block_v, compute_dtype=compute_dtype)
    if compute_dtype not in (None, torch.float32):
        raise InvalidArgumentError(
            f'backend="triton" computes in float32; got compute_dtype={compute_dtype} (use backend="torch")'
        )
    return triton_backend.shared_scores(logits, coef, targets)

"""The dispatcher: every compose form on a chosen backend.

``compose(..., backend="auto" | "torch" | "cpp" | "triton" | "cuda")`` (the gather form) and
``log_probs(..., backend=...)`` (the dense form) run on a backend of the registry
(:mod:`dposhap.compose.registry`); ``shared_scores(..., backend="auto" | "torch" | "triton")``
on the reference or the Triton kernel.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import Literal

import torch

from ..errors import InvalidArgumentError
from . import _native, cuda_backend, ops, reference, registry, triton_backend
from .contract import ComposeOutput, DenseRequest, GatherRequest, SharedRequest, with_request_arguments

__all__ = [
    "GATHER_BACKENDS",
    "Backend",
    "DenseDispatchRequest",
    "DispatchRequest",
    "SharedBackend",
    "SharedDispatchRequest",
    "compose",
    "log_probs",
    "shared_scores",
]

#: A backend of the gather and dense forms.
Backend = Literal["auto", "torch", "cpp", "triton", "cuda"]
GATHER_BACKENDS: tuple[Backend, ...] = ("auto", "torch", "cpp", "triton", "cuda")
#: A backend of the shared-source form.
SharedBackend = Literal["auto", "torch", "triton"]


def _run(request: GatherRequest, backend: str) -> ComposeOutput:
    """A request on a named backend, or on the one ``"auto"`` picks."""
    chosen = registry.pick(request) if backend == "auto" else registry.get(backend)
    return chosen.launch(request)


@dataclass(frozen=True, eq=False)
class DispatchRequest(GatherRequest):
    """A gather request and the backend to run it on (the arguments of :func:`compose`)."""

    _: KW_ONLY
    backend: Backend = "auto"


@with_request_arguments(DispatchRequest)
def compose(request: DispatchRequest) -> ComposeOutput:
    """:func:`dposhap.compose.reference.compose` on a chosen backend.

    Called with the parameters below (the fields of :class:`DispatchRequest`, which the
    function receives as one request).

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
    return _run(request, request.backend)


@dataclass(frozen=True, eq=False)
class DenseDispatchRequest(DenseRequest):
    """A dense request and the backend to run it on (the arguments of :func:`log_probs`)."""

    _: KW_ONLY
    backend: Backend = "torch"


def _dense_backend(request: DenseDispatchRequest) -> str:
    """The backend ``"auto"`` runs a dense request on: on CUDA tensors the CUDA kernel where it
    builds, else Triton; on the CPU the C++ kernel where it applies and builds; else the reference."""
    ref, compute_dtype = request.ref, request.compute_dtype
    if (
        not isinstance(ref, torch.Tensor)
        or ref.dtype not in (torch.float32, torch.bfloat16, torch.float16)
        or compute_dtype not in (None, torch.float32)
    ):
        return "torch"
    if ref.is_cuda:
        if _native.cuda_available():
            return "cuda"
        registry.tell_fallback("cuda", "triton")
        return "triton"
    if ref.device.type == "cpu":
        if _native.cpu_available():
            return "cpp"
        registry.tell_fallback("cpp", "torch")
    return "torch"


@with_request_arguments(DenseDispatchRequest)
def log_probs(request: DenseDispatchRequest) -> torch.Tensor:
    """:func:`dposhap.compose.reference.log_probs` (the dense form) on a chosen backend.

    Called with the parameters below (the fields of :class:`DenseDispatchRequest`).

    Parameters
    ----------
    ref, sources, weights, temperature, compute_dtype
        As in :func:`dposhap.compose.reference.log_probs`.
    backend
        ``"torch"`` (the reference), ``"cpp"`` (C++ CPU kernel), ``"cuda"`` (CUDA kernel),
        ``"triton"`` (Triton kernels; CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``)
        or ``"auto"`` (as in :func:`compose`). The kernels read ``ref`` and ``sources`` in place
        through their strides (no concatenated copy; only a vocabulary stride other than 1 costs
        a copy), compute in float32 and return float32.

    Returns
    -------
    torch.Tensor
        ``[R, V]`` log-probabilities.

    Raises
    ------
    InvalidArgumentError
        Bad arguments (as the reference), an unknown backend, or a kernel backend on a device or
        compute dtype it does not handle.
    dposhap.errors.NativeBuildError
        A native backend named explicitly cannot be built here.
    """
    backend = _dense_backend(request) if request.backend == "auto" else request.backend
    if backend == "torch":
        return reference.log_probs(
            request.ref, request.sources, request.weights, request.temperature, compute_dtype=request.compute_dtype
        )
    if backend == "triton":
        if not isinstance(request.ref, torch.Tensor) or not triton_backend.available(request.ref.device):
            device = request.ref.device.type if isinstance(request.ref, torch.Tensor) else "no"
            raise InvalidArgumentError(
                f"the Triton kernel runs on CUDA tensors (or on the CPU with TRITON_INTERPRET=1); got a {device} tensor"
            )
        return ops.run_dense_op(ops.compose_dense_triton, request)
    if backend in ("cpp", "cuda"):
        ref = request.ref
        if backend == "cuda":
            cuda_backend.check_cuda_tensors(ref)
        elif isinstance(ref, torch.Tensor) and ref.device.type != "cpu":
            raise InvalidArgumentError(f"ref must be on the CPU for the cpp backend, got {ref.device}")
        return ops.run_dense_op(ops.compose_dense, request)
    raise InvalidArgumentError(f"unknown backend {backend!r}; choose from {list(GATHER_BACKENDS)}")


@dataclass(frozen=True, eq=False)
class SharedDispatchRequest(SharedRequest):
    """A shared-source request and the backend to run it on (the arguments of :func:`shared_scores`)."""

    _: KW_ONLY
    backend: SharedBackend = "auto"


@with_request_arguments(SharedDispatchRequest)
def shared_scores(request: SharedDispatchRequest) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`dposhap.compose.reference.shared_scores` on a chosen backend.

    Called with the parameters below (the fields of :class:`SharedDispatchRequest`).

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
    logits, backend, compute_dtype = request.logits, request.backend, request.compute_dtype
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
        return reference.shared_scores(
            logits, request.coef, request.targets, block_v=request.block_v, compute_dtype=compute_dtype
        )
    if compute_dtype not in (None, torch.float32):
        raise InvalidArgumentError(
            f'backend="triton" computes in float32; got compute_dtype={compute_dtype} (use backend="torch")'
        )
    return triton_backend.shared_scores(logits, request.coef, request.targets)

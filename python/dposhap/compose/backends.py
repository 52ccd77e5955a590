"""Backend dispatch: the gather form ``compose(..., backend="auto" | "torch" | "cpp" | "triton" | "cuda")``
and the shared-source form ``shared_scores(..., backend="auto" | "torch" | "triton")``.

``"torch"`` is the plain reference (:func:`dposhap.compose.reference.compose`); ``"cpp"`` the
C++ CPU kernel (``torch.ops.dposhap.compose_gather``, built on first use by
:mod:`dposhap.compose._native`); ``"triton"`` and ``"cuda"`` the GPU kernels
(``torch.ops.dposhap.compose_gather_triton`` and ``compose_gather_cuda``, declared here). The
three ops share one schema and one fake implementation, so they trace under ``torch.compile``.
``"auto"`` picks ``"cpp"`` for CPU tensors in float32, bfloat16 or float16 when the extension
builds, ``"cuda"`` (else ``"triton"``) for CUDA tensors, else the reference.
"""

from __future__ import annotations

import functools
from typing import Literal, Sequence

import torch

from ..errors import DposhapError, InvalidArgumentError
from . import _native, noise
from .reference import OUTPUT_NAMES, ComposeOutput, OutputName, Temperature, normalize_outputs
from .reference import compose as reference_compose
from .reference import shared_scores as reference_shared_scores

__all__ = ["GatherBackend", "compose", "cpp_supports"]

GatherBackend = Literal["auto", "torch", "cpp", "triton", "cuda"]
GATHER_BACKENDS = ("auto", "torch", "cpp", "triton", "cuda")
_CPP_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_FAKE_REGISTERED = False

#: The signature of the gather op of every kernel backend (``compose_cpu.cpp`` declares the
#: cpp one with the same schema). Outputs not asked for are empty tensors ``[0]``.
GATHER_OP_SCHEMA = (
    "(Tensor logits, Tensor ref_index, Tensor src_index, Tensor src_weight, Tensor temperature, Tensor? targets, "
    "Tensor stream_id, Tensor step, int seed, int top_k, bool want_logprobs, bool want_logz, bool want_correction, "
    "bool want_target, bool want_sample) -> (Tensor, Tensor, Tensor, Tensor, Tensor)"
)
#: The ``torch.library`` op of each kernel backend, in the ``dposhap`` namespace.
GATHER_OPS = {"cpp": "compose_gather", "triton": "compose_gather_triton", "cuda": "compose_gather_cuda"}


def _gather_fake(logits, ref_index, src_index, src_weight, temperature, targets, stream_id, step, seed, top_k,
                 want_logprobs, want_logz, want_correction, want_target, want_sample):  # noqa: ANN001, ANN202
    """Shapes of a gather op's outputs for ``torch.compile`` / meta tensors (every backend's)."""
    m, v = ref_index.shape[0], logits.shape[1]
    f32 = dict(dtype=torch.float32, device=logits.device)
    return (
        logits.new_empty((m, v) if want_logprobs else (0,), **f32),
        logits.new_empty((m,) if want_logz else (0,), **f32),
        logits.new_empty((m,) if want_correction else (0,), **f32),
        logits.new_empty((m,) if want_target else (0,), **f32),
        logits.new_empty((m,) if want_sample else (0,), dtype=torch.int64, device=logits.device),
    )


def _register_fake() -> None:
    """Register the fake implementation of the cpp op, which the extension declares on loading."""
    global _FAKE_REGISTERED
    if not _FAKE_REGISTERED:
        torch.library.register_fake(f"dposhap::{GATHER_OPS['cpp']}", _gather_fake)
        _FAKE_REGISTERED = True


def _run_launcher(backend: str, logits, ref_index, src_index, src_weight, temperature, targets, stream_id, step, seed,
                  top_k, want_logprobs, want_logz, want_correction, want_target, want_sample):  # noqa: ANN001, ANN202
    """The real implementation of the Triton and CUDA ops: the backend's launcher."""
    from . import cuda_backend, triton_backend

    launcher = triton_backend.compose if backend == "triton" else cuda_backend.compose
    wanted = dict(zip(OUTPUT_NAMES, (want_logprobs, want_logz, want_correction, want_target, want_sample)))
    out = launcher(
        logits, ref_index, src_index, src_weight, temperature, outputs=[name for name, want in wanted.items() if want],
        targets=targets, seed=seed, stream_id=stream_id, step=step, top_k=top_k or None,
    )
    return tuple(
        getattr(out, name) if want else logits.new_empty((0,), dtype=torch.int64 if name == "sample" else torch.float32)
        for name, want in wanted.items()
    )


def _define_kernel_ops() -> None:
    """Declare the Triton and CUDA gather ops, with the fake implementation of the cpp op."""
    for backend in ("triton", "cuda"):
        name = f"dposhap::{GATHER_OPS[backend]}"
        torch.library.define(name, GATHER_OP_SCHEMA)
        torch.library.impl(name, ("cpu", "cuda"), functools.partial(_run_launcher, backend))
        torch.library.register_fake(name, _gather_fake)


_define_kernel_ops()


def _auto_backend(logits: object, compute_dtype: torch.dtype | None) -> str:
    """The fastest backend that handles these inputs (see :func:`compose`)."""
    if not isinstance(logits, torch.Tensor) or compute_dtype not in (None, torch.float32) or logits.dtype == torch.float64:
        return "torch"
    if logits.is_cuda:
        try:
            _native.load_cuda()
            return "cuda"
        except _native.NativeBuildError:
            from . import triton_backend

            return "triton" if triton_backend.available(logits.device) else "torch"
    return "cpp" if cpp_supports(logits, compute_dtype) and _native.cpu_available() else "torch"


def cpp_supports(logits: object, compute_dtype: torch.dtype | None = None) -> bool:
    """Whether the cpp backend handles these logits (CPU, float32/bfloat16/float16, float32 compute)."""
    return (
        isinstance(logits, torch.Tensor)
        and logits.device.type == "cpu"
        and logits.dtype in _CPP_DTYPES
        and compute_dtype in (None, torch.float32)
    )


def _as_rows(value: int | torch.Tensor, name: str, m: int, device: torch.device) -> torch.Tensor:
    """A Python int (64-bit, two's complement) or an int64 tensor [M], as int64 [M] (an int on ``device``)."""
    if isinstance(value, torch.Tensor):
        if value.dtype != torch.int64:
            raise InvalidArgumentError(f"{name} must be an int64 tensor [M], got {value.dtype}; convert it with .long()")
        if value.dim() == 0:
            return value.expand(m)
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentError(f"{name} must be a Python int or an int64 tensor [M], got {type(value).__name__}")
    noise._check_int64_range(value, name)
    value %= 1 << 64
    if value >= 1 << 63:
        value -= 1 << 64
    return torch.full((m,), value, dtype=torch.int64, device=device)


def _compose_kernel(
    backend: str,
    logits: torch.Tensor,
    ref_index: torch.Tensor,
    src_index: torch.Tensor,
    src_weight: torch.Tensor,
    temperature: Temperature,
    outputs: tuple[str, ...],
    targets: torch.Tensor | None,
    seed: int,
    stream_id: torch.Tensor | None,
    step: int | torch.Tensor,
    top_k: int | None,
) -> ComposeOutput:
    """A kernel backend through its ``torch.library`` op (see :data:`GATHER_OPS`)."""
    if backend == "cpp":
        _native.load_cpu()  # also registers the op's fake implementation
    device = logits.device
    if not isinstance(ref_index, torch.Tensor) or ref_index.dim() != 1:
        raise InvalidArgumentError("ref_index must be an int64 torch.Tensor [M]")
    m = ref_index.shape[0]
    if isinstance(temperature, torch.Tensor):
        if not temperature.is_floating_point() or temperature.dim() > 1:
            raise InvalidArgumentError(f"temperature must be a float or a floating tensor [M], got {temperature.dtype} {tuple(temperature.shape)}")
        temp = temperature.to(torch.float32).expand(m) if temperature.dim() == 0 else temperature.to(torch.float32)
    elif isinstance(temperature, (int, float)) and not isinstance(temperature, bool):
        temp = torch.full((m,), float(temperature), dtype=torch.float32, device=device)
    else:
        raise InvalidArgumentError(f"temperature must be a float or a tensor [M], got {type(temperature).__name__}")
    want_sample = "sample" in outputs
    if want_sample and top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise InvalidArgumentError(f"top_k must be None or an int >= 1, got {top_k!r}")
    if stream_id is None:
        stream_id = torch.arange(m, dtype=torch.int64, device=device)
    step_rows = _as_rows(step, "step", m, device)
    noise._check_int64_range(seed, "seed")
    seed64 = seed % (1 << 64)
    if seed64 >= 1 << 63:
        seed64 -= 1 << 64
    try:
        result = getattr(torch.ops.dposhap, GATHER_OPS[backend])(
            logits, ref_index, src_index, src_weight, temp, targets, stream_id, step_rows, seed64,
            0 if top_k is None else int(top_k),
            "logprobs" in outputs, "logz" in outputs, "correction" in outputs, "target_logprob" in outputs, want_sample,
        )
    except (RuntimeError, ValueError) as exc:
        if isinstance(exc, DposhapError):
            raise
        message = str(exc).split("\nException raised from", 1)[0].strip()
        raise InvalidArgumentError(message) from None
    logprobs, logz, correction, target_logprob, sample = result
    return ComposeOutput(
        logprobs=logprobs if "logprobs" in outputs else None,
        logz=logz if "logz" in outputs else None,
        correction=correction if "correction" in outputs else None,
        target_logprob=target_logprob if "target_logprob" in outputs else None,
        sample=sample if want_sample else None,
    )


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
    backend: GatherBackend = "auto",
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
        The kernel backends run through ``torch.library`` ops (:data:`GATHER_OPS`) with a fake
        implementation, so they work under ``torch.compile``.

    Returns
    -------
    ComposeOutput
        As the reference; the cpp backend returns float32 outputs and int64 samples.

    Raises
    ------
    InvalidArgumentError
        Bad arguments (as the reference), or ``backend="cpp"`` on inputs it does not handle.
    dposhap.compose._native.NativeBuildError
        ``backend="cpp"`` and the extension cannot be built.
    """
    outputs = normalize_outputs(outputs)
    if backend not in GATHER_BACKENDS:
        raise InvalidArgumentError(f"unknown backend {backend!r}; choose from {list(GATHER_BACKENDS)}")
    if backend == "auto":
        backend = _auto_backend(logits, compute_dtype)
    if backend == "torch":
        return reference_compose(
            logits, ref_index, src_index, src_weight, temperature, outputs=outputs, targets=targets, seed=seed,
            stream_id=stream_id, step=step, top_k=top_k, compute_dtype=compute_dtype,
        )
    # every kernel computes in float32
    if compute_dtype not in (None, torch.float32):
        raise InvalidArgumentError(f'backend="{backend}" computes in float32; got compute_dtype={compute_dtype} (use backend="torch")')
    if not isinstance(logits, torch.Tensor):
        raise InvalidArgumentError(f"logits must be a torch.Tensor [T, V], got {type(logits).__name__}")
    return _compose_kernel(
        backend, logits, ref_index, src_index, src_weight, temperature, outputs, targets, seed, stream_id, step, top_k
    )


SharedBackend = Literal["auto", "torch", "triton"]


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
    from . import triton_backend

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
        return reference_shared_scores(logits, coef, targets, block_v=block_v, compute_dtype=compute_dtype)
    if compute_dtype not in (None, torch.float32):
        raise InvalidArgumentError(f'backend="triton" computes in float32; got compute_dtype={compute_dtype} (use backend="torch")')
    return triton_backend.shared_scores(logits, coef, targets)

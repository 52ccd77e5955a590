"""The ``torch.library`` ops of the compose kernels, registered here and nowhere else.

``torch.ops.dposhap.compose_gather``
    The native gather op: its CPU kernel is the C++ kernel (``csrc/compose_cpu.cpp``, built on
    first use by :mod:`dposhap.compose._native`), its CUDA kernel the CUDA one
    (``csrc/compose_cuda.cu``, through :func:`dposhap.compose.cuda_backend.launch`).
``torch.ops.dposhap.compose_gather_triton``
    The Triton kernel (:func:`dposhap.compose.triton_backend.launch`), on CUDA tensors or, under
    ``TRITON_INTERPRET=1``, on CPU tensors.

Both take the arguments of :data:`GATHER_SCHEMA` and share one fake implementation, so they trace
under ``torch.compile``. Outputs not asked for are empty tensors ``[0]``.

``torch.ops.dposhap.linear_logprobs`` and ``torch.ops.dposhap.linear_logprobs_triton``
    The fused linear log-probability (:data:`LINEAR_LOGPROBS_SCHEMA`, :mod:`dposhap.compose.head`):
    CPU kernel ``csrc/score_cpu.cpp``, CUDA kernel ``csrc/score_cuda.cu``, Triton
    :func:`dposhap.compose.triton_backend.linear_logprobs`.

``torch.ops.dposhap.compose_dense`` and ``torch.ops.dposhap.compose_dense_triton``
    The dense form (:data:`DENSE_SCHEMA`): ``ref [R, V]`` and ``sources [R, n, V]`` read in
    place through their strides, no concatenation. CPU kernel: ``csrc/compose_cpu_dense.cpp``;
    CUDA kernel: ``csrc/compose_cuda.cu``; Triton: :func:`dposhap.compose.triton_backend.launch_dense`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch

from ..errors import DposhapError, InvalidArgumentError
from . import _native, cuda_backend, triton_backend
from .contract import (
    OUTPUT_NAMES,
    ComposeOutput,
    DenseRequest,
    GatherArgs,
    GatherRequest,
    as_int64,
    temperature_rows,
    validate_gather,
)

__all__ = [
    "DENSE_SCHEMA",
    "GATHER_SCHEMA",
    "LINEAR_LOGPROBS_SCHEMA",
    "compose_dense",
    "compose_dense_triton",
    "compose_gather",
    "compose_gather_triton",
    "gather_op_arguments",
    "linear_logprobs",
    "linear_logprobs_triton",
    "run_dense_op",
    "run_gather_op",
]

#: The signature of the gather ops. ``top_k`` 0 samples over the whole vocabulary; the five
#: flags and the five outputs follow :data:`~dposhap.compose.contract.OUTPUT_NAMES`.
GATHER_SCHEMA = (
    "(Tensor logits, Tensor ref_index, Tensor src_index, Tensor src_weight, Tensor temperature, Tensor? targets, "
    "Tensor stream_id, Tensor step, int seed, int top_k, bool want_logprobs, bool want_logz, bool want_correction, "
    "bool want_target, bool want_sample) -> (Tensor, Tensor, Tensor, Tensor, Tensor)"
)

GatherOpArguments = tuple[
    torch.Tensor,  # logits
    torch.Tensor,  # ref_index
    torch.Tensor,  # src_index
    torch.Tensor,  # src_weight
    torch.Tensor,  # temperature [M], float32
    torch.Tensor | None,  # targets
    torch.Tensor,  # stream_id [M]
    torch.Tensor,  # step [M]
    int,  # seed, as an int64
    int,  # top_k, 0 for None
    bool,  # want_logprobs
    bool,  # want_logz
    bool,  # want_correction
    bool,  # want_target
    bool,  # want_sample
]
GatherOpOutputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _gather_fake(logits: torch.Tensor, ref_index: torch.Tensor, *args: object) -> GatherOpOutputs:
    """Shapes and dtypes of a gather op's outputs, for ``torch.compile`` and meta tensors."""
    wanted = args[-5:]
    m, v = ref_index.shape[0], logits.shape[1]
    shapes = ((m, v), (m,), (m,), (m,), (m,))
    out = [
        logits.new_empty(shape if want else (0,), dtype=torch.int64 if name == "sample" else torch.float32)
        for name, shape, want in zip(OUTPUT_NAMES, shapes, wanted, strict=True)
    ]
    return out[0], out[1], out[2], out[3], out[4]


def _request_from_op(args: GatherOpArguments) -> GatherRequest:
    """The gather request that a call of a gather op stands for (float32 compute)."""
    targets, stream_id, step, seed, top_k = args[5:10]
    outputs = tuple(name for name, want in zip(OUTPUT_NAMES, args[10:], strict=True) if want)
    return GatherRequest(
        *args[:5],
        outputs=outputs,
        targets=targets,
        seed=seed,
        stream_id=stream_id,
        step=step,
        top_k=top_k or None,
        compute_dtype=torch.float32,
    )


def _op_outputs(out: ComposeOutput, logits: torch.Tensor) -> GatherOpOutputs:
    """A backend's outputs as a gather op returns them (empty ``[0]`` for those not asked for)."""
    values = []
    for name in OUTPUT_NAMES:
        value = getattr(out, name)
        values.append(
            value
            if value is not None
            else logits.new_empty((0,), dtype=torch.int64 if name == "sample" else torch.float32)
        )
    return values[0], values[1], values[2], values[3], values[4]


def _launcher_kernel(launch: Callable[[GatherArgs], ComposeOutput]) -> Callable[..., GatherOpOutputs]:
    """The kernel of a gather op whose backend is a Python launcher on checked arguments."""

    def kernel(*op_args: object) -> GatherOpOutputs:
        request = _request_from_op(cast(GatherOpArguments, op_args))
        return _op_outputs(launch(validate_gather(request)), request.logits)

    return kernel


def _cpu_kernel(*op_args: object) -> GatherOpOutputs:
    """The C++ CPU kernel (it checks its inputs itself, in the binding)."""
    logprobs, logz, correction, target, sample = _native.load_cpu().compose_gather(*op_args)
    return logprobs, logz, correction, target, sample


compose_gather = torch.library.custom_op(
    "dposhap::compose_gather", _cpu_kernel, mutates_args=(), device_types="cpu", schema=GATHER_SCHEMA
)
compose_gather.register_kernel("cuda", _launcher_kernel(cuda_backend.launch))
compose_gather.register_fake(_gather_fake)

compose_gather_triton = torch.library.custom_op(
    "dposhap::compose_gather_triton", _launcher_kernel(triton_backend.launch), mutates_args=(), schema=GATHER_SCHEMA
)
compose_gather_triton.register_fake(_gather_fake)


def gather_op_arguments(request: GatherRequest) -> GatherOpArguments:
    """The arguments of a gather op for a request: the temperature, stream ids and steps as
    tensors ``[M]``, the seed as an int64, ``top_k`` as an int. Only what a kernel cannot check
    is checked here; the kernels check the rest.

    Raises
    ------
    InvalidArgumentError
        ``ref_index`` is not a tensor ``[M]``; a bad temperature type, ``top_k``, seed or step.
    """
    logits, ref_index, outputs = request.logits, request.ref_index, request.wanted
    if not isinstance(logits, torch.Tensor):
        raise InvalidArgumentError(f"logits must be a torch.Tensor [T, V], got {type(logits).__name__}")
    if not isinstance(ref_index, torch.Tensor) or ref_index.dim() != 1:
        raise InvalidArgumentError("ref_index must be an int64 torch.Tensor [M]")
    device, m = logits.device, ref_index.shape[0]
    temperature = request.temperature
    if isinstance(temperature, torch.Tensor):
        if not temperature.is_floating_point() or temperature.dim() > 1:
            raise InvalidArgumentError(
                f"temperature must be a float or a floating tensor [M], got {temperature.dtype} {tuple(temperature.shape)}"
            )
        temp = temperature.to(torch.float32).expand(m) if temperature.dim() == 0 else temperature.to(torch.float32)
    elif isinstance(temperature, (int, float)) and not isinstance(temperature, bool):
        temp = torch.full((m,), float(temperature), dtype=torch.float32, device=device)
    else:
        raise InvalidArgumentError(f"temperature must be a float or a tensor [M], got {type(temperature).__name__}")
    top_k = request.top_k
    if (
        "sample" in outputs
        and top_k is not None
        and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1)
    ):
        raise InvalidArgumentError(f"top_k must be None or an int >= 1, got {top_k!r}")
    stream_id = (
        request.stream_id if request.stream_id is not None else torch.arange(m, dtype=torch.int64, device=device)
    )
    step = request.step
    if isinstance(step, torch.Tensor):
        if step.dtype != torch.int64:
            raise InvalidArgumentError(f"step must be an int64 tensor [M], got {step.dtype}; convert it with .long()")
        step_rows = step.expand(m) if step.dim() == 0 else step
    else:
        step_rows = torch.full((m,), as_int64(step, "step"), dtype=torch.int64, device=device)
    return (
        logits,
        ref_index,
        request.src_index,
        request.src_weight,
        temp,
        request.targets,
        stream_id,
        step_rows,
        as_int64(request.seed, "seed"),
        0 if top_k is None else int(top_k),
        "logprobs" in outputs,
        "logz" in outputs,
        "correction" in outputs,
        "target_logprob" in outputs,
        "sample" in outputs,
    )


def run_gather_op(op: Callable[..., GatherOpOutputs], request: GatherRequest) -> ComposeOutput:
    """Run a gather op on a request; the requested outputs, errors as InvalidArgumentError.

    Raises
    ------
    InvalidArgumentError
        Bad arguments (the message of the kernel's check).
    dposhap.errors.NativeBuildError
        The native extension cannot be built here.
    """
    try:
        result = op(*gather_op_arguments(request))
    except (RuntimeError, ValueError) as exc:
        if isinstance(exc, DposhapError):
            raise
        message = str(exc).split("\nException raised from", 1)[0].strip()
        raise InvalidArgumentError(message) from None
    outputs = request.wanted
    return ComposeOutput(**{name: value for name, value in zip(OUTPUT_NAMES, result, strict=True) if name in outputs})


# --------------------------------------------------------------------------------------
# the dense form

#: The signature of the dense ops: float32 ``weights [R, n]`` and ``temperature [R]``; returns
#: float32 ``logprobs [R, V]`` and ``logz [R]``.
DENSE_SCHEMA = "(Tensor ref, Tensor sources, Tensor weights, Tensor temperature) -> (Tensor, Tensor)"


def _dense_fake(
    ref: torch.Tensor, sources: torch.Tensor, weights: torch.Tensor, temperature: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shapes and dtypes of a dense op's outputs."""
    return ref.new_empty(ref.shape, dtype=torch.float32), ref.new_empty((ref.shape[0],), dtype=torch.float32)


def _dense_cpu_kernel(
    ref: torch.Tensor, sources: torch.Tensor, weights: torch.Tensor, temperature: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The C++ CPU dense kernel (it checks its inputs itself, in the binding)."""
    logprobs, logz = _native.load_cpu().compose_dense(ref, sources, weights, temperature)
    return logprobs, logz


compose_dense = torch.library.custom_op(
    "dposhap::compose_dense", _dense_cpu_kernel, mutates_args=(), device_types="cpu", schema=DENSE_SCHEMA
)
compose_dense.register_kernel("cuda", cuda_backend.launch_dense)
compose_dense.register_fake(_dense_fake)

compose_dense_triton = torch.library.custom_op(
    "dposhap::compose_dense_triton", triton_backend.launch_dense, mutates_args=(), schema=DENSE_SCHEMA
)
compose_dense_triton.register_fake(_dense_fake)


def run_dense_op(op: Callable[..., tuple[torch.Tensor, torch.Tensor]], request: DenseRequest) -> torch.Tensor:
    """Run a dense op on a request (float32 compute); the log-probabilities ``[R, V]``.

    Raises
    ------
    InvalidArgumentError
        Bad arguments (the message of the check that failed).
    dposhap.errors.NativeBuildError
        The native extension cannot be built here.
    """
    ref, sources, weights = request.checked()
    if request.compute_dtype not in (None, torch.float32):
        raise InvalidArgumentError(
            f'the dense kernels compute in float32; got compute_dtype={request.compute_dtype} (use backend="torch")'
        )
    temperature = temperature_rows(request.temperature, ref.shape[0], ref.device, torch.float32)
    try:
        logprobs, _ = op(ref, sources, weights.to(torch.float32), temperature)
    except (RuntimeError, ValueError) as exc:
        if isinstance(exc, DposhapError):
            raise
        message = str(exc).split("\nException raised from", 1)[0].strip()
        raise InvalidArgumentError(message) from None
    return logprobs


#: The signature of the fused linear log-probability ops: ``hidden [N, H]``, ``weight [V, H]``,
#: ``bias [V]`` or None, int64 ``targets [N]``, the vocabulary chunk; float32
#: ``(target_logprob [N], logz [N])``.
LINEAR_LOGPROBS_SCHEMA = "(Tensor hidden, Tensor weight, Tensor? bias, Tensor targets, int chunk_v) -> (Tensor, Tensor)"


def _linear_fake(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor, chunk_v: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shapes and dtypes of the fused linear log-probability's outputs."""
    n = hidden.shape[0]
    return hidden.new_empty((n,), dtype=torch.float32), hidden.new_empty((n,), dtype=torch.float32)


def _linear_cpu(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor, chunk_v: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The C++ CPU kernel (it checks its inputs itself, in the binding)."""
    target, logz = _native.load_score_cpu().linear_logprobs(hidden, weight, bias, targets, chunk_v)
    return target, logz


def _linear_cuda(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor, chunk_v: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The CUDA kernel (it checks its inputs itself, in the binding)."""
    target, logz = _native.load_score_cuda().linear_logprobs(hidden, weight, bias, targets, chunk_v)
    return target, logz


linear_logprobs = torch.library.custom_op(
    "dposhap::linear_logprobs", _linear_cpu, mutates_args=(), device_types="cpu", schema=LINEAR_LOGPROBS_SCHEMA
)
linear_logprobs.register_kernel("cuda", _linear_cuda)
linear_logprobs.register_fake(_linear_fake)

linear_logprobs_triton = torch.library.custom_op(
    "dposhap::linear_logprobs_triton", triton_backend.linear_logprobs, mutates_args=(), schema=LINEAR_LOGPROBS_SCHEMA
)
linear_logprobs_triton.register_fake(_linear_fake)

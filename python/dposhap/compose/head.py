"""The fused linear log-probability: ``log_softmax(hidden @ W^T + b)[target]`` without the
``[tokens, vocab]`` float32 tensor.

Teacher-forced scoring needs, at every scored position, the log-probability of one token under
the LM head. The plain way (:func:`plain_logprobs`, the ground truth) builds the logits of the
whole vocabulary, upcasts them to float32 and normalises them. :func:`linear_logprobs` instead
applies the head one vocabulary chunk at a time (the chunk's logits in the head's dtype, as the
model's own head computes them) and folds each chunk into a running log-sum-exp per row, keeping
the target's logit when it falls in the chunk: its peak memory is one ``[tokens, chunk]`` block.

Backends, behind one small base class and a registry (:data:`HEAD_BACKENDS`), as the gather form's:

``"torch"``
    The chunked online log-sum-exp in plain torch: any device and dtype.
``"cpp"``
    The C++ CPU kernel (``csrc/score_cpu.cpp``) through ``torch.ops.dposhap.linear_logprobs``.
``"cuda"``
    The CUDA kernel (``csrc/score_cuda.cu``) through the same op on CUDA tensors.
``"triton"``
    The Triton kernel through ``torch.ops.dposhap.linear_logprobs_triton``: CUDA tensors (or the
    CPU under ``TRITON_INTERPRET=1``, when named explicitly).
"""

from __future__ import annotations

import threading
import warnings
from abc import ABC, abstractmethod
from typing import ClassVar, Literal

import torch

from ..errors import BackendFallbackWarning, DposhapError, InvalidArgumentError
from ..registry import Registry
from . import _native, ops, triton_backend

__all__ = [
    "AUTO_ORDER",
    "HEAD_BACKENDS",
    "HeadBackend",
    "HeadBackendName",
    "default_chunk",
    "linear_logprobs",
    "pick",
    "plain_logprobs",
]

#: A backend of :func:`linear_logprobs`.
HeadBackendName = Literal["auto", "torch", "cpp", "triton", "cuda"]
_KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
#: The largest ``[tokens, chunk]`` block of logits :func:`default_chunk` allows (elements).
MAX_CHUNK_ELEMENTS = 1 << 22


def plain_logprobs(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, bias: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The plain reference: the whole vocabulary's logits in the head's dtype, float32
    ``log_softmax``, gather.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        float32 (float64 for a float64 head) ``target_logprob [N]`` and ``logz [N]``.
    """
    logits = torch.nn.functional.linear(hidden, weight, bias)
    logits = logits.double() if logits.dtype == torch.float64 else logits.float()
    logz = torch.logsumexp(logits, dim=-1)
    target = torch.log_softmax(logits, dim=-1).gather(-1, targets[:, None]).squeeze(-1)
    return target, logz


def _torch_chunked(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor, chunk_v: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The chunked online log-sum-exp in plain torch (the ``"torch"`` backend)."""
    compute = torch.float64 if weight.dtype == torch.float64 else torch.float32
    rows, vocab = hidden.shape[0], weight.shape[0]
    running_max = torch.full((rows,), float("-inf"), dtype=compute, device=hidden.device)
    running_sum = torch.zeros(rows, dtype=compute, device=hidden.device)
    target = torch.full((rows,), float("nan"), dtype=compute, device=hidden.device)
    for first in range(0, vocab if rows else 0, chunk_v):
        cols = min(chunk_v, vocab - first)
        b = None if bias is None else bias[first : first + cols]
        chunk = torch.nn.functional.linear(hidden, weight[first : first + cols], b).to(compute)
        new_max = torch.maximum(running_max, chunk.amax(dim=1))
        shift = torch.where(torch.isneginf(new_max), torch.zeros_like(new_max), new_max)
        running_sum = running_sum * torch.exp(running_max - shift) + torch.exp(chunk - shift[:, None]).sum(dim=1)
        running_max = new_max
        inside = (targets >= first) & (targets < first + cols)
        picked = chunk.gather(1, (targets - first).clamp(0, cols - 1)[:, None]).squeeze(1)
        target = torch.where(inside, picked, target)
    logz = running_max + running_sum.log()
    return target - logz, logz


class HeadBackend(ABC):
    """One way to run :func:`linear_logprobs`."""

    #: The name ``linear_logprobs(..., backend=...)`` takes.
    name: ClassVar[str]

    @abstractmethod
    def supports(self, hidden: torch.Tensor, weight: torch.Tensor) -> bool:
        """Whether ``"auto"`` may run these inputs here (device, dtype); cheap, no build."""

    @abstractmethod
    def available(self) -> bool:
        """Whether the backend runs on this machine; may build or import it on first call."""

    def unavailable_reason(self) -> str | None:
        """Why the backend does not run on this machine and what to install; None when it runs."""
        return None if self.available() else f"the {self.name} scoring backend does not run on this machine"

    @abstractmethod
    def launch(
        self, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor, chunk_v: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run checked inputs: ``(target_logprob [N], logz [N])``."""


class TorchHead(HeadBackend):
    """The chunked online log-sum-exp in plain torch."""

    name = "torch"

    def supports(self, hidden: torch.Tensor, weight: torch.Tensor) -> bool:
        return True

    def available(self) -> bool:
        return True

    def launch(
        self, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor, chunk_v: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return _torch_chunked(hidden, weight, bias, targets, chunk_v)


class NativeHead(HeadBackend):
    """A float32-compute kernel behind a ``torch.library`` op."""

    device_type: ClassVar[str]

    def supports(self, hidden: torch.Tensor, weight: torch.Tensor) -> bool:
        return weight.device.type == self.device_type and weight.dtype in _KERNEL_DTYPES

    def op(
        self, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor, chunk_v: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The op that runs the kernel."""
        return ops.linear_logprobs(hidden, weight, bias, targets, chunk_v)

    def launch(
        self, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor, chunk_v: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if weight.dtype not in _KERNEL_DTYPES:
            raise InvalidArgumentError(
                f'backend="{self.name}" reads float32, float16 or bfloat16 heads, got {weight.dtype} (use backend="torch")'
            )
        if weight.device.type != self.device_type:
            raise InvalidArgumentError(
                f'backend="{self.name}" runs on {self.device_type} tensors, got {weight.device} (use backend="auto")'
            )
        return self.op(hidden, weight, bias, targets, chunk_v)


class CppHead(NativeHead):
    """The C++ CPU kernel."""

    name = "cpp"
    device_type = "cpu"

    def available(self) -> bool:
        return _native.problem(_native.load_score_cpu) is None

    def unavailable_reason(self) -> str | None:
        return _native.problem(_native.load_score_cpu)


class CudaHead(NativeHead):
    """The CUDA kernel."""

    name = "cuda"
    device_type = "cuda"

    def available(self) -> bool:
        return _native.problem(_native.load_score_cuda) is None

    def unavailable_reason(self) -> str | None:
        return _native.problem(_native.load_score_cuda)


class TritonHead(NativeHead):
    """The Triton kernel (``"auto"`` runs it on CUDA tensors; named, also on the CPU under
    ``TRITON_INTERPRET=1``)."""

    name = "triton"
    device_type = "cuda"

    def available(self) -> bool:
        return triton_backend.available(torch.device("cuda"))

    def unavailable_reason(self) -> str | None:
        if self.available():
            return None
        return "Triton is not installed: `pip install triton` (it comes with torch's CUDA builds on Linux)"

    def launch(
        self, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor, chunk_v: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not triton_backend.available(weight.device):
            raise InvalidArgumentError(
                f"the Triton kernel runs on CUDA tensors (or on the CPU with TRITON_INTERPRET=1); got {weight.device}"
            )
        if weight.dtype not in _KERNEL_DTYPES:
            raise InvalidArgumentError(f'backend="triton" reads float32, float16 or bfloat16 heads, got {weight.dtype}')
        target, logz = ops.linear_logprobs_triton(hidden, weight, bias, targets, chunk_v)
        return target, logz


#: Every backend of :func:`linear_logprobs`, by name.
HEAD_BACKENDS: Registry[HeadBackend] = Registry("scoring backend")
for _backend in (TorchHead(), CppHead(), TritonHead(), CudaHead()):
    HEAD_BACKENDS.register(_backend.name, _backend)
#: The order in which ``"auto"`` tries them: the first that supports the inputs and is available.
AUTO_ORDER = ("cuda", "triton", "cpp", "torch")
_TOLD: set[str] = set()
_TOLD_LOCK = threading.Lock()


def pick(hidden: torch.Tensor, weight: torch.Tensor) -> HeadBackend:
    """The backend ``"auto"`` runs on: on CUDA tensors the CUDA kernel where it builds, else
    Triton; on the CPU the C++ kernel where it builds; else (float64 included) the torch one. A
    faster backend passed over because it does not run here is told once per process (a
    :class:`~dposhap.errors.BackendFallbackWarning`)."""
    passed_over: list[HeadBackend] = []
    chosen = HEAD_BACKENDS.get("torch")
    for name in AUTO_ORDER:
        backend = HEAD_BACKENDS.get(name)
        if not backend.supports(hidden, weight):
            continue
        if backend.available():
            chosen = backend
            break
        passed_over.append(backend)
    for skipped in passed_over:
        with _TOLD_LOCK:
            if skipped.name in _TOLD:
                continue
            _TOLD.add(skipped.name)
        warnings.warn(
            f'scoring backend "auto" runs on "{chosen.name}" instead of the faster "{skipped.name}": '
            f"{skipped.unavailable_reason() or 'it is unavailable'}",
            BackendFallbackWarning,
            stacklevel=3,
        )
    return chosen


def default_chunk(rows: int, vocab: int, max_elements: int = MAX_CHUNK_ELEMENTS) -> int:
    """The vocabulary chunk that keeps a ``[rows, chunk]`` block of logits under ``max_elements``
    (at least 256 columns, at most the vocabulary)."""
    return max(1, min(vocab, max(256, max_elements // max(rows, 1))))


def linear_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    chunk_v: int | None = None,
    backend: HeadBackendName = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``log_softmax(hidden @ weight^T + bias)[targets]`` and the log-normaliser, one vocabulary
    chunk at a time.

    Parameters
    ----------
    hidden
        ``[N, H]``: the final hidden states of the scored positions, in the head's dtype.
    weight
        ``[V, H]``: the LM head's weight.
    targets
        int64 ``[N]`` in ``[0, V)``: the token each position is scored on.
    bias
        ``[V]`` or None: the LM head's bias.
    chunk_v
        Vocabulary entries per chunk (default :func:`default_chunk`).
    backend
        ``"torch"``, ``"cpp"`` (CPU), ``"cuda"``, ``"triton"`` or ``"auto"`` (:func:`pick`).

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        ``target_logprob [N]`` and ``logz [N]``, float32 (float64 for a float64 head on the
        torch backend), equal to :func:`plain_logprobs` within float32 rounding.

    Raises
    ------
    InvalidArgumentError
        Shapes, dtypes or devices that do not fit, targets outside the vocabulary, an unknown
        backend, or a named backend on inputs it does not handle.
    dposhap.errors.NativeBuildError
        A native backend named explicitly cannot be built here.
    """
    for name, value in (("hidden", hidden), ("weight", weight), ("targets", targets)):
        if not isinstance(value, torch.Tensor):
            raise InvalidArgumentError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise InvalidArgumentError(
            f"hidden must be [N, H] and weight [V, H] with the same H, got {tuple(hidden.shape)} and {tuple(weight.shape)}"
        )
    if hidden.dtype != weight.dtype or hidden.device != weight.device:
        raise InvalidArgumentError(
            f"hidden ({hidden.dtype}, {hidden.device}) must have the LM head's dtype and device "
            f"({weight.dtype}, {weight.device})"
        )
    vocab = weight.shape[0]
    if targets.dtype != torch.int64 or targets.shape != (hidden.shape[0],):
        raise InvalidArgumentError(
            f"targets must be int64 [{hidden.shape[0]}], got {targets.dtype} {tuple(targets.shape)}"
        )
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= vocab):
        raise InvalidArgumentError(f"targets must be tokens in [0, {vocab})")
    if bias is not None and (bias.shape != (vocab,) or bias.dtype != weight.dtype):
        raise InvalidArgumentError(f"bias must be [{vocab}] of the head's dtype, got {bias.dtype} {tuple(bias.shape)}")
    chunk = default_chunk(hidden.shape[0], vocab) if chunk_v is None else chunk_v
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise InvalidArgumentError(f"chunk_v must be a positive int, got {chunk_v!r}")
    targets = targets.to(weight.device)
    chosen = pick(hidden, weight) if backend == "auto" else HEAD_BACKENDS.get(backend)
    try:
        return chosen.launch(hidden, weight, bias, targets, chunk)
    except DposhapError:
        raise
    except ValueError as err:  # a kernel's own boundary check (TORCH_CHECK_VALUE)
        raise InvalidArgumentError(f"{chosen.name} scoring backend: {err}") from err

"""The backends of the gather form, behind one small base class, and their registry.

Every backend says which inputs it handles (:meth:`GatherBackend.supports`), whether it can run
on this machine (:meth:`GatherBackend.available`, which may build or import it) and runs a
request (:meth:`GatherBackend.launch`). The dispatcher (:mod:`dposhap.compose.backends`) looks a
backend up by name, or lets :func:`pick` choose the first of :data:`AUTO_ORDER` that supports the
inputs and is available. When ``"auto"`` passes over a faster backend that supports the inputs
but does not run here, :func:`tell_fallback` says so once per backend and process (a
:class:`~dposhap.errors.BackendFallbackWarning`: which backend, why, what to install).

``"torch"``
    The plain reference (:func:`dposhap.compose.reference.compose_checked`): any inputs.
``"cpp"``
    The C++ CPU kernel, through ``torch.ops.dposhap.compose_gather``: CPU tensors, float32,
    bfloat16 or float16 logits, float32 compute.
``"cuda"``
    The CUDA kernel, through the same op on CUDA tensors.
``"triton"``
    The Triton kernel, through ``torch.ops.dposhap.compose_gather_triton``: CUDA tensors (or
    CPU tensors under ``TRITON_INTERPRET=1``, when named explicitly).
"""

from __future__ import annotations

import threading
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

import torch

from ..errors import BackendFallbackWarning, InvalidArgumentError
from ..registry import Registry
from . import _native, cuda_backend, ops, triton_backend
from .contract import ComposeOutput, GatherRequest, validate_gather
from .reference import compose_checked

__all__ = ["AUTO_ORDER", "BACKENDS", "GatherBackend", "KernelBackend", "get", "pick", "tell_fallback"]

_KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


class GatherBackend(ABC):
    """One way to run the gather form."""

    #: The name ``compose(..., backend=...)`` takes.
    name: ClassVar[str]

    @abstractmethod
    def supports(self, request: GatherRequest) -> bool:
        """Whether ``"auto"`` may run these inputs here (device, dtypes); cheap, no build."""

    @abstractmethod
    def available(self) -> bool:
        """Whether the backend runs on this machine; may build or import it on first call."""

    def unavailable_reason(self) -> str | None:
        """Why the backend does not run on this machine, and what to install; None when it runs."""
        return None if self.available() else f"the {self.name} backend does not run on this machine"

    @abstractmethod
    def launch(self, request: GatherRequest) -> ComposeOutput:
        """Run a request; every error is a :class:`~dposhap.errors.DposhapError` that says what to do."""


class TorchBackend(GatherBackend):
    """The plain-torch reference, the ground truth of the others."""

    name = "torch"

    def supports(self, request: GatherRequest) -> bool:
        return True

    def available(self) -> bool:
        return True

    def launch(self, request: GatherRequest) -> ComposeOutput:
        return compose_checked(validate_gather(request))


class KernelBackend(GatherBackend):
    """A float32 kernel behind a ``torch.library`` op (so that it traces under ``torch.compile``)."""

    #: The op that runs it.
    op: ClassVar[Callable[..., ops.GatherOpOutputs]]
    #: The device type of the tensors ``"auto"`` runs on it.
    device_type: ClassVar[str]

    def supports(self, request: GatherRequest) -> bool:
        logits = request.logits
        return (
            isinstance(logits, torch.Tensor)
            and logits.device.type == self.device_type
            and logits.dtype in _KERNEL_DTYPES
            and request.compute_dtype in (None, torch.float32)
        )

    def check_device(self, logits: torch.Tensor) -> None:
        """Refuse logits on a device the kernel does not run on (the op would dispatch elsewhere)."""

    def launch(self, request: GatherRequest) -> ComposeOutput:
        if request.compute_dtype not in (None, torch.float32):
            raise InvalidArgumentError(
                f'backend="{self.name}" computes in float32; got compute_dtype={request.compute_dtype} (use backend="torch")'
            )
        if not isinstance(request.logits, torch.Tensor):
            raise InvalidArgumentError(f"logits must be a torch.Tensor [T, V], got {type(request.logits).__name__}")
        self.check_device(request.logits)
        return ops.run_gather_op(self.op, request)


class CppBackend(KernelBackend):
    """The C++ CPU kernel."""

    name = "cpp"
    op = ops.compose_gather
    device_type = "cpu"

    def available(self) -> bool:
        return _native.cpu_available()

    def unavailable_reason(self) -> str | None:
        return _native.cpu_problem()

    def check_device(self, logits: torch.Tensor) -> None:
        if logits.device.type != "cpu":
            raise InvalidArgumentError(f"logits must be on the CPU for the cpp backend, got {logits.device}")


class CudaBackend(KernelBackend):
    """The CUDA kernel."""

    name = "cuda"
    op = ops.compose_gather
    device_type = "cuda"

    def available(self) -> bool:
        return _native.cuda_available()

    def unavailable_reason(self) -> str | None:
        return _native.cuda_problem()

    def check_device(self, logits: torch.Tensor) -> None:
        cuda_backend.check_cuda_tensors(logits)


class TritonBackend(KernelBackend):
    """The Triton kernel (``"auto"`` runs it on CUDA tensors; named, also on the CPU under
    ``TRITON_INTERPRET=1``)."""

    name = "triton"
    op = ops.compose_gather_triton
    device_type = "cuda"

    def available(self) -> bool:
        return triton_backend.available(torch.device("cuda"))

    def unavailable_reason(self) -> str | None:
        if self.available():
            return None
        return "Triton is not installed: `pip install triton` (it comes with torch's CUDA builds on Linux)"


#: Every backend, by name.
BACKENDS: Registry[GatherBackend] = Registry("backend")
for _backend in (TorchBackend(), CppBackend(), TritonBackend(), CudaBackend()):
    BACKENDS.register(_backend.name, _backend)
#: The order in which ``"auto"`` tries them: the first that supports the inputs and is available.
AUTO_ORDER = ("cuda", "triton", "cpp", "torch")


def get(name: str) -> GatherBackend:
    """The backend of a name.

    Raises
    ------
    InvalidArgumentError
        An unknown name.
    """
    return BACKENDS.get(name)


def pick(request: GatherRequest) -> GatherBackend:
    """The backend ``"auto"`` runs a request on: on CUDA tensors the CUDA kernel where it builds,
    else Triton; on the CPU the C++ kernel where it applies and builds; else the reference
    (float64 logits or compute included). A faster backend passed over because it does not run
    here is told once (:func:`tell_fallback`)."""
    passed_over: list[str] = []
    chosen = BACKENDS.get("torch")
    for name in AUTO_ORDER:
        backend = BACKENDS.get(name)
        if not backend.supports(request):
            continue
        if backend.available():
            chosen = backend
            break
        passed_over.append(name)
    for name in passed_over:
        tell_fallback(name, chosen.name)
    return chosen


_TOLD: set[str] = set()
_TOLD_LOCK = threading.Lock()


def tell_fallback(skipped: str, chosen: str) -> None:
    """Say, once per process for each ``skipped`` backend, that ``"auto"`` runs on ``chosen``
    instead, why ``skipped`` does not run here and how to get it (a
    :class:`~dposhap.errors.BackendFallbackWarning`).

    Parameters
    ----------
    skipped
        The faster backend that supports the inputs but does not run on this machine.
    chosen
        The backend that runs them instead.
    """
    with _TOLD_LOCK:
        if skipped in _TOLD:
            return
        _TOLD.add(skipped)
    reason = BACKENDS.get(skipped).unavailable_reason() or "it is unavailable"
    warnings.warn(
        f'compose backend "auto" runs on "{chosen}" instead of the faster "{skipped}" backend: {reason}',
        BackendFallbackWarning,
        stacklevel=3,
    )

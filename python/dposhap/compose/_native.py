"""The one loader of the native compose kernels.

The C++/CUDA sources live in the repository's top-level ``csrc/`` and ship inside the package
as ``dposhap/csrc/`` (in an editable install ``python/dposhap/csrc`` is a link to ``csrc/``;
a wheel carries the files). The first call of :func:`load_cpu` (or :func:`load_cuda`) compiles
them with :func:`torch.utils.cpp_extension.load` (with ninja, a dependency of dposhap, and a
C++ compiler, or the CUDA toolkit's nvcc) and torch caches the build in its extensions directory
(``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``), so later processes only
load it. The extensions are plain pybind modules: the ``torch.library`` op that runs them is
declared in :mod:`dposhap.compose.ops`.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

from ..errors import DposhapError, NativeBuildError, first_line

__all__ = [
    "NativeBuildError",
    "cpu_available",
    "cpu_problem",
    "csrc_dir",
    "cuda_available",
    "cuda_problem",
    "load_cpu",
    "load_cuda",
    "load_score_cpu",
    "load_score_cuda",
    "problem",
]

_LOCK = threading.Lock()


def csrc_dir() -> Path:
    """The directory of the C++/CUDA sources inside the installed package."""
    return Path(__file__).resolve().parent.parent / "csrc"


@dataclass
class _Extension:
    """One native extension: what it is built from, and its state in this process."""

    name: str
    what: str  # the backend, for messages
    sources: tuple[str, ...]
    headers: tuple[str, ...]
    cuda: bool = False
    module: ModuleType | None = None
    error: DposhapError | None = None


_CPU = _Extension(
    "dposhap_compose_cpu",
    "the cpp compose backend",
    ("compose_cpu.cpp", "compose_cpu_dense.cpp", "compose_cpu_binding.cpp"),
    ("compose_cpu.h", "compose_cpu_math.h", "compose_noise.h"),
)
_CUDA = _Extension(
    "dposhap_compose_cuda",
    "the CUDA compose backend",
    ("compose_cuda_binding.cpp", "compose_cuda.cu"),
    ("compose_cuda.h", "compose_noise.h"),
    cuda=True,
)
_SCORE_CPU = _Extension(
    "dposhap_score_cpu",
    "the cpp scoring backend",
    ("score_cpu.cpp", "score_cpu_binding.cpp"),
    ("score_cpu.h", "compose_cpu.h", "compose_cpu_math.h", "compose_noise.h"),
)
_SCORE_CUDA = _Extension(
    "dposhap_score_cuda",
    "the CUDA scoring backend",
    ("score_cuda_binding.cpp", "score_cuda.cu"),
    ("score_cuda.h",),
    cuda=True,
)


def _ensure_ninja_on_path() -> None:
    """torch needs the ``ninja`` executable; the PyPI package puts it beside the interpreter."""
    if shutil.which("ninja"):
        return
    candidates = [Path(sys.executable).parent]
    try:
        import ninja  # optional: only needed for a build

        candidates.insert(0, Path(ninja.BIN_DIR))
    except Exception:  # ninja is optional until a build is needed
        pass
    for directory in candidates:
        if (directory / "ninja").exists():
            os.environ["PATH"] = f"{directory}{os.pathsep}{os.environ.get('PATH', '')}"
            return


def _isa_flags() -> list[str]:
    """Wider vectors where torch itself runs its AVX2 kernels on this CPU.

    The build happens on the machine that runs it, and torch keys its cache on the flags, so a
    machine without AVX2 builds its own baseline copy. No FMA: ``-ffp-contract=off`` keeps every
    product and sum rounded as in the reference.
    """
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:  # old torch: stay on the baseline ISA
        return []
    if capability == "AVX512":  # 16 lanes: the dense kernel's exp and combine are compute-bound here
        return ["-mavx2", "-mf16c", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mprefer-vector-width=512"]
    if capability == "AVX2":
        return ["-mavx2", "-mf16c"]
    return []


def _check_toolchain(ext: _Extension) -> None:
    """The sources are there and the tools to build them are: else a NativeBuildError that says
    what to install."""
    missing = [str(csrc_dir() / f) for f in ext.sources + ext.headers if not (csrc_dir() / f).is_file()]
    if missing:
        raise NativeBuildError(f"the C++ sources of {ext.what} are missing from the installed package: {missing}")
    if not ext.cuda:
        compiler = os.environ.get("CXX", "c++")
        if shutil.which(compiler) is None:
            raise NativeBuildError(
                f"{ext.what} needs a C++ compiler ({compiler!r} is not on PATH): install g++ or clang, "
                'or set CXX (backend="torch" runs without one)'
            )
    elif not torch.cuda.is_available():
        raise NativeBuildError(f'{ext.what} needs a CUDA device; use backend="torch" or "cpp" on the CPU')
    _ensure_ninja_on_path()
    from torch.utils import cpp_extension

    if not cpp_extension.is_ninja_available():
        raise NativeBuildError(
            f'{ext.what} is built with ninja, which is not installed: `pip install ninja` (backend="torch" runs without it)'
        )
    if ext.cuda and cpp_extension.CUDA_HOME is None:
        raise NativeBuildError(
            f"{ext.what} is compiled with nvcc, which was not found: install the CUDA toolkit matching "
            f"torch's CUDA {torch.version.cuda} and put its bin/ on PATH or set CUDA_HOME "
            '(backend="triton" runs without it)'
        )


def _load(ext: _Extension) -> ModuleType:
    """Build (first use) or load (cached) an extension; its first failure is kept and raised again."""
    if ext.module is not None:  # loaded: no lock
        return ext.module
    with _LOCK:
        if ext.module is not None:
            return ext.module
        if ext.error is not None:
            raise ext.error
        try:
            _check_toolchain(ext)
            from torch.utils import cpp_extension

            cuda = ext.cuda
            ext.module = cpp_extension.load(
                name=ext.name,
                sources=[str(csrc_dir() / f) for f in ext.sources],
                extra_include_paths=[str(csrc_dir())],
                extra_cflags=["-O3"]
                if cuda
                else ["-O3", "-fopenmp", "-ffp-contract=off", "-fno-trapping-math", "-fno-math-errno", *_isa_flags()],
                extra_cuda_cflags=["-O3"] if cuda else None,
                extra_ldflags=None if cuda else ["-fopenmp"],
                verbose=os.environ.get("DPOSHAP_NATIVE_VERBOSE") == "1",
            )
        except NativeBuildError as exc:
            ext.error = exc
            raise
        except Exception as exc:  # any build failure becomes one clear error
            ext.error = NativeBuildError(
                f"building {ext.what} failed ({type(exc).__name__}: {first_line(exc)}); see the full compiler "
                'output with DPOSHAP_NATIVE_VERBOSE=1 (backend="torch" runs without it)'
            )
            raise ext.error from exc
        return ext.module


def load_cpu() -> ModuleType:
    """Build (first use) or load (cached) the C++ CPU extension ``dposhap_compose_cpu``.

    Returns
    -------
    ModuleType
        The extension; ``compose_gather`` is the CPU kernel of ``torch.ops.dposhap.compose_gather``.

    Raises
    ------
    NativeBuildError
        No C++ compiler or no ninja, or the build failed; the message says what to install.
    """
    return _load(_CPU)


def load_cuda() -> ModuleType:
    """Build (first use) or load (cached) the CUDA extension ``dposhap_compose_cuda``.

    Returns
    -------
    ModuleType
        The extension; ``compose_rows`` launches the kernel on checked, prepared rows.

    Raises
    ------
    NativeBuildError
        No CUDA device or toolkit, no ninja, or the build failed.
    """
    return _load(_CUDA)


def load_score_cpu() -> ModuleType:
    """Build (first use) or load (cached) the C++ CPU scoring extension ``dposhap_score_cpu``.

    Returns
    -------
    ModuleType
        The extension; ``linear_logprobs`` is the CPU kernel of ``torch.ops.dposhap.linear_logprobs``.

    Raises
    ------
    NativeBuildError
        No C++ compiler or no ninja, or the build failed.
    """
    return _load(_SCORE_CPU)


def load_score_cuda() -> ModuleType:
    """Build (first use) or load (cached) the CUDA scoring extension ``dposhap_score_cuda``.

    Returns
    -------
    ModuleType
        The extension; ``linear_logprobs`` is the CUDA kernel of ``torch.ops.dposhap.linear_logprobs``.

    Raises
    ------
    NativeBuildError
        No CUDA device or toolkit, no ninja, or the build failed.
    """
    return _load(_SCORE_CUDA)


def problem(loader: Callable[[], ModuleType]) -> str | None:
    """Why the extension of ``loader`` (one of the ``load_*`` functions) does not build here,
    or None when it does; builds it on first call."""
    try:
        loader()
    except NativeBuildError as err:
        return str(err)
    return None


def cpu_problem() -> str | None:
    """Why the C++ CPU extension does not build here (what to install), or None when it does.

    Builds it on first call.
    """
    try:
        load_cpu()
    except NativeBuildError as err:
        return str(err)
    return None


def cuda_problem() -> str | None:
    """Why the CUDA extension does not build here (what to install), or None when it does.

    Builds it on first call.
    """
    try:
        load_cuda()
    except NativeBuildError as err:
        return str(err)
    return None


def cpu_available() -> bool:
    """Whether the C++ CPU extension builds (or is built) here; builds it on first call."""
    return cpu_problem() is None


def cuda_available() -> bool:
    """Whether the CUDA extension builds (or is built) here; builds it on first call."""
    return cuda_problem() is None

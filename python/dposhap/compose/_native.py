"""The one loader of the native compose kernels.

The C++ sources ship inside the package (``dposhap/csrc/``); the first call to :func:`load_cpu`
compiles them with :func:`torch.utils.cpp_extension.load` (ninja and a C++ compiler are
needed), and torch caches the build in its extensions directory (``TORCH_EXTENSIONS_DIR``,
by default ``~/.cache/torch_extensions``), so later processes only load it. Loading registers
the op ``torch.ops.dposhap.compose_gather`` and its fake implementation (for ``torch.compile``).
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
from pathlib import Path
from types import ModuleType

from ..errors import DposhapError, NativeBuildError

__all__ = ["NativeBuildError", "cpu_available", "csrc_dir", "load_cpu", "load_cuda"]

_LOCK = threading.Lock()
_CPU_MODULE: ModuleType | None = None
_CPU_ERROR: DposhapError | None = None
_CUDA_MODULE: ModuleType | None = None
_CUDA_ERROR: DposhapError | None = None


def csrc_dir() -> Path:
    """The directory of the C++/CUDA sources inside the installed package."""
    return Path(__file__).resolve().parent.parent / "csrc"


def _ensure_ninja_on_path() -> None:
    """torch needs the ``ninja`` executable; the PyPI package puts it beside the interpreter."""
    if shutil.which("ninja"):
        return
    candidates = [Path(sys.executable).parent]
    try:
        import ninja  # type: ignore[import-not-found]

        candidates.insert(0, Path(ninja.BIN_DIR))
    except Exception:  # noqa: BLE001 - ninja is optional until a build is needed
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
        import torch

        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001 - old torch: stay on the baseline ISA
        return []
    if capability in ("AVX2", "AVX512"):
        return ["-mavx2", "-mf16c"]
    return []


def load_cpu() -> ModuleType:
    """Build (first use) or load (cached) the C++ CPU extension and register its op.

    Returns
    -------
    ModuleType
        The extension module ``dposhap_compose_cpu``.

    Raises
    ------
    NativeBuildError
        No C++ compiler or no ninja, or the build failed; the message says what to install.
    """
    global _CPU_MODULE, _CPU_ERROR
    if _CPU_MODULE is not None:  # loaded: no lock (also what torch.compile traces through)
        return _CPU_MODULE
    with _LOCK:
        if _CPU_MODULE is not None:
            return _CPU_MODULE
        if _CPU_ERROR is not None:
            raise _CPU_ERROR
        sources = [csrc_dir() / "compose_cpu.cpp"]
        missing = [str(s) for s in sources + [csrc_dir() / "compose.h"] if not s.is_file()]
        if missing:
            _CPU_ERROR = NativeBuildError(f"the C++ sources of the cpp backend are missing from the installed package: {missing}")
            raise _CPU_ERROR
        compiler = os.environ.get("CXX", "c++")
        if shutil.which(compiler) is None:
            _CPU_ERROR = NativeBuildError(
                f"the cpp compose backend needs a C++ compiler ({compiler!r} is not on PATH): install g++ or clang, "
                'or set CXX; meanwhile use backend="torch"'
            )
            raise _CPU_ERROR
        _ensure_ninja_on_path()
        try:
            from torch.utils import cpp_extension

            if not cpp_extension.is_ninja_available():
                raise NativeBuildError('the cpp compose backend is built with ninja: `pip install ninja`; meanwhile use backend="torch"')
            _CPU_MODULE = cpp_extension.load(
                name="dposhap_compose_cpu",
                sources=[str(s) for s in sources],
                extra_include_paths=[str(csrc_dir())],
                extra_cflags=["-O3", "-fopenmp", "-ffp-contract=off", "-fno-trapping-math", "-fno-math-errno", *_isa_flags()],
                extra_ldflags=["-fopenmp"],
                verbose=os.environ.get("DPOSHAP_NATIVE_VERBOSE") == "1",
            )
        except NativeBuildError as exc:
            _CPU_ERROR = exc
            raise
        except Exception as exc:  # noqa: BLE001 - any build failure becomes one clear error
            _CPU_ERROR = NativeBuildError(
                f'building the cpp compose backend failed ({type(exc).__name__}: {exc}); use backend="torch", '
                "or see the full compiler output with DPOSHAP_NATIVE_VERBOSE=1"
            )
            raise _CPU_ERROR from exc
        from .backends import _register_fake  # the op's fake implementation, for torch.compile

        _register_fake()
        return _CPU_MODULE


def cpu_available() -> bool:
    """Whether the C++ CPU extension builds (or is built) here; builds it on first call."""
    try:
        load_cpu()
    except NativeBuildError:
        return False
    return True


def load_cuda() -> ModuleType:
    """Build (first use) or load (cached) the CUDA extension ``dposhap_compose_cuda``.

    Its sources are ``compose_cuda.cu`` and ``compose_cuda_binding.cpp`` beside the C++ ones.

    Raises
    ------
    NativeBuildError
        No CUDA device or toolkit, no ninja, or the build failed.
    """
    global _CUDA_MODULE, _CUDA_ERROR
    with _LOCK:
        if _CUDA_MODULE is not None:
            return _CUDA_MODULE
        if _CUDA_ERROR is not None:
            raise _CUDA_ERROR
        import torch

        if not torch.cuda.is_available():
            _CUDA_ERROR = NativeBuildError('the CUDA compose backend needs a CUDA device; use backend="torch" or "cpp" on the CPU')
            raise _CUDA_ERROR
        sources = [csrc_dir() / "compose_cuda_binding.cpp", csrc_dir() / "compose_cuda.cu"]
        missing = [str(s) for s in sources if not s.is_file()]
        if missing:
            _CUDA_ERROR = NativeBuildError(f"the CUDA sources are missing from the installed package: {missing}")
            raise _CUDA_ERROR
        _ensure_ninja_on_path()
        try:
            from torch.utils import cpp_extension

            if not cpp_extension.is_ninja_available():
                raise NativeBuildError('the CUDA compose backend is built with ninja: `pip install ninja`')
            _CUDA_MODULE = cpp_extension.load(
                name="dposhap_compose_cuda",
                sources=[str(s) for s in sources],
                extra_include_paths=[str(csrc_dir())],
                extra_cflags=["-O3"],
                extra_cuda_cflags=["-O3"],
                verbose=False,
            )
        except NativeBuildError as exc:
            _CUDA_ERROR = exc
            raise
        except Exception as exc:  # noqa: BLE001 - any build failure becomes one clear error
            _CUDA_ERROR = NativeBuildError(f"building the CUDA compose backend failed ({type(exc).__name__}: {exc})")
            raise _CUDA_ERROR from exc
        return _CUDA_MODULE

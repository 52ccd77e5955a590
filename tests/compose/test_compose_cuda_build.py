"""The CUDA sources compile, on any machine: nvcc comes from PyPI's nvidia-cuda-nvcc (a dev
dependency matched to torch's CUDA). On a GPU machine tests/compose/test_compose_cuda.py also runs
the kernel against the reference."""

from __future__ import annotations

import shutil
import subprocess
import sysconfig
from pathlib import Path

import torch
import torch.utils.cpp_extension as cpp_extension

from dposhap.compose._native import csrc_dir


def cuda_root() -> Path:
    """The CUDA toolkit: CUDA_HOME, an nvcc on PATH, or the one of the nvidia wheels."""
    if cpp_extension.CUDA_HOME and (Path(cpp_extension.CUDA_HOME) / "bin" / "nvcc").exists():
        return Path(cpp_extension.CUDA_HOME)
    found = shutil.which("nvcc")
    if found:
        return Path(found).resolve().parent.parent
    import nvidia

    for base in nvidia.__path__:
        for nvcc in sorted(Path(base).glob("cu*/bin/nvcc")):
            return nvcc.parent.parent
    raise AssertionError("no nvcc: `make test` installs nvidia-cuda-nvcc matched to torch's CUDA")


def test_the_cuda_kernels_compile(tmp_path: Path) -> None:
    root = cuda_root()
    out = tmp_path / "compose_cuda.o"
    cmd = [
        str(root / "bin" / "nvcc"),
        "-std=c++17",
        "-O3",
        "-c",
        str(csrc_dir() / "compose_cuda.cu"),
        "-o",
        str(out),
        f"-I{root / 'include'}",
        "-gencode",
        "arch=compute_80,code=sm_80",
        "-gencode",
        "arch=compute_90,code=sm_90",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 10_000  # real device code for two architectures
    assert "warning" not in proc.stderr.lower(), proc.stderr


def binding_syntax_check(extension: str, source: str) -> subprocess.CompletedProcess:
    """The host compiler's syntax check of a CUDA extension's pybind binding, against torch's and CUDA's headers."""
    root = cuda_root()
    includes = [f"-I{p}" for p in cpp_extension.include_paths()] + [
        f"-I{root / 'include'}",
        f"-I{sysconfig.get_paths()['include']}",
    ]
    cmd = [
        "c++",
        "-std=c++20",
        "-fsyntax-only",
        f"-DTORCH_EXTENSION_NAME={extension}",
        "-DTORCH_API_INCLUDE_EXTENSION_H",
        *includes,
        str(csrc_dir() / source),
    ]
    return subprocess.run(cmd, capture_output=True, text=True)


def test_the_cuda_binding_compiles() -> None:
    proc = binding_syntax_check("dposhap_compose_cuda", "compose_cuda_binding.cpp")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert torch.version.cuda is not None  # the torch these sources are checked against is a CUDA build

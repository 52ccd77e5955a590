"""The fused linear log-probability (dposhap.compose.head) of every backend against the plain
reference: the whole vocabulary's logits in the head's dtype, float32 log_softmax, gather.

The torch and C++ backends run here; Triton runs in its interpreter without a GPU
(tests/conftest.py) and on CUDA with one; the CUDA kernel needs a GPU (its sources are
compiled with nvcc on any machine)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from dposhap.compose import head
from dposhap.compose._native import csrc_dir
from dposhap.errors import InvalidArgumentError
from test_compose_cuda_build import binding_syntax_check, cuda_root

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
# float32 results against the float32 reference, by the head's dtype: a chunk's matrix product may
# round its low-precision logits differently from the whole head's (another blocking), by one ulp
TOL = {torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2, torch.float64: 1e-10}


def problem(n: int, v: int, h: int, dtype: torch.dtype, *, bias: bool = False, masked: float = 0.0, device="cpu"):
    g = torch.Generator().manual_seed(n * 7 + v)
    hidden = torch.randn(n, h, generator=g)
    weight = torch.randn(v, h, generator=g) / h**0.5 * 3
    b = torch.randn(v, generator=g) if bias or masked else None
    if masked:
        assert b is not None
        b[torch.rand(v, generator=g) < masked] = float("-inf")
        b[0] = 0.0
    targets = torch.randint(0, v, (n,), generator=g)
    if masked:
        assert b is not None
        targets[0] = 0
    # targets on the chunk edges
    targets[1 % n] = v - 1
    out = [hidden.to(dtype), weight.to(dtype), targets, None if b is None else b.to(dtype)]
    return [x if x is None else x.to(device) for x in out]


def check(backend: str, dtype: torch.dtype, n: int, v: int, h: int, chunk_v: int | None, device="cpu", **kw) -> None:
    hidden, weight, targets, bias = problem(n, v, h, dtype, device=device, **kw)
    want, want_z = head.plain_logprobs(hidden, weight, targets, bias)
    got, got_z = head.linear_logprobs(hidden, weight, targets, bias=bias, chunk_v=chunk_v, backend=backend)  # type: ignore[arg-type]
    assert got.shape == got_z.shape == (n,)
    assert got.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert torch.isfinite(want_z).all() and (torch.isfinite(want).all() or kw.get("masked"))
    torch.testing.assert_close(got_z, want_z, rtol=0, atol=TOL[dtype])
    torch.testing.assert_close(got, want, rtol=0, atol=TOL[dtype])


@pytest.mark.parametrize("backend", ["torch", "cpp"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("n", "v", "h", "chunk_v"), [(1, 7, 4, 3), (9, 1000, 16, 256), (33, 5003, 32, None)])
def test_cpu_backends_match_the_reference(backend, dtype, n, v, h, chunk_v) -> None:
    check(backend, dtype, n, v, h, chunk_v)


@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_bias_and_masked_tokens(backend) -> None:
    check(backend, torch.float32, 12, 777, 8, 100, bias=True)
    check(backend, torch.float32, 12, 777, 8, 100, masked=0.9)  # whole chunks at -inf


def test_float64_runs_on_torch_in_float64() -> None:
    check("torch", torch.float64, 5, 300, 8, 64)
    check("auto", torch.float64, 5, 300, 8, 64)


def test_auto_picks_the_cpp_kernel_on_the_cpu() -> None:
    hidden, weight, _, _ = problem(2, 10, 4, torch.float32)
    assert head.pick(hidden, weight).name == "cpp"
    assert head.pick(hidden.double(), weight.double()).name == "torch"


def test_triton_matches_the_reference() -> None:
    device = "cuda" if CUDA else "cpu"  # the interpreter without a GPU: small shapes
    check("triton", torch.float32, 5, 300, 8, 128, device=device)
    check("triton", torch.float32, 4, 200, 8, 64, device=device, masked=0.8)
    if CUDA:
        for dtype in (torch.float16, torch.bfloat16):
            check("triton", dtype, 64, 32000, 64, 4096, device="cuda")


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("n", "v", "h", "chunk_v"), [(1, 7, 4, 3), (33, 5003, 32, 1000), (300, 128256, 64, None)])
def test_cuda_kernel_matches_the_reference(dtype, n, v, h, chunk_v) -> None:
    check("cuda", dtype, n, v, h, chunk_v, device="cuda")
    check("cuda", torch.float32, 12, 777, 8, 100, device="cuda", masked=0.9)


@needs_cuda
def test_auto_picks_a_gpu_kernel_on_cuda() -> None:
    hidden, weight, _, _ = problem(2, 10, 4, torch.float32, device="cuda")
    assert head.pick(hidden, weight).name in ("cuda", "triton")


def test_bad_inputs_are_clear() -> None:
    hidden, weight, targets, _ = problem(3, 50, 8, torch.float32)
    with pytest.raises(InvalidArgumentError, match="tokens in"):
        head.linear_logprobs(hidden, weight, targets + 50)
    with pytest.raises(InvalidArgumentError, match="same H"):
        head.linear_logprobs(hidden[:, :4], weight, targets)
    with pytest.raises(InvalidArgumentError, match="dtype"):
        head.linear_logprobs(hidden.double(), weight, targets)
    with pytest.raises(InvalidArgumentError, match="chunk_v"):
        head.linear_logprobs(hidden, weight, targets, chunk_v=0)
    with pytest.raises(InvalidArgumentError, match="scoring backend"):
        head.linear_logprobs(hidden, weight, targets, backend="nope")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="cuda tensors"):
        head.linear_logprobs(hidden, weight, targets, backend="cuda")
    with pytest.raises(InvalidArgumentError, match="float64"):
        head.linear_logprobs(hidden.double(), weight.double(), targets, backend="cpp")


def test_the_cuda_scoring_kernel_compiles(tmp_path: Path) -> None:
    root = cuda_root()
    out = tmp_path / "score_cuda.o"
    cmd = [
        str(root / "bin" / "nvcc"),
        "-std=c++17",
        "-O3",
        "-c",
        str(csrc_dir() / "score_cuda.cu"),
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
    assert out.stat().st_size > 10_000  # device code for three dtypes and two architectures
    assert "warning" not in proc.stderr.lower(), proc.stderr


def test_the_cuda_scoring_binding_compiles() -> None:
    proc = binding_syntax_check("dposhap_score_cuda", "score_cuda_binding.cpp")
    assert proc.returncode == 0, proc.stderr[-4000:]

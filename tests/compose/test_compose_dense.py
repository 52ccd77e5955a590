"""The dense form's kernels (C++ always; Triton in its interpreter on the CPU, on CUDA with a GPU;
CUDA with a GPU) against the float64 reference: odd shapes, masked tokens, strided
(non-contiguous) inputs read in place, every dtype, and the errors."""

from __future__ import annotations

import pytest
import torch

from dposhap.compose import backends, reference
from dposhap.errors import InvalidArgumentError

GPU = torch.cuda.is_available()
# (backend, device): the Triton kernel runs in the interpreter on the CPU (tests/conftest.py)
KERNELS = [("cpp", "cpu"), ("triton", "cuda" if GPU else "cpu")] + ([("cuda", "cuda")] if GPU else [])
TOL = {torch.float32: 2e-5, torch.float16: 2e-5, torch.bfloat16: 2e-5}


def problem(seed: int, r: int, n: int, v: int, dtype: torch.dtype, masked: float = 0.0):
    g = torch.Generator().manual_seed(seed)
    ref = (torch.randn(r, v, generator=g) * 3).to(dtype)
    sources = (torch.randn(r, n, v, generator=g) * 3).to(dtype)
    if masked:
        ref[torch.rand(r, v, generator=g) < masked] = float("-inf")
        sources[torch.rand(r, n, v, generator=g) < masked] = float("-inf")
        ref[:, 0] = 0.0
        sources[:, :, 0] = 0.0
    weights = torch.rand(r, n, generator=g) * 2 - 0.5
    weights[torch.rand(r, n, generator=g) < 0.3] = 0.0  # sources of weight 0 are never read
    temperature = torch.rand(r, generator=g) + 0.5
    return ref, sources, weights, temperature


def check(fast: torch.Tensor, ref, sources, weights, temperature) -> None:
    slow = reference.log_probs(ref.cpu(), sources.cpu(), weights.cpu(), temperature.cpu(), compute_dtype=torch.float64)
    fast = fast.cpu().double()
    assert fast.shape == slow.shape
    finite = torch.isfinite(slow)
    assert torch.equal(torch.isfinite(fast), finite)  # the same tokens are masked
    tol = TOL.get(ref.dtype, 2e-5)
    torch.testing.assert_close(fast[finite], slow[finite], atol=tol, rtol=tol)


@pytest.mark.parametrize(("backend", "device"), KERNELS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("r", "n", "v", "masked"), [(3, 4, 37, 0.0), (5, 1, 200, 0.2), (2, 0, 129, 0.0)])
def test_dense_kernels_match_the_float64_reference(backend, device, dtype, r, n, v, masked) -> None:
    ref, sources, weights, temperature = problem(r * 31 + v, r, n, v, dtype, masked)
    args = [x.to(device) for x in (ref, sources, weights, temperature)]
    fast = backends.log_probs(*args, backend=backend)
    assert fast.dtype == torch.float32
    check(fast, ref, sources, weights, temperature)


@pytest.mark.parametrize(("backend", "device"), KERNELS)
def test_strided_inputs_are_read_in_place_with_the_same_result(backend, device) -> None:
    # ref a column slice of a wider matrix, sources with permuted (R, n) axes and a row gap:
    # every stride but the vocabulary's is not the contiguous one
    g = torch.Generator().manual_seed(3)
    r, n, v = 4, 3, 77
    wide = torch.randn(r, v + 9, generator=g)
    ref = wide[:, 5 : 5 + v]
    base = torch.randn(n, 2 * r, v, generator=g)
    sources = base[:, ::2, :].transpose(0, 1)
    assert not ref.is_contiguous() and not sources.is_contiguous()
    weights = torch.rand(r, n, generator=g)
    fast = backends.log_probs(ref.to(device), sources.to(device), weights.to(device), 0.8, backend=backend)
    check(fast, ref, sources, weights, torch.full((r,), 0.8))
    # a vocabulary stride other than 1 is copied, with the same result
    ref_t = torch.randn(v, r, generator=g).t()
    fast = backends.log_probs(ref_t.to(device), sources.to(device), weights.to(device), backend=backend)
    check(fast, ref_t, sources, weights, torch.ones(r))


@pytest.mark.parametrize(("backend", "device"), KERNELS)
def test_bool_membership_and_shared_weights(backend, device) -> None:
    ref, sources, _, _ = problem(9, 3, 4, 50, torch.float32)
    member = torch.tensor([True, False, True, True])
    fast = backends.log_probs(ref.to(device), sources.to(device), member.to(device), backend=backend)
    check(fast, ref, sources, member.float().expand(3, 4), torch.ones(3))


def test_empty_and_singleton_coalitions_are_exactly_the_models() -> None:
    ref, sources, _, _ = problem(4, 2, 2, 300, torch.float32)
    empty = backends.log_probs(ref, sources, torch.zeros(2, 2), backend="cpp")
    torch.testing.assert_close(empty, torch.log_softmax(ref, 1), atol=2e-6, rtol=0)
    single = backends.log_probs(ref, sources, torch.tensor([0.0, 1.0]), backend="cpp")
    torch.testing.assert_close(single, torch.log_softmax(sources[:, 1], 1), atol=2e-6, rtol=0)


@pytest.mark.parametrize(("backend", "device"), KERNELS)
def test_bad_inputs_are_named(backend, device) -> None:
    ref, sources, weights, _ = problem(5, 3, 2, 40, torch.float32)
    weights = torch.ones(3, 2)
    bad = sources.clone()
    bad[1, 1, 7] = float("nan")
    with pytest.raises(InvalidArgumentError, match=r"sources\[1, 1\] contains NaN"):
        backends.log_probs(ref.to(device), bad.to(device), weights.to(device), backend=backend)
    dead = ref.clone()
    dead[2] = float("-inf")
    with pytest.raises(InvalidArgumentError, match=r"row 2: the combined logits are -inf"):
        backends.log_probs(dead.to(device), sources.to(device), weights.to(device), backend=backend)
    with pytest.raises(InvalidArgumentError, match="temperature"):
        backends.log_probs(ref.to(device), sources.to(device), weights.to(device), 0.0, backend=backend)


def test_auto_picks_the_cpp_kernel_for_float32_cpu_and_the_reference_for_float64() -> None:
    ref, sources, weights, temperature = problem(6, 2, 3, 64, torch.float32)
    fast = backends.log_probs(ref, sources, weights, temperature, backend="auto")
    assert fast.dtype == torch.float32
    check(fast, ref, sources, weights, temperature)
    exact = backends.log_probs(ref.double(), sources.double(), weights.double(), temperature, backend="auto")
    assert exact.dtype == torch.float64


def test_the_dense_op_traces_under_torch_compile_fake_tensors() -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        ref, sources = torch.empty(3, 11), torch.empty(3, 2, 11)
        logprobs, logz = torch.ops.dposhap.compose_dense(ref, sources, torch.empty(3, 2), torch.empty(3))
    assert tuple(logprobs.shape) == (3, 11) and tuple(logz.shape) == (3,)

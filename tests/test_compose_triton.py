"""The Triton gather-form kernel against the plain-torch reference.

Without a GPU the kernel runs in Triton's interpreter (tests/conftest.py sets
``TRITON_INTERPRET=1``), so the shapes stay small; on a GPU the same tests run on CUDA.
"""

from __future__ import annotations

import pytest
import torch

from dposhap.compose import reference, triton_backend
from dposhap.errors import InvalidArgumentError

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
ALL = ("logprobs", "logz", "correction", "target_logprob", "sample")
# float32 kernel against the float64 reference, by input dtype
TOL = {torch.float32: 2e-5, torch.float16: 2e-5, torch.bfloat16: 2e-5}


def problem(seed: int, t: int, v: int, m: int, j: int, dtype: torch.dtype, masked: float = 0.0):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(t, v, generator=g) * 3).to(dtype)
    if masked:
        logits[torch.rand(t, v, generator=g) < masked] = float("-inf")
        logits[:, 0] = 0.0  # keep one token alive in every row
    ref_index = torch.randint(0, t, (m,), generator=g)
    src_index = torch.randint(-1, t, (m, j), generator=g)
    src_weight = torch.rand(m, j, generator=g) * 2 - 0.5
    temperature = torch.rand(m, generator=g) + 0.5
    targets = torch.randint(0, v, (m,), generator=g)
    stream = torch.randint(0, 3, (m,), generator=g)
    return [x.to(DEVICE) for x in (logits, ref_index, src_index, src_weight, temperature, targets, stream)]


@pytest.mark.parametrize(
    ("t", "v", "m", "j", "dtype", "masked", "block_v"),
    [
        (5, 37, 6, 3, torch.float32, 0.0, 16),  # V not a multiple of the block
        (4, 64, 3, 0, torch.float32, 0.0, 64),  # J = 0: the reference alone
        (6, 50, 7, 4, torch.float16, 0.2, 16),  # masked tokens, fp16 inputs
        (3, 33, 4, 2, torch.bfloat16, 0.0, 32),
        (8, 129, 5, 5, torch.float32, 0.1, 64),
    ],
)
def test_every_output_matches_the_reference(t, v, m, j, dtype, masked, block_v) -> None:
    logits, ref_index, src_index, src_weight, temperature, targets, stream = problem(t + v + m, t, v, m, j, dtype, masked)
    kw = dict(outputs=ALL, targets=targets, seed=7, stream_id=stream, step=3)
    fast = triton_backend.compose(logits, ref_index, src_index, src_weight, temperature, block_v=block_v, **kw)
    slow = reference.compose(logits, ref_index, src_index, src_weight, temperature, compute_dtype=torch.float64, **kw)
    tol = TOL[dtype]
    for name in ("logz", "correction", "target_logprob"):
        torch.testing.assert_close(getattr(fast, name).double(), getattr(slow, name), atol=tol, rtol=tol, msg=name)
    finite = torch.isfinite(slow.logprobs)
    assert torch.equal(torch.isfinite(fast.logprobs), finite)  # the same tokens are masked
    torch.testing.assert_close(fast.logprobs.double()[finite], slow.logprobs[finite], atol=tol, rtol=tol)
    # the same noise, the same tie rule: the float32 reference picks the same tokens
    slow32 = reference.compose(logits, ref_index, src_index, src_weight, temperature, **kw)
    assert torch.equal(fast.sample, slow32.sample)


def test_singleton_and_empty_coalitions_are_exact_sources() -> None:
    logits = torch.randn(3, 40, device=DEVICE)
    ref_index = torch.tensor([0, 0], device=DEVICE)
    src_index = torch.tensor([[-1], [2]], device=DEVICE)
    src_weight = torch.tensor([[1.0], [1.0]], device=DEVICE)
    out = triton_backend.compose(logits, ref_index, src_index, src_weight, outputs=("logprobs", "correction"), block_v=16)
    torch.testing.assert_close(out.logprobs[0], torch.log_softmax(logits[0], 0), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.logprobs[1], torch.log_softmax(logits[2], 0), atol=1e-6, rtol=0)
    assert torch.equal(out.correction, torch.zeros(2, device=DEVICE))


def test_rows_with_weight_zero_are_never_read() -> None:
    logits = torch.randn(3, 40, device=DEVICE)
    logits[1] = float("nan")  # a member of weight 0: must not matter
    args = (torch.tensor([0], device=DEVICE), torch.tensor([[1, 2]], device=DEVICE), torch.tensor([[0.0, 0.5]], device=DEVICE))
    fast = triton_backend.compose(logits, *args, outputs=("logz", "sample"), block_v=16)
    slow = reference.compose(logits, *args, outputs=("logz", "sample"))
    torch.testing.assert_close(fast.logz, slow.logz)
    assert torch.equal(fast.sample, slow.sample)


def test_common_random_numbers_across_coalitions() -> None:
    """Rows decoding the same prompt (stream) at the same step share their noise: with equal
    combined logits they draw the same token, whatever their members."""
    base = torch.randn(1, 48, device=DEVICE)
    logits = torch.cat([base, base, base])  # three sources with identical logits
    ref_index = torch.zeros(3, dtype=torch.int64, device=DEVICE)
    src_index = torch.tensor([[1], [2], [-1]], device=DEVICE)
    src_weight = torch.ones(3, 1, device=DEVICE)
    stream = torch.zeros(3, dtype=torch.int64, device=DEVICE)
    draws = torch.stack(
        [
            triton_backend.compose(logits, ref_index, src_index, src_weight, outputs="sample", stream_id=stream, step=s, block_v=16).sample
            for s in range(6)
        ]
    )
    assert torch.equal(draws[:, 0], draws[:, 1]) and torch.equal(draws[:, 0], draws[:, 2])
    assert len(set(draws[:, 0].tolist())) > 1  # but the steps do differ


def test_errors_name_the_row() -> None:
    logits = torch.randn(2, 20, device=DEVICE)
    logits[1, 3] = float("nan")
    with pytest.raises(InvalidArgumentError, match="output row 0: logits row 1"):
        triton_backend.compose(logits, torch.tensor([0], device=DEVICE), torch.tensor([[1]], device=DEVICE), torch.tensor([[0.5]], device=DEVICE))
    with pytest.raises(InvalidArgumentError, match="top_k"):
        triton_backend.compose(
            torch.randn(2, 20, device=DEVICE), torch.tensor([0], device=DEVICE), torch.zeros(1, 0, dtype=torch.int64, device=DEVICE),
            torch.zeros(1, 0, device=DEVICE), outputs="sample", top_k=3,
        )
    dead = torch.full((1, 20), float("-inf"), device=DEVICE)
    with pytest.raises(InvalidArgumentError, match="-inf for every token"):
        triton_backend.compose(dead, torch.tensor([0], device=DEVICE), torch.zeros(1, 0, dtype=torch.int64, device=DEVICE), torch.zeros(1, 0, device=DEVICE), outputs="logz")


def test_the_dispatcher_routes_to_every_backend_and_they_agree() -> None:
    from dposhap import compose as C

    logits, ref_index, src_index, src_weight, temperature, targets, stream = problem(3, 6, 70, 5, 3, torch.float32)
    kw = dict(outputs=("logz", "sample"), seed=11, stream_id=stream, step=2)
    results = {b: C.compose(logits, ref_index, src_index, src_weight, temperature, backend=b, **kw) for b in ("torch", "cpp", "triton")}
    for b in ("cpp", "triton"):
        torch.testing.assert_close(results[b].logz, results["torch"].logz, atol=1e-5, rtol=1e-6)
        assert torch.equal(results[b].sample, results["torch"].sample), b
    with pytest.raises(InvalidArgumentError, match="unknown backend"):
        C.compose(logits, ref_index, src_index, src_weight, backend="tpu")


@pytest.mark.parametrize(("n_pos", "n_models", "vocab", "n_coal", "block_v", "masked"), [
    (3, 5, 70, 20, 32, 0.0),   # K not a multiple of the coalition block, V not of the vocabulary block
    (2, 17, 40, 5, 16, 0.15),  # more models than one 16-wide block, masked tokens
])
def test_shared_scores_match_the_reference(n_pos, n_models, vocab, n_coal, block_v, masked) -> None:
    g = torch.Generator().manual_seed(n_pos * 100 + n_models)
    logits = torch.randn(n_pos, n_models, vocab, generator=g) * 2
    if masked:
        logits[torch.rand(n_pos, n_models, vocab, generator=g) < masked] = float("-inf")
        logits[:, :, 0] = 0.0
    membership = torch.rand(n_coal, n_models - 1, generator=g) < 0.5
    coef = reference.coalition_coefficients(membership.to(torch.float32))
    targets = torch.randint(0, vocab, (n_pos,), generator=g)
    logits, coef, targets = logits.to(DEVICE), coef.to(DEVICE), targets.to(DEVICE)
    fast = triton_backend.shared_scores(logits, coef, targets, block_v=block_v)
    slow = reference.shared_scores(logits, coef, targets, compute_dtype=torch.float64)
    for got, want in zip(fast, slow):
        finite = torch.isfinite(want)
        assert torch.equal(torch.isfinite(got), finite)
        torch.testing.assert_close(got.double()[finite], want[finite], atol=2e-5, rtol=2e-5)


def test_the_shared_scores_dispatcher() -> None:
    from dposhap import compose as C

    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 30, generator=g).to(DEVICE)
    coef = C.coalition_coefficients(torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])).to(DEVICE)
    targets = torch.tensor([3, 7], device=DEVICE)
    slow = C.shared_scores(logits, coef, targets, backend="torch")
    fast = C.shared_scores(logits, coef, targets, backend="triton")
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b.float(), atol=2e-5, rtol=2e-5)
    with pytest.raises(InvalidArgumentError, match="unknown backend"):
        C.shared_scores(logits, coef, targets, backend="cpp")

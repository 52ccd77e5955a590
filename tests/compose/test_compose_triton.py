"""The Triton gather-form kernel against the plain-torch reference.

Without a GPU the kernel runs in Triton's interpreter (tests/conftest.py sets
``TRITON_INTERPRET=1``), so the shapes stay small; on a GPU the same tests run on CUDA.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dposhap.compose import backends, reference, triton_backend
from dposhap.compose.contract import ComposeOutput, GatherRequest, validate_gather
from dposhap.errors import InvalidArgumentError

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
ALL = ("logprobs", "logz", "correction", "target_logprob", "sample")
# float32 kernel against the float64 reference, by input dtype
TOL = {torch.float32: 2e-5, torch.float16: 2e-5, torch.bfloat16: 2e-5}


def triton_compose(*args, block_v: int | None = None, radix_bits: int | None = None, **kw) -> ComposeOutput:
    """The Triton launcher on the checked arguments of a :func:`reference.compose` call."""
    request = GatherRequest(*args, **kw, compute_dtype=torch.float32)
    return triton_backend.launch(validate_gather(request), block_v=block_v, radix_bits=radix_bits)


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
    logits, ref_index, src_index, src_weight, temperature, targets, stream = problem(
        t + v + m, t, v, m, j, dtype, masked
    )
    kw = dict(outputs=ALL, targets=targets, seed=7, stream_id=stream, step=3)
    fast = triton_compose(logits, ref_index, src_index, src_weight, temperature, block_v=block_v, **kw)
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
    out = triton_compose(logits, ref_index, src_index, src_weight, outputs=("logprobs", "correction"), block_v=16)
    torch.testing.assert_close(out.logprobs[0], torch.log_softmax(logits[0], 0), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.logprobs[1], torch.log_softmax(logits[2], 0), atol=1e-6, rtol=0)
    assert torch.equal(out.correction, torch.zeros(2, device=DEVICE))


def test_rows_with_weight_zero_are_never_read() -> None:
    logits = torch.randn(3, 40, device=DEVICE)
    logits[1] = float("nan")  # a member of weight 0: must not matter
    args = (
        torch.tensor([0], device=DEVICE),
        torch.tensor([[1, 2]], device=DEVICE),
        torch.tensor([[0.0, 0.5]], device=DEVICE),
    )
    fast = triton_compose(logits, *args, outputs=("logz", "sample"), block_v=16)
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
            triton_compose(
                logits, ref_index, src_index, src_weight, outputs="sample", stream_id=stream, step=s, block_v=16
            ).sample
            for s in range(6)
        ]
    )
    assert torch.equal(draws[:, 0], draws[:, 1]) and torch.equal(draws[:, 0], draws[:, 2])
    assert len(set(draws[:, 0].tolist())) > 1  # but the steps do differ


def test_errors_name_the_row() -> None:
    logits = torch.randn(2, 20, device=DEVICE)
    logits[1, 3] = float("nan")
    with pytest.raises(InvalidArgumentError, match="output row 0: logits row 1"):
        triton_compose(
            logits,
            torch.tensor([0], device=DEVICE),
            torch.tensor([[1]], device=DEVICE),
            torch.tensor([[0.5]], device=DEVICE),
        )
    with pytest.raises(InvalidArgumentError, match="top_k"):
        triton_compose(
            torch.randn(2, 20, device=DEVICE),
            torch.tensor([0], device=DEVICE),
            torch.zeros(1, 0, dtype=torch.int64, device=DEVICE),
            torch.zeros(1, 0, device=DEVICE),
            outputs="sample",
            top_k=0,
        )
    dead = torch.full((1, 20), float("-inf"), device=DEVICE)
    with pytest.raises(InvalidArgumentError, match="-inf for every token"):
        triton_compose(
            dead,
            torch.tensor([0], device=DEVICE),
            torch.zeros(1, 0, dtype=torch.int64, device=DEVICE),
            torch.zeros(1, 0, device=DEVICE),
            outputs="logz",
        )


def test_the_dispatcher_routes_to_every_backend_and_they_agree() -> None:
    from dposhap import compose as C

    logits, ref_index, src_index, src_weight, temperature, targets, stream = problem(3, 6, 70, 5, 3, torch.float32)
    kw = dict(outputs=("logz", "sample"), seed=11, stream_id=stream, step=2)
    results = {
        b: C.compose(logits, ref_index, src_index, src_weight, temperature, backend=b, **kw)
        for b in ("torch", "cpp", "triton")
    }
    for b in ("cpp", "triton"):
        torch.testing.assert_close(results[b].logz, results["torch"].logz, atol=1e-5, rtol=1e-6)
        assert torch.equal(results[b].sample, results["torch"].sample), b
    with pytest.raises(InvalidArgumentError, match="unknown backend"):
        C.compose(logits, ref_index, src_index, src_weight, backend="tpu")


# --------------------------------------------------------------------------------------
# top-k sampling


def tied_problem(seed: int, t: int, v: int, m: int, j: int, *, levels: int, dup: float, masked: float):
    """Logits with ties in the combined logits: few distinct values (``levels``) and a fraction
    ``dup`` of tokens that copy token 0 in every row (equal ``c`` whatever the coalition);
    binary-fraction weights keep equal sums equal."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randint(0, levels, (t, v), generator=g).float() * 0.75 - 2.0
    logits[:, torch.rand(v, generator=g) < dup] = logits[:, :1]
    if masked:
        logits[torch.rand(t, v, generator=g) < masked] = float("-inf")
        logits[:, 0] = 1.0  # keep one token alive in every row
    ref_index = torch.randint(0, t, (m,), generator=g)
    src_index = torch.randint(-1, t, (m, j), generator=g)
    src_weight = torch.randint(-2, 5, (m, j), generator=g).float() / 4
    stream = torch.randint(0, 5, (m,), generator=g)
    return [x.to(DEVICE) for x in (logits, ref_index, src_index, src_weight, stream)]


@settings(max_examples=30)
@given(
    v=st.integers(2, 40),
    m=st.integers(1, 4),
    j=st.integers(0, 3),
    top_k=st.integers(1, 44),
    levels=st.sampled_from([2, 5, 1000]),
    dup=st.sampled_from([0.0, 0.4]),
    masked=st.sampled_from([0.0, 0.3]),
    temperature=st.sampled_from([1.0, 0.7]),
    block_v=st.sampled_from([16, 64]),
    radix_bits=st.sampled_from([4, 8]),
    seed=st.integers(0, 2**16),
)
def test_top_k_sampling_is_the_references(
    v, m, j, top_k, levels, dup, masked, temperature, block_v, radix_bits, seed
) -> None:
    """The same top-k set (ties at the k-th value: lowest index first; -inf tokens; top_k = 1 and
    top_k >= V), the same noise: the float32 reference and the cpp kernel pick the same tokens."""
    logits, ref_index, src_index, src_weight, stream = tied_problem(
        seed, 4, v, m, j, levels=levels, dup=dup, masked=masked
    )
    kw = dict(outputs=("sample", "logz"), seed=seed, stream_id=stream, step=seed % 7, top_k=top_k)
    fast = triton_compose(
        logits, ref_index, src_index, src_weight, temperature, block_v=block_v, radix_bits=radix_bits, **kw
    )
    slow = reference.compose(logits, ref_index, src_index, src_weight, temperature, **kw)
    assert torch.equal(fast.sample, slow.sample)
    torch.testing.assert_close(fast.logz, slow.logz, atol=2e-5, rtol=2e-5)
    cpu = [x.cpu() for x in (logits, ref_index, src_index, src_weight)]
    cpp = backends.compose(*cpu, temperature, backend="cpp", **dict(kw, stream_id=stream.cpu()))
    assert torch.equal(fast.sample.cpu(), cpp.sample)


@pytest.mark.parametrize(
    ("top_k", "block_v", "radix_bits", "allowed"),
    [
        (3, 8, 8, {1, 3, 6}),  # the k-th value is tied: its first 3 ties, across blocks
        (8, 64, 4, {1, 3, 6, 7, 11, 13, 16, 17}),  # exactly the 8 tokens of the largest value
        (10, 16, 4, {1, 3, 6, 7, 11, 13, 16, 17, 5, 9}),  # all of the largest value, 2 of the next
    ],
)
def test_top_k_draws_cover_exactly_the_top_k_set(top_k, block_v, radix_bits, allowed) -> None:
    """Logits of a tiny spread leave the noise to decide: over many streams every token of the
    top-k set is drawn and no other, with the tie at the k-th value cut at the lowest indices."""
    c = torch.tensor([0.0, 0.003, 0.001, 0.003, float("-inf"), 0.002, 0.003, 0.003, 0.0, 0.002] * 2, device=DEVICE)
    n = 40
    logits = c[None, :].expand(n, -1).contiguous()
    ref_index = torch.arange(n, device=DEVICE)
    none = torch.zeros(n, 0, dtype=torch.int64, device=DEVICE)
    kw = dict(outputs="sample", stream_id=torch.arange(n, device=DEVICE), seed=5, top_k=top_k)
    out = triton_compose(logits, ref_index, none, none.float(), block_v=block_v, radix_bits=radix_bits, **kw)
    assert set(out.sample.tolist()) == allowed
    assert torch.equal(out.sample, reference.compose(logits, ref_index, none, none.float(), **kw).sample)


def test_top_k_where_fewer_tokens_are_alive_than_k() -> None:
    """Masked tokens are in the top-k set only when fewer than k tokens are alive: never drawn."""
    logits = torch.full((3, 30), float("-inf"), device=DEVICE)
    logits[:, 7] = 0.5
    logits[:, 21] = 0.4
    ref_index = torch.arange(3, device=DEVICE)
    none = torch.zeros(3, 0, dtype=torch.int64, device=DEVICE)
    for top_k in (1, 2, 5, 29):
        out = triton_compose(
            logits, ref_index, none, none.float(), outputs="sample", seed=top_k, top_k=top_k, block_v=16
        )
        assert set(out.sample.tolist()) <= ({7} if top_k == 1 else {7, 21}), top_k
        want = reference.compose(logits, ref_index, none, none.float(), outputs="sample", seed=top_k, top_k=top_k)
        assert torch.equal(out.sample, want.sample)


# --------------------------------------------------------------------------------------
# the torch.library op


def op_args(top_k: int = 2):
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 20, generator=g)
    return (
        logits.to(DEVICE),
        torch.tensor([0, 1, 2], device=DEVICE),
        torch.tensor([[1, -1], [3, 0], [-1, -1]], device=DEVICE),
        torch.tensor([[0.5, 0.0], [1.0, 0.5], [0.0, 0.0]], device=DEVICE),
        torch.ones(3, device=DEVICE),
        torch.tensor([1, 2, 3], device=DEVICE),
        torch.arange(3, device=DEVICE),
        torch.zeros(3, dtype=torch.int64, device=DEVICE),
        7,
        top_k,
        True,
        True,
        True,
        True,
        True,
    )


def test_the_triton_op_passes_opcheck() -> None:
    """Schema, fake implementation (shapes and dtypes of the real outputs) and AOT dispatch."""
    result = torch.library.opcheck(torch.ops.dposhap.compose_gather_triton.default, op_args())
    assert set(result.values()) == {"SUCCESS"}, result


def test_the_dispatcher_runs_the_triton_op_under_torch_compile() -> None:
    def sample(logits, ref_index, src_index, src_weight):
        out = backends.compose(
            logits, ref_index, src_index, src_weight, 0.8, outputs=("sample", "logz"), top_k=2, seed=3, backend="triton"
        )
        return out.sample, out.logz

    args = op_args()[:4]
    compiled = torch.compile(sample, fullgraph=True, backend="aot_eager")
    got, want = compiled(*args), sample(*args)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    slow = reference.compose(*args, 0.8, outputs="sample", top_k=2, seed=3)
    assert torch.equal(got[0], slow.sample)


@pytest.mark.parametrize("name", ["compose_gather_triton", "compose_gather"])
def test_the_kernel_ops_have_the_fake_implementation(name) -> None:
    """Fake tensors get the outputs' shapes without running a kernel (also the native op, on any machine)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    op = getattr(torch.ops.dposhap, name)
    with FakeTensorMode():
        out = op(
            torch.empty(5, 11),
            torch.zeros(3, dtype=torch.int64),
            torch.zeros(3, 2, dtype=torch.int64),
            torch.ones(3, 2),
            torch.ones(3),
            None,
            torch.zeros(3, dtype=torch.int64),
            torch.zeros(3, dtype=torch.int64),
            0,
            4,
            True,
            False,
            True,
            False,
            True,
        )
    assert [tuple(o.shape) for o in out] == [(3, 11), (0,), (3,), (0,), (3,)]
    assert [o.dtype for o in out] == [torch.float32] * 4 + [torch.int64]
    meta = op(*(x.to("meta") if isinstance(x, torch.Tensor) else x for x in op_args()))
    assert meta[0].device.type == "meta" and tuple(meta[0].shape) == (3, 20) and tuple(meta[4].shape) == (3,)


@pytest.mark.parametrize(
    ("n_pos", "n_models", "vocab", "n_coal", "block_v", "masked"),
    [
        (3, 5, 70, 20, 32, 0.0),  # K not a multiple of the coalition block, V not of the vocabulary block
        (2, 17, 40, 5, 16, 0.15),  # more models than one 16-wide block, masked tokens
    ],
)
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
    for got, want in zip(fast, slow, strict=True):
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
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b.float(), atol=2e-5, rtol=2e-5)
    with pytest.raises(InvalidArgumentError, match="unknown backend"):
        C.shared_scores(logits, coef, targets, backend="cpp")

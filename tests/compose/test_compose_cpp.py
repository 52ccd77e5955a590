"""The C++ CPU backend of the gather form against the plain-torch reference.

Numbers are compared with the float64 reference on the same (dtype-rounded) inputs under a
per-dtype tolerance table; sampled tokens must be exactly those of the float32 reference
(the same noise hash, the same tie rule, the same top-k set).
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dposhap.compose import _native, backends, noise
from dposhap.compose import reference as R
from dposhap.errors import DposhapError, InvalidArgumentError

INF = math.inf
ALL_OUTPUTS = ("logprobs", "logz", "correction", "target_logprob", "sample")
FLOAT_OUTPUTS = ("logprobs", "logz", "correction", "target_logprob")
DTYPES = (torch.float32, torch.bfloat16, torch.float16)

#: cpp (float32 compute) against the float64 reference on the same dtype-rounded inputs,
#: logits of magnitude ~3 (scaled with the logits' magnitude below).
TOLERANCE = {
    torch.float32: dict(atol=2e-5, rtol=1e-5),
    torch.bfloat16: dict(atol=2e-5, rtol=1e-5),
    torch.float16: dict(atol=2e-5, rtol=1e-5),
}


@pytest.fixture(scope="module", autouse=True)
def built() -> None:
    _native.load_cpu()  # the build must work here: a failure is a test failure


def cpp(*args, **kw) -> R.ComposeOutput:
    return backends.compose(*args, backend="cpp", **kw)


def random_logits(t: int, v: int, seed: int, dtype=torch.float32, scale: float = 3.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(t, v, generator=gen, dtype=torch.float64) * scale).to(dtype)


def random_problem(
    t: int, v: int, m: int, j: int, seed: int, dtype=torch.float32, scale: float = 3.0, mask_frac: float = 0.0
):
    gen = torch.Generator().manual_seed(seed + 1)
    logits = random_logits(t, v, seed, dtype, scale)
    if mask_frac > 0:
        masked = torch.rand(t, v, generator=gen) < mask_frac
        masked[:, 0] = False  # keep every row alive
        logits = logits.masked_fill(masked, -INF)
    ref = torch.randint(0, t, (m,), generator=gen)
    src = torch.randint(-1, t, (m, j), generator=gen)
    # binary-fraction weights: no doubt whether a_0 is exactly 0
    w = torch.randint(-4, 9, (m, j), generator=gen).to(torch.float32) / 4
    temp = 0.5 + torch.rand(m, generator=gen)
    targets = torch.randint(0, v, (m,), generator=gen)
    return logits, ref, src, w, temp, targets


def assert_close_outputs(got: R.ComposeOutput, want: R.ComposeOutput, dtype, scale: float = 1.0, names=FLOAT_OUTPUTS):
    tol = TOLERANCE[dtype]
    for name in names:
        g, w = getattr(got, name), getattr(want, name)
        assert g is not None and w is not None, name
        assert g.dtype == torch.float32, name
        torch.testing.assert_close(
            g.double(),
            w.double(),
            atol=tol["atol"] * scale,
            rtol=tol["rtol"],
            equal_nan=True,
            msg=lambda s, n=name: f"{n}: {s}",
        )


def check_against_reference(logits, ref, src, w, temp, targets, *, seed=0, top_k=None, scale=1.0, step=0):
    kw = dict(outputs=ALL_OUTPUTS, targets=targets, seed=seed, top_k=top_k, step=step)
    got = cpp(logits, ref, src, w, temp, **kw)
    want64 = R.compose(logits.double(), ref, src, w, temp, **kw)
    want32 = R.compose(logits, ref, src, w, temp, **kw)
    assert_close_outputs(got, want64, logits.dtype, scale)
    assert got.sample.dtype == torch.int64
    assert torch.equal(got.sample, want32.sample)
    # masked tokens are -inf exactly where the reference has them
    assert torch.equal(torch.isneginf(got.logprobs), torch.isneginf(want64.logprobs))


# --------------------------------------------------------------------------------------
# agreement with the reference


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("v", [1, 7, 33, 1000, 4099])
def test_matches_reference_per_dtype(dtype, v):
    problem = random_problem(t=9, v=v, m=12, j=3, seed=v, dtype=dtype, mask_frac=0.1)
    check_against_reference(*problem, seed=11)


@settings(max_examples=60)
@given(
    t=st.integers(1, 6),
    v=st.integers(1, 300),
    m=st.integers(0, 7),
    j=st.integers(0, 4),
    seed=st.integers(0, 2**16),
    dtype=st.sampled_from(DTYPES),
    mask_frac=st.sampled_from([0.0, 0.3]),
    log_scale=st.sampled_from([-3.0, 0.0, 1.0, 2.0]),
    top_k=st.one_of(st.none(), st.integers(1, 20)),
)
def test_hypothesis_shapes(t, v, m, j, seed, dtype, mask_frac, log_scale, top_k):
    scale = 10.0**log_scale
    problem = random_problem(t, v, m, j, seed, dtype, scale=scale, mask_frac=mask_frac)
    # tolerance grows with the logits' magnitude (float32 rounding of c itself)
    check_against_reference(*problem, seed=seed, top_k=top_k, scale=max(1.0, scale))


def test_temperature_one_and_large_logits():
    logits, ref, src, w, _, targets = random_problem(6, 500, 8, 3, seed=5, scale=300.0)
    check_against_reference(logits, ref, src, w, 1.0, targets, scale=300.0)


def test_noncontiguous_logits_and_per_row_step():
    base = random_logits(8, 400, seed=3)
    logits = base[:, ::2]  # row stride != V, element stride 2
    _, ref, src, w, temp, targets = random_problem(8, 200, 10, 2, seed=4)
    step = torch.arange(10, dtype=torch.int64) * 7 - 20
    check_against_reference(logits, ref, src, w, temp, targets, step=step, seed=2**64 - 1)


def test_empty_output():
    logits = random_logits(3, 10, 0)
    out = cpp(
        logits,
        torch.zeros(0, dtype=torch.int64),
        torch.zeros(0, 2, dtype=torch.int64),
        torch.zeros(0, 2),
        outputs=ALL_OUTPUTS,
        targets=torch.zeros(0, dtype=torch.int64),
    )
    assert out.logprobs.shape == (0, 10) and out.sample.shape == (0,)


# --------------------------------------------------------------------------------------
# fewer rows than threads: a row's vocabulary split across threads


@pytest.fixture
def threads():
    """Set the number of threads for one test (restored afterwards)."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.mark.parametrize("m", [1, 3])
@pytest.mark.parametrize("top_k", [None, 1, 50])
def test_split_rows_match_the_reference(threads, m, top_k):
    # 4 threads, V = 40000: 4 parts of 10240 tokens for one row (the last shorter), 2 for three rows
    threads(4)
    problem = random_problem(t=5, v=40000, m=m, j=3, seed=m, mask_frac=0.1)
    check_against_reference(*problem, seed=5, top_k=top_k)
    kw = dict(outputs=ALL_OUTPUTS, targets=problem[-1], seed=5, top_k=top_k)
    split = cpp(*problem[:-1], **kw)
    threads(1)  # one thread: whole rows
    whole = cpp(*problem[:-1], **kw)
    assert torch.equal(split.sample, whole.sample)
    assert_close_outputs(split, whole, torch.float32)


@pytest.mark.parametrize("top_k", [None, 25000])
def test_split_rows_draw_in_every_part(threads, top_k):
    """Winners in different parts of the row merge to the reference's token (lowest index on ties)."""
    threads(4)
    logits, ref, src, w, temp, _ = random_problem(3, 40000, 1, 2, seed=9, scale=0.01)
    draws = []
    for step in range(12):
        kw = dict(outputs="sample", seed=1, step=step, top_k=top_k)
        got = cpp(logits, ref, src, w, temp, **kw)
        assert torch.equal(got.sample, R.compose(logits, ref, src, w, temp, **kw).sample), step
        draws.append(int(got.sample))
    assert len({token // 10240 for token in draws}) >= 3, draws


def test_split_rows_errors_name_the_row(threads):
    threads(4)
    logits = random_logits(3, 20000, 0)
    logits[2, 15000] = float("nan")
    one = torch.zeros(1, dtype=torch.int64)
    with pytest.raises(InvalidArgumentError, match=r"logits row 2 contains NaN or \+inf; it is member 0"):
        cpp(logits, one, torch.tensor([[2]]), torch.tensor([[0.5]]), outputs="logz")
    logits[0, :12000] = -INF
    logits[1, 12000:] = -INF
    with pytest.raises(InvalidArgumentError, match="output row 0: the combined logits are -inf for every token"):
        cpp(logits, one, torch.tensor([[1]]), torch.tensor([[0.5]]), outputs="sample")


# --------------------------------------------------------------------------------------
# sampling


def test_sample_exactly_reference_many_rows():
    logits, ref, src, w, temp, _ = random_problem(16, 3000, 400, 3, seed=8)
    stream = torch.arange(400, dtype=torch.int64) % 37
    for top_k in (None, 1, 5, 50):
        got = cpp(logits, ref, src, w, temp, outputs="sample", seed=123, stream_id=stream, step=9, top_k=top_k)
        want = R.compose(logits, ref, src, w, temp, outputs="sample", seed=123, stream_id=stream, step=9, top_k=top_k)
        assert torch.equal(got.sample, want.sample), top_k


def test_sample_ties_lowest_index_and_top_k_ties():
    # all logits equal: the noise alone decides; top_k=3 among ties keeps tokens 0, 1, 2
    logits = torch.zeros(2, 50)
    ref = torch.tensor([0, 1])
    src = torch.zeros(2, 0, dtype=torch.int64)
    w = torch.zeros(2, 0)
    for top_k in (None, 1, 3):
        got = cpp(logits, ref, src, w, outputs="sample", seed=4, top_k=top_k)
        want = R.compose(logits, ref, src, w, outputs="sample", seed=4, top_k=top_k)
        assert torch.equal(got.sample, want.sample)
    got = cpp(logits, ref, src, w, outputs="sample", seed=4, top_k=1)
    assert got.sample.tolist() == [0, 0]  # greedy on a full tie: the lowest index
    got = cpp(logits, ref, src, w, outputs="sample", seed=4, top_k=3)
    assert set(got.sample.tolist()) <= {0, 1, 2}


def test_sample_uses_the_noise_hash():
    # with zero logits the token is the argmax of the noise itself
    v = 777
    logits = torch.zeros(1, v)
    stream = torch.tensor([12345], dtype=torch.int64)
    got = cpp(
        logits,
        torch.tensor([0]),
        torch.zeros(1, 0, dtype=torch.int64),
        torch.zeros(1, 0),
        outputs="sample",
        seed=2**63 + 5,
        stream_id=stream,
        step=-3,
    )
    g = noise.gumbel(2**63 + 5, stream, -3, v)
    assert int(got.sample[0]) == int(torch.argmax(g[0]))
    h = [noise.hash32_scalar(2**63 + 5, 12345, -3, tok) for tok in range(v)]
    assert int(got.sample[0]) == max(range(v), key=lambda tok: (h[tok], -tok))  # the largest h wins


def test_common_random_numbers_across_coalitions():
    # rows of one stream at one step see the same noise: the same token whenever c is the same
    logits = random_logits(5, 300, 1)
    ref = torch.tensor([0, 0, 0])
    src = torch.tensor([[1, 2], [2, 1], [1, 2]])
    w = torch.tensor([[1.0, 0.5], [0.5, 1.0], [1.0, 0.5]])
    stream = torch.tensor([7, 7, 8])
    out = cpp(logits, ref, src, w, outputs="sample", seed=9, stream_id=stream)
    assert out.sample[0] == out.sample[1]  # the same coalition listed in another order


def test_sample_frequencies_match_softmax():
    v = 6
    logits = torch.tensor([[0.0, 1.0, -1.0, 2.0, 0.5, -INF]])
    n = 20000
    ref = torch.zeros(n, dtype=torch.int64)
    out = cpp(
        logits,
        ref,
        torch.zeros(n, 0, dtype=torch.int64),
        torch.zeros(n, 0),
        outputs="sample",
        stream_id=torch.arange(n, dtype=torch.int64),
        seed=1,
    )
    freq = torch.bincount(out.sample, minlength=v).double() / n
    p = torch.softmax(logits[0].double(), 0)
    assert freq[5] == 0
    assert float((freq - p).abs().sum()) / 2 < 0.02  # total variation


# --------------------------------------------------------------------------------------
# the algebra


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_coalition_is_reference_and_singleton_is_source(dtype):
    logits = random_logits(4, 333, 2, dtype)
    logits[1, 10] = -INF
    m_ref = cpp(
        logits,
        torch.tensor([1, 2]),
        torch.full((2, 3), -1),
        torch.zeros(2, 3),
        outputs=ALL_OUTPUTS,
        targets=torch.tensor([3, 4]),
    )
    own = torch.log_softmax(logits[[1, 2]].float(), dim=1)
    torch.testing.assert_close(m_ref.logprobs, own, atol=2e-5, rtol=1e-5)
    assert m_ref.correction.tolist() == [0.0, 0.0]
    # one member of weight 1 is that source: the reference row (all -inf elsewhere) is never read
    logits[0] = float("nan")
    single = cpp(
        logits,
        torch.tensor([0, 0]),
        torch.tensor([[1, -1], [-1, 2]]),
        torch.tensor([[1.0, 5.0], [3.0, 1.0]]),
        outputs=ALL_OUTPUTS,
        targets=torch.tensor([3, 4]),
    )
    torch.testing.assert_close(single.logprobs, own, atol=2e-5, rtol=1e-5)
    assert single.correction.tolist() == [0.0, 0.0]


def test_zero_weight_members_are_not_read():
    logits, ref, src, w, temp, targets = random_problem(8, 200, 6, 3, seed=12)
    src = torch.cat([src, torch.full((6, 2), 7)], dim=1)
    w = torch.cat([w, torch.zeros(6, 2)], dim=1)
    ref = ref.clamp(max=6)
    src = src.clamp(max=7)
    src[:, :3] = src[:, :3].clamp(max=6)
    base = cpp(logits, ref, src, w, temp, outputs=ALL_OUTPUTS, targets=targets, seed=3)
    poisoned = logits.clone()
    poisoned[7] = float("nan")
    again = cpp(poisoned, ref, src, w, temp, outputs=ALL_OUTPUTS, targets=targets, seed=3)
    for name in ALL_OUTPUTS:
        torch.testing.assert_close(getattr(again, name), getattr(base, name), rtol=0, atol=0, equal_nan=True)


def test_reference_with_coefficient_zero_is_not_read():
    logits = random_logits(3, 100, 4)
    logits[0] = float("nan")
    out = cpp(logits, torch.tensor([0]), torch.tensor([[1, 2]]), torch.tensor([[0.5, 0.5]]), outputs="logprobs")
    want = R.compose(logits.double(), torch.tensor([0]), torch.tensor([[1, 2]]), torch.tensor([[0.5, 0.5]]))
    torch.testing.assert_close(out.logprobs.double(), want.logprobs, atol=2e-5, rtol=1e-5)


def test_member_order_does_not_change_a_bit():
    logits, ref, src, w, temp, targets = random_problem(10, 500, 20, 4, seed=21)
    perm = torch.randperm(4, generator=torch.Generator().manual_seed(0))
    a = cpp(logits, ref, src, w, temp, outputs=ALL_OUTPUTS, targets=targets)
    b = cpp(logits, ref, src[:, perm], w[:, perm], temp, outputs=ALL_OUTPUTS, targets=targets)
    for name in ALL_OUTPUTS:
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_linear_in_weights_before_softmax():
    logits = random_logits(3, 300, 6)
    ref = torch.tensor([0, 0, 0])
    src = torch.tensor([[1, 2]] * 3)
    w = torch.tensor([[0.25, 0.5], [0.75, -0.5], [0.5, 0.0]])  # row 2 = (row 0 + row 1) / 2
    out = cpp(logits, ref, src, w, outputs=("logprobs", "logz"))
    c = out.logprobs + out.logz[:, None]
    torch.testing.assert_close(c[2], (c[0] + c[1]) / 2, atol=1e-4, rtol=1e-5)


def test_logprobs_not_needed_for_other_outputs():
    logits, ref, src, w, temp, targets = random_problem(6, 300, 5, 2, seed=30)
    full = cpp(logits, ref, src, w, temp, outputs=ALL_OUTPUTS, targets=targets)
    part = cpp(logits, ref, src, w, temp, outputs=("logz", "target_logprob"), targets=targets)
    assert part.logprobs is None and part.sample is None and part.correction is None
    assert torch.equal(part.logz, full.logz) and torch.equal(part.target_logprob, full.target_logprob)


# --------------------------------------------------------------------------------------
# dispatch and errors


def test_auto_says_once_why_it_runs_on_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the C++ kernel does not build, "auto" runs the reference and says so once: which
    backend it passed over, why, and what to install."""
    from dposhap.compose import registry
    from dposhap.errors import BackendFallbackWarning

    reason = "the cpp compose backend is built with ninja, which is not installed: `pip install ninja`"
    monkeypatch.setattr(_native, "cpu_problem", lambda: reason)
    monkeypatch.setattr(registry, "_TOLD", set())
    logits, ref, src, w, temp, _ = random_problem(4, 50, 3, 2, seed=4)
    with pytest.warns(BackendFallbackWarning) as told:
        auto = backends.compose(logits, ref, src, w, temp, outputs="logprobs")
    (message,) = [str(warning.message) for warning in told]
    assert '"torch" instead of the faster "cpp"' in message and message.endswith(reason)
    assert torch.equal(
        auto.logprobs, backends.compose(logits, ref, src, w, temp, outputs="logprobs", backend="torch").logprobs
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        backends.compose(logits, ref, src, w, temp, outputs="logprobs")  # told once per process
        backends.log_probs(
            torch.randn(2, 8), torch.randn(2, 1, 8), torch.tensor([0.5]), backend="auto"
        )  # the dense form too


def test_the_dense_form_says_its_fallback_too(monkeypatch: pytest.MonkeyPatch) -> None:
    from dposhap.compose import registry
    from dposhap.errors import BackendFallbackWarning

    monkeypatch.setattr(_native, "cpu_problem", lambda: "no C++ compiler: install g++")
    monkeypatch.setattr(registry, "_TOLD", set())
    with pytest.warns(BackendFallbackWarning, match='"cpp" backend: no C\\+\\+ compiler: install g\\+\\+$'):
        backends.log_probs(torch.randn(2, 8), torch.randn(2, 1, 8), torch.tensor([0.5]), backend="auto")


def test_auto_is_silent_where_the_fast_backend_runs_or_does_not_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    from dposhap.compose import registry

    monkeypatch.setattr(registry, "_TOLD", set())
    logits, ref, src, w, temp, _ = random_problem(4, 50, 3, 2, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        backends.compose(logits, ref, src, w, temp, outputs="logprobs")  # cpp runs here
        monkeypatch.setattr(_native, "cpu_problem", lambda: "no compiler")
        backends.compose(logits.double(), ref, src, w, temp, outputs="logprobs")  # float64: cpp does not apply


def test_auto_picks_cpp_on_cpu_and_torch_for_float64():
    logits, ref, src, w, temp, targets = random_problem(4, 50, 3, 2, seed=2)
    auto = backends.compose(logits, ref, src, w, temp, outputs=ALL_OUTPUTS, targets=targets)
    direct = cpp(logits, ref, src, w, temp, outputs=ALL_OUTPUTS, targets=targets)
    for name in ALL_OUTPUTS:
        assert torch.equal(getattr(auto, name), getattr(direct, name))
    auto64 = backends.compose(logits.double(), ref, src, w, temp, outputs="logprobs")
    assert auto64.logprobs.dtype == torch.float64
    with pytest.raises(InvalidArgumentError, match="float64"):
        cpp(logits.double(), ref, src, w, temp)
    with pytest.raises(InvalidArgumentError, match="unknown backend"):
        backends.compose(logits, ref, src, w, backend="cuda-ish")


def _base():
    logits = random_logits(4, 20, 0)
    return logits, torch.tensor([0, 1]), torch.tensor([[2, -1], [3, 1]]), torch.tensor([[1.0, 0.0], [0.5, 0.5]])


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda a: a.update(logits=a["logits"][0]), "2-d"),
        (lambda a: a.update(logits=a["logits"].to(torch.int32)), "float32, float16 or bfloat16"),
        (lambda a: a.update(ref_index=torch.tensor([0, 4])), r"ref_index\[1\] = 4 is out of range"),
        (lambda a: a.update(ref_index=torch.tensor([0, 1], dtype=torch.int32)), "int64"),
        (lambda a: a.update(src_index=torch.tensor([[2, -2], [3, 1]])), r"src_index\[0, 1\] = -2"),
        (lambda a: a.update(src_index=torch.tensor([[2, -1]])), "rows but ref_index has M = 2"),
        (lambda a: a.update(src_weight=torch.ones(2, 3)), "one weight per member slot"),
        (lambda a: a.update(src_weight=torch.tensor([[INF, 0.0], [0.5, 0.5]])), r"src_weight\[0, 0\]"),
        (lambda a: a.update(temperature=0.0), "temperature of output row 0"),
        (lambda a: a.update(temperature=torch.tensor([1.0, -1.0])), "temperature of output row 1"),
        (lambda a: a.update(targets=torch.tensor([0, 20]), outputs="target_logprob"), r"targets\[1\] = 20"),
        (lambda a: a.update(outputs="target_logprob"), "needs targets"),
        (lambda a: a.update(outputs="sample", top_k=0), "top_k"),
        (lambda a: a.update(outputs="nope"), "unknown output"),
    ],
)
def test_argument_errors(mutate, match):
    logits, ref, src, w = _base()
    args = dict(logits=logits, ref_index=ref, src_index=src, src_weight=w, temperature=1.0, outputs="logprobs")
    mutate(args)
    with pytest.raises(InvalidArgumentError, match=match):
        backends.compose(backend="cpp", **args)


def test_nan_and_posinf_rows_are_named():
    logits, ref, src, w = _base()
    logits[3, 7] = float("nan")
    with pytest.raises(
        InvalidArgumentError, match=r"logits row 3 contains NaN or \+inf; it is member 0 .* output row 1"
    ):
        cpp(logits, ref, src, w)
    logits, ref, src, w = _base()
    logits[0, 2] = INF
    with pytest.raises(
        InvalidArgumentError, match=r"logits row 0 contains NaN or \+inf; it is the reference of output row 0"
    ):
        cpp(logits, ref, src, torch.tensor([[0.5, 0.0], [0.5, 0.5]]))
    assert issubclass(InvalidArgumentError, DposhapError)


def test_all_masked_row_is_named():
    logits, ref, src, w = _base()
    logits[3, :10] = -INF
    logits[1, 10:] = -INF
    with pytest.raises(InvalidArgumentError, match="output row 1: the combined logits are -inf for every token"):
        cpp(logits, ref, src, w, outputs="logz")


def test_native_sources_ship_in_the_package():
    for name in (
        "compose_cpu.cpp",
        "compose_cpu_dense.cpp",
        "compose_cpu_binding.cpp",
        "compose_cpu.h",
        "compose_cpu_math.h",
        "compose_noise.h",
    ):
        assert (_native.csrc_dir() / name).is_file(), name
    assert _native.csrc_dir().parent.name == "dposhap"
    assert torch.ops.dposhap.compose_gather is not None
    assert torch.ops.dposhap.compose_dense is not None


@pytest.mark.parametrize("scale", [0.01, 3.0, 30.0])
def test_sample_both_screening_paths(scale):
    # tiny spread: most tokens pass the bound and the vectorised screen decides who is scored
    # exactly; wide spread: the bound alone leaves a handful of tokens
    logits, ref, src, w, temp, _ = random_problem(12, 2500, 300, 2, seed=int(scale * 100), scale=scale)
    for top_k in (None, 40):
        got = cpp(logits, ref, src, w, temp, outputs="sample", seed=77, step=3, top_k=top_k)
        want = R.compose(logits, ref, src, w, temp, outputs="sample", seed=77, step=3, top_k=top_k)
        assert torch.equal(got.sample, want.sample)


def test_the_cpp_op_passes_opcheck():
    """Schema, fake implementation (shapes and dtypes of the real outputs) and AOT dispatch of
    the native op's CPU kernel, every output asked for."""
    problem = random_problem(4, 300, 3, 2, seed=3)
    stream, step = torch.arange(3), torch.zeros(3, dtype=torch.int64)
    result = torch.library.opcheck(
        torch.ops.dposhap.compose_gather.default, (*problem, stream, step, 7, 4, *[True] * 5)
    )
    assert set(result.values()) == {"SUCCESS"}, result


def test_the_dispatcher_runs_the_cpp_op_under_torch_compile():
    """The whole dispatch traces into one graph around the op (the extension is loaded)."""
    logits, ref, src, w, temp, targets = random_problem(4, 300, 3, 2, seed=6)

    def run(logits, ref, src, w):
        out = backends.compose(
            logits,
            ref,
            src,
            w,
            0.8,
            outputs=("sample", "target_logprob"),
            targets=targets,
            top_k=4,
            seed=3,
            backend="cpp",
        )
        return out.sample, out.target_logprob

    got = torch.compile(run, fullgraph=True, backend="aot_eager")(logits, ref, src, w)
    want = run(logits, ref, src, w)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    slow = R.compose(logits, ref, src, w, 0.8, outputs="sample", top_k=4, seed=3)
    assert torch.equal(got[0], slow.sample)


def test_missing_compiler_is_a_clear_dposhap_error():
    import os
    import subprocess
    import sys

    code = (
        "from dposhap.compose import _native\n"
        "from dposhap.errors import DposhapError\n"
        "try:\n    _native.load_cpu()\nexcept DposhapError as e:\n    print('ERR', e)\n"
    )
    env = dict(os.environ, CXX="/nonexistent/c++")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "ERR" in res.stdout and "C++ compiler" in res.stdout, res.stdout + res.stderr


def test_the_dense_form_runs_on_the_fast_backends() -> None:
    """``log_probs`` (dense [R, V] + [R, n, V]) through the gather kernels equals the reference."""
    g = torch.Generator().manual_seed(5)
    ref = torch.randn(4, 300, generator=g)
    sources = torch.randn(4, 3, 300, generator=g)
    weights = torch.tensor([1.0, 0.5, 0.0])
    slow = R.log_probs(ref, sources, weights, temperature=0.7, compute_dtype=torch.float64)
    for backend in ("cpp", "triton", "auto"):
        fast = backends.log_probs(ref, sources, weights, temperature=0.7, backend=backend)
        torch.testing.assert_close(fast.double(), slow, atol=2e-5, rtol=2e-5, msg=backend)

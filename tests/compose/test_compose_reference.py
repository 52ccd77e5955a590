"""The plain-torch compose reference: algebra, outputs, sampling, noise, shared and hidden forms, errors.

Every fast backend is later tested against this reference, so these tests pin down what it
computes: against an independent per-row numpy loop, against closed-form identities, and
against golden values of the noise generator.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from dposhap.compose import backends, noise
from dposhap.compose import reference as C  # the reference itself, not the dispatcher
from dposhap.errors import InvalidArgumentError

INF = math.inf
ALL_OUTPUTS = ("logprobs", "logz", "correction", "target_logprob", "sample")

#: float32 computation against float64 computation on the same inputs (what a backend
#: computing in float32 is held to), per input dtype; logits of magnitude ~3.
COMPUTE_TOLERANCE = {
    torch.float32: dict(atol=1e-5, rtol=1e-6),
    torch.bfloat16: dict(atol=1e-5, rtol=1e-6),
    torch.float16: dict(atol=1e-5, rtol=1e-6),
}
#: Inputs rounded to the dtype, against float64 on the unrounded inputs (the price of the dtype).
INPUT_ROUNDING_TOLERANCE = {
    torch.float32: dict(atol=1e-5, rtol=0.0),
    torch.bfloat16: dict(atol=6e-2, rtol=0.0),
    torch.float16: dict(atol=1e-2, rtol=0.0),
}


def idx(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.int64)


def fvec(*rows, dtype=torch.float64) -> torch.Tensor:
    return torch.tensor(rows, dtype=dtype)


def random_logits(t: int, v: int, seed: int, dtype=torch.float64, scale: float = 3.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(t, v, generator=gen, dtype=torch.float64) * scale).to(dtype)


def combined(logits, ref, src, w, temperature=1.0, **kw) -> torch.Tensor:
    """The combined (temperature-scaled) logits c, recovered as logprobs + logz."""
    out = C.compose(logits, ref, src, w, temperature, outputs=("logprobs", "logz"), **kw)
    return out.logprobs + out.logz[:, None]


def naive_c(logits: np.ndarray, ref, src, w, temperature) -> np.ndarray:
    """An independent per-row, per-slot loop with the masking convention, in float64."""
    rows = []
    for m in range(len(ref)):
        members = [(int(s), float(x)) for s, x in zip(src[m], w[m], strict=True) if s >= 0]
        slots = [(int(ref[m]), 1.0 - sum(x for _, x in members))] + members
        c = np.zeros(logits.shape[1])
        masked = np.zeros(logits.shape[1], dtype=bool)
        for row, coef in slots:
            if coef == 0:
                continue
            lrow = logits[row]
            masked |= np.isneginf(lrow)
            c += coef * np.where(np.isneginf(lrow), 0.0, lrow)
        c[masked] = -np.inf
        rows.append(c / float(temperature[m]))
    return np.array(rows).reshape(len(ref), logits.shape[1])


def np_logsumexp(c: np.ndarray) -> np.ndarray:
    top = c.max(axis=1, keepdims=True)
    return (top + np.log(np.exp(c - top).sum(axis=1, keepdims=True)))[:, 0]


# --------------------------------------------------------------------------------------
# the algebra


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_empty_coalition_is_the_reference(dtype) -> None:
    logits = random_logits(4, 13, seed=1, dtype=dtype)
    logits[2, 5] = -INF
    ref = idx(2, 2, 0)
    src = idx([-1, -1], [-1, -1], [-1, -1])
    weight = fvec([0.0, 0.0], [0.7, -3.0], [1.0, 1.0])  # padding weights are ignored
    out = C.compose(logits, ref, src, weight, outputs=ALL_OUTPUTS[:4], targets=idx(5, 0, 1))
    cd = torch.float64 if dtype == torch.float64 else torch.float32
    expect = torch.log_softmax(logits[ref].to(cd), dim=1)
    torch.testing.assert_close(out.logprobs, expect, rtol=0, atol=0)
    torch.testing.assert_close(out.logz, torch.logsumexp(logits[ref].to(cd), dim=1), rtol=0, atol=0)
    assert out.correction.eq(0).all()
    assert out.target_logprob[0] == -INF
    # J = 0 columns at all
    empty = C.compose(logits, ref, torch.empty(3, 0, dtype=torch.int64), torch.empty(3, 0, dtype=cd))
    torch.testing.assert_close(empty.logprobs, expect, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_singleton_of_weight_one_is_the_source_exactly(dtype) -> None:
    logits = random_logits(3, 17, seed=2, dtype=dtype, scale=1e3)
    logits[0, 3] = -INF  # masked in the reference only: the source alone does not see it
    logits[0, 4] = math.nan  # the reference is not read at all when its coefficient is 0
    logits[1, 6] = -INF
    out = C.compose(logits, idx(0, 2), idx([1, -1], [-1, 1]), fvec([1.0, 5.0], [0.0, 1.0]), outputs=ALL_OUTPUTS[:3])
    expect = torch.log_softmax(logits[[1, 1]], dim=1)
    torch.testing.assert_close(out.logprobs, expect, rtol=0, atol=0)
    torch.testing.assert_close(out.logz, torch.logsumexp(logits[[1, 1]], dim=1), rtol=0, atol=0)
    assert out.correction.eq(0).all() and out.logprobs[:, 6].eq(-INF).all() and out.logprobs[:, 3].isfinite().all()


def test_member_order_does_not_change_a_bit() -> None:
    logits = random_logits(6, 29, seed=3, dtype=torch.float32)
    logits[4, 7] = -INF
    src = idx([1, 2, 3, -1, 4], [5, -1, 1, 1, 2])
    weight = fvec([0.3, -0.7, 1.1, 9.0, 0.1], [0.25, 2.0, 0.5, 0.125, 1 / 3], dtype=torch.float32)
    kwargs = dict(outputs=ALL_OUTPUTS, targets=idx(7, 3), stream_id=idx(11, 11), step=4)
    base = C.compose(logits, idx(0, 0), src, weight, 0.8, **kwargs)
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        perm = torch.stack([torch.randperm(5, generator=gen) for _ in range(2)])
        out = C.compose(logits, idx(0, 0), src.gather(1, perm), weight.gather(1, perm), 0.8, **kwargs)
        for name in ALL_OUTPUTS:
            torch.testing.assert_close(getattr(out, name), getattr(base, name), rtol=0, atol=0)


def test_linear_in_the_weights_before_the_softmax() -> None:
    logits = random_logits(5, 23, seed=4)
    ref, src = idx(0, 1), idx([2, 3, 4], [0, 2, 4])
    w1 = fvec([0.5, -1.0, 2.0], [1.0, 0.25, 0.0])
    w2 = fvec([1.5, 0.3, -0.6], [-0.2, 0.75, 3.0])
    zero = torch.zeros_like(w1)
    lhs = combined(logits, ref, src, w1 + w2) + combined(logits, ref, src, zero)
    rhs = combined(logits, ref, src, w1) + combined(logits, ref, src, w2)
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-11)
    # and scaling: c(a w) - c(0) = a (c(w) - c(0))
    torch.testing.assert_close(
        combined(logits, ref, src, 2.5 * w1) - combined(logits, ref, src, zero),
        2.5 * (combined(logits, ref, src, w1) - combined(logits, ref, src, zero)),
        rtol=1e-12,
        atol=1e-11,
    )


def test_temperature_divides_the_combined_logits() -> None:
    logits = random_logits(3, 19, seed=5)
    ref, src, w = idx(0, 0, 1), idx([1, 2], [2, -1], [0, 2]), fvec([0.5, 0.5], [2.0, 0.0], [1.0, -1.0])
    temperature = fvec(0.5, 1.0, 3.0)
    at_one = combined(logits, ref, src, w)
    torch.testing.assert_close(
        combined(logits, ref, src, w, temperature), at_one / temperature[:, None], rtol=1e-13, atol=1e-13
    )
    torch.testing.assert_close(combined(logits, ref, src, w, 0.5), at_one / 0.5, rtol=1e-13, atol=1e-13)
    hot = C.compose(logits, ref, src, w, 3.0).logprobs
    torch.testing.assert_close(hot, torch.log_softmax(at_one / 3.0, dim=1), rtol=1e-12, atol=1e-12)


def test_masked_tokens_with_negative_coefficients() -> None:
    # reference coefficient 1 - 2 = -1: a naive product would turn the reference's -inf into +inf
    logits = fvec([0.0, -INF, 1.0, -INF, 2.0], [1.0, 2.0, -INF, -INF, 0.5], [0.5, 0.5, 0.5, -INF, 0.5])
    out = C.compose(logits, idx(0), idx([1, 2]), fvec([1.0, 1.0]), outputs=("logprobs", "correction"))
    c = combined(logits, idx(0), idx([1, 2]), fvec([1.0, 1.0]))
    assert torch.isneginf(c[0, 1:4]).all(), "a token masked in any participating row is masked"
    torch.testing.assert_close(c[0, [0, 4]], fvec(1.0 + 0.5 - 0.0, 0.5 + 0.5 - 2.0), rtol=0, atol=1e-15)
    assert torch.isfinite(out.correction).all()
    assert math.isclose(float(torch.exp(out.logprobs).sum()), 1.0, rel_tol=1e-12)


def test_zero_weight_and_padding_rows_are_never_read() -> None:
    logits = random_logits(4, 9, seed=6)
    clean = C.compose(logits, idx(0), idx([1, -1]), fvec([0.5, 0.0]), outputs=ALL_OUTPUTS[:3])
    dirty_logits = logits.clone()
    dirty_logits[2] = math.nan
    dirty_logits[3] = -INF
    dirty = C.compose(dirty_logits, idx(0), idx([2, 1, -1, 3]), fvec([0.0, 0.5, 7.0, 0.0]), outputs=ALL_OUTPUTS[:3])
    for name in ALL_OUTPUTS[:3]:
        torch.testing.assert_close(getattr(dirty, name), getattr(clean, name), rtol=0, atol=0)


weights_grid = st.sampled_from([0.0, 1.0, 1.0, 0.5, -0.25, 1.75, -1.0, 0.125])  # dyadic: exact sums


@settings(max_examples=150)
@given(
    t=st.integers(1, 6),
    v=st.integers(1, 37),
    m=st.integers(0, 5),
    j=st.integers(0, 4),
    scale=st.sampled_from([1e-4, 1.0, 30.0, 1e4]),
    mask_rate=st.sampled_from([0.0, 0.3]),
    seed=st.integers(0, 2**31 - 1),
    data=st.data(),
)
def test_matches_an_independent_loop(t, v, m, j, scale, mask_rate, seed, data) -> None:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(t, v, generator=gen, dtype=torch.float64) * scale
    keep = seed % v  # one token no row masks, so no combined row is all -inf
    masked = torch.rand(t, v, generator=gen) < mask_rate
    masked[:, keep] = False
    logits[masked] = -INF
    ref = torch.randint(0, t, (m,), generator=gen)
    src = torch.randint(-1, t, (m, j), generator=gen)
    weight = torch.tensor(
        data.draw(st.lists(weights_grid, min_size=m * j, max_size=m * j)), dtype=torch.float64
    ).reshape(m, j)
    temperature = torch.rand(m, generator=gen, dtype=torch.float64) * 2 + 0.25
    targets = torch.randint(0, v, (m,), generator=gen)
    out = C.compose(logits, ref, src, weight, temperature, outputs=ALL_OUTPUTS, targets=targets)

    c = naive_c(logits.numpy(), ref.numpy(), src.numpy(), weight.numpy(), temperature.numpy())
    logz = np_logsumexp(c) if m else np.zeros(0)
    tol = dict(rtol=1e-12, atol=1e-12 * scale * 8)
    np.testing.assert_allclose(out.logz.numpy(), logz, **tol)
    lp = c - logz[:, None]
    assert np.array_equal(np.isneginf(out.logprobs.numpy()), np.isneginf(c)), "masks differ"
    finite = np.isfinite(lp)
    np.testing.assert_allclose(out.logprobs.numpy()[finite], lp[finite], **tol)
    np.testing.assert_allclose(np.exp(out.logprobs.numpy()).sum(axis=1), 1.0, rtol=1e-12)
    assert torch.equal(out.target_logprob, out.logprobs.gather(1, targets[:, None])[:, 0])
    assert out.sample.dtype == torch.int64 and out.sample.shape == (m,)
    if m:
        assert np.isfinite(c[np.arange(m), out.sample.numpy()]).all(), "a masked token was sampled"


# --------------------------------------------------------------------------------------
# dtypes


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_half_inputs_compute_in_float32(dtype) -> None:
    """A half-precision input gives exactly what its exact float32 upcast gives."""
    logits = random_logits(5, 31, seed=7, dtype=dtype)
    args = (idx(0, 1), idx([2, 3], [4, -1]), fvec([0.5, 1.0], [1.0, 0.0], dtype=torch.float32))
    half = C.compose(logits, *args, 0.7, outputs=ALL_OUTPUTS, targets=idx(3, 4))
    upcast = C.compose(logits.float(), *args, 0.7, outputs=ALL_OUTPUTS, targets=idx(3, 4))
    assert half.logprobs.dtype == torch.float32
    for name in ALL_OUTPUTS:
        torch.testing.assert_close(getattr(half, name), getattr(upcast, name), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", list(COMPUTE_TOLERANCE))
def test_float32_against_float64(dtype) -> None:
    logits = random_logits(8, 257, seed=8, dtype=dtype)
    logits[3, :40] = -INF
    ref, src = idx(0, 1, 2, 3), idx([4, 5, 6], [7, -1, 3], [1, -1, -1], [0, 4, 5])
    weight = fvec([1.0, 1.0, 1.0], [0.5, 0.0, -0.5], [1.0, 0.0, 0.0], [0.3, 0.9, 1.2])
    outs = ("logprobs", "logz", "correction", "target_logprob")
    lo = C.compose(logits, ref, src, weight, 0.9, outputs=outs, targets=idx(1, 2, 3, 50))
    hi = C.compose(logits, ref, src, weight, 0.9, outputs=outs, targets=idx(1, 2, 3, 50), compute_dtype=torch.float64)
    assert lo.logprobs.dtype == torch.float32 and hi.logprobs.dtype == torch.float64
    for name in outs:
        torch.testing.assert_close(getattr(lo, name).double(), getattr(hi, name), **COMPUTE_TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", list(INPUT_ROUNDING_TOLERANCE))
def test_input_rounding_tolerance(dtype) -> None:
    exact = random_logits(8, 257, seed=9)
    ref, src, weight = idx(0, 1, 2), idx([3, 4], [5, 6], [7, -1]), fvec([1.0, 1.0], [0.5, 0.25], [1.0, 0.0])
    rounded = C.compose(exact.to(dtype), ref, src, weight, outputs=("logprobs", "logz"))
    truth = C.compose(exact, ref, src, weight, outputs=("logprobs", "logz"))
    for name in ("logprobs", "logz"):
        torch.testing.assert_close(
            getattr(rounded, name).double(), getattr(truth, name), **INPUT_ROUNDING_TOLERANCE[dtype]
        )


# --------------------------------------------------------------------------------------
# outputs


def test_outputs_are_consistent() -> None:
    logits = random_logits(6, 40, seed=10)
    logits[1, 3] = -INF
    ref, src, weight = (
        idx(0, 1, 2),
        idx([3, 4, 5], [0, 2, -1], [-1, -1, -1]),
        fvec([0.5, 1.0, -0.5], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]),
    )
    targets = idx(7, 3, 0)
    out = C.compose(logits, ref, src, weight, fvec(1.0, 0.5, 2.0), outputs=["logz", "target_logprob"], targets=targets)
    assert out.logprobs is None and out.sample is None and out.correction is None
    full = C.compose(logits, ref, src, weight, fvec(1.0, 0.5, 2.0), outputs="logprobs").logprobs
    c = torch.from_numpy(naive_c(logits.numpy(), ref.numpy(), src.numpy(), weight.numpy(), [1.0, 0.5, 2.0]))
    torch.testing.assert_close(out.logz, torch.logsumexp(c, dim=1), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(full, c - out.logz[:, None], rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(out.target_logprob, full[torch.arange(3), targets], rtol=0, atol=0)
    assert out.target_logprob[1] == -INF  # the target is masked in the reference of row 1


def direct_correction(logits: torch.Tensor, ref: int, members: list[tuple[int, float]]) -> float:
    lp = torch.log_softmax(logits, dim=1)
    total = lp[ref] + sum(w * (lp[s] - lp[ref]) for s, w in members)
    return float(torch.logsumexp(total, dim=0))


def test_correction_against_its_definition() -> None:
    logits = random_logits(5, 50, seed=11)
    cases = [
        (0, [(1, 1.0), (2, 1.0)]),
        (0, [(1, 1.0), (2, 1.0), (3, 1.0)]),
        (4, [(1, 0.5), (3, -0.25), (2, 1.5)]),
        (2, [(1, 0.5)]),  # J = 1 but w != 1: not zero
    ]
    j = max(len(mem) for _, mem in cases)
    src = idx(*[[s for s, _ in mem] + [-1] * (j - len(mem)) for _, mem in cases])
    weight = fvec(*[[w for _, w in mem] + [0.0] * (j - len(mem)) for _, mem in cases])
    # the temperature does not enter the correction
    out = C.compose(logits, idx(*[r for r, _ in cases]), src, weight, 0.3, outputs="correction")
    expect = fvec(*[direct_correction(logits, r, mem) for r, mem in cases])
    torch.testing.assert_close(out.correction, expect, rtol=1e-12, atol=1e-12)
    assert (out.correction.abs() > 1e-3).all(), "a combination of >= 2 distributions is not normalised"
    # and 0, exactly, for the reference or one source of weight 1
    single = C.compose(logits, idx(0, 0, 3), idx([-1], [2], [0]), fvec([0.0], [1.0], [1.0]), outputs="correction")
    assert single.correction.eq(0).all()


# --------------------------------------------------------------------------------------
# sampling

CHI2_7DOF_P001 = 24.32  # P(chi2 with 7 degrees of freedom > 24.32) = 0.001


def chi_square(tokens: torch.Tensor, probs: torch.Tensor) -> float:
    counts = torch.bincount(tokens, minlength=len(probs)).double()
    expected = probs.double() * len(tokens)
    return float(((counts - expected) ** 2 / expected).sum())


@pytest.mark.parametrize("vary", ["step", "stream"])
def test_sample_frequencies_match_the_softmax(vary) -> None:
    draws = 20_000
    logits = fvec([0.3, -1.2, 2.0, 0.0, 1.1, -0.4, 0.9, -2.5], [1.0, 0.0, -1.0, 0.5, 2.5, -0.5, 0.0, 1.5])
    ref, src, weight = idx(0), idx([1]), fvec([0.6])
    probs = C.compose(logits, ref, src, weight, 1.3).logprobs.exp()[0]
    rows = torch.zeros(draws, dtype=torch.int64)
    kw = (
        dict(stream_id=torch.zeros(draws, dtype=torch.int64) + 5, step=torch.arange(draws))
        if vary == "step"
        else dict(stream_id=torch.arange(draws), step=3)
    )
    out = C.compose(logits, rows, src.expand(draws, 1), weight.expand(draws, 1), 1.3, outputs="sample", seed=17, **kw)
    stat = chi_square(out.sample, probs)
    assert stat < CHI2_7DOF_P001, f"chi-square {stat:.1f}"
    tv = 0.5 * float((torch.bincount(out.sample, minlength=8).double() / draws - probs).abs().sum())
    assert tv < 0.02


def test_top_k_restricts_and_renormalises() -> None:
    draws, k = 20_000, 3
    logits = fvec([0.3, -1.2, 2.0, 0.0, 1.1, -0.4, 0.9, -2.5])
    rows = torch.zeros(draws, dtype=torch.int64)
    out = C.compose(
        logits, rows, torch.empty(draws, 0, dtype=torch.int64), torch.empty(draws, 0), outputs="sample", top_k=k, seed=3
    )
    allowed = torch.tensor([2, 4, 6])
    assert torch.isin(out.sample, allowed).all()
    probs = torch.zeros(8, dtype=torch.float64)
    probs[allowed] = torch.softmax(logits[0, allowed], dim=0)
    counts = torch.bincount(out.sample, minlength=8).double()[allowed]
    stat = float(((counts - probs[allowed] * draws) ** 2 / (probs[allowed] * draws)).sum())
    assert stat < 13.82  # chi-square, 2 degrees of freedom, p = 0.001


def test_top_k_ties_go_to_the_lowest_index() -> None:
    logits = fvec([0.0, 5.0, 1.0, 5.0, 5.0, 5.0])
    n = 500
    args = (torch.zeros(n, dtype=torch.int64), torch.empty(n, 0, dtype=torch.int64), torch.empty(n, 0))
    greedy = C.compose(logits, *args, outputs="sample", top_k=1).sample
    assert greedy.eq(1).all()
    two = C.compose(logits, *args, outputs="sample", top_k=2).sample
    assert set(two.tolist()) == {1, 3}
    wide = C.compose(logits, *args, outputs="sample", top_k=100).sample
    assert set(wide.tolist()) >= {1, 3, 4, 5}


def test_sample_is_gumbel_max_with_the_generator() -> None:
    logits = random_logits(4, 64, seed=12, dtype=torch.float32)
    ref, src, weight = idx(0, 1, 2), idx([1, 3], [2, -1], [0, 3]), fvec([0.5, 0.5], [1.0, 0.0], [2.0, -1.0])
    stream, temperature = idx(9, 4, 9), 0.7
    out = C.compose(logits, ref, src, weight, temperature, outputs="sample", seed=2**40 + 1, stream_id=stream, step=12)
    c = combined(logits, ref, src, weight, temperature)
    g = noise.gumbel(2**40 + 1, stream, 12, 64)
    assert torch.equal(out.sample, torch.argmax(c + g, dim=1))


def test_common_random_numbers() -> None:
    steps = 2000
    logits = random_logits(3, 8, seed=13, dtype=torch.float32, scale=1.0)
    # per step: A = reference 0; B = reference 0 + source 1 at weight 0 (same c);
    # D = source 0 alone via reference 1 (same c); E = a nearby coalition, same stream;
    # F = the nearby coalition on another stream
    ref = idx(0, 0, 1, 0, 0)
    src = idx([-1], [1], [0], [1], [1])
    weight = fvec([0.0], [0.0], [1.0], [0.2], [0.2], dtype=torch.float32)
    n = len(ref)
    out = C.compose(
        logits,
        ref.repeat(steps),
        src.repeat(steps, 1),
        weight.repeat(steps, 1),
        outputs="sample",
        seed=99,
        stream_id=idx(7, 7, 7, 7, 8).repeat(steps),
        step=torch.arange(steps).repeat_interleave(n),
    ).sample.view(steps, n)
    a, b, d, e, f = out.unbind(1)
    assert torch.equal(a, b) and torch.equal(a, d), "same stream, same c: same token at every step"
    p, q = C.compose(logits, ref[[0, 3]], src[[0, 3]], weight[[0, 3]]).logprobs.double().exp()
    # Gumbel-max coupling: P(X = Y = i) = 1 / sum_j max(p_j / p_i, q_j / q_i)
    coupled = float((1 / torch.maximum(p[None, :] / p[:, None], q[None, :] / q[:, None]).sum(dim=1)).sum())
    independent = float((p * q).sum())
    same_stream = float((a == e).double().mean())
    other_stream = float((a == f).double().mean())
    assert coupled > independent + 0.5
    assert abs(same_stream - coupled) < 0.04, (same_stream, coupled)
    assert abs(other_stream - independent) < 0.04, (other_stream, independent)
    assert not torch.equal(a, f)


# --------------------------------------------------------------------------------------
# the noise generator

GOLDEN = [  # (seed, stream, step, token) -> (hash32, uniform); computed once, never to change
    ((0, 0, 0, 0), 4244121360, 0.9881615042686462),
    ((0, 0, 0, 1), 3837415617, 0.8934679627418518),
    ((0, 1, 0, 0), 2703411514, 0.6294370293617249),
    ((1, 0, 0, 0), 915392193, 0.2131313681602478),
    ((2**64 - 1, 2**40 + 7, 123456, 128255), 3130977119, 0.7289873957633972),
]


def test_generator_golden_values() -> None:
    assert noise.mix32_scalar(0) == 0 and noise.mix32_scalar(1) == 1753845952  # lowbias32 itself
    for (seed, stream, step, token), bits, u in GOLDEN:
        assert noise.hash32_scalar(seed, stream, step, token) == bits
        assert noise.uniform_scalar(seed, stream, step, token) == u
        vec = noise.uniform(
            seed, idx(stream - 2**64 if stream >= 2**63 else stream), step, idx(token), dtype=torch.float64
        )
        assert float(vec[0, 0]) == u


def test_vectorised_generator_equals_the_scalar_one() -> None:
    streams = idx(0, 1, 2, 2**33 + 5, -1)
    tokens = idx(0, 1, 2, 3, 255, 256, 65535, 65536, 2**31 - 1)
    for seed in (0, 1, 2**32, 2**64 - 1):
        for step in (0, 1, 2**32 + 1):
            bits = noise.hash32(seed, streams, step, tokens)
            for i, s in enumerate(streams.tolist()):
                for j, t in enumerate(tokens.tolist()):
                    assert int(bits[i, j]) == noise.hash32_scalar(seed, s, step, t)
    # per-row steps
    per_row = noise.hash32(5, streams, idx(0, 1, 2, 3, 4), tokens)
    for i, s in enumerate(streams.tolist()):
        assert int(per_row[i, 3]) == noise.hash32_scalar(5, s, i, 3)


def test_uniform_is_exact_in_float32_and_never_0_or_1() -> None:
    u32 = noise.uniform(0, torch.arange(4), 0, 1 << 16, dtype=torch.float32)
    u64 = noise.uniform(0, torch.arange(4), 0, 1 << 16, dtype=torch.float64)
    assert torch.equal(u32.double(), u64)
    assert float(u32.min()) > 0 and float(u32.max()) < 1
    assert torch.isfinite(noise.gumbel(0, torch.arange(4), 0, 1 << 16)).all()
    # the extreme values map inside (0, 1) in float32
    assert np.float32(((2**23 - 1) + 0.5) * 2**-23) < 1 and np.float32(0.5 * 2**-23) > 0


def test_noise_is_uniform_and_uncorrelated() -> None:
    v = 1 << 15
    u = noise.uniform(1234, idx(0, 1, 0, 0), idx(0, 0, 1, 0), v, dtype=torch.float64).numpy()
    other_seed = noise.uniform(1235, idx(0), 0, v, dtype=torch.float64).numpy()[0]
    for row in u:
        assert abs(row.mean() - 0.5) < 0.01 and abs(row.var() - 1 / 12) < 0.005
        hist = np.histogram(row, bins=16, range=(0, 1))[0]
        assert ((hist - v / 16) ** 2 / (v / 16)).sum() < 37.7  # chi-square 15 dof, p = 0.001
        assert abs(np.corrcoef(row[:-1], row[1:])[0, 1]) < 0.03  # neighbouring tokens
    for x, y in [(u[0], u[1]), (u[0], u[2]), (u[0], other_seed)]:  # streams, steps, seeds
        assert abs(np.corrcoef(x, y)[0, 1]) < 0.03
        assert (x == y).mean() < 0.01
    assert np.array_equal(u[0], u[3]), "the same tuple gives the same noise"
    # every bit of the hash is balanced
    bits = noise.hash32(7, torch.arange(8), 0, 4096).numpy()
    ones = np.array([((bits >> k) & 1).mean() for k in range(32)])
    assert np.all(np.abs(ones - 0.5) < 0.02)


# --------------------------------------------------------------------------------------
# the shared-source form


def shared_case(seed: int, n_pos: int = 7, n_src: int = 3, vocab: int = 11):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n_pos, n_src + 1, vocab, generator=gen, dtype=torch.float64) * 2
    logits[2, :, 4] = -INF  # masked for everyone at position 2
    logits[5, 1, 0] = -INF  # masked by source 1 only
    weights = torch.tensor([[0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1], [0.5, 0, 1.5], [0, 1, 0]], dtype=torch.float64)
    targets = torch.randint(0, vocab, (n_pos,), generator=gen)
    targets[5] = 0
    return logits, weights, targets


@pytest.mark.parametrize("block_v", [1, 3, 4, 11, 4096])
def test_shared_scores_equal_the_gather_form(block_v) -> None:
    logits, weights, targets = shared_case(14)
    n_pos, n_models, vocab = logits.shape
    k = len(weights)
    coef = C.coalition_coefficients(weights)
    logz, target_lp = C.shared_scores(logits, coef, targets, block_v=block_v)
    assert logz.shape == (k, n_pos) and target_lp.shape == (k, n_pos)
    # the same K x N rows in the gather form, over the flattened [N * (n + 1), V] logits
    flat = logits.reshape(n_pos * n_models, vocab)
    pos = torch.arange(n_pos).repeat(k)
    ref = pos * n_models
    src = ref[:, None] + 1 + torch.arange(n_models - 1)[None, :]
    w = weights.repeat_interleave(n_pos, dim=0)
    out = C.compose(flat, ref, src, w, outputs=("logz", "target_logprob"), targets=targets[pos])
    torch.testing.assert_close(logz, out.logz.view(k, n_pos), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(target_lp, out.target_logprob.view(k, n_pos), rtol=1e-13, atol=1e-13)
    # source 1 masks token 0 at position 5 for the coalitions it is in, and only for those
    assert target_lp[[1, 2, 3, 4], 5].eq(-INF).all() and target_lp[[0, 5], 5].isfinite().all()


@settings(max_examples=60)
@given(
    n_pos=st.integers(1, 5),
    n_src=st.integers(0, 3),
    vocab=st.integers(1, 40),
    k=st.integers(1, 6),
    block_v=st.integers(1, 50),
    scale=st.sampled_from([1e-3, 1.0, 1e4]),
    mask_rate=st.sampled_from([0.0, 0.3]),
    seed=st.integers(0, 2**31 - 1),
    data=st.data(),
)
def test_shared_scores_against_the_full_product(n_pos, n_src, vocab, k, block_v, scale, mask_rate, seed, data) -> None:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n_pos, n_src + 1, vocab, generator=gen, dtype=torch.float64) * scale
    masked = torch.rand(n_pos, n_src + 1, vocab, generator=gen) < mask_rate
    masked[:, :, seed % vocab] = False
    logits[masked] = -INF
    weights = torch.tensor(
        data.draw(st.lists(weights_grid, min_size=k * n_src, max_size=k * n_src)), dtype=torch.float64
    )
    coef = C.coalition_coefficients(weights.reshape(k, n_src))
    targets = torch.randint(0, vocab, (n_pos,), generator=gen)
    logz, target_lp = C.shared_scores(logits, coef, targets, block_v=block_v)
    # the [K, N, V] product, built here on purpose, with the masking convention
    uses = coef != 0
    full = torch.einsum("ka,nav->knv", coef, logits.nan_to_num(neginf=0.0))
    full[torch.einsum("ka,nav->knv", uses.double(), masked.double()) > 0] = -INF
    want_logz = torch.logsumexp(full, dim=2)
    torch.testing.assert_close(logz, want_logz, rtol=1e-12, atol=1e-12 * scale * 8)
    want_target = full.gather(2, targets[None, :, None].expand(k, n_pos, 1))[..., 0] - want_logz
    torch.testing.assert_close(target_lp, want_target, rtol=1e-12, atol=1e-12 * scale * 8)


def test_shared_scores_never_build_k_by_n_by_v() -> None:
    class LargestTensor(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            result = func(*args, **(kwargs or {}))
            for r in result if isinstance(result, (tuple, list)) else [result]:
                if isinstance(r, torch.Tensor):
                    self.largest = max(self.largest, r.numel())
            return r if not isinstance(result, (tuple, list)) else result

    gen = torch.Generator().manual_seed(15)
    n_pos, n_models, vocab, k, block_v = 6, 3, 500, 40, 16
    logits = torch.randn(n_pos, n_models, vocab, generator=gen)
    coef = C.coalition_coefficients(torch.rand(k, n_models - 1, generator=gen))
    targets = torch.randint(0, vocab, (n_pos,), generator=gen)
    with LargestTensor() as mode:
        logz, _ = C.shared_scores(logits, coef, targets, block_v=block_v)
    assert mode.largest <= k * n_pos * block_v < k * n_pos * vocab
    full = torch.logsumexp(torch.einsum("ka,nav->knv", coef, logits), dim=2)
    torch.testing.assert_close(logz, full, rtol=1e-5, atol=1e-5)


def test_shared_scores_skip_unused_models() -> None:
    logits, weights, targets = shared_case(16)
    logits[:, 3] = math.nan  # source 3 is in no coalition below
    coef = C.coalition_coefficients(weights[:, :2])
    clean = C.shared_scores(shared_case(16)[0][:, :3], coef, targets, block_v=3)
    coef = torch.cat([coef, torch.zeros(len(coef), 1, dtype=coef.dtype)], dim=1)
    for got, want in zip(C.shared_scores(logits, coef, targets, block_v=3), clean, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-14)


def test_coalition_coefficients() -> None:
    coef = C.coalition_coefficients(torch.tensor([[True, False, True], [False, False, False]]))
    assert coef.tolist() == [[-1.0, 1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0]]
    w = torch.rand(5, 4, dtype=torch.float64)
    coef = C.coalition_coefficients(w)
    assert coef.dtype == torch.float64 and torch.allclose(coef.sum(dim=1), torch.ones(5, dtype=torch.float64))


# --------------------------------------------------------------------------------------
# the hidden-state fast path and the dense form


@pytest.mark.parametrize("bias", [False, True])
def test_hidden_states_through_a_shared_linear_head(bias) -> None:
    torch.manual_seed(17)
    d, vocab = 16, 33
    head = torch.nn.Linear(d, vocab, bias=bias, dtype=torch.float64)
    if bias:
        torch.nn.init.normal_(head.bias, std=3.0)
    hidden = torch.randn(6, d, dtype=torch.float64)
    ref, src = idx(0, 1, 2, 5), idx([3, 4, -1], [2, 3, 4], [-1, -1, -1], [0, -1, -1])
    weight = fvec([1.0, 1.0, 0.0], [0.5, -0.75, 2.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0])
    with torch.no_grad():
        want = C.compose(head(hidden), ref, src, weight, 0.8, outputs=("logprobs", "logz"))
        mixed = C.compose_hidden(hidden, ref, src, weight)
        got = head(mixed)
    assert mixed.shape == (4, d) and mixed.dtype == torch.float64
    torch.testing.assert_close(torch.log_softmax(got / 0.8, dim=1), want.logprobs, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torch.logsumexp(got / 0.8, dim=1), want.logz, rtol=1e-12, atol=1e-12)
    assert torch.equal(mixed[3], hidden[0]) and torch.equal(mixed[2], hidden[2])


def test_hidden_states_keep_their_dtype() -> None:
    hidden = torch.randn(3, 8).to(torch.bfloat16)
    out = C.compose_hidden(hidden, idx(0), idx([1, 2]), fvec([0.5, 0.5], dtype=torch.float32))
    assert out.dtype == torch.bfloat16
    want = (0.5 * hidden[1].float() + 0.5 * hidden[2].float()).to(torch.bfloat16)
    assert torch.equal(out[0], want)


def test_dense_form_equals_the_gather_form() -> None:
    gen = torch.Generator().manual_seed(18)
    ref = torch.randn(4, 21, generator=gen)
    sources = torch.randn(4, 3, 21, generator=gen)
    weights = torch.tensor([[1.0, 0.0, 1.0], [0.5, 0.5, 0.0], [0.0, 0.0, 0.0], [2.0, -1.0, 1.0]])
    got = backends.log_probs(ref, sources, weights, temperature=0.9, backend="auto")
    for r in range(4):
        members = [j for j in range(3) if weights[r, j] != 0]
        c = ref[r] + sum((weights[r, j] * (sources[r, j] - ref[r]) for j in members), torch.zeros(21))
        torch.testing.assert_close(got[r], torch.log_softmax(c / 0.9, dim=0), rtol=1e-5, atol=1e-5)
    same = C.log_probs(ref, sources, torch.tensor([True, False, True]))
    torch.testing.assert_close(same, C.log_probs(ref, sources, torch.tensor([[1.0, 0.0, 1.0]] * 4)), rtol=0, atol=0)
    torch.testing.assert_close(
        C.log_probs(ref, sources[:, :0], torch.zeros(0)), torch.log_softmax(ref, dim=1), rtol=0, atol=0
    )


def test_importing_dposhap_does_not_import_torch() -> None:
    code = "import sys, dposhap; assert 'torch' not in sys.modules and 'dposhap.compose' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------------------
# errors

L = random_logits(4, 8, seed=19)
NAN_IN_ROW_2 = L.clone()
NAN_IN_ROW_2[2, 5] = math.nan
POS_INF = L.clone()
POS_INF[1, 0] = INF
HALF_MASKED = L.clone()
HALF_MASKED[0, :4] = -INF
HALF_MASKED[3, 4:] = -INF
I0, J1, W1 = idx(0, 1), idx([2], [3]), fvec([1.0], [0.5])


def call(**changes):
    kwargs = dict(logits=L, ref_index=I0, src_index=J1, src_weight=W1, temperature=1.0)
    extra = changes.pop("extra", {})
    kwargs.update(changes)
    return lambda: C.compose(**kwargs, **extra)


ERRORS = {
    "logits-1d": (call(logits=L[0]), r"logits must be 2-d \[T, V\]"),
    "logits-int": (call(logits=L.long()), r"logits must have dtype"),
    "empty-vocab": (call(logits=L[:, :0]), r"empty vocabulary"),
    "ref-int32": (call(ref_index=I0.int()), r"ref_index must be int64.*\.long\(\)"),
    "ref-out-of-range": (call(ref_index=idx(0, 9)), r"ref_index\[1\] = 9 is out of range.*4 rows"),
    "src-out-of-range": (call(src_index=idx([2], [-2])), r"src_index\[1, 0\] = -2 is out of range.*-1 for padding"),
    "src-rows": (call(src_index=idx([2])), r"src_index has 1 rows but ref_index has M = 2"),
    "weight-shape": (call(src_weight=fvec([1.0, 0.0], [1.0, 0.0])), r"src_weight has shape \(2, 2\)"),
    "weight-nan": (call(src_weight=fvec([1.0], [math.nan])), r"src_weight\[1, 0\] = nan is not finite"),
    "temperature-zero": (call(temperature=fvec(1.0, 0.0)), r"temperature of output row 1 is 0.0.*top_k=1"),
    "temperature-negative": (call(temperature=-1.0), r"temperature of output row 0 is -1.0"),
    "temperature-shape": (
        call(temperature=fvec(1.0, 1.0, 1.0)),
        r"temperature must be a float or a tensor \[M\] with M = 2",
    ),
    "nan": (call(logits=NAN_IN_ROW_2), r"logits row 2 contains NaN.*member 0 \(src_index\[0, 0\]\) of output row 0"),
    "pos-inf": (call(logits=POS_INF, src_index=idx([2], [1])), r"logits row 1 contains NaN or \+inf.*output row 1"),
    "all-masked": (
        call(logits=HALF_MASKED, ref_index=idx(0, 0), src_index=idx([2], [3])),
        r"output row 1: the combined logits are -inf for every token",
    ),
    "unknown-output": (call(extra=dict(outputs=("logits",))), r"unknown output.*'logits'"),
    "no-targets": (call(extra=dict(outputs="target_logprob")), r"needs targets"),
    "target-range": (
        call(extra=dict(outputs="target_logprob", targets=idx(8, 0))),
        r"targets\[0\] = 8 is out of range.*\[0, 8\)",
    ),
    "top-k": (call(extra=dict(outputs="sample", top_k=0)), r"top_k must be None or an int >= 1"),
    "stream-rows": (call(extra=dict(outputs="sample", stream_id=idx(1, 2, 3))), r"stream_id has 3 rows"),
    "seed-range": (call(extra=dict(outputs="sample", seed=2**64)), r"seed = .* does not fit in 64 bits"),
    "compute-dtype": (call(extra=dict(compute_dtype=torch.float16)), r"compute_dtype must be"),
    "device": (call(ref_index=I0.to("meta")), r"ref_index is on meta but the logits are on cpu"),
    "dense-backend": (
        lambda: backends.log_probs(L[:1], L[None, 1:3], torch.ones(2), backend="cuda"),
        r"the CUDA kernel needs CUDA tensors",
    ),
    "dense-unknown": (
        lambda: backends.log_probs(L[:1], L[None, 1:3], torch.ones(2), backend="jax"),
        r"unknown backend 'jax'",
    ),
    "dense-weights": (lambda: C.log_probs(L[:1], L[None, 1:3], torch.ones(3)), r"weights must be \[R, n\] = \[1, 2\]"),
    "dense-dtype": (
        lambda: C.log_probs(L[:1], L[None, 1:3].float(), torch.ones(2)),
        r"ref is torch.float64 but sources is torch.float32",
    ),
    "shared-coef": (
        lambda: C.shared_scores(L[:, None, :].expand(4, 2, 8), torch.ones(3, 3), idx(0, 0, 0, 0)),
        r"coef has 3 columns but logits has n \+ 1 = 2",
    ),
    "shared-nan": (
        lambda: C.shared_scores(torch.stack([L, NAN_IN_ROW_2], 1), torch.ones(1, 2), idx(0, 0, 0, 0), block_v=3),
        r"logits\[2, 1, 5\] is NaN",
    ),
    "shared-masked": (
        lambda: C.shared_scores(torch.stack([HALF_MASKED[0], HALF_MASKED[3]])[None], torch.ones(1, 2), idx(7)),
        r"coalition 0 at position 0",
    ),
    "shared-block": (
        lambda: C.shared_scores(L[:, None, :], torch.ones(1, 1), idx(0, 0, 0, 0), block_v=0),
        r"block_v must be an int >= 1",
    ),
    "shared-target": (lambda: C.shared_scores(L[:, None, :], torch.ones(1, 1), idx(0, 0, 8, 0)), r"targets\[2\] = 8"),
    "hidden-nan": (
        lambda: C.compose_hidden(NAN_IN_ROW_2, I0, J1, W1),
        r"hidden row 2 \(used by output row 0\) is not finite",
    ),
    "noise-tokens": (lambda: noise.uniform(0, idx(0), 0, idx(-1)), r"tokens must be in \[0, 2\*\*32\)"),
    "noise-step-dtype": (
        lambda: noise.uniform(0, idx(0, 1), torch.tensor([0, 1], dtype=torch.int32), 4),
        r"step must be an int64 tensor",
    ),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_say_what_and_where(case) -> None:
    fn, message = ERRORS[case]
    with pytest.raises(InvalidArgumentError, match=message):
        fn()

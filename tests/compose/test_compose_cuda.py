"""The CUDA gather-form kernel against the plain-torch reference (needs a GPU)."""

from __future__ import annotations

import pytest
import torch

from dposhap.compose import cuda_backend, reference
from dposhap.compose.contract import ComposeOutput, GatherRequest, validate_gather

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

ALL = ("logprobs", "logz", "correction", "target_logprob", "sample")


def cuda_compose(*args, **kw) -> ComposeOutput:
    """The CUDA launcher on the checked arguments of a :func:`reference.compose` call."""
    return cuda_backend.launch(validate_gather(GatherRequest(*args, **kw, compute_dtype=torch.float32)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    ("t", "v", "m", "j", "masked"), [(5, 37, 6, 3, 0.0), (4, 1000, 3, 0, 0.0), (8, 32000, 64, 4, 0.1)]
)
def test_every_output_matches_the_reference(dtype, t, v, m, j, masked) -> None:
    g = torch.Generator().manual_seed(t + v + m)
    logits = (torch.randn(t, v, generator=g) * 3).to(dtype)
    if masked:
        logits[torch.rand(t, v, generator=g) < masked] = float("-inf")
        logits[:, 0] = 0.0
    ref_index = torch.randint(0, t, (m,), generator=g)
    src_index = torch.randint(-1, t, (m, j), generator=g)
    src_weight = torch.rand(m, j, generator=g) * 2 - 0.5
    temperature = torch.rand(m, generator=g) + 0.5
    targets = torch.randint(0, v, (m,), generator=g)
    stream = torch.randint(0, 3, (m,), generator=g)
    cuda = [x.cuda() for x in (logits, ref_index, src_index, src_weight, temperature, targets, stream)]
    kw = dict(outputs=ALL, seed=7, step=3)
    fast = cuda_compose(*cuda[:5], targets=cuda[5], stream_id=cuda[6], **kw)
    slow = reference.compose(
        logits,
        ref_index,
        src_index,
        src_weight,
        temperature,
        targets=targets,
        stream_id=stream,
        compute_dtype=torch.float64,
        **kw,
    )
    for name in ("logz", "correction", "target_logprob"):
        torch.testing.assert_close(
            getattr(fast, name).double().cpu(), getattr(slow, name), atol=5e-5, rtol=5e-5, msg=name
        )
    finite = torch.isfinite(slow.logprobs)
    assert torch.equal(torch.isfinite(fast.logprobs).cpu(), finite)
    torch.testing.assert_close(fast.logprobs.double().cpu()[finite], slow.logprobs[finite], atol=5e-5, rtol=5e-5)
    slow32 = reference.compose(
        logits, ref_index, src_index, src_weight, temperature, targets=targets, stream_id=stream, **kw
    )
    assert torch.equal(fast.sample.cpu(), slow32.sample)


# --------------------------------------------------------------------------------------
# top-k sampling


def tied_logits(t: int, v: int, seed: int, levels: int, masked: float) -> torch.Tensor:
    """Few distinct logit values: ties everywhere, also at the k-th value of the combination."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randint(0, levels, (t, v), generator=g).float() * 0.75 - 2.0
    if masked:
        logits[torch.rand(t, v, generator=g) < masked] = float("-inf")
        logits[:, 0] = 1.0
    return logits


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("v", "levels", "masked"), [(37, 3, 0.0), (1000, 5, 0.2), (32000, 1000, 0.1), (32000, 4, 0.0)])
@pytest.mark.parametrize("top_k", [1, 2, 50, 999, 40000])
def test_top_k_sampling_is_the_references(dtype, v, levels, masked, top_k) -> None:
    m, t, j = 24, 6, 3
    g = torch.Generator().manual_seed(v + top_k)
    logits = tied_logits(t, v, v + levels, levels, masked).to(dtype)
    ref_index = torch.randint(0, t, (m,), generator=g)
    src_index = torch.randint(-1, t, (m, j), generator=g)
    src_weight = torch.randint(-2, 5, (m, j), generator=g).float() / 4  # binary fractions keep ties tied
    temperature = torch.where(torch.rand(m, generator=g) < 0.5, 1.0, 0.7)
    stream = torch.randint(0, 4, (m,), generator=g)
    kw = dict(outputs=("sample", "logz"), seed=11, step=5, top_k=top_k)
    cpu = (logits, ref_index, src_index, src_weight, temperature)
    fast = cuda_compose(*[x.cuda() for x in cpu], stream_id=stream.cuda(), **kw)
    slow = reference.compose(*cpu, stream_id=stream, **kw)
    assert torch.equal(fast.sample.cpu(), slow.sample)
    torch.testing.assert_close(fast.logz.cpu(), slow.logz, atol=5e-5, rtol=5e-5)


@pytest.mark.parametrize("top_k", [3, 40, 700, 1000, 1300])
def test_top_k_draws_cover_exactly_the_top_k_set(top_k) -> None:
    """A tiny spread leaves the noise to decide: the draws of many streams stay in the top-k set
    (and cover it where k is small enough to be covered); the 1000 tokens of the largest value
    sit across many 256-token chunks, so the tie cut at the k-th value (lowest indices first)
    crosses chunks."""
    v, n = 5000, 2000
    g = torch.Generator().manual_seed(0)
    c = torch.rand(v, generator=g) * 1e-3
    top = torch.randperm(v, generator=g)[:1000].sort().values
    c[top] = 0.01
    second = torch.tensor([i for i in range(v) if i not in set(top.tolist())])[:600]
    c[second] = 0.005
    logits = c[None, :].expand(n, -1).contiguous().cuda()
    none = torch.zeros(n, 0, dtype=torch.int64, device="cuda")
    kw = dict(outputs="sample", stream_id=torch.arange(n, device="cuda"), seed=2, top_k=top_k)
    out = cuda_compose(logits, torch.arange(n, device="cuda"), none, none.float(), **kw)
    order = torch.sort(c, descending=True, stable=True).indices[:top_k]
    drawn = set(out.sample.cpu().tolist())
    assert drawn <= set(order.tolist())
    if top_k <= 40:
        assert drawn == set(order.tolist())  # few enough tokens for every one to be drawn
    want = reference.compose(
        logits.cpu(), torch.arange(n), none.cpu(), none.float().cpu(), **dict(kw, stream_id=torch.arange(n))
    )
    assert torch.equal(out.sample.cpu(), want.sample)


def test_auto_runs_top_k_on_a_kernel(monkeypatch) -> None:
    from dposhap.compose import backends, registry

    logits = tied_logits(3, 3000, 1, 6, 0.0).cuda()
    args = (
        logits,
        torch.tensor([0, 1], device="cuda"),
        torch.tensor([[2], [-1]], device="cuda"),
        torch.tensor([[0.5], [0.0]], device="cuda"),
    )
    want = reference.compose(*args, outputs="sample", top_k=5, seed=9)

    def no_reference(*a, **k):
        raise AssertionError("auto fell back to the reference")

    monkeypatch.setattr(registry.TorchBackend, "launch", no_reference)
    got = backends.compose(*args, outputs="sample", top_k=5, seed=9)
    assert torch.equal(got.sample, want.sample)


def test_the_cuda_op_passes_opcheck_and_compiles() -> None:
    from dposhap.compose import backends

    g = torch.Generator().manual_seed(3)
    args = (
        torch.randn(4, 300, generator=g).cuda(),
        torch.tensor([0, 1, 2], device="cuda"),
        torch.tensor([[1, -1], [3, 0], [-1, -1]], device="cuda"),
        torch.tensor([[0.5, 0.0], [1.0, 0.5], [0.0, 0.0]], device="cuda"),
        torch.ones(3, device="cuda"),
        torch.tensor([1, 2, 3], device="cuda"),
        torch.arange(3, device="cuda"),
        torch.zeros(3, dtype=torch.int64, device="cuda"),
        7,
        4,
        True,
        True,
        True,
        True,
        True,
    )
    result = torch.library.opcheck(torch.ops.dposhap.compose_gather.default, args)
    assert set(result.values()) == {"SUCCESS"}, result

    def sample(logits, ref_index, src_index, src_weight):
        return backends.compose(
            logits, ref_index, src_index, src_weight, 0.8, outputs="sample", top_k=4, seed=3, backend="cuda"
        ).sample

    compiled = torch.compile(sample, fullgraph=True)
    assert torch.equal(compiled(*args[:4]), sample(*args[:4]))

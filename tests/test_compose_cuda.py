"""The CUDA gather-form kernel against the plain-torch reference (needs a GPU)."""

from __future__ import annotations

import pytest
import torch

from dposhap.compose import cuda_backend, reference

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

ALL = ("logprobs", "logz", "correction", "target_logprob", "sample")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("t", "v", "m", "j", "masked"), [(5, 37, 6, 3, 0.0), (4, 1000, 3, 0, 0.0), (8, 32000, 64, 4, 0.1)])
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
    fast = cuda_backend.compose(*cuda[:5], targets=cuda[5], stream_id=cuda[6], **kw)
    slow = reference.compose(logits, ref_index, src_index, src_weight, temperature, targets=targets, stream_id=stream,
                             compute_dtype=torch.float64, **kw)
    for name in ("logz", "correction", "target_logprob"):
        torch.testing.assert_close(getattr(fast, name).double().cpu(), getattr(slow, name), atol=5e-5, rtol=5e-5, msg=name)
    finite = torch.isfinite(slow.logprobs)
    assert torch.equal(torch.isfinite(fast.logprobs).cpu(), finite)
    torch.testing.assert_close(fast.logprobs.double().cpu()[finite], slow.logprobs[finite], atol=5e-5, rtol=5e-5)
    slow32 = reference.compose(logits, ref_index, src_index, src_weight, temperature, targets=targets, stream_id=stream, **kw)
    assert torch.equal(fast.sample.cpu(), slow32.sample)

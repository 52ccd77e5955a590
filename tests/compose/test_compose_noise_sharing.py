"""Gumbel noise computed once per (prompt, step) and shared by every coalition row of that prompt
(the C++ kernel's shared screening noise) draws exactly the tokens of per-row noise."""

from __future__ import annotations

import pytest
import torch

from dposhap.compose import backends, reference


@pytest.mark.parametrize(("scale", "top_k"), [(4.0, None), (0.3, None), (4.0, 50)])
def test_rows_sharing_a_prompt_draw_what_they_draw_alone(scale: float, top_k: int | None) -> None:
    # 24 rows: 3 prompts x 8 coalitions (streams shared), flat and peaked logits (the screen
    # that reads the shared noise runs on flat ones), with and without top-k
    g = torch.Generator().manual_seed(11)
    m, v = 24, 5000
    logits = torch.randn(m, v, generator=g) * scale
    ref = torch.arange(m)
    src = torch.empty(m, 0, dtype=torch.int64)
    w = torch.empty(m, 0)
    stream = torch.arange(m) % 3
    kw = dict(outputs="sample", seed=5, stream_id=stream, step=7, top_k=top_k)
    together = backends.compose(logits, ref, src, w, 0.9, backend="cpp", **kw).sample
    alone = torch.cat(
        [
            backends.compose(
                logits[i : i + 1],
                ref[:1],
                src[:1],
                w[:1],
                0.9,
                outputs="sample",
                seed=5,
                stream_id=stream[i : i + 1],
                step=7,
                top_k=top_k,
                backend="cpp",
            ).sample
            for i in range(m)
        ]
    )
    assert torch.equal(together, alone)
    slow = reference.compose(logits, ref, src, w, 0.9, **kw).sample
    assert torch.equal(together, slow)
    # the noise is shared, the logits are not: with peaked logits, rows of one prompt still draw
    # different tokens (with flat ones the shared noise decides: common random numbers)
    if scale > 1:
        assert len(set(together[stream == 0].tolist())) > 1

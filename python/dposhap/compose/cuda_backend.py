"""Launcher of the CUDA gather-form kernel (``dposhap/csrc/compose_cuda.cu``).

The kernel mirrors the Triton one (:mod:`dposhap.kernels.compose`): one block per output row,
an online log-sum-exp over the vocabulary, the target's logit, Gumbel-max with the noise of
:mod:`dposhap.compose.noise` (restricted to the top-k set, found exactly by a radix select,
when ``top_k`` is given), and the untempered log-sum-exp for the correction. It is built by
the one loader (:mod:`dposhap.compose._native`) on machines with CUDA; elsewhere the test-suite
compiles its sources with nvcc to prove them.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..errors import InvalidArgumentError
from ._kernel_common import assemble, check_participating_rows, kernel_top_k, noise_keys
from .reference import ComposeOutput, OutputName, Temperature, _validate_gather


def compose(
    logits: torch.Tensor,
    ref_index: torch.Tensor,
    src_index: torch.Tensor,
    src_weight: torch.Tensor,
    temperature: Temperature = 1.0,
    *,
    outputs: Sequence[OutputName] | OutputName = ("logprobs",),
    targets: torch.Tensor | None = None,
    seed: int = 0,
    stream_id: torch.Tensor | None = None,
    step: int | torch.Tensor = 0,
    top_k: int | None = None,
) -> ComposeOutput:
    """The gather form of :func:`dposhap.compose.reference.compose` on CUDA tensors (float32
    results), top-k sampling included (the same top-k set and tie rule as the reference).

    Raises
    ------
    InvalidArgumentError
        As the reference does; also for tensors that are not on a CUDA device.
    """
    from ._native import load_cuda

    if not isinstance(logits, torch.Tensor) or not logits.is_cuda:
        what = f"a {logits.device.type} tensor" if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise InvalidArgumentError(f"the CUDA kernel needs CUDA tensors; got {what}")
    args = _validate_gather(
        logits, ref_index, src_index, src_weight, temperature, outputs, targets, stream_id, step, top_k, torch.float32
    )
    logits, rows, coef = args.logits, args.rows.contiguous(), args.coef.to(torch.float32).contiguous()
    check_participating_rows(logits, rows, coef)
    want = set(args.outputs)
    key_a, key_b = noise_keys(args, seed, logits.device) if "sample" in want else (None, None)
    logz, raw_lse, target, sample, logprobs = load_cuda().compose_rows(
        logits if logits.stride(1) == 1 else logits.contiguous(),
        rows,
        coef,
        args.temp.to(torch.float32).contiguous(),
        args.targets if "target_logprob" in want else None,
        key_a,
        key_b,
        "correction" in want,
        "logprobs" in want,
        kernel_top_k(args, top_k),
    )
    return assemble(want, logits, rows, coef, logz, raw_lse, target, sample, logprobs)

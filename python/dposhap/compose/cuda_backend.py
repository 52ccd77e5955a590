"""Launcher of the CUDA gather-form kernel (``csrc/compose_cuda.cu``, shipped as
``dposhap/csrc/``).

The kernel mirrors the Triton one (:mod:`dposhap.compose.triton_kernels`): one block per output row,
an online log-sum-exp over the vocabulary, the target's logit, Gumbel-max with the noise of
:mod:`dposhap.compose.noise` (restricted to the top-k set, found exactly by a radix select,
when ``top_k`` is given), and the untempered log-sum-exp for the correction. It is built by
the one loader (:mod:`dposhap.compose._native`) on machines with CUDA; elsewhere the test-suite
compiles its sources with nvcc to prove them.
"""

from __future__ import annotations

import torch

from ..errors import InvalidArgumentError
from ._native import load_cuda
from .contract import ComposeOutput, GatherArgs
from .kernel_common import (
    assemble,
    check_dense_result,
    check_participating_rows,
    kernel_top_k,
    noise_keys,
    require_float32,
)


def check_cuda_tensors(logits: object) -> None:
    """The CUDA kernel reads CUDA tensors only.

    Raises
    ------
    InvalidArgumentError
        ``logits`` is not a CUDA tensor.
    """
    if not isinstance(logits, torch.Tensor) or not logits.is_cuda:
        what = f"a {logits.device.type} tensor" if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise InvalidArgumentError(f"the CUDA kernel needs CUDA tensors; got {what}")


def launch(args: GatherArgs) -> ComposeOutput:
    """The gather form of :func:`dposhap.compose.reference.compose` on checked arguments, by the
    CUDA kernel (float32 results), top-k sampling included (the same top-k set and tie rule as
    the reference). The extension is built on first use.

    Raises
    ------
    InvalidArgumentError
        As the reference does; also for tensors that are not on a CUDA device.
    dposhap.errors.NativeBuildError
        The extension cannot be built here.
    """
    check_cuda_tensors(args.logits)
    require_float32(args, "the CUDA kernel")
    logits, rows, coef = args.logits, args.rows.contiguous(), args.coef.to(torch.float32).contiguous()
    check_participating_rows(logits, rows, coef)
    want = set(args.outputs)
    key_a, key_b = noise_keys(args) if "sample" in want else (None, None)
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
        kernel_top_k(args),
    )
    return assemble(want, logits, rows, coef, logz, raw_lse, target, sample, logprobs)


def launch_dense(
    ref: torch.Tensor, sources: torch.Tensor, weights: torch.Tensor, temperature: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The dense form (:func:`dposhap.compose.reference.log_probs`) by the CUDA kernels:
    ``ref [R, V]`` and ``sources [R, n, V]`` read in place (only a vocabulary stride other than
    1 costs a copy), float32 ``weights [R, n]`` and ``temperature [R]``.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        float32 ``logprobs [R, V]`` and ``logz [R]``.

    Raises
    ------
    InvalidArgumentError
        Tensors not on a CUDA device, NaN or ``+inf`` in a participating row, a row masked
        everywhere.
    dposhap.errors.NativeBuildError
        The extension cannot be built here.
    """
    check_cuda_tensors(ref)
    ref = ref if ref.stride(1) == 1 else ref.contiguous()
    sources = sources if sources.stride(2) == 1 else sources.contiguous()
    weights = weights.to(torch.float32).contiguous()
    logprobs, logz = load_cuda().compose_dense(ref, sources, weights, temperature.to(torch.float32).contiguous())
    check_dense_result(ref, sources, weights, logz)
    return logprobs, logz

"""What the Triton and CUDA launchers share around their kernels: the finiteness check of
the participating rows, the noise keys of each row, the kernels' ``top_k``, and the assembly of
the outputs (with the all-masked check and the sequence-level correction). Every function takes
the checked arguments (:class:`~dposhap.compose.contract.GatherArgs`)."""

from __future__ import annotations

import torch

from ..errors import InvalidArgumentError
from . import noise
from .contract import ComposeOutput, GatherArgs, OutputName, first_index, single_source_rows


def require_float32(args: GatherArgs, kernel: str) -> None:
    """The kernels compute in float32: their arguments are checked for that compute dtype (the
    reference's coefficient ``a_0`` is rounded in it)."""
    if args.dtype != torch.float32:
        raise InvalidArgumentError(
            f"{kernel} computes in float32; check its arguments with compute_dtype=torch.float32, got {args.dtype}"
        )


def check_participating_rows(logits: torch.Tensor, rows: torch.Tensor, coef: torch.Tensor) -> None:
    """NaN or +inf in a participating logits row is an error that names it (one pass over the
    ``T`` rows, never ``[M, V]``)."""
    bad = (torch.isnan(logits) | torch.isposinf(logits)).any(dim=1)[rows] & (coef != 0)
    if bool(bad.any()):
        row, slot = first_index(bad)
        what = "its reference" if slot == 0 else f"member slot {slot - 1} (in canonical order)"
        raise InvalidArgumentError(
            f"output row {row}: logits row {int(rows[row, slot])} ({what}) holds NaN or +inf; "
            "logits must be finite or -inf (masked)"
        )


def noise_keys(args: GatherArgs) -> tuple[torch.Tensor, torch.Tensor]:
    """The two 32-bit key lanes of every output row (see :func:`noise.row_keys`)."""
    m = args.rows.shape[0]
    device = args.logits.device
    stream = args.stream_id if args.stream_id is not None else torch.arange(m, dtype=torch.int64, device=device)
    key_a, key_b = noise.row_keys(args.seed, stream, args.step)
    return key_a.contiguous(), key_b.contiguous()


def kernel_top_k(args: GatherArgs) -> int:
    """``top_k`` as the kernels take it: 0 samples over the whole vocabulary (so does ``top_k >=
    V``, which keeps every token, as in the reference), else ``0 < top_k < V`` selects first."""
    top_k = args.top_k
    return top_k if "sample" in args.outputs and top_k is not None and top_k < args.vocab else 0


def assemble(
    want: set[OutputName],
    logits: torch.Tensor,
    rows: torch.Tensor,
    coef: torch.Tensor,
    logz: torch.Tensor,
    raw_lse: torch.Tensor | None,
    target: torch.Tensor | None,
    sample: torch.Tensor | None,
    logprobs: torch.Tensor | None,
) -> ComposeOutput:
    """The requested outputs of a kernel run; refuses rows masked everywhere.

    ``raw_lse`` is the kernel's log-sum-exp of the untempered combination ``sum_a coef_a l_a``;
    the correction is ``logsumexp_v sum_a coef_a lp_a = raw_lse - sum_a coef_a lse(l_a)`` (the
    coefficients sum to 1), exactly 0 for a single slot of coefficient 1.
    """
    dead = torch.isneginf(logz)
    if bool(dead.any()):
        (row,) = first_index(dead)
        raise InvalidArgumentError(
            f"output row {row}: the combined logits are -inf for every token; leave at least one token unmasked"
        )
    result = ComposeOutput()
    if "logz" in want:
        result.logz = logz
    if "logprobs" in want:
        result.logprobs = logprobs
    if "target_logprob" in want:
        result.target_logprob = target
    if "sample" in want:
        result.sample = sample
    if "correction" in want:
        assert raw_lse is not None
        row_lse = torch.logsumexp(logits.float(), dim=1)[rows]  # one pass over the T rows
        correction = raw_lse - torch.where(coef != 0, coef * row_lse, 0.0).sum(dim=1)
        result.correction = correction.masked_fill(single_source_rows(coef), 0.0)
    return result


def check_dense_result(ref: torch.Tensor, sources: torch.Tensor, weights: torch.Tensor, logz: torch.Tensor) -> None:
    """The errors of a dense kernel run, from its log-normaliser: NaN marks a row with NaN or
    ``+inf`` in a participating input (named here, from that row alone), ``-inf`` a row masked
    everywhere; the order of the reference (bad inputs first).

    Raises
    ------
    InvalidArgumentError
        A bad row, as the CPU kernel words it.
    """
    bad = torch.isnan(logz)
    if bool(bad.any()):
        (row,) = first_index(bad)
        rows = torch.cat([ref[row][None], sources[row]]).float()
        used = torch.cat([(1.0 - weights[row].sum()).reshape(1) != 0, weights[row] != 0])
        hit = (torch.isnan(rows) | torch.isposinf(rows)).any(dim=1) & used
        (slot,) = first_index(hit)
        where = f"ref[{row}]" if slot == 0 else f"sources[{row}, {slot - 1}]"
        raise InvalidArgumentError(
            f"{where} contains NaN or +inf; logits must be finite or -inf (masked tokens): "
            "check the forward pass that produced them"
        )
    masked = logz == float("-inf")
    if bool(masked.any()):
        (row,) = first_index(masked)
        raise InvalidArgumentError(
            f"row {row}: the combined logits are -inf for every token (its reference and sources mask out the "
            "whole vocabulary between them); leave at least one token unmasked"
        )

"""The plain-torch reference of the compose kernels: the ground truth of every backend.

Language-model arithmetic (docs/design.md §1). An output row ``m`` has a reference row ``r`` and
member rows ``s_1..s_J`` of a logits matrix, with weights ``w_1..w_J`` and a temperature::

    c = (l_r + sum_j w_j (l_{s_j} - l_r)) / temperature_m,      log p = log_softmax(c)

The argument checks and the canonical order of the members are the contract's
(:mod:`dposhap.compose.contract`); this module is the math. Everything here computes in float32 (float64 when the inputs are float64 or
``compute_dtype=torch.float64``), and favours being obviously right over being fast: it
materialises ``[M, J + 1, V]``. The fast backends (C++, CUDA, Triton) must agree with it.

Conventions, shared by every backend
------------------------------------
Coefficients
    The combination is evaluated as ``c = a_0 l_r + sum_j a_j l_{s_j}`` with ``a_0 = 1 -
    sum_j w_j`` and ``a_j = w_j``; a slot *participates* when its coefficient is non-zero.
    A slot that does not participate (weight 0, padding ``-1``, or the reference when the
    weights sum to 1) contributes exactly nothing: its logits are never used, so NaN or
    ``-inf`` there change nothing (the fast paths never read them). Hence the empty coalition
    is the reference, and one member of weight 1 is that source, bit for bit.
Masked tokens
    A token is masked (``c = -inf``) as soon as one participating row has ``-inf`` there,
    whatever the sign of its coefficient; the other tokens combine the finite logits. This
    is what ``l_r + sum_j w_j (l_{s_j} - l_r)`` would give with ``0 * -inf := 0`` and ``-inf -
    -inf := -inf``, and it keeps ``c`` well defined for negative coefficients (which a naive
    product would turn into ``+inf``). NaN or ``+inf`` in a participating row is an error, and
    so is a row whose combined logits are ``-inf`` everywhere.
Order
    Members are put in a canonical order (by index, then weight) before summing, so the
    order in which a coalition lists its members does not change a single bit. ``a_0`` is
    summed in that order too. A backend that sums in another order agrees to rounding, but
    when the weights add up to 1 only up to rounding it may disagree on whether ``a_0`` is
    exactly 0, and so on whether the reference's masked tokens count. Weights that are binary
    fractions (1, 0.5, 0.25, ...) leave no doubt.
"""

from __future__ import annotations

import math

import torch

from ..errors import InvalidArgumentError
from . import noise
from .contract import (
    FLOAT_DTYPES,
    LOGIT_DTYPES,
    ComposeOutput,
    DenseRequest,
    GatherArgs,
    GatherRequest,
    SharedRequest,
    canonical_members,
    check_device,
    check_float_tensor,
    check_index_tensor,
    first_index,
    resolve_compute_dtype,
    single_source_rows,
    slot_layout,
    validate_gather,
    with_request_arguments,
)

__all__ = [
    "coalition_coefficients",
    "compose",
    "compose_checked",
    "compose_hidden",
    "compose_hidden_unchecked",
    "log_probs",
    "shared_scores",
]

_NEG_INF = -math.inf


# --------------------------------------------------------------------------------------
# checks of values and the combination


def _check_finite(values: torch.Tensor, used: torch.Tensor, rows: torch.Tensor, slots: torch.Tensor, what: str) -> None:
    """NaN or +inf in a participating row is an error that names the row."""
    bad = (torch.isnan(values) | torch.isposinf(values)).any(-1) & used
    if bool(bad.any()):
        m, a = first_index(bad)
        slot = int(slots[m, a])
        role = "the reference" if slot < 0 else f"member {slot} (src_index[{m}, {slot}])"
        raise InvalidArgumentError(
            f"{what} row {int(rows[m, a])} contains NaN or +inf; it is {role} of output row {m}. "
            f"{what.capitalize()} must be finite or -inf (masked tokens): check the forward pass that produced them"
        )


def _combine(values: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """``sum_a coef[..., a] * values[..., a, :]`` with the conventions of the module docstring.

    Parameters
    ----------
    values
        ``[M, A, V]`` (NaN or ``-inf`` allowed where the coefficient is 0).
    coef
        ``[M, A]``.

    Returns
    -------
    torch.Tensor
        ``[M, V]``; ``-inf`` where a participating row has ``-inf``.
    """
    used = (coef != 0)[..., None]
    neg_inf = torch.isneginf(values)
    masked = (neg_inf & used).any(dim=1)
    terms = torch.where(used & ~neg_inf, coef[..., None] * values, 0.0)
    return terms.sum(dim=1).masked_fill(masked, _NEG_INF)


def _check_not_all_masked(c: torch.Tensor) -> None:
    bad = torch.isneginf(c).all(dim=1)
    if bool(bad.any()):
        (row,) = first_index(bad)
        raise InvalidArgumentError(
            f"output row {row}: the combined logits are -inf for every token (its reference and members mask out the "
            "whole vocabulary between them); leave at least one token unmasked in every participating row"
        )


def _top_k_mask(c: torch.Tensor, top_k: int) -> torch.Tensor:
    """True on the ``top_k`` largest entries of each row (ties: the lowest index first)."""
    order = torch.sort(c, dim=1, descending=True, stable=True).indices[:, :top_k]
    return torch.zeros_like(c, dtype=torch.bool).scatter_(1, order, True)


# --------------------------------------------------------------------------------------
# the gather form


@with_request_arguments(GatherRequest)
def compose(request: GatherRequest) -> ComposeOutput:
    """Compose per-source logits row by row (the gather form the decoding engine uses).

    Called with the parameters below (the fields of
    :class:`~dposhap.compose.contract.GatherRequest`, which the function receives as one request).

    Output row ``m`` combines ``c = (l_r + sum_j w_j (l_{s_j} - l_r)) / temperature[m]`` with
    ``r = ref_index[m]``, ``s_j = src_index[m, j]``, ``w_j = src_weight[m, j]``, under the
    conventions of the module docstring (masked tokens, zero coefficients, member order).

    Parameters
    ----------
    logits
        ``[T, V]`` float32, bfloat16, float16 or float64: every computed reference/adapter row.
    ref_index
        int64 ``[M]``: the reference row of each output row.
    src_index
        int64 ``[M, J]``: member rows, ``-1`` for padding (its weight is ignored). ``J`` may be 0.
    src_weight
        ``[M, J]`` floating: the member weights (1 for a plain coalition member).
    temperature
        A float, or ``[M]`` floating; finite and > 0.
    outputs
        Which of ``"logprobs"``, ``"logz"``, ``"correction"``, ``"target_logprob"``,
        ``"sample"`` to return (a name or a sequence of names).
    targets
        int64 ``[M]`` in ``[0, V)``; needed for ``"target_logprob"``.
    seed
        Noise seed, a Python int in ``[0, 2**64)`` (``"sample"``).
    stream_id
        int64 ``[M]``: the noise stream of each row, typically the prompt it decodes; rows
        with the same stream id at the same step see the same noise whatever their
        coalition. Default ``arange(M)``.
    step
        Decoding step: a Python int, or int64 ``[M]``.
    top_k
        Sample among the ``top_k`` largest ``c`` of each row only (ties: lowest index);
        ``None`` for the whole vocabulary. ``top_k=1`` is greedy decoding.
    compute_dtype
        ``None`` (float64 for float64 logits, else float32), ``torch.float32`` or
        ``torch.float64``.

    Returns
    -------
    ComposeOutput
        The requested fields (see :class:`~dposhap.compose.contract.ComposeOutput`), in the compute dtype; ``sample`` is
        int64: ``argmax_v (c[m, v] + g[m, v])`` over the allowed tokens, ties to the lowest
        index, with ``g = noise.gumbel(seed, stream_id, step, arange(V))`` in the compute dtype.

    Raises
    ------
    InvalidArgumentError
        Wrong shapes, dtypes or devices, an index out of range, a non-positive temperature,
        NaN or ``+inf`` in a participating logits row, a row whose combined logits are all
        ``-inf``.
    """
    return compose_checked(validate_gather(request))


def compose_checked(args: GatherArgs) -> ComposeOutput:
    """:func:`compose` on arguments that :func:`dposhap.compose.contract.validate_gather` has
    checked: the math alone (the finiteness of the participating rows is checked here, as it
    needs the values)."""
    outputs, logits, rows, coef, slots, temp = args.outputs, args.logits, args.rows, args.coef, args.slots, args.temp
    targets, stream_id, step, dtype, vocab = args.targets, args.stream_id, args.step, args.dtype, args.vocab
    seed, top_k = args.seed, args.top_k
    values = logits[rows].to(dtype)  # [M, J + 1, V]
    used = coef != 0
    _check_finite(values, used, rows, slots, "logits")
    c = _combine(values, coef) / temp[:, None]
    _check_not_all_masked(c)

    result = ComposeOutput()
    if "logprobs" in outputs or "target_logprob" in outputs:
        logprobs = torch.log_softmax(c, dim=1)
        if "logprobs" in outputs:
            result.logprobs = logprobs
        if "target_logprob" in outputs:
            assert targets is not None
            result.target_logprob = logprobs.gather(1, targets[:, None]).squeeze(1)
    if "logz" in outputs:
        result.logz = torch.logsumexp(c, dim=1)
    if "correction" in outputs:
        # rows masked out entirely have NaN log-probs; _combine ignores them when unused
        own_logprobs = torch.log_softmax(values, dim=-1)
        correction = torch.logsumexp(_combine(own_logprobs, coef), dim=1)
        result.correction = correction.masked_fill(single_source_rows(coef), 0.0)
    if "sample" in outputs:
        assert stream_id is not None
        scores = c if top_k is None or top_k >= vocab else c.masked_fill(~_top_k_mask(c, top_k), _NEG_INF)
        g = noise.gumbel(seed, stream_id, step, vocab, dtype=dtype)
        result.sample = torch.argmax(scores + g, dim=1)
    return result


# --------------------------------------------------------------------------------------
# the dense convenience form


@with_request_arguments(DenseRequest)
def log_probs(request: DenseRequest) -> torch.Tensor:
    """Log-probabilities of ``R`` rows composed from dense per-source logits.

    Called with the parameters below (the fields of
    :class:`~dposhap.compose.contract.DenseRequest`, which the function receives as one request).

    Row ``i`` is ``log_softmax((ref[i] + sum_j weights[i, j] (sources[i, j] - ref[i])) /
    temperature)``, with the conventions of :func:`compose` (sources of weight 0 ignored).

    Parameters
    ----------
    ref
        ``[R, V]`` reference logits.
    sources
        ``[R, n, V]`` source logits, same dtype and device as ``ref``; ``n`` may be 0.
    weights
        ``[R, n]``, or ``[n]`` for the same weights in every row (floating, or bool for
        coalition membership).
    temperature
        A float or ``[R]``.
    compute_dtype
        As in :func:`compose`.

    Returns
    -------
    torch.Tensor
        ``[R, V]`` in the compute dtype.
    """
    out = compose_checked(validate_gather(request.gather()))
    assert out.logprobs is not None
    return out.logprobs


# --------------------------------------------------------------------------------------
# the shared-source form


def coalition_coefficients(weights: torch.Tensor) -> torch.Tensor:
    """Coefficients ``[1 - sum_i w_i, w_1, ..., w_n]`` of language-model arithmetic, per coalition.

    Parameters
    ----------
    weights
        ``[K, n]``: member weights (0 outside the coalition), or a bool membership mask.

    Returns
    -------
    torch.Tensor
        ``[K, n + 1]``: column 0 multiplies the reference, column ``i`` source ``i``. Floating
        weights keep their dtype; bool and integer ones become the default float dtype.
    """
    if not isinstance(weights, torch.Tensor) or weights.dim() != 2:
        shape = tuple(weights.shape) if isinstance(weights, torch.Tensor) else type(weights).__name__
        raise InvalidArgumentError(f"weights must be a tensor [K, n], got {shape}")
    if not weights.is_floating_point():
        weights = weights.to(torch.get_default_dtype())
    return torch.cat([1.0 - weights.sum(dim=1, keepdim=True), weights], dim=1)


@with_request_arguments(SharedRequest)
def shared_scores(request: SharedRequest) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-normaliser and target log-probability of fixed text under ``K`` coalitions.

    Called with the parameters below (the fields of
    :class:`~dposhap.compose.contract.SharedRequest`, which the function receives as one request).

    The combined logits of coalition ``k`` at position ``p`` are ``sum_a coef[k, a] *
    logits[p, a, :]`` (the masking conventions of :func:`compose` apply per coalition). The
    vocabulary is walked in blocks of ``block_v`` with an online log-sum-exp (running max and
    running sum) and one matrix product per block: no ``[K, N, V]`` tensor is ever built, only
    ``[K, N, block_v]``.

    Parameters
    ----------
    logits
        ``[N, n + 1, V]``: at each of ``N`` positions, the reference (index 0) and the ``n``
        sources.
    coef
        ``[K, n + 1]`` floating, e.g. from :func:`coalition_coefficients`. A column that is 0
        for every coalition is never read.
    targets
        int64 ``[N]``: the token at each position.
    block_v
        Vocabulary block size (any ``V`` works; the last block may be shorter).
    compute_dtype
        As in :func:`compose`.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        ``logz [K, N]`` and ``target_logprob [K, N]`` in the compute dtype.
    """
    coef, targets, block_v, compute_dtype = request.coef, request.targets, request.block_v, request.compute_dtype
    logits = check_float_tensor(request.logits, "logits", "[N, n + 1, V]", 3, LOGIT_DTYPES)
    n_pos, n_models, vocab = logits.shape
    if vocab == 0:
        raise InvalidArgumentError("logits has an empty vocabulary (V = 0)")
    device = logits.device
    dtype = resolve_compute_dtype(logits.dtype, compute_dtype)
    coef = check_float_tensor(coef, "coef", "[K, n + 1]", 2, FLOAT_DTYPES)
    check_device(coef, "coef", device)
    if coef.shape[1] != n_models:
        raise InvalidArgumentError(
            f"coef has {coef.shape[1]} columns but logits has n + 1 = {n_models} models; give one coefficient per model"
        )
    if not bool(torch.isfinite(coef).all()):
        k, a = first_index(~torch.isfinite(coef))
        raise InvalidArgumentError(f"coef[{k}, {a}] = {float(coef[k, a])} is not finite")
    targets = check_index_tensor(targets, "targets", "[N]", 1)
    check_device(targets, "targets", device)
    if targets.shape[0] != n_pos:
        raise InvalidArgumentError(f"targets has {targets.shape[0]} entries but logits has N = {n_pos} positions")
    bad = (targets < 0) | (targets >= vocab)
    if bool(bad.any()):
        (p,) = first_index(bad)
        raise InvalidArgumentError(
            f"targets[{p}] = {int(targets[p])} is out of range: it must be a token in [0, {vocab})"
        )
    if isinstance(block_v, bool) or not isinstance(block_v, int) or block_v < 1:
        raise InvalidArgumentError(f"block_v must be an int >= 1, got {block_v!r}")

    n_coal = coef.shape[0]
    read = (coef != 0).any(dim=0).nonzero().squeeze(1)  # models some coalition uses
    weight = coef.to(dtype)[:, read]  # [K, A]
    uses = (weight != 0).to(dtype)  # [K, A]
    run_max = torch.full((n_coal, n_pos), _NEG_INF, dtype=dtype, device=device)
    run_sum = torch.zeros((n_coal, n_pos), dtype=dtype, device=device)
    target_logit = torch.full((n_coal, n_pos), math.nan, dtype=dtype, device=device)
    for start in range(0, vocab, block_v):
        stop = min(start + block_v, vocab)
        width = stop - start
        block = logits[:, read, start:stop].to(dtype)  # [N, A, B]
        bad = torch.isnan(block) | torch.isposinf(block)
        if bool(bad.any()):
            p, a, v = first_index(bad)
            raise InvalidArgumentError(
                f"logits[{p}, {int(read[a])}, {start + v}] is NaN or +inf; logits must be finite or -inf (masked tokens)"
            )
        neg_inf = torch.isneginf(block)
        flat = torch.where(neg_inf, 0.0, block).permute(1, 0, 2).reshape(len(read), n_pos * width)
        c = (weight @ flat).view(n_coal, n_pos, width)
        masked = (uses @ neg_inf.to(dtype).permute(1, 0, 2).reshape(len(read), n_pos * width)).view(
            n_coal, n_pos, width
        ) > 0
        c = c.masked_fill(masked, _NEG_INF)
        new_max = torch.maximum(run_max, c.amax(dim=2))
        shift = torch.where(torch.isneginf(new_max), 0.0, new_max)
        run_sum = run_sum * torch.exp(run_max - shift) + torch.exp(c - shift[..., None]).sum(dim=2)
        run_max = new_max
        inside = (targets >= start) & (targets < stop)
        if bool(inside.any()):
            local = (targets - start).clamp(0, width - 1)
            picked = c.gather(2, local[None, :, None].expand(n_coal, n_pos, 1)).squeeze(2)
            target_logit = torch.where(inside[None, :], picked, target_logit)
    logz = run_max + torch.log(run_sum)
    bad = torch.isneginf(run_max)
    if bool(bad.any()):
        k, p = first_index(bad)
        raise InvalidArgumentError(
            f"coalition {k} at position {p}: the combined logits are -inf for every token; "
            "leave at least one token unmasked in every model the coalition uses"
        )
    return logz, target_logit - logz


# --------------------------------------------------------------------------------------
# the hidden-state fast path


def compose_hidden(
    hidden: torch.Tensor,
    ref_index: torch.Tensor,
    src_index: torch.Tensor,
    src_weight: torch.Tensor,
) -> torch.Tensor:
    """Combine final hidden states instead of logits: ``d`` numbers per row instead of ``V``.

    Row ``m`` is ``h_r + sum_j w_j (h_{s_j} - h_r)``, evaluated as ``(1 - sum_j w_j) h_r +
    sum_j w_j h_{s_j}`` with the slots of :func:`compose` (padding ``-1``, zero coefficients
    skipped, canonical member order). The coefficients sum to 1, so for an LM head
    ``lm_head(h) = W h + b`` that is shared by every source, linear, and either bias-free or
    with one bias for all (the bias enters with total weight 1)::

        lm_head(compose_hidden(hidden, ...)) == combined logits of lm_head(hidden)

    up to rounding. ``hidden`` must be the input of the LM head, i.e. *after* each source's
    final normalisation layer. It does not hold with LoRA (or any per-source change) on the
    LM head, with logit soft-capping (``tanh``), or with masked (``-inf``) logits, which must
    then be applied after the head.

    Parameters
    ----------
    hidden
        ``[T, d]`` floating: final hidden states of every computed reference/adapter row.
    ref_index, src_index, src_weight
        As in :func:`compose`.

    Returns
    -------
    torch.Tensor
        ``[M, d]`` in ``hidden``'s dtype (computed in float32, float64 for float64 input),
        ready for the LM head. A single member of weight 1 returns its row bit for bit.
    """
    hidden = check_float_tensor(hidden, "hidden", "[T, d]", 2, LOGIT_DTYPES)
    dtype = resolve_compute_dtype(hidden.dtype, None)
    ref_index, index, weight, _ = canonical_members(
        hidden.shape[0], hidden.device, ref_index, src_index, src_weight, dtype, "hidden"
    )
    rows, coef = slot_layout(ref_index, index, weight)
    bad = (~torch.isfinite(hidden)).any(-1)[rows] & (coef != 0)
    if bool(bad.any()):
        m, a = first_index(bad)
        raise InvalidArgumentError(
            f"hidden row {int(rows[m, a])} (used by output row {m}) is not finite; hidden states must be finite numbers"
        )
    return compose_hidden_unchecked(hidden, ref_index, index, weight)


def compose_hidden_unchecked(
    hidden: torch.Tensor,
    ref_index: torch.Tensor,
    src_index: torch.Tensor,
    src_weight: torch.Tensor,
) -> torch.Tensor:
    """:func:`compose_hidden` without a single check: for a caller that builds its arguments
    itself, on a hot path (the decoder, once per generated token).

    The same arithmetic and masking rules as :func:`compose_hidden`, but the members are
    summed in the order given (the caller puts them in canonical order, or does not need
    order invariance), and nothing is checked: no shapes, dtypes, devices or index ranges,
    no scan for NaN or ``inf``.

    Parameters
    ----------
    hidden
        ``[T, d]`` floating.
    ref_index, src_index, src_weight
        int64 ``[M]``, int64 ``[M, J]`` (``-1`` for padding, with weight 0) and floating
        ``[M, J]`` on ``hidden``'s device.

    Returns
    -------
    torch.Tensor
        ``[M, d]`` in ``hidden``'s dtype, computed in float32 (float64 for float64 input).
    """
    dtype = resolve_compute_dtype(hidden.dtype, None)
    rows, coef = slot_layout(ref_index, src_index, src_weight.to(dtype))
    return _combine(hidden[rows].to(dtype), coef).to(hidden.dtype)

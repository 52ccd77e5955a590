"""Triton kernels of language-model arithmetic (``@triton.jit`` only; their launchers are
:mod:`dposhap.compose.triton_backend`).

Gather form (:func:`compose_rows_kernel`): one program per output row streams the vocabulary in blocks: it combines the participating
logits rows (``c = sum_a coef_a l_a / T`` with the masking rule of
:mod:`dposhap.compose.reference`), keeps an online log-sum-exp, the target's logit, the
Gumbel-max argmax with the counter-based noise of :mod:`dposhap.compose.noise`, and the
log-sum-exp of the untempered combination for the sequence-level correction. A second pass
writes log-probabilities only when they are asked for. Rows whose coefficient is 0 are never
read.

Top-k sampling (``TOP_K``) first finds the row's top-k set exactly, by passes over the
vocabulary that recompute ``c``: a radix select over the order-preserving ``uint32`` key of
``c`` (``RADIX_BITS`` bits per pass, at most ``32 / RADIX_BITS`` passes, fewer when a prefix
already holds exactly ``top_k`` tokens), then, when the k-th value is tied, one pass that finds
the last tied token allowed (ties: lowest index first). The Gumbel argmax then runs over that
set only. This path computes ``c`` as the reference does, to the bit: ``acc / T`` correctly
rounded and (launched without FP fusion) no fused multiply-adds, so its top-k set is the
reference's.

Dense form (:func:`dense_partial_kernel`, :func:`dense_finish_kernel`): ``ref [R, V]`` and
``sources [R, n, V]`` read in place through their strides. Program (row, chunk of the
vocabulary) combines its chunk, writes the tempered combination and the chunk's log-sum-exp
state (and a flag for NaN or ``+inf`` in a participating row); the second kernel merges a row's
chunk states into its log-normaliser and subtracts it from the chunk. Two kernels so that a few
rows still fill the device.

Shared-source form (:func:`shared_scores_kernel`): fixed text under many coalitions, an online
log-sum-exp per coalition over a small matrix product per block of the vocabulary.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _mix32(x):
    # lowbias32 on 32-bit values held in uint64 lanes (products fit in 64 bits, then masked)
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    x = x ^ (x >> 16)
    return x


@triton.jit
def _combine_block(logits_ptr, stride_t, rows_ptr, coef_ptr, m, n_slots, offs, in_range):
    """``sum_a coef_a l_a`` over the participating slots of row ``m`` and the mask of tokens
    that a participating row sets to -inf."""
    acc = tl.zeros(offs.shape, dtype=tl.float32)
    masked = offs < 0
    for a in range(0, n_slots):
        co = tl.load(coef_ptr + m * n_slots + a)
        if co != 0.0:
            row = tl.load(rows_ptr + m * n_slots + a)
            logit = tl.load(logits_ptr + row * stride_t + offs, mask=in_range, other=0.0).to(tl.float32)
            neg_inf = logit == float("-inf")
            masked = masked | neg_inf
            acc += tl.where(neg_inf, 0.0, co * logit)
    return acc, masked


@triton.jit
def _combined_block(
    logits_ptr, stride_t, rows_ptr, coef_ptr, m, n_slots, temp, inv_t, offs, in_range, EXACT: tl.constexpr
):
    """The untempered combination ``acc``, the combined logits ``c`` (``-inf`` where dead) and
    the mask of dead tokens (masked, or past the vocabulary) of one block of row ``m``.
    ``EXACT``: ``c = acc / temp`` correctly rounded, else ``acc * inv_t``."""
    acc, masked = _combine_block(logits_ptr, stride_t, rows_ptr, coef_ptr, m, n_slots, offs, in_range)
    dead = masked | (in_range == 0)
    if EXACT:
        scaled = tl.math.div_rn(acc, tl.zeros_like(acc) + temp)
    else:
        scaled = acc * inv_t
    return acc, tl.where(dead, float("-inf"), scaled), dead


@triton.jit
def _order_key(c, dead):
    """The ``uint32`` key that orders as the float32 ``c`` (-0.0 as +0.0); 0 for dead tokens,
    below every live one."""
    bits = tl.where(c == 0.0, 0.0, c).to(tl.uint32, bitcast=True)
    key = tl.where((bits >> 31) != 0, bits ^ 0xFFFFFFFF, bits | 0x80000000)
    return tl.where(dead, tl.zeros_like(key), key)


@triton.jit
def _block_keys(logits_ptr, stride_t, rows_ptr, coef_ptr, m, n_slots, temp, v0, V, BLOCK_V: tl.constexpr):
    offs = v0 + tl.arange(0, BLOCK_V)
    in_range = offs < V
    _, c, dead = _combined_block(logits_ptr, stride_t, rows_ptr, coef_ptr, m, n_slots, temp, 1.0, offs, in_range, True)
    return offs, in_range, _order_key(c, dead)


@triton.jit
def _top_k_cut(
    logits_ptr,
    stride_t,
    rows_ptr,
    coef_ptr,
    m,
    n_slots,
    temp,
    V,
    top_k,
    BLOCK_V: tl.constexpr,
    RADIX_BITS: tl.constexpr,
):
    """``(kth, tie_cut)``: token ``v`` of key ``k`` is among the ``top_k`` largest ``c`` of row
    ``m`` (ties: lowest index first) iff ``k > kth`` or ``k == kth and v <= tie_cut``.
    Needs ``top_k < V``."""
    RADIX: tl.constexpr = 1 << RADIX_BITS
    digits = tl.arange(0, RADIX).to(tl.uint32)
    prefix = tl.zeros([], dtype=tl.uint32)  # the high bits of the k-th largest key found so far
    above = tl.zeros([], dtype=tl.int32)  # tokens whose key has a higher prefix
    shift = tl.full([], 32, dtype=tl.int32)
    exact = tl.zeros([], dtype=tl.int32)  # 1: the keys >= prefix are exactly top_k tokens
    while (shift > 0) & (exact == 0):
        shift -= RADIX_BITS
        candidates = prefix | (digits << shift.to(tl.uint32))
        counts = tl.zeros([RADIX], dtype=tl.int32)  # tokens with key >= candidates[d]
        for v0 in range(0, V, BLOCK_V):
            offs, in_range, key = _block_keys(
                logits_ptr, stride_t, rows_ptr, coef_ptr, m, n_slots, temp, v0, V, BLOCK_V
            )
            hit = (key[:, None] >= candidates[None, :]) & in_range[:, None]
            counts += tl.sum(hit.to(tl.int32), 0)
        # counts fall with the digit and counts[0] >= top_k: the k-th key has the last digit that keeps top_k
        digit = (tl.sum((counts >= top_k).to(tl.int32), 0) - 1).to(tl.uint32)
        at_digit = tl.sum(tl.where(digits == digit, counts, 0), 0)
        above = tl.where(digit < RADIX - 1, tl.sum(tl.where(digits == digit + 1, counts, 0), 0), above)
        prefix = prefix | (digit << shift.to(tl.uint32))
        exact = (at_digit == top_k).to(tl.int32)
    tie_cut = tl.full([], -1, dtype=tl.int32)
    if exact != 0:
        kth = prefix - 1  # allowed: key >= prefix (prefix > 0, as the V > top_k keys are >= 0)
    else:
        # the k-th key is prefix and ties there cross the cut: allow the first top_k - above of them
        kth = prefix
        need = top_k - above
        seen = tl.zeros([], dtype=tl.int32)
        v0 = tl.zeros([], dtype=tl.int32)
        while (v0 < V) & (seen < need):
            offs, in_range, key = _block_keys(
                logits_ptr, stride_t, rows_ptr, coef_ptr, m, n_slots, temp, v0, V, BLOCK_V
            )
            tie = ((key == kth) & in_range).to(tl.int32)
            rank = seen + tl.cumsum(tie, 0)
            tie_cut = tl.maximum(tie_cut, tl.max(tl.where((tie != 0) & (rank == need), offs, -1), 0))
            seen += tl.sum(tie, 0)
            v0 += BLOCK_V
    return kth, tie_cut


@triton.jit
def compose_rows_kernel(
    logits_ptr,
    stride_t,
    rows_ptr,
    coef_ptr,
    n_slots,
    temp_ptr,
    targets_ptr,
    key_a_ptr,
    key_b_ptr,
    logz_ptr,
    raw_lse_ptr,
    target_ptr,
    sample_ptr,
    logprobs_ptr,
    V,
    top_k,
    BLOCK_V: tl.constexpr,
    WANT_TARGET: tl.constexpr,
    WANT_SAMPLE: tl.constexpr,
    WANT_RAW: tl.constexpr,
    WANT_LOGPROBS: tl.constexpr,
    TOP_K: tl.constexpr,
    RADIX_BITS: tl.constexpr,
):
    m = tl.program_id(0)
    temp = tl.load(temp_ptr + m)
    inv_t = 1.0 / temp
    zero = tl.zeros([], dtype=tl.float32)
    run_max = zero + float("-inf")
    run_sum = zero
    raw_max = zero + float("-inf")
    raw_sum = zero
    tgt = zero
    best_val = zero + float("-inf")
    best_idx = tl.zeros([], dtype=tl.int64)
    if WANT_TARGET:
        t = tl.load(targets_ptr + m)
    if WANT_SAMPLE:
        key_a = tl.load(key_a_ptr + m).to(tl.uint64)
        key_b = tl.load(key_b_ptr + m).to(tl.uint64)
    if TOP_K:
        kth, tie_cut = _top_k_cut(
            logits_ptr, stride_t, rows_ptr, coef_ptr, m, n_slots, temp, V, top_k, BLOCK_V, RADIX_BITS
        )
    for v0 in range(0, V, BLOCK_V):
        offs = v0 + tl.arange(0, BLOCK_V)
        in_range = offs < V
        acc, c, dead = _combined_block(
            logits_ptr, stride_t, rows_ptr, coef_ptr, m, n_slots, temp, inv_t, offs, in_range, TOP_K
        )
        # online log-sum-exp of c
        new_max = tl.maximum(run_max, tl.max(c, 0))
        keep = tl.where(run_max == float("-inf"), 0.0, tl.exp(run_max - new_max))
        run_sum = run_sum * keep + tl.sum(tl.where(dead, 0.0, tl.exp(c - new_max)), 0)
        run_max = new_max
        if WANT_RAW:
            r = tl.where(dead, float("-inf"), acc)
            new_raw = tl.maximum(raw_max, tl.max(r, 0))
            keep_raw = tl.where(raw_max == float("-inf"), 0.0, tl.exp(raw_max - new_raw))
            raw_sum = raw_sum * keep_raw + tl.sum(tl.where(dead, 0.0, tl.exp(r - new_raw)), 0)
            raw_max = new_raw
        if WANT_TARGET:
            tgt += tl.sum(tl.where(offs == t, c, 0.0), 0)
        if WANT_SAMPLE:
            h = _mix32(_mix32(offs.to(tl.uint64) ^ key_a) + key_b & 0xFFFFFFFF)
            u = ((h >> 9).to(tl.float32) + 0.5) * 1.1920928955078125e-07
            g = -tl.log(-tl.log(u))
            val = tl.where(dead, float("-inf"), c + g)
            if TOP_K:
                key = _order_key(c, dead)
                val = tl.where((key > kth) | ((key == kth) & (offs <= tie_cut)), val, float("-inf"))
            block_max = tl.max(val, 0)
            block_idx = tl.min(tl.where(val == block_max, offs, V), 0).to(tl.int64)
            take = block_max > best_val
            best_idx = tl.where(take, block_idx, best_idx)
            best_val = tl.maximum(best_val, block_max)
    logz = run_max + tl.log(run_sum)
    tl.store(logz_ptr + m, logz)
    if WANT_RAW:
        tl.store(raw_lse_ptr + m, raw_max + tl.log(raw_sum))
    if WANT_TARGET:
        tl.store(target_ptr + m, tgt - logz)
    if WANT_SAMPLE:
        tl.store(sample_ptr + m, best_idx)
    if WANT_LOGPROBS:
        for v0 in range(0, V, BLOCK_V):
            offs = v0 + tl.arange(0, BLOCK_V)
            in_range = offs < V
            _, c, _ = _combined_block(
                logits_ptr, stride_t, rows_ptr, coef_ptr, m, n_slots, temp, inv_t, offs, in_range, TOP_K
            )
            tl.store(logprobs_ptr + m * V + offs, c - logz, mask=in_range)


@triton.jit
def shared_scores_kernel(
    logits_ptr,
    stride_p,
    stride_a,
    coef_ptr,
    n_models,
    n_coal,
    targets_ptr,
    logz_ptr,
    target_ptr,
    n_pos,
    V,
    BLOCK_K: tl.constexpr,
    BLOCK_A: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    """Fixed text under many coalitions: program (position p, block of coalitions) streams the
    vocabulary, combines all models of the block at once as a small matrix product
    ``coef[BLOCK_K, A] @ logits[p, A, BLOCK_V]`` and keeps an online log-sum-exp per
    coalition, so ``[K, N, V]`` never exists."""
    p = tl.program_id(0)
    kb = tl.program_id(1)
    ks = kb * BLOCK_K + tl.arange(0, BLOCK_K)
    models = tl.arange(0, BLOCK_A)
    coef = tl.load(
        coef_ptr + ks[:, None] * n_models + models[None, :],
        mask=(ks[:, None] < n_coal) & (models[None, :] < n_models),
        other=0.0,
    )
    uses = (coef != 0.0).to(tl.float32)
    t = tl.load(targets_ptr + p)
    run_max = tl.zeros([BLOCK_K], dtype=tl.float32) + float("-inf")
    run_sum = tl.zeros([BLOCK_K], dtype=tl.float32)
    tgt = tl.zeros([BLOCK_K], dtype=tl.float32)
    for v0 in range(0, V, BLOCK_V):
        offs = v0 + tl.arange(0, BLOCK_V)
        live = (models[:, None] < n_models) & (offs[None, :] < V)
        logit = tl.load(
            logits_ptr + p * stride_p + models[:, None] * stride_a + offs[None, :], mask=live, other=0.0
        ).to(tl.float32)
        neg_inf = logit == float("-inf")
        c = tl.dot(coef, tl.where(neg_inf, 0.0, logit), input_precision="ieee")
        masked = tl.dot(uses, neg_inf.to(tl.float32), input_precision="ieee") > 0.0
        c = tl.where(masked | (offs[None, :] >= V), float("-inf"), c)
        new_max = tl.maximum(run_max, tl.max(c, 1))
        keep = tl.where(run_max == float("-inf"), 0.0, tl.exp(run_max - new_max))
        shift = tl.where(new_max == float("-inf"), 0.0, new_max)
        run_sum = run_sum * keep + tl.sum(tl.where(c == float("-inf"), 0.0, tl.exp(c - shift[:, None])), 1)
        run_max = new_max
        tgt += tl.sum(tl.where(offs[None, :] == t, c, 0.0), 1)
    logz = run_max + tl.log(run_sum)
    out = ks * n_pos + p
    tl.store(logz_ptr + out, logz, mask=ks < n_coal)
    tl.store(target_ptr + out, tgt - logz, mask=ks < n_coal)


@triton.jit
def dense_partial_kernel(
    ref_ptr,
    src_ptr,
    w_ptr,
    temp_ptr,
    out_ptr,
    part_max_ptr,
    part_sum_ptr,
    part_bad_ptr,
    stride_ref,
    stride_src_r,
    stride_src_n,
    n_sources,
    n_chunks,
    V,
    CHUNK: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    """Chunk ``q`` of row ``m``: ``c = (a_0 ref + sum_j w_j src_j) / T`` (``-inf`` where a
    participating row is ``-inf``), stored into ``out``; the chunk's (max, sum exp) and bad flag."""
    m = tl.program_id(0)
    q = tl.program_id(1)
    temp = tl.load(temp_ptr + m)
    total = tl.zeros([], dtype=tl.float32)
    for j in range(0, n_sources):
        total += tl.load(w_ptr + m * n_sources + j)
    a0 = 1.0 - total
    run_max = tl.zeros([], dtype=tl.float32) + float("-inf")
    run_sum = tl.zeros([], dtype=tl.float32)
    bad = tl.zeros([], dtype=tl.int32)
    for v0 in range(q * CHUNK, q * CHUNK + CHUNK, BLOCK_V):
        offs = v0 + tl.arange(0, BLOCK_V)
        in_range = offs < V
        acc = tl.zeros([BLOCK_V], dtype=tl.float32)
        masked = offs < 0
        if a0 != 0.0:
            logit = tl.load(ref_ptr + m * stride_ref + offs, mask=in_range, other=0.0).to(tl.float32)
            neg_inf = logit == float("-inf")
            masked = masked | neg_inf
            bad = bad | tl.max(((logit != logit) | (logit == float("inf"))).to(tl.int32), 0)
            acc += tl.where(neg_inf, 0.0, a0 * logit)
        for j in range(0, n_sources):
            w = tl.load(w_ptr + m * n_sources + j)
            if w != 0.0:
                logit = tl.load(src_ptr + m * stride_src_r + j * stride_src_n + offs, mask=in_range, other=0.0).to(
                    tl.float32
                )
                neg_inf = logit == float("-inf")
                masked = masked | neg_inf
                bad = bad | tl.max(((logit != logit) | (logit == float("inf"))).to(tl.int32), 0)
                acc += tl.where(neg_inf, 0.0, w * logit)
        dead = masked | (in_range == 0)
        c = tl.where(dead, float("-inf"), acc / temp)
        tl.store(out_ptr + m * V + offs, c, mask=in_range)
        new_max = tl.maximum(run_max, tl.max(c, 0))
        keep = tl.where(run_max == float("-inf"), 0.0, tl.exp(run_max - new_max))
        shift = tl.where(new_max == float("-inf"), 0.0, new_max)
        run_sum = run_sum * keep + tl.sum(tl.where(dead, 0.0, tl.exp(c - shift)), 0)
        run_max = new_max
    tl.store(part_max_ptr + m * n_chunks + q, run_max)
    tl.store(part_sum_ptr + m * n_chunks + q, run_sum)
    tl.store(part_bad_ptr + m * n_chunks + q, bad)


@triton.jit
def dense_finish_kernel(
    out_ptr,
    logz_ptr,
    part_max_ptr,
    part_sum_ptr,
    part_bad_ptr,
    n_chunks,
    V,
    CHUNK: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    """Row ``m``'s log-normaliser from its chunk states (NaN: a bad row, ``-inf``: masked
    everywhere), subtracted from chunk ``q``; chunk 0 stores it."""
    m = tl.program_id(0)
    q = tl.program_id(1)
    run_max = tl.zeros([], dtype=tl.float32) + float("-inf")
    run_sum = tl.zeros([], dtype=tl.float32)
    bad = tl.zeros([], dtype=tl.int32)
    for p in range(0, n_chunks):
        pm = tl.load(part_max_ptr + m * n_chunks + p)
        ps = tl.load(part_sum_ptr + m * n_chunks + p)
        bad = bad | tl.load(part_bad_ptr + m * n_chunks + p)
        new_max = tl.maximum(run_max, pm)
        keep = tl.where(run_max == float("-inf"), 0.0, tl.exp(run_max - new_max))
        take = tl.where(pm == float("-inf"), 0.0, tl.exp(pm - new_max))
        run_sum = run_sum * keep + ps * take
        run_max = new_max
    logz = run_max + tl.log(run_sum)
    logz = tl.where(bad != 0, float("nan"), logz)
    if q == 0:
        tl.store(logz_ptr + m, logz)
    for v0 in range(q * CHUNK, q * CHUNK + CHUNK, BLOCK_V):
        offs = v0 + tl.arange(0, BLOCK_V)
        in_range = offs < V
        c = tl.load(out_ptr + m * V + offs, mask=in_range, other=0.0)
        tl.store(out_ptr + m * V + offs, c - logz, mask=in_range)


@triton.jit
def fold_chunk_kernel(
    logits_ptr, stride, cols, first_col, targets_ptr, max_ptr, sum_ptr, target_ptr, BLOCK_V: tl.constexpr
):
    # Fused linear log-probability: one program per row folds a chunk of the LM head's logits
    # (columns first_col .. first_col + cols of the vocabulary) into the row's running
    # log-sum-exp (max, sum exp(x - max)) and keeps the target's logit when it is in the chunk.
    r = tl.program_id(0)
    row = logits_ptr + r.to(tl.int64) * stride
    m = tl.load(max_ptr + r)
    s = tl.load(sum_ptr + r)
    for start in range(0, cols, BLOCK_V):
        offs = start + tl.arange(0, BLOCK_V)
        x = tl.load(row + offs, mask=offs < cols, other=float("-inf")).to(tl.float32)
        new_m = tl.maximum(m, tl.max(x, 0))
        shift = tl.where(new_m == float("-inf"), 0.0, new_m)  # no (-inf) - (-inf)
        s = s * tl.exp(m - shift) + tl.sum(tl.exp(x - shift), 0)
        m = new_m
    tl.store(max_ptr + r, m)
    tl.store(sum_ptr + r, s)
    t = tl.load(targets_ptr + r) - first_col
    if (t >= 0) & (t < cols):
        tl.store(target_ptr + r, tl.load(row + t).to(tl.float32))

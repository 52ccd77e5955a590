"""Counter-based noise for common-random-number sampling.

Every backend (torch, C++, CUDA, Triton) draws the Gumbel noise of token ``v`` in output row
``m`` from the same pure function of ``(seed, stream_id[m], step, v)``. Nothing else enters:
not the coalition, not the weights, not the batch layout. Coalitions that decode the same
prompt (same stream id) at the same step therefore see the same noise (common random
numbers), and two backends given the same inputs pick the same token.

The generator uses nothing but unsigned 32-bit integer arithmetic -- multiply, add (both
modulo 2**32), xor and logical right shift -- so that it can be reproduced bit for bit in
C++ (``uint32_t``), CUDA and Triton (``tl.uint32``).

The algorithm
-------------
All quantities are unsigned 32-bit integers; ``*`` and ``+`` wrap modulo 2**32.

``mix32`` is the "lowbias32" integer finaliser (C. Wellons, *hash-prospector*), a
bijection of the 32-bit integers::

    mix32(x):
        x ^= x >> 16
        x *= 0x7FEB352D
        x ^= x >> 15
        x *= 0x846CA68B
        x ^= x >> 16
        return x

The seed, the stream id and the step are 64-bit integers, each split into its low and high
32-bit words (a negative ``int64`` stream id or step is taken as its two's-complement bit
pattern). The six words ``seed_lo, seed_hi, stream_lo, stream_hi, step_lo, step_hi`` are
absorbed, in that order, into two lanes that start from different constants (the first two
32-bit words of the fraction of pi) and absorb each word differently (xor, resp. add)::

    a = 0x243F6A88
    b = 0x85A308D3
    for w in (seed_lo, seed_hi, stream_lo, stream_hi, step_lo, step_hi):
        a = mix32(a ^ w)
        b = mix32(b + w)

``(a, b)`` is the 64-bit key of the row; it is computed once per row. The 32 random bits of
token ``v`` (``0 <= v < 2**32``) are::

    h = mix32(mix32(v ^ a) + b)

and its uniform and Gumbel variates, computed in the floating-point type of the caller::

    u = ((h >> 9) + 0.5) * 2**-23       # in [2**-24, 1 - 2**-24]: never 0 or 1
    g = -log(-log(u))

``u`` uses the top 23 bits of ``h`` so that ``(h >> 9) + 0.5`` and the product are exact in
float32: ``u`` is bit-identical in float32 and float64 on every backend. Only ``g`` depends on
the ``log`` of the platform (a few ulp).

Why this shape: tuples that differ in a single word always get different keys ``a`` (a chain
of bijections); two lanes make a full key collision between different tuples a 64-bit event,
so no two (stream, step) rows share their noise vector, even shifted by a token permutation;
the two rounds of ``mix32`` per token decorrelate neighbouring tokens.
"""

from __future__ import annotations

import math

import torch

from ..errors import InvalidArgumentError
from .contract import as_int64, check_int64_range

__all__ = [
    "MASK32",
    "Steps",
    "Tokens",
    "gumbel",
    "gumbel_scalar",
    "hash32",
    "hash32_scalar",
    "mix32_scalar",
    "row_keys",
    "uniform",
    "uniform_scalar",
]

#: All arithmetic is modulo 2**32: results are masked to this.
MASK32 = 0xFFFFFFFF
#: Start values of the two key lanes (the first two 32-bit words of the fraction of pi).
LANE_A_INIT = 0x243F6A88
LANE_B_INIT = 0x85A308D3
#: The two multipliers of the lowbias32 finaliser.
MIX_MUL_1 = 0x7FEB352D
MIX_MUL_2 = 0x846CA68B
#: ``u = ((h >> UNIFORM_SHIFT) + 0.5) * UNIFORM_SCALE``.
UNIFORM_SHIFT = 9
UNIFORM_SCALE = 2.0**-23

_U64 = 1 << 64

#: The decoding step of every row: one Python int, or an int64 tensor ``[M]``.
Steps = int | torch.Tensor
#: The tokens: ``V`` for ``arange(V)``, or an int64 tensor ``[V]`` of token ids.
Tokens = int | torch.Tensor


# --------------------------------------------------------------------------------------
# pure Python, one value at a time (the specification, and golden values in tests)


def mix32_scalar(x: int) -> int:
    """The lowbias32 finaliser on one unsigned 32-bit integer.

    Parameters
    ----------
    x
        An integer in ``[0, 2**32)``.

    Returns
    -------
    int
        ``mix32(x)``, in ``[0, 2**32)``.
    """
    x &= MASK32
    x ^= x >> 16
    x = (x * MIX_MUL_1) & MASK32
    x ^= x >> 15
    x = (x * MIX_MUL_2) & MASK32
    x ^= x >> 16
    return x


def _words64(value: int) -> tuple[int, int]:
    value %= _U64
    return value & MASK32, value >> 32


def _row_key_scalar(seed: int, stream: int, step: int) -> tuple[int, int]:
    a, b = LANE_A_INIT, LANE_B_INIT
    for word in (*_words64(seed), *_words64(stream), *_words64(step)):
        a = mix32_scalar(a ^ word)
        b = mix32_scalar((b + word) & MASK32)
    return a, b


def hash32_scalar(seed: int, stream: int, step: int, token: int) -> int:
    """The 32 random bits of one ``(seed, stream, step, token)``.

    Parameters
    ----------
    seed, stream, step
        Integers in ``[-2**63, 2**64)``; negative values are taken as 64-bit two's complement.
    token
        Token id in ``[0, 2**32)``.

    Returns
    -------
    int
        ``h`` in ``[0, 2**32)`` (see the module docstring).
    """
    for name, value in (("seed", seed), ("stream", stream), ("step", step)):
        check_int64_range(value, name)
    if not 0 <= token <= MASK32:
        raise InvalidArgumentError(f"token must be in [0, 2**32), got {token}")
    a, b = _row_key_scalar(seed, stream, step)
    return mix32_scalar((mix32_scalar(token ^ a) + b) & MASK32)


def uniform_scalar(seed: int, stream: int, step: int, token: int) -> float:
    """The uniform variate of one ``(seed, stream, step, token)``, exactly as every backend.

    Returns
    -------
    float
        ``((h >> 9) + 0.5) * 2**-23``, in ``[2**-24, 1 - 2**-24]``; exactly representable in
        float32.
    """
    return ((hash32_scalar(seed, stream, step, token) >> UNIFORM_SHIFT) + 0.5) * UNIFORM_SCALE


def gumbel_scalar(seed: int, stream: int, step: int, token: int) -> float:
    """The standard Gumbel variate ``-log(-log(u))`` of one tuple, in double precision."""
    return -math.log(-math.log(uniform_scalar(seed, stream, step, token)))


# --------------------------------------------------------------------------------------
# torch, vectorised over rows and tokens (int64 tensors holding 32-bit values)


def _mul32(x: torch.Tensor, constant: int) -> torch.Tensor:
    """``x * constant mod 2**32`` for int64 tensors holding values in ``[0, 2**32)``.

    The constant is split into 16-bit halves so that no intermediate product leaves int64
    (``x * lo < 2**48``): nothing relies on signed overflow.
    """
    lo, hi = constant & 0xFFFF, constant >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & MASK32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    x = x ^ (x >> 16)
    x = _mul32(x, MIX_MUL_1)
    x = x ^ (x >> 15)
    x = _mul32(x, MIX_MUL_2)
    return x ^ (x >> 16)


def _as_row_tensor(value: int | torch.Tensor, name: str, device: torch.device) -> torch.Tensor:
    """A Python int or an int64 tensor, as int64 (two's complement of the 64-bit value)."""
    if isinstance(value, torch.Tensor):
        if value.dtype != torch.int64:
            raise InvalidArgumentError(f"{name} must be an int64 tensor, got {value.dtype}; convert it with .long()")
        return value.to(device)
    return torch.tensor(as_int64(value, name), dtype=torch.int64, device=device)


def row_keys(seed: int, stream_id: torch.Tensor, step: Steps = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The 64-bit key ``(a, b)`` of every row: the part of the hash that is fixed per row.

    Parameters
    ----------
    seed
        Python int in ``[0, 2**64)`` (negative values are taken as two's complement).
    stream_id
        int64 ``[M]``: one stream per row (e.g. the prompt the row decodes).
    step
        Python int, or int64 ``[M]`` for rows at different steps.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        int64 ``[M]`` each, holding the 32-bit lanes ``a`` and ``b``.
    """
    if not isinstance(stream_id, torch.Tensor) or stream_id.dtype != torch.int64:
        raise InvalidArgumentError("stream_id must be an int64 tensor [M]; convert it with .long()")
    if stream_id.dim() != 1:
        raise InvalidArgumentError(f"stream_id must be 1-d [M], got shape {tuple(stream_id.shape)}")
    device = stream_id.device
    seed_t = _as_row_tensor(seed, "seed", device)
    step_t = _as_row_tensor(step, "step", device)
    if step_t.dim() > 1 or (step_t.dim() == 1 and step_t.shape[0] != stream_id.shape[0]):
        raise InvalidArgumentError(
            f"step must be an int or an int64 tensor [M] with M = {stream_id.shape[0]}, got shape {tuple(step_t.shape)}"
        )
    seed_t, stream_t, step_t = torch.broadcast_tensors(seed_t, stream_id, step_t)
    a = torch.full_like(stream_t, LANE_A_INIT)
    b = torch.full_like(stream_t, LANE_B_INIT)
    for value in (seed_t, stream_t, step_t):
        # arithmetic shift then mask: the high word of the two's-complement pattern
        for word in (value & MASK32, (value >> 32) & MASK32):
            a = _mix32(a ^ word)
            b = _mix32((b + word) & MASK32)
    return a, b


def _tokens_tensor(tokens: Tokens, device: torch.device) -> torch.Tensor:
    if isinstance(tokens, torch.Tensor):
        if tokens.dtype != torch.int64 or tokens.dim() != 1:
            raise InvalidArgumentError(
                f"tokens must be an int64 tensor [V] (or an int V), got {tokens.dtype} of shape {tuple(tokens.shape)}"
            )
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) > MASK32):
            raise InvalidArgumentError("tokens must be in [0, 2**32)")
        return tokens.to(device)
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
        raise InvalidArgumentError(f"tokens must be an int64 tensor [V] or a non-negative int V, got {tokens!r}")
    return torch.arange(tokens, dtype=torch.int64, device=device)


def hash32(seed: int, stream_id: torch.Tensor, step: Steps, tokens: Tokens) -> torch.Tensor:
    """The 32 random bits of every ``(row, token)``.

    Parameters
    ----------
    seed
        Python int in ``[0, 2**64)``.
    stream_id
        int64 ``[M]``.
    step
        Python int or int64 ``[M]``.
    tokens
        int64 ``[V]`` token ids in ``[0, 2**32)``, or an int ``V`` for ``arange(V)``.

    Returns
    -------
    torch.Tensor
        int64 ``[M, V]`` holding ``h`` in ``[0, 2**32)`` (see the module docstring).
    """
    a, b = row_keys(seed, stream_id, step)
    tok = _tokens_tensor(tokens, stream_id.device)
    return _mix32((_mix32(tok[None, :] ^ a[:, None]) + b[:, None]) & MASK32)


def uniform(
    seed: int, stream_id: torch.Tensor, step: Steps, tokens: Tokens, *, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Uniform variates in ``[2**-24, 1 - 2**-24]`` for every ``(row, token)``.

    Parameters
    ----------
    seed, stream_id, step, tokens
        As in :func:`hash32`.
    dtype
        ``torch.float32`` or ``torch.float64``; the values are the same in both.

    Returns
    -------
    torch.Tensor
        ``[M, V]`` of ``dtype``.
    """
    if dtype not in (torch.float32, torch.float64):
        raise InvalidArgumentError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    bits = hash32(seed, stream_id, step, tokens) >> UNIFORM_SHIFT
    return (bits.to(dtype) + 0.5) * UNIFORM_SCALE


def gumbel(
    seed: int, stream_id: torch.Tensor, step: Steps, tokens: Tokens, *, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Standard Gumbel variates ``-log(-log(u))`` of the variates ``u`` of :func:`uniform` (same
    arguments), the two logarithms in ``dtype``: ``[M, V]``, finite (``u`` is never 0 or 1)."""
    u = uniform(seed, stream_id, step, tokens, dtype=dtype)
    return -torch.log(-torch.log(u))

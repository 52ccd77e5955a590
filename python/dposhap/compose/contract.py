"""The contract of the compose kernels: what every backend takes, checks and returns.

One owner for the rules that every backend shares, so that they cannot drift apart: the names
of the outputs (:data:`OutputName`) and their container (:class:`ComposeOutput`), the arguments
of the gather form as a caller gives them (:class:`GatherRequest`) and as every backend reads
them once checked (:class:`GatherArgs`, built by :func:`validate_gather`), the canonical slot
layout of the members (:func:`canonical_members`, :func:`slot_layout`), and the range of the
64-bit noise counters (:func:`check_int64_range`, :func:`as_int64`).

The layers of :mod:`dposhap.compose` point one way::

    contract  <-  noise  <-  reference  <-  kernel launchers, ops  <-  registry  <-  backends (dispatcher)

This module imports nothing else of the package but its errors.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Literal, ParamSpec, TypeVar, cast

import torch

from ..errors import InvalidArgumentError

__all__ = [
    "FLOAT_DTYPES",
    "LOGIT_DTYPES",
    "OUTPUT_NAMES",
    "ComposeOutput",
    "DenseRequest",
    "GatherArgs",
    "GatherRequest",
    "OutputName",
    "SharedRequest",
    "Temperature",
    "as_int64",
    "canonical_members",
    "check_device",
    "check_float_tensor",
    "check_index_tensor",
    "check_int64_range",
    "check_length",
    "first_index",
    "normalize_outputs",
    "resolve_compute_dtype",
    "single_source_rows",
    "slot_layout",
    "temperature_rows",
    "validate_gather",
    "with_request_arguments",
]

#: The outputs the gather form can return.
OutputName = Literal["logprobs", "logz", "correction", "target_logprob", "sample"]
OUTPUT_NAMES: tuple[OutputName, ...] = ("logprobs", "logz", "correction", "target_logprob", "sample")
#: A temperature: one for every row, or a floating tensor ``[M]``.
Temperature = float | torch.Tensor
#: Dtypes of logits (and hidden states) the compose forms accept.
LOGIT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
#: Dtypes of weights and coefficients.
FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)

_U64 = 1 << 64
_I64_MIN = -(1 << 63)


@dataclass
class ComposeOutput:
    """What the gather form returns: the requested outputs, ``None`` for the others.

    Attributes
    ----------
    logprobs
        ``[M, V]`` log-probabilities ``log_softmax(c)``, in the compute dtype.
    logz
        ``[M]`` log-normaliser ``logsumexp_v c``.
    correction
        ``[M]`` per-step sequence-level correction ``logsumexp_v (a_0 lp_r + sum_j a_j
        lp_{s_j})`` where ``lp`` is each row's own ``log_softmax`` at temperature 1; exactly 0
        for a row that is a single source (or the reference) with coefficient 1.
    target_logprob
        ``[M]`` ``logprobs[m, targets[m]]`` (``-inf`` if the target is masked).
    sample
        ``[M]`` int64 sampled tokens.
    """

    logprobs: torch.Tensor | None = None
    logz: torch.Tensor | None = None
    correction: torch.Tensor | None = None
    target_logprob: torch.Tensor | None = None
    sample: torch.Tensor | None = None

    def require(self, name: OutputName) -> torch.Tensor:
        """The output ``name``, which the call must have asked for.

        Raises
        ------
        InvalidArgumentError
            ``name`` was not among the requested outputs.
        """
        value = getattr(self, name)
        if value is None:
            raise InvalidArgumentError(f"the output {name!r} was not requested: add it to outputs=")
        return value


# --------------------------------------------------------------------------------------
# small checks, each with a message that says what was wrong and where


def first_index(mask: torch.Tensor) -> tuple[int, ...]:
    """Index of the first True entry (row-major) of a boolean tensor that has one."""
    return tuple(int(i) for i in mask.nonzero()[0].tolist())


def normalize_outputs(outputs: Sequence[OutputName] | OutputName) -> tuple[OutputName, ...]:
    """``outputs`` as a tuple of known output names (one name is accepted on its own).

    Raises
    ------
    InvalidArgumentError
        An unknown name.
    """
    names: tuple[str, ...] = (outputs,) if isinstance(outputs, str) else tuple(outputs)
    unknown = [o for o in names if o not in OUTPUT_NAMES]
    if unknown:
        raise InvalidArgumentError(f"unknown output(s) {unknown}; choose from {list(OUTPUT_NAMES)}")
    return cast(tuple[OutputName, ...], names)


def check_int64_range(value: object, name: str) -> None:
    """A Python int in ``[-2**63, 2**64)``: a 64-bit counter (negative values are taken as
    two's complement) of the noise.

    Raises
    ------
    InvalidArgumentError
        Not an int (a bool is not), or out of range.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentError(f"{name} must be a Python int, got {type(value).__name__}")
    if not _I64_MIN <= value < _U64:
        raise InvalidArgumentError(f"{name} = {value} does not fit in 64 bits; pass a value in [0, 2**64)")


def as_int64(value: int, name: str) -> int:
    """A checked 64-bit counter (see :func:`check_int64_range`) as the int64 with the same bits."""
    check_int64_range(value, name)
    value %= _U64
    return value - _U64 if value >= 1 << 63 else value


def resolve_compute_dtype(input_dtype: torch.dtype, compute_dtype: torch.dtype | None) -> torch.dtype:
    """The dtype a form computes in: ``compute_dtype``, or float64 for float64 inputs, else float32."""
    if compute_dtype is None:
        return torch.float64 if input_dtype == torch.float64 else torch.float32
    if compute_dtype not in (torch.float32, torch.float64):
        raise InvalidArgumentError(f"compute_dtype must be None, torch.float32 or torch.float64, got {compute_dtype}")
    return compute_dtype


def check_float_tensor(x: object, name: str, shape: str, ndim: int, dtypes: Sequence[torch.dtype]) -> torch.Tensor:
    """``x`` as a floating tensor with ``ndim`` dimensions (``shape`` names them) and one of ``dtypes``."""
    if not isinstance(x, torch.Tensor):
        raise InvalidArgumentError(f"{name} must be a torch.Tensor {shape}, got {type(x).__name__}")
    if x.dim() != ndim:
        raise InvalidArgumentError(f"{name} must be {ndim}-d {shape}, got shape {tuple(x.shape)}")
    if x.dtype not in dtypes:
        names = ", ".join(str(d).removeprefix("torch.") for d in dtypes)
        raise InvalidArgumentError(f"{name} must have dtype {names}; got {x.dtype}")
    return x


def check_index_tensor(x: object, name: str, shape: str, ndim: int) -> torch.Tensor:
    """``x`` as an int64 tensor with ``ndim`` dimensions (``shape`` names them)."""
    if not isinstance(x, torch.Tensor):
        raise InvalidArgumentError(f"{name} must be an int64 torch.Tensor {shape}, got {type(x).__name__}")
    if x.dtype != torch.int64:
        raise InvalidArgumentError(f"{name} must be int64, got {x.dtype}; convert it with .long()")
    if x.dim() != ndim:
        raise InvalidArgumentError(f"{name} must be {ndim}-d {shape}, got shape {tuple(x.shape)}")
    return x


def check_device(x: torch.Tensor, name: str, device: torch.device) -> None:
    """``x`` is on the device of the logits."""
    if x.device != device:
        raise InvalidArgumentError(
            f"{name} is on {x.device} but the logits are on {device}; move it with .to({str(device)!r})"
        )


def check_length(x: torch.Tensor, name: str, m: int) -> None:
    """``x`` has one entry per output row."""
    if x.shape[0] != m:
        raise InvalidArgumentError(f"{name} has {x.shape[0]} rows but ref_index has M = {m}; give one per output row")


def temperature_rows(temperature: Temperature, m: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The temperature of every output row, ``[M]`` in ``dtype``; finite and > 0."""
    if isinstance(temperature, torch.Tensor):
        if not temperature.is_floating_point():
            raise InvalidArgumentError(f"temperature must be a float or a floating tensor [M], got {temperature.dtype}")
        if temperature.dim() > 1 or (temperature.dim() == 1 and temperature.shape[0] != m):
            raise InvalidArgumentError(
                f"temperature must be a float or a tensor [M] with M = {m}, got shape {tuple(temperature.shape)}"
            )
        check_device(temperature, "temperature", device)
        t = temperature.to(dtype).expand(m)
    elif isinstance(temperature, (int, float)) and not isinstance(temperature, bool):
        t = torch.full((m,), float(temperature), dtype=dtype, device=device)
    else:
        raise InvalidArgumentError(f"temperature must be a float or a tensor [M], got {type(temperature).__name__}")
    bad = ~(torch.isfinite(t) & (t > 0))
    if bool(bad.any()):
        (row,) = first_index(bad)
        raise InvalidArgumentError(
            f"temperature of output row {row} is {float(t[row])}; it must be finite and > 0 (for greedy decoding sample with top_k=1)"
        )
    return t


# --------------------------------------------------------------------------------------
# the slots of an output row


def canonical_members(
    n_rows: int,
    device: torch.device,
    ref_index: object,
    src_index: object,
    src_weight: object,
    dtype: torch.dtype,
    rows_name: str = "logits",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check the member arguments of the gather form and put the members in canonical order.

    The canonical order sorts each row's members by index, then by weight (padding, index
    ``-1`` with weight 0, first), so that the order in which a coalition lists its members
    does not change a bit of any result.

    Parameters
    ----------
    n_rows, device
        The rows (``rows_name``) the indices point into, and their device.
    ref_index, src_index, src_weight
        As in :func:`dposhap.compose.reference.compose`.
    dtype
        The compute dtype the weights are converted to.

    Returns
    -------
    (torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor)
        ``ref_index [M]``, the member indices ``[M, J]`` and weights ``[M, J]`` (in ``dtype``)
        in canonical order, and ``order [M, J]``: each slot's original member position.
    """
    ref_index = check_index_tensor(ref_index, "ref_index", "[M]", 1)
    src_index = check_index_tensor(src_index, "src_index", "[M, J]", 2)
    src_weight = check_float_tensor(src_weight, "src_weight", "[M, J]", 2, FLOAT_DTYPES)
    for x, name in ((ref_index, "ref_index"), (src_index, "src_index"), (src_weight, "src_weight")):
        check_device(x, name, device)
    m = ref_index.shape[0]
    check_length(src_index, "src_index", m)
    if src_weight.shape != src_index.shape:
        raise InvalidArgumentError(
            f"src_weight has shape {tuple(src_weight.shape)} but src_index has {tuple(src_index.shape)}; give one weight per member slot"
        )
    bad = (ref_index < 0) | (ref_index >= n_rows)
    if bool(bad.any()):
        (row,) = first_index(bad)
        raise InvalidArgumentError(
            f"ref_index[{row}] = {int(ref_index[row])} is out of range: {rows_name} has {n_rows} rows, so it must be in [0, {n_rows})"
        )
    bad = (src_index < -1) | (src_index >= n_rows)
    if bool(bad.any()):
        row, slot = first_index(bad)
        raise InvalidArgumentError(
            f"src_index[{row}, {slot}] = {int(src_index[row, slot])} is out of range: {rows_name} has {n_rows} rows, "
            f"so a member must be in [0, {n_rows}), or -1 for padding"
        )
    padding = src_index < 0
    weight = src_weight.to(dtype)
    bad = ~torch.isfinite(weight) & ~padding
    if bool(bad.any()):
        row, slot = first_index(bad)
        raise InvalidArgumentError(
            f"src_weight[{row}, {slot}] = {float(src_weight[row, slot])} is not finite; weights must be finite numbers"
        )
    weight = weight.masked_fill(padding, 0.0)
    index = src_index.masked_fill(padding, -1)
    # canonical order: by weight, then (stably) by index
    by_weight = torch.sort(weight, dim=1, stable=True).indices
    by_index = torch.sort(index.gather(1, by_weight), dim=1, stable=True).indices
    order = by_weight.gather(1, by_index)
    return ref_index, index.gather(1, order), weight.gather(1, order), order


def slot_layout(
    ref_index: torch.Tensor, src_index: torch.Tensor, src_weight: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The slots of every output row, in the order of the members given (no checks).

    Slot 0 is the reference with coefficient ``a_0 = 1 - sum_j w_j`` (summed in the members'
    order), slots ``1..J`` the members with ``a_j = w_j``; padding (index ``-1``, weight 0) reads
    row 0 with coefficient 0.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        ``rows [M, J + 1]`` (int64) and ``coef [M, J + 1]`` (the weights' dtype).
    """
    rows = torch.cat([ref_index[:, None], src_index.clamp(min=0)], dim=1)
    coef = torch.cat([1.0 - src_weight.sum(dim=1, keepdim=True), src_weight], dim=1)
    return rows, coef


def single_source_rows(coef: torch.Tensor) -> torch.Tensor:
    """``[M]`` bool: the rows whose only participating slot has coefficient exactly 1 (one
    source, or the reference alone), whose sequence-level correction is exactly 0."""
    used = coef != 0
    return (used.sum(dim=1) == 1) & (torch.where(used, coef, 0.0).sum(dim=1) == 1)


# --------------------------------------------------------------------------------------
# the gather form


@dataclass(frozen=True, eq=False)
class GatherRequest:
    """The arguments of the gather form as the caller gave them: unchecked, except that the
    output names are normalised. Every backend is handed one. Its fields are the one written
    signature of the gather form (see :func:`with_request_arguments`); what each means is said
    by :func:`dposhap.compose.reference.compose`."""

    logits: torch.Tensor
    ref_index: torch.Tensor
    src_index: torch.Tensor
    src_weight: torch.Tensor
    temperature: Temperature = 1.0
    _: KW_ONLY
    outputs: Sequence[OutputName] | OutputName = ("logprobs",)
    targets: torch.Tensor | None = None
    seed: int = 0
    stream_id: torch.Tensor | None = None
    step: int | torch.Tensor = 0
    top_k: int | None = None
    compute_dtype: torch.dtype | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "outputs", normalize_outputs(self.outputs))

    @property
    def wanted(self) -> tuple[OutputName, ...]:
        """The requested outputs, normalised."""
        return cast(tuple[OutputName, ...], self.outputs)


@dataclass(frozen=True, eq=False)
class SharedRequest:
    """The arguments of the shared-source form (unchecked): fixed text scored under many
    coalitions. Its fields are the one written signature of the form; what each means is said
    by :func:`dposhap.compose.reference.shared_scores`."""

    logits: torch.Tensor
    coef: torch.Tensor
    targets: torch.Tensor
    _: KW_ONLY
    block_v: int = 4096
    compute_dtype: torch.dtype | None = None


_Params = ParamSpec("_Params")
_Request = TypeVar("_Request")
_Result = TypeVar("_Result")


def with_request_arguments(
    request_type: Callable[_Params, _Request],
) -> Callable[[Callable[[_Request], _Result]], Callable[_Params, _Result]]:
    """Let a function of one request (:class:`GatherRequest`, :class:`DenseRequest`,
    :class:`SharedRequest`) be called
    with the request's own arguments.

    The decorated function is called as the request class is constructed (``compose(logits,
    ref_index, ..., top_k=5)``), and receives the request. So the signature of a form is written
    once, as the fields of its request class, and every entry point of the form shares it, typed
    (``help`` and type checkers see the request's parameters).
    """

    def decorate(function: Callable[[_Request], _Result]) -> Callable[_Params, _Result]:
        @functools.wraps(function)
        def entry(*args: _Params.args, **kwargs: _Params.kwargs) -> _Result:
            return function(request_type(*args, **kwargs))

        returns = inspect.signature(function).return_annotation
        entry.__signature__ = inspect.signature(request_type).replace(return_annotation=returns)  # type: ignore[attr-defined]  # read by inspect.signature
        return entry

    return decorate


@dataclass(frozen=True, eq=False)
class GatherArgs:
    """A checked gather request, as every backend computes from it.

    Attributes
    ----------
    outputs
        The requested outputs.
    logits
        ``[T, V]``, as given.
    rows, coef, slots
        ``[M, J + 1]``: the logits row, the coefficient (compute dtype) and the original member
        position (``-1`` for the reference) of every slot, members in canonical order (see
        :func:`canonical_members` and :func:`slot_layout`).
    temp
        ``[M]`` temperatures in the compute dtype.
    targets
        int64 ``[M]`` when ``"target_logprob"`` is requested, else as given.
    seed, step, top_k
        As given (checked when ``"sample"`` is requested).
    stream_id
        int64 ``[M]`` when ``"sample"`` is requested (default ``arange(M)``), else as given.
    dtype
        The compute dtype.
    """

    outputs: tuple[OutputName, ...]
    logits: torch.Tensor
    rows: torch.Tensor
    coef: torch.Tensor
    slots: torch.Tensor
    temp: torch.Tensor
    targets: torch.Tensor | None
    seed: int
    stream_id: torch.Tensor | None
    step: int | torch.Tensor
    top_k: int | None
    dtype: torch.dtype

    @property
    def vocab(self) -> int:
        """The vocabulary size ``V``."""
        return int(self.logits.shape[1])


def validate_gather(request: GatherRequest) -> GatherArgs:
    """Check a gather request and put the members of every row in canonical order.

    Raises
    ------
    InvalidArgumentError
        Wrong shapes, dtypes or devices, an index out of range, a non-finite weight, a
        non-positive temperature, missing or out-of-range targets, a bad ``top_k``, seed or
        step (see :func:`dposhap.compose.reference.compose`).
    """
    outputs = request.wanted
    logits = check_float_tensor(request.logits, "logits", "[T, V]", 2, LOGIT_DTYPES)
    n_rows, vocab = logits.shape
    if vocab == 0:
        raise InvalidArgumentError("logits has an empty vocabulary (V = 0)")
    device = logits.device
    dtype = resolve_compute_dtype(logits.dtype, request.compute_dtype)
    ref_index, index, weight, order = canonical_members(
        n_rows, device, request.ref_index, request.src_index, request.src_weight, dtype
    )
    rows, coef = slot_layout(ref_index, index, weight)
    slots = torch.cat([torch.full_like(ref_index[:, None], -1), order], dim=1)
    m = rows.shape[0]
    temp = temperature_rows(request.temperature, m, device, dtype)
    targets, stream_id, step, top_k = request.targets, request.stream_id, request.step, request.top_k
    if "target_logprob" in outputs:
        if targets is None:
            raise InvalidArgumentError('the "target_logprob" output needs targets: pass targets=<int64 tensor [M]>')
        targets = check_index_tensor(targets, "targets", "[M]", 1)
        check_device(targets, "targets", device)
        check_length(targets, "targets", m)
        bad = (targets < 0) | (targets >= vocab)
        if bool(bad.any()):
            (row,) = first_index(bad)
            raise InvalidArgumentError(
                f"targets[{row}] = {int(targets[row])} is out of range: it must be a token in [0, {vocab})"
            )
    if "sample" in outputs:
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise InvalidArgumentError(f"top_k must be None or an int >= 1, got {top_k!r}")
        check_int64_range(request.seed, "seed")
        if stream_id is None:
            stream_id = torch.arange(m, dtype=torch.int64, device=device)
        stream_id = check_index_tensor(stream_id, "stream_id", "[M]", 1)
        check_device(stream_id, "stream_id", device)
        check_length(stream_id, "stream_id", m)
        if isinstance(step, torch.Tensor):
            step = check_index_tensor(step, "step", "[M]", 1)
            check_device(step, "step", device)
            check_length(step, "step", m)
        else:
            check_int64_range(step, "step")
    return GatherArgs(outputs, logits, rows, coef, slots, temp, targets, request.seed, stream_id, step, top_k, dtype)


@dataclass(frozen=True, eq=False)
class DenseRequest:
    """The arguments of the dense form (unchecked): row ``i`` composes ``ref[i]`` with
    ``sources[i, :]``. Its fields are the one written signature of the dense form; what each
    means is said by :func:`dposhap.compose.reference.log_probs`."""

    ref: torch.Tensor
    sources: torch.Tensor
    weights: torch.Tensor
    temperature: Temperature = 1.0
    _: KW_ONLY
    compute_dtype: torch.dtype | None = None

    def checked(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(ref, sources, weights)`` checked, as given (no copy), with ``weights`` as ``[R, n]``
        (a ``[n]`` row expanded, bool or integer weights in the compute dtype).

        Raises
        ------
        InvalidArgumentError
            Wrong shapes, dtypes or devices.
        """
        ref = check_float_tensor(self.ref, "ref", "[R, V]", 2, LOGIT_DTYPES)
        sources = check_float_tensor(self.sources, "sources", "[R, n, V]", 3, LOGIT_DTYPES)
        weights = self.weights
        r, vocab = ref.shape
        n = sources.shape[1]
        if sources.shape[0] != r or sources.shape[2] != vocab:
            raise InvalidArgumentError(
                f"sources must be [R, n, V] = [{r}, n, {vocab}] to match ref, got {tuple(sources.shape)}"
            )
        if sources.dtype != ref.dtype:
            raise InvalidArgumentError(f"ref is {ref.dtype} but sources is {sources.dtype}; pass both in one dtype")
        check_device(sources, "sources", ref.device)
        if not isinstance(weights, torch.Tensor):
            raise InvalidArgumentError(f"weights must be a tensor [R, n] or [n], got {type(weights).__name__}")
        check_device(weights, "weights", ref.device)
        if not weights.is_floating_point():  # bool membership or integer weights
            weights = weights.to(resolve_compute_dtype(ref.dtype, self.compute_dtype))
        if weights.dim() == 1:
            weights = weights[None, :].expand(r, -1)
        if weights.shape != (r, n):
            raise InvalidArgumentError(
                f"weights must be [R, n] = [{r}, {n}] or [n] = [{n}], got {tuple(weights.shape)}"
            )
        return ref, sources, weights

    def gather(self) -> GatherRequest:
        """The same rows as a gather request (the dense arguments checked; ref and sources
        concatenated into one logits matrix: the reference's layout, not the kernels')."""
        ref, sources, weights = self.checked()
        r, vocab = ref.shape
        n = sources.shape[1]
        logits = torch.cat([ref[:, None, :], sources], dim=1).reshape(r * (n + 1), vocab)
        ref_index = torch.arange(r, device=ref.device) * (n + 1)
        src_index = ref_index[:, None] + 1 + torch.arange(n, device=ref.device)[None, :]
        return GatherRequest(logits, ref_index, src_index, weights, self.temperature, compute_dtype=self.compute_dtype)

"""Margin games: held-out preference accuracy and DPO log-likelihood of any coalition, natively.

On a held-out pair ``(x, y_w, y_l)`` source ``i`` has the DPO margin
``m_i = beta * ((log pi_i(y_w|x) - log pi_ref(y_w|x)) - (log pi_i(y_l|x) - log pi_ref(y_l|x)))``
and a coalition's margin is exactly ``sum_{i in S} m_i`` (docs/design.md §1). One teacher-forced
pass per source and one for the reference give the margins matrix ``[n, P]``
(:func:`margins_matrix`, tokenised as TRL does: :mod:`dposhap.tokenization`); preference accuracy and
held-out DPO log-likelihood of any coalition are then a masked sum, evaluated natively by
:class:`~dposhap.MarginGame` (:func:`margin_utilities`).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from ..core import ItemScores, MarginGame, MarginKind
from ..errors import InvalidArgumentError
from ..run import Run, atomic_write_json, atomic_write_npy, config_hash
from ..settings import setting
from ..tokenization import Record, response_sequences
from ..validate import check_int
from .base import BuildContext, UtilityKind, register_utility
from .evalsets import default_pair_sets, evaluation_pairs
from .teacher import ScoringPath, policy, response_logprobs

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "MARGIN_KINDS",
    "MarginSettings",
    "MarginUtilities",
    "margin_utilities",
    "margins_matrix",
]

MarginUtilityKind = Literal["accuracy", "loglik", "logsigmoid", "mean"]
#: The utility kinds of :func:`margin_utilities` and the :class:`MarginGame` kind each one runs.
MARGIN_KINDS: dict[str, MarginKind] = {
    "accuracy": "accuracy",
    "loglik": "logsigmoid",
    "logsigmoid": "logsigmoid",
    "mean": "mean",
}
_CACHE_FORMAT = 2


def margins_matrix(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    sources: Sequence[str],
    records: Sequence[Record],
    beta: float,
    *,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    max_length: int | None = None,
    path: ScoringPath = "auto",
) -> np.ndarray:
    """The DPO margin of every source on every pair.

    ``margins[i, j] = beta * ((lp_i(c_j) - lp_ref(c_j)) - (lp_i(r_j) - lp_ref(r_j)))``, with
    ``lp`` from :func:`sequence_logprobs`: one pass over the pairs for the reference and one per
    source (the records are tokenized once).

    Parameters
    ----------
    model
        A PEFT model holding one adapter per source, named by the source.
    tokenizer, records, batch_size, device, max_length
        As in :func:`sequence_logprobs`.
    sources
        The adapters, in player order.
    beta
        The DPO temperature the adapters were trained with.
    path
        As in :func:`~dposhap.evaluate.teacher.response_logprobs`: by default the LM head runs
        only at response positions, fused with the log-normaliser, and each pair's prompt once.

    Returns
    -------
    numpy.ndarray
        float64 ``[len(sources), len(records)]``.
    """
    if not sources:
        raise InvalidArgumentError("no sources: give at least one adapter name")
    if not isinstance(beta, numbers.Real) or isinstance(beta, bool) or not beta > 0:
        raise InvalidArgumentError(f"beta must be a positive number, got {beta!r}")
    sequences = response_sequences(tokenizer, records, ("chosen", "rejected"), max_length)
    n = len(records)

    def log_ratio_difference(adapter: str | None) -> np.ndarray:
        with policy(model, adapter):
            lp = response_logprobs(
                model, tokenizer, sequences, batch_size=2 * batch_size, device=device, shared_prompts=2, path=path
            )
        return lp[:n] - lp[n:]

    reference = log_ratio_difference(None)
    return np.stack([beta * (log_ratio_difference(source) - reference) for source in sources])


@dataclass(frozen=True)
class MarginUtilities:
    """Margin games of a run: preference accuracy, held-out DPO log-likelihood, mean margin.

    Calling it evaluates a batch of coalitions (the ask/tell loop's utility); each game is also
    available as a native :class:`~dposhap.MarginGame` for :func:`dposhap.shapley`, which
    evaluates it in Rust with no Python call per coalition.

    Attributes
    ----------
    margins
        float64 ``[n_sources, n_pairs]``.
    sources
        The players, in order.
    kinds
        The utilities, in output order: ``"accuracy"`` (``mean 1[m_S > 0]``, ties 1/2),
        ``"loglik"`` (``mean log sigmoid(m_S)``), ``"mean"`` (``mean m_S``).
    games
        One :class:`~dposhap.MarginGame` per kind.
    pair_sets
        Per pair, the evaluation set it comes from (a source name or ``"<world>:<objective>"``).
    beta
        The DPO temperature of the margins.
    cache_path
        The ``.npy`` file the margins were read from or written to, or None.
    from_cache
        Whether the margins were read from the cache rather than computed.
    """

    margins: np.ndarray
    sources: tuple[str, ...]
    kinds: tuple[str, ...]
    games: dict[str, MarginGame] = field(repr=False)
    pair_sets: tuple[str, ...] = field(default=(), repr=False)
    beta: float = 0.1
    cache_path: Path | None = None
    from_cache: bool = False
    #: Coalitions may be given as per-source weights (``[b, n]`` floats): the games are linear in them.
    takes_weights: ClassVar[bool] = True

    @classmethod
    def from_margins(
        cls,
        margins: np.ndarray,
        sources: Sequence[str],
        kinds: Sequence[str] = ("accuracy", "loglik"),
        **kwargs: Any,
    ) -> MarginUtilities:
        """Build the games of a margins matrix ``[n, P]`` whose rows are ``sources``."""
        names = (kinds,) if isinstance(kinds, str) else tuple(kinds)
        unknown = [k for k in names if k not in MARGIN_KINDS]
        if unknown or not names or len(set(names)) != len(names):
            raise InvalidArgumentError(f"kinds must be distinct names from {list(MARGIN_KINDS)}, got {list(names)}")
        margins = np.ascontiguousarray(margins, dtype=np.float64)
        if margins.ndim != 2 or margins.shape[0] != len(sources):
            raise InvalidArgumentError(f"margins has shape {margins.shape}; expected [{len(sources)}, n_pairs]")
        games = {kind: MarginGame(margins, MARGIN_KINDS[kind]) for kind in names}
        return cls(margins, tuple(sources), names, games, **kwargs)

    @property
    def cache_config(self) -> None:
        """None: a margin game is evaluated natively and never cached."""
        return None

    @property
    def batch_size(self) -> None:
        """None: the estimator's default (the native game takes any batch)."""
        return None

    @property
    def players(self) -> tuple[str, ...]:
        """The sources (:class:`~dposhap.evaluate.Utility` protocol)."""
        return self.sources

    @property
    def objectives(self) -> tuple[str, ...]:
        """The kinds, in output order (:class:`~dposhap.evaluate.Utility` protocol)."""
        return self.kinds

    def native_game(self) -> MarginGame | None:
        """The native game of the single kind (None with several kinds: call the utility instead)."""
        return self.games[self.kinds[0]] if len(self.kinds) == 1 else None

    def describe(self) -> dict[str, Any]:
        """The kinds, the evaluation sets (in order) and the number of pairs."""
        sets = list(dict.fromkeys(self.pair_sets))
        return {
            "utility": self.kinds[0] if len(self.kinds) == 1 else list(self.kinds),
            "heldout": sets,
            "pairs": self.n_pairs,
        }

    @property
    def n_players(self) -> int:
        """Number of sources."""
        return len(self.sources)

    @property
    def n_pairs(self) -> int:
        """Number of evaluation pairs."""
        return int(self.margins.shape[1])

    def game(self, kind: str | None = None) -> MarginGame:
        """The native game of ``kind`` (default: the first kind)."""
        kind = self.kinds[0] if kind is None else kind
        if kind not in self.games:
            raise InvalidArgumentError(f"no {kind!r} game here; the kinds are {list(self.kinds)}")
        return self.games[kind]

    @property
    def n_items(self) -> int:
        """Number of evaluation pairs (the items a bootstrap resamples)."""
        return self.n_pairs

    def item_scores(self, coalitions: np.ndarray) -> ItemScores:
        """Per pair and kind, the pair's term (``1[m_S > 0]`` with ties 1/2, ``log sigmoid(m_S)``
        or ``m_S``) of each coalition: ``[b, kinds, pairs]``."""
        c = np.asarray(coalitions, dtype=np.float64)
        sums = (c[None, :] if c.ndim == 1 else c) @ self.margins  # [b, m]
        terms = {
            "accuracy": lambda x: np.where(x > 0, 1.0, np.where(x == 0, 0.5, 0.0)),
            "loglik": lambda x: np.minimum(x, 0.0) - np.log1p(np.exp(-np.abs(x))),
            "mean": lambda x: x,
        }
        return ItemScores(np.stack([terms[kind](sums) for kind in self.kinds], axis=1))

    def __call__(self, coalitions: np.ndarray) -> np.ndarray:
        """Utilities of a batch of coalitions, bool ``[b, n]``: ``[b]`` for one kind, ``[b, k]`` for several."""
        values = [self.games[kind](coalitions) for kind in self.kinds]
        return values[0] if len(values) == 1 else np.stack(values, axis=1)

    def select(self, pair_set: str) -> MarginUtilities:
        """The same games restricted to the pairs of one evaluation set."""
        keep = np.array([s == pair_set for s in self.pair_sets])
        if not keep.any():
            raise InvalidArgumentError(f"no pairs from {pair_set!r}; the sets are {sorted(set(self.pair_sets))}")
        return MarginUtilities.from_margins(
            self.margins[:, keep], self.sources, self.kinds, pair_sets=(pair_set,) * int(keep.sum()), beta=self.beta
        )


def margin_utilities(
    run: Run | str | Path,
    *,
    heldout: str | Sequence[str] | None = None,
    kinds: Sequence[str] = ("accuracy", "loglik"),
    sources: Sequence[str] | None = None,
    batch_size: int = 16,
    device: str | None = None,
    world_pairs: int | None = None,
    eval_file: str | Path | None = None,
    recompute: bool = False,
    pool: Any = None,
    models: Any = None,
) -> MarginUtilities:
    """The margin games of a trained run, over evaluation pairs.

    Loads the run's base model and adapters (:meth:`dposhap.run.Run.load_models`), computes the
    margins matrix (:func:`margins_matrix`, with the run's ``beta`` and ``max_length``) and
    caches it as ``RUN/margins/<hash>.npy``, with a ``.json`` beside it saying what it holds.
    The hash covers the base model's fingerprint and dtype, every adapter's identity, the pairs,
    beta and max_length, so a later call with the same inputs reads the file and loads no model.

    Parameters
    ----------
    run
        A run directory written by :func:`dposhap.train_sources` (or an opened :class:`Run`).
    heldout
        The evaluation pairs (:func:`dposhap.evaluate.evalsets.evaluation_pairs`): ``"all"``, or
        source names and ``"<world>:<objective>"`` sets; default the world's trusted sets for a
        world run, else ``"all"``.
    kinds
        The utilities, in output order: ``"accuracy"``, ``"loglik"`` (``"logsigmoid"``) or ``"mean"``.
    sources
        The players (default: every trained source, in manifest order).
    batch_size
        Pairs per forward pass.
    device
        Where to run the models; default the run's ``model.device``.
    world_pairs
        Pairs per ``"<world>:<objective>"`` set.
    eval_file
        A trusted evaluation set (the set ``"eval"``; default the one stored with the run).
    recompute
        Ignore (and overwrite) a cached matrix.
    pool
        A Ray evaluation pool (:class:`dposhap.cluster.EvaluationPool`): the matrix is computed by
        its actors, sharded by source (each loads the base model and its share of the adapters),
        and this process loads no model.
    models
        Loaded models (:class:`dposhap.run.RunModels`) whose adapters are the players instead of the
        run's (``sources`` is then ignored): their margins on the run's evaluation pairs, not cached.

    Returns
    -------
    MarginUtilities
    """
    run = run if isinstance(run, Run) else Run.open(run)
    pair_sets = default_pair_sets(run, eval_file) if heldout is None else heldout
    records, sets = evaluation_pairs(run, pair_sets, world_pairs=world_pairs, eval_file=eval_file)
    beta, max_length = run.manifest.beta, run.manifest.max_length
    if models is not None:
        margins = margins_matrix(
            models.model, models.tokenizer, models.sources, records, beta, batch_size=batch_size, max_length=max_length
        )
        return MarginUtilities.from_margins(margins, models.sources, kinds, pair_sets=tuple(sets), beta=beta)
    names = run.select_sources(sources)
    key = config_hash(
        {
            "format": _CACHE_FORMAT,
            **run.cache_identity(names),
            "records": config_hash(records),
            "beta": beta,
            "max_length": max_length,
        }
    )[:24]
    path = run.margins_dir / f"{key}.npy"
    extra: dict[str, Any] = dict(pair_sets=tuple(sets), beta=beta, cache_path=path)
    if not recompute and path.is_file():
        try:
            cached = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            cached = None
        if cached is not None and cached.shape == (len(names), len(records)):
            return MarginUtilities.from_margins(cached, names, kinds, from_cache=True, **extra)
    MarginUtilities.from_margins(np.zeros((len(names), 1)), names, kinds)  # check the kinds before the work
    if pool is not None:
        margins = pool.margins(names, records, beta, batch_size=batch_size, max_length=max_length)
    else:
        loaded = run.load_models(sources=names, device=device)
        margins = margins_matrix(
            loaded.model, loaded.tokenizer, names, records, beta, batch_size=batch_size, max_length=max_length
        )
    atomic_write_npy(path, margins)
    atomic_write_json(
        path.with_suffix(".json"),
        {
            "sources": names,
            "heldout": pair_sets if isinstance(pair_sets, str) else list(pair_sets),
            "n_pairs": len(records),
            "pair_sets": sets,
            "beta": beta,
            "max_length": max_length,
        },
    )
    return MarginUtilities.from_margins(margins, names, kinds, **extra)


@dataclass
class MarginSettings:
    """Settings of the margin games (``accuracy``, ``loglik``) and of ``likelihood``."""

    eval_file: str | None = setting(
        "a trusted evaluation set (preference pairs, the formats of training data), the set 'eval' (default: the "
        "run's [eval] set, if any)",
        flag="--eval",
        default=None,
    )
    heldout: list[str] | None = setting(
        "evaluation pairs: 'eval' (the trusted set), source names (their held-out splits), '<world>:<objective>' "
        "sets, or 'all' (default: the trusted set if there is one, else the world's trusted sets for a world run, "
        "else all held-out splits)",
        default=None,
    )
    world_pairs: int | None = setting(
        "pairs per '<world>:<objective>' set (default: the world's own, 128)", default=None
    )
    pair_batch_size: int = setting("pairs per teacher-forced forward pass", default=16)

    def __post_init__(self) -> None:
        if self.heldout is not None and (isinstance(self.heldout, str) or not self.heldout):
            raise InvalidArgumentError(f"heldout must be a non-empty list of set names, got {self.heldout!r}")
        check_int("pair_batch_size", self.pair_batch_size)
        check_int("world_pairs", self.world_pairs, optional=True)

    def pair_sets(self) -> str | list[str] | None:
        """The ``heldout`` argument of :func:`margin_utilities` (``["all"]`` is ``"all"``)."""
        return "all" if self.heldout == ["all"] else self.heldout


def _margin_kind(kind: MarginUtilityKind, help_text: str) -> UtilityKind:
    def build(run: Run, settings: MarginSettings, context: BuildContext) -> MarginUtilities:
        return margin_utilities(
            run,
            heldout=settings.pair_sets(),
            kinds=(kind,),
            batch_size=settings.pair_batch_size,
            device=context.device,
            eval_file=settings.eval_file,
            world_pairs=settings.world_pairs,
            pool=context.pool,
            models=context.models,
        )

    return register_utility(UtilityKind(kind, help_text, MarginSettings, build, pooled="build"))


ACCURACY = _margin_kind(
    "accuracy", "preference accuracy of the summed DPO margins on evaluation pairs (ties 1/2); native Rust"
)
LOGLIK = _margin_kind(
    "loglik", "DPO log-likelihood on evaluation pairs, mean log sigmoid of the summed margins; native Rust"
)

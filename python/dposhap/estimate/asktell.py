"""The ask/tell estimators over the Rust engine, and the loop that feeds one a Python utility.

:class:`ShapleyEstimator` (and :class:`BanzhafEstimator`) hands out batches of distinct
coalitions and takes their utilities back; :meth:`ShapleyEstimator.run_native` runs it to the end
on a native game inside Rust, :func:`drive` on any Python callable, batch by batch.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from .._core import Engine
from .._core import methods as native_methods
from ..core import Game, NativeGame, utility_values
from ..errors import DposhapError, InvalidArgumentError, UtilityError
from ..validate import MAX_PLAYERS, check_int
from .result import ShapleyResult

__all__ = [
    "DEFAULT_BATCH",
    "BanzhafEstimator",
    "BanzhafMethod",
    "Semivalue",
    "ShapleyEstimator",
    "ShapleyMethod",
    "drive",
    "methods",
]

ShapleyMethod = Literal["auto", "exact", "permutation", "antithetic", "stratified", "svarm", "regression", "kernel"]
BanzhafMethod = Literal["auto", "exact", "msr"]
Semivalue = Literal["shapley", "banzhaf"]

#: Coalitions per call of a Python utility unless told otherwise.
DEFAULT_BATCH = 1024
#: Batches in flight for a utility with ``submit``/``collect`` (the run cache): the next one is
#: evaluated while one is told. A constant, so the values never depend on how many workers there are.
LOOKAHEAD = 2
#: Estimates enter the history each time the evaluation count has grown by this factor.
HISTORY_GROWTH = 1.25


def _names(names: Sequence[str] | None, n: int) -> list[str]:
    if names is None:
        return [str(i) for i in range(n)]
    names = [str(x) for x in names]
    if len(names) != n:
        raise InvalidArgumentError(
            f"names has {len(names)} entries but there are {n} players: give one name per player"
        )
    return names


class ShapleyEstimator:
    """Ask/tell estimator of Shapley values.

    The estimator hands out batches of distinct coalitions (:meth:`ask`), the caller evaluates
    them however it likes and hands the utilities back (:meth:`tell`). Every coalition is asked
    at most once per run; the number asked never exceeds ``budget``.

    Parameters
    ----------
    n_players
        Number of players (data sources).
    method
        ``"auto"`` (exact enumeration when ``2**n <= budget``, else ``"regression"``, the most
        accurate in ``bench/shapley``), ``"exact"``, ``"permutation"``, ``"antithetic"``,
        ``"stratified"`` (Neyman allocation over player x size strata), ``"svarm"`` (stratified
        SVARM), ``"regression"`` (up to 24 players: a surrogate game with main and pair effects
        fitted to the evaluated coalitions, whose exact values are known, plus stratified SVARM
        on its residuals; from 25 to 128 players: a pilot of complementary pairs chooses
        between an additive surrogate of the game's odd part with SVARM strata on its residual,
        and unpaired SVARM), ``"kernel"`` (unbiased KernelSHAP, paired).
    seed
        Seed of the coalition sampler; the same seed gives the same coalitions everywhere.
    budget
        Most utility evaluations (distinct coalitions) to spend.
    tol
        Stop once every standard error is at most ``tol``.
    control_values
        Exact values ``[n]`` or ``[n, kc]`` of a control game whose utilities are told along
        with the main ones (see :func:`shapley`'s ``control``).
    names
        Player names for the result.
    pilot
        Samples per stratum in the pilot of ``"stratified"`` (default: from the budget).
    max_units
        Stop after this many units of work (permutations, stratum samples, ...). With the
        seed, method and budget of an earlier run and its ``n_units``, the estimator asks
        exactly the coalitions that run absorbed (for every method whose plan does not depend
        on the utilities): how bootstrap replicates are computed without new evaluations.
    """

    semivalue: Semivalue = "shapley"

    def __init__(
        self,
        n_players: int,
        method: str = "auto",
        *,
        seed: int = 0,
        budget: int | None = None,
        tol: float | None = None,
        control_values: np.ndarray | None = None,
        names: Sequence[str] | None = None,
        pilot: int | None = None,
        max_units: int | None = None,
    ) -> None:
        if not isinstance(n_players, (int, np.integer)) or isinstance(n_players, bool):
            raise InvalidArgumentError(f"n_players must be an integer, got {type(n_players).__name__}")
        check_int("n_players", int(n_players), minimum=None, maximum=MAX_PLAYERS)  # before the engine allocates
        if budget is not None and (not isinstance(budget, (int, np.integer)) or isinstance(budget, bool)):
            raise InvalidArgumentError(f"budget must be an integer number of utility evaluations, got {budget!r}")
        if tol is not None and not (isinstance(tol, (int, float, np.floating)) and not isinstance(tol, bool)):
            raise InvalidArgumentError(f"tol must be a positive number, got {tol!r}")
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or not 0 <= seed < 2**64:
            raise InvalidArgumentError(f"seed must be an integer in [0, 2**64), got {seed!r}")
        if budget is not None and not 0 < budget < 2**63:
            raise InvalidArgumentError(
                f"budget must be a positive number of utility evaluations below 2**63, got {budget}"
            )
        cv = None
        if control_values is not None:
            cv = np.asarray(control_values, dtype=np.float64)
            if cv.ndim == 1:
                cv = cv[:, None]
            cv = np.ascontiguousarray(cv)
        self._engine = Engine(
            int(n_players),
            method=method,
            semivalue=self.semivalue,
            seed=int(seed),
            budget=None if budget is None else int(budget),
            tol=None if tol is None else float(tol),
            pilot=pilot,
            control_exact=cv,
            max_units=None if max_units is None else int(max_units),
        )
        self.budget = None if budget is None else int(budget)
        self.n_players = int(n_players)
        self.names = _names(names, self.n_players)
        self.seed = int(seed)
        self._k: int | None = None
        self._scalar = True
        self.history: list[tuple[int, np.ndarray]] = []
        self._started = time.perf_counter()

    @property
    def method(self) -> str:
        """The method that runs (``auto`` resolved)."""
        return self._engine.method

    @property
    def done(self) -> bool:
        """True once the budget, the tolerance or the method's own end is reached."""
        return self._engine.done

    @property
    def n_evaluations(self) -> int:
        """Distinct coalitions handed out so far (told or still out: see :meth:`result` for those told)."""
        return self._engine.n_evaluations

    def ask(self, max_batch: int) -> np.ndarray:
        """Up to ``max_batch`` distinct coalitions to evaluate next, as a bool array ``[b, n]``.

        Fewer (or none) come back near the end of the budget or while the estimator waits for
        utilities it has asked for.
        """
        if max_batch < 1:
            raise InvalidArgumentError(f"max_batch must be at least 1, got {max_batch}")
        return self._engine.ask(int(max_batch))

    def tell(self, coalitions: np.ndarray, utilities: Any, control: Any = None) -> None:
        """Hand back the utilities of asked coalitions.

        Parameters
        ----------
        coalitions
            Bool array ``[b, n]``: rows returned by :meth:`ask`, in any order, each once.
        utilities
            ``[b]`` or ``[b, k]``; ``k`` stays the same for the whole run.
        control
            Utilities of the control game on the same coalitions, when the estimator was built
            with ``control_values``.
        """
        coalitions = np.ascontiguousarray(coalitions, dtype=bool)
        b = coalitions.shape[0]
        u = utility_values(utilities, b, "utility")
        if self._k is None:
            self._k = u.shape[1]
            self._scalar = np.ndim(utilities) == 1
        kc = self._engine.control_width
        if kc:
            if control is None:
                raise InvalidArgumentError(
                    "this estimator has a control game: pass its utilities as tell(..., control=...)"
                )
            g = utility_values(control, b, "control game")
            if g.shape[1] != kc:
                raise UtilityError(f"the control game returned {g.shape[1]} values per coalition, expected {kc}")
            u = np.hstack([u, g])
        elif control is not None:
            raise InvalidArgumentError("control utilities were given but the estimator has no control_values")
        self._engine.tell(coalitions, u, u.shape[1] - kc)

    def _record(self, force: bool = False) -> None:
        """Add the current estimate to :attr:`history`, at geometrically spaced evaluation
        counts (every 25% more) so that recording stays cheap whatever the batch size."""
        evals = self._engine.n_evaluations - self._engine.n_outstanding  # told, not asked ahead
        if not force and self.history and evals < HISTORY_GROWTH * self.history[-1][0]:
            return
        snap = self._engine.snapshot()
        if snap is not None and (not self.history or self.history[-1][0] != evals):
            self.history.append((evals, self._shape(snap["values"])))

    def _shape(self, arr: np.ndarray) -> np.ndarray:
        return arr[:, 0].copy() if self._scalar and arr.shape[1] == 1 else arr

    def run_native(
        self, game: NativeGame, control: NativeGame | None = None, batch_size: int | None = None
    ) -> ShapleyResult:
        """Run to the end on a native game, evaluated in Rust without a Python call per coalition.

        Parameters
        ----------
        game
            The utility, a native game such as :class:`MarginGame` on :attr:`n_players` players.
        control
            A native control game, when the estimator was built with its ``control_values``.
        batch_size
            Coalitions per batch (default: enough to keep every core busy).

        Returns
        -------
        ShapleyResult
            The final estimate; :attr:`history` holds the estimate after each batch.
        """
        history = self._engine.run_native(game, control, batch_size)
        self.history = [(int(e), self._shape(v)) for e, v in history]
        return self.result()

    def result(self) -> ShapleyResult:
        """The estimate so far (final once :attr:`done`)."""
        snap = self._engine.result()
        if snap is None:
            raise DposhapError("no utilities have been told yet: ask, evaluate and tell at least one batch first")
        return ShapleyResult(
            values=self._shape(snap["values"]),
            stderr=self._shape(snap["stderr"]),
            # coalitions evaluated and told: a batch asked ahead and dropped when the run stopped is not one
            n_evaluations=int(snap["n_evaluations"]) - int(self._engine.n_outstanding),
            method=snap["method"],
            names=self.names,
            semivalue=self.semivalue,
            stop=snap["stop"],
            seed=self.seed,
            control_coef=self._shape(snap["control_coef"]),
            history=list(self.history),
            seconds=time.perf_counter() - self._started,
            budget=self.budget,
            n_units=int(snap["n_units"]),
        )


class BanzhafEstimator(ShapleyEstimator):
    """Ask/tell estimator of Banzhaf values: methods ``"auto"``, ``"exact"``, ``"msr"``
    (maximum sample reuse). Same interface as :class:`ShapleyEstimator`."""

    semivalue: Semivalue = "banzhaf"


def drive(
    estimator: ShapleyEstimator,
    utility: Game,
    control: Any = None,
    *,
    batch_size: int | None = None,
    progress: bool = False,
) -> ShapleyResult:
    """Run an ask/tell estimator to its end on a Python utility, one batch of coalitions at a time.

    Parameters
    ----------
    estimator
        A fresh estimator.
    utility
        A callable from bool coalitions ``[b, n]`` to utilities ``[b]`` or ``[b, k]`` (a native
        game is called like one; :meth:`ShapleyEstimator.run_native` runs it in Rust instead).
        One with ``submit``/``collect`` (and optionally ``discard``), such as the run cache, has
        the next batch evaluated while one is told.
    control
        The control game, called on the same coalitions, when ``estimator`` has ``control_values``.
    batch_size
        Coalitions per call of ``utility`` (default :data:`DEFAULT_BATCH`).
    progress
        Show a progress bar.

    Returns
    -------
    ShapleyResult
        The final estimate, with the estimator's history.

    Raises
    ------
    BaseException
        Whatever evaluating raised, carrying the estimate so far in ``.partial`` (None when no
        batch was told); an error from outside dposhap also gets a note that says so.
    """
    batch = batch_size or DEFAULT_BATCH
    bar = None
    if progress:
        from tqdm.auto import tqdm

        total = (
            estimator.budget
            if estimator.budget is not None
            else (2**estimator.n_players if estimator.method == "exact" else None)
        )
        bar = tqdm(total=total, unit="eval", desc=f"{estimator.semivalue} ({estimator.method})")
    # a utility that can start a batch before the previous one is told (submit/collect: the run
    # cache, over a Ray pool or not) gets the next batch while one is told; tells stay in
    # planning order, so the values do not depend on where or in which order batches finish
    fn: Any = utility
    pipelined = callable(getattr(fn, "submit", None)) and callable(getattr(fn, "collect", None))
    depth = LOOKAHEAD if pipelined else 1
    inflight: deque[tuple[np.ndarray, Any]] = deque()
    try:
        while True:
            while len(inflight) < depth and not estimator.done:
                asked = estimator.ask(batch)
                if len(asked) == 0:
                    break
                inflight.append((asked, fn.submit(asked) if pipelined else None))
            if not inflight:
                break
            coalitions, ticket = inflight.popleft()
            utilities = fn.collect(ticket) if pipelined else fn(coalitions)
            g = control(coalitions) if control is not None else None
            estimator.tell(coalitions, utilities, g)
            estimator._record()
            if bar is not None:
                bar.update(len(coalitions))
            if estimator.done:  # a batch asked ahead is not needed: it is dropped, never told
                break
    except BaseException as exc:
        # keep what was computed: the partial result travels with the error
        partial = None
        try:
            partial = estimator.result()
        except DposhapError:
            pass
        if isinstance(exc, (DposhapError, KeyboardInterrupt)):  # Ctrl-C keeps what was computed too
            exc.partial = partial  # type: ignore[union-attr]
        elif isinstance(exc, Exception):
            exc.partial = partial  # type: ignore[attr-defined]
            exc.add_note(
                f"dposhap: {partial.n_evaluations if partial is not None else 0} coalitions had been evaluated; "
                "the partial result is in the exception's .partial"
            )
        raise
    finally:
        if bar is not None:
            bar.close()
        for _, ticket in inflight:
            if pipelined and callable(getattr(fn, "discard", None)):
                fn.discard(ticket)
    estimator._record(force=True)
    return estimator.result()


def methods(semivalue: Semivalue = "shapley") -> list[str]:
    """Names of the methods available for a semivalue."""
    return list(native_methods(semivalue))

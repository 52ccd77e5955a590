"""Shapley and Banzhaf values of any utility, batched through the Rust engine."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .._core import Engine
from .._core import methods as native_methods
from ..core import Game, ItemScores, ItemUtility, MarginGame, NativeGame, utility_values
from ..errors import DposhapError, InvalidArgumentError, UtilityError
from ..validate import MAX_PLAYERS, check_int
from .bootstrap import Bootstrap, PairComparison, bootstrap_weights, compare_pairs

ShapleyMethod = Literal["auto", "exact", "permutation", "antithetic", "stratified", "svarm", "regression", "kernel"]
BanzhafMethod = Literal["auto", "exact", "msr"]
Semivalue = Literal["shapley", "banzhaf"]

#: A utility: a callable from a bool array ``[b, n]`` to ``[b]`` or ``[b, k]``, or a native game.
Utility = Game

#: Players up to which a Python-callable control game gets its exact values computed for you.
MAX_AUTO_CONTROL_PLAYERS = 16
#: Players up to which the exact values of a native control game are computed by enumeration.
MAX_NATIVE_EXACT_PLAYERS = 24
DEFAULT_BATCH = 1024
#: Batches in flight for a utility with ``submit``/``collect`` (the run cache): the next one is
#: evaluated while one is told. A constant, so the values never depend on how many workers there are.
LOOKAHEAD = 2
#: Above this many players ``method="auto"`` on a native game uses antithetic permutations,
#: whose nested coalitions the game evaluates incrementally.
NATIVE_CHAIN_PLAYERS = 128
#: Estimates enter the history each time the evaluation count has grown by this factor.
HISTORY_GROWTH = 1.25


@dataclass
class ShapleyResult:
    """Values of every player, with standard errors.

    Attributes
    ----------
    values
        ``[n]`` for a scalar utility, ``[n, k]`` for ``k`` objectives.
    stderr
        Standard error of each value (same shape; 0 for exact enumeration).
    n_evaluations
        Distinct coalitions whose utility was computed.
    method
        The method that ran (``auto`` resolved).
    names
        One name per player.
    semivalue
        ``"shapley"`` or ``"banzhaf"``.
    stop
        Why the run ended: ``"budget"``, ``"tol"``, ``"complete"`` or ``"running"``.
    seed
        The seed of the coalition sampler.
    control_coef
        The control-variate coefficient per value (zeros without a control game).
    history
        ``(n_evaluations, values)`` as the run went (every 25% more evaluations, and at the
        end), for convergence plots.
    seconds
        Wall time of the run.
    budget
        The evaluation budget the run was given (None: none).
    n_units
        Units of work the estimator absorbed (permutations, stratum samples, ...); with the
        seed, method and budget they fix the coalitions the values rest on.
    eval_stderr
        Evaluation standard error of each value (same shape as ``values``): the spread of the
        values over bootstrap resamples of the items the utility averages (``n_boot``); None
        when the utility is not a mean over items or no bootstrap ran.
    replicates
        The bootstrap replicates ``[n_boot, n]`` or ``[n_boot, n, k]``, or None.
    n_items
        Items the utility averages (held-out pairs, prompts), when known.
    """

    values: np.ndarray
    stderr: np.ndarray
    n_evaluations: int
    method: str
    names: list[str]
    semivalue: str = "shapley"
    stop: str = "complete"
    seed: int = 0
    control_coef: np.ndarray | None = None
    history: list[tuple[int, np.ndarray]] = field(default_factory=list, repr=False)
    seconds: float = 0.0
    budget: int | None = None
    n_units: int = 0
    eval_stderr: np.ndarray | None = None
    replicates: np.ndarray | None = field(default=None, repr=False)
    n_items: int | None = None

    @property
    def n_players(self) -> int:
        return len(self.names)

    @property
    def total_stderr(self) -> np.ndarray:
        """Standard error of each value from both sources of error: the estimator's sampling of
        coalitions and the evaluation items (``sqrt(stderr^2 + eval_stderr^2)``; the estimator's
        alone when no bootstrap ran)."""
        est = np.asarray(self.stderr, dtype=np.float64)
        if self.eval_stderr is None:
            return est
        return np.sqrt(est**2 + np.asarray(self.eval_stderr, dtype=np.float64) ** 2)

    def comparisons(self, objective: int = 0) -> list[PairComparison]:
        """Every pair of players compared on one objective (:func:`dposhap.estimate.compare_pairs`):
        the difference, its standard error (estimator and, with a bootstrap, evaluation noise,
        paired), the share of replicates in which the higher one wins, and whether it is
        significant at 95%."""
        values = np.asarray(self.values, dtype=np.float64)
        est = np.asarray(self.stderr, dtype=np.float64)
        reps = None if self.replicates is None else np.asarray(self.replicates, dtype=np.float64)
        if values.ndim == 2:
            values, est = values[:, objective], est[:, objective]
            reps = None if reps is None else reps[:, :, objective]
        elif objective != 0:
            raise InvalidArgumentError(f"the values have one objective; objective={objective} does not exist")
        return compare_pairs(self.names, values, est, reps)

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form, ready for ``json.dump``."""
        return {
            "semivalue": self.semivalue,
            "method": self.method,
            "n_evaluations": int(self.n_evaluations),
            "stop": self.stop,
            "seed": int(self.seed),
            "seconds": float(self.seconds),
            "names": list(self.names),
            "values": np.asarray(self.values).tolist(),
            "stderr": np.asarray(self.stderr).tolist(),
            "eval_stderr": None if self.eval_stderr is None else np.asarray(self.eval_stderr).tolist(),
            "total_stderr": np.asarray(self.total_stderr).tolist(),
            "n_items": self.n_items,
        }

    def __repr__(self) -> str:
        vals = np.asarray(self.values)
        errs = np.asarray(self.stderr)
        evals = None if self.eval_stderr is None else np.asarray(self.eval_stderr)
        if vals.ndim == 1:
            vals, errs = vals[:, None], errs[:, None]
            evals = None if evals is None else evals[:, None]
        k = vals.shape[1]
        width = max([6] + [len(n) for n in self.names])
        head = (
            f"{self.semivalue.capitalize()} values ({self.method}, {self.n_evaluations} evaluations, stop: {self.stop})"
        )
        if evals is not None:
            n_boot = 0 if self.replicates is None else len(self.replicates)
            head += f"; ± estimator ± evaluation error ({n_boot} bootstrap replicates over {self.n_items} items)"
        cols = "".join(
            f"{'value' if k == 1 else f'value[{j}]':>14}{'± est':>11}" + ("" if evals is None else f"{'± eval':>11}")
            for j in range(k)
        )
        lines = [head, f"{'player':<{width}}{cols}"]
        for i, name in enumerate(self.names):
            cells = "".join(
                f"{vals[i, j]:>14.6g}{errs[i, j]:>11.3g}" + ("" if evals is None else f"{evals[i, j]:>11.3g}")
                for j in range(k)
            )
            lines.append(f"{name:<{width}}{cells}")
        return "\n".join(lines)


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


def _control_values(control: Any, n: int, semivalue: Semivalue) -> tuple[Any, np.ndarray]:
    """Split ``control`` into (game, exact values), computing the values where possible."""
    if isinstance(control, tuple):
        if len(control) != 2:
            raise InvalidArgumentError("control=(game, exact_values) takes exactly two items")
        game, values = control
        values = np.asarray(values, dtype=np.float64)
    else:
        game, values = control, None
    if isinstance(game, NativeGame):
        if game.n_players != n:
            raise InvalidArgumentError(
                f"the control game has {game.n_players} players, the utility {n}: both must value the same sources"
            )
        if values is None:
            additive = game.additive_values() if semivalue == "shapley" else None
            if additive is not None:
                values = additive
            elif n <= MAX_NATIVE_EXACT_PLAYERS:
                values = game.exact(semivalue)
            else:
                raise InvalidArgumentError(
                    f"the exact values of a {game.kind!r} control game on {n} players are too costly to enumerate: "
                    "use kind 'mean' (closed form) or pass control=(game, exact_values)"
                )
    elif callable(game):
        if values is None:
            if n > MAX_AUTO_CONTROL_PLAYERS:
                raise InvalidArgumentError(
                    f"a Python control game on {n} players needs its exact values: pass control=(game, exact_values) "
                    f"(they are computed for you only up to {MAX_AUTO_CONTROL_PLAYERS} players)"
                )
            fn = shapley if semivalue == "shapley" else banzhaf
            values = fn(game, n, method="exact").values
    else:
        raise InvalidArgumentError(
            f"control must be a callable, a MarginGame or (game, exact_values), got {type(game).__name__}"
        )
    values = np.asarray(values, dtype=np.float64)
    if values.shape[0] != n:
        raise InvalidArgumentError(
            f"the control game's exact values have {values.shape[0]} rows; expected one per player ({n})"
        )
    return game, values


def _run(
    semivalue: Semivalue,
    utility: Utility,
    n_players: int | None,
    *,
    method: str,
    budget: int | None,
    tol: float | None,
    seed: int,
    batch_size: int | None,
    control: Any,
    names: Sequence[str] | None,
    progress: bool,
    n_boot: int = 0,
    boot_seed: int | None = None,
) -> ShapleyResult:
    check_int("n_boot", n_boot, minimum=0)  # before the estimate: a typo must not cost a whole run
    if n_boot == 1:
        raise InvalidArgumentError("n_boot must be 0 (no bootstrap) or at least 2 replicates; 200 is a good default")
    res = _estimate(
        semivalue,
        utility,
        n_players,
        method=method,
        budget=budget,
        tol=tol,
        seed=seed,
        batch_size=batch_size,
        control=control,
        names=names,
        progress=progress,
    )
    if n_boot and (isinstance(utility, NativeGame) or isinstance(utility, ItemUtility)):
        boot = bootstrap(
            utility,
            res,
            n_boot=n_boot,
            seed=res.seed if boot_seed is None else boot_seed,
            control=control,
            batch_size=batch_size,
            progress=progress,
        )
        attach_bootstrap(res, boot)
    return res


def _estimate(
    semivalue: Semivalue,
    utility: Utility,
    n_players: int | None,
    *,
    method: str,
    budget: int | None,
    tol: float | None,
    seed: int,
    batch_size: int | None,
    control: Any,
    names: Sequence[str] | None,
    progress: bool,
) -> ShapleyResult:
    native = utility if isinstance(utility, NativeGame) else None
    if native is not None:
        if n_players is not None and n_players != native.n_players:
            raise InvalidArgumentError(f"n_players={n_players} but the game has {native.n_players} players")
        n_players = native.n_players
    elif not callable(utility):
        raise InvalidArgumentError(
            f"utility must be a callable or a native game such as MarginGame, got {type(utility).__name__}"
        )
    if n_players is None:
        if names is None:
            raise InvalidArgumentError("pass n_players (or names) for a Python utility")
        n_players = len(names)
    if batch_size is not None and batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be at least 1, got {batch_size}")
    if native is not None and method == "auto" and n_players > NATIVE_CHAIN_PLAYERS and semivalue == "shapley":
        # a native game evaluates a chain of n + 1 nested coalitions in O(m) each, a lone
        # coalition in O(|S| m): past this size the permutation family wins on wall time
        method = "antithetic"
    game_c, control_values = (None, None) if control is None else _control_values(control, int(n_players), semivalue)
    cls = ShapleyEstimator if semivalue == "shapley" else BanzhafEstimator
    est = cls(n_players, method, seed=seed, budget=budget, tol=tol, control_values=control_values, names=names)
    started = time.perf_counter()

    if native is not None and est.method == "exact":
        values = native.exact(semivalue)
        return ShapleyResult(
            values=values,
            stderr=np.zeros_like(values),
            n_evaluations=2**n_players,
            method="exact",
            names=est.names,
            semivalue=semivalue,
            stop="complete",
            seed=seed,
            control_coef=np.zeros_like(values),
            seconds=time.perf_counter() - started,
            budget=budget,
        )
    if native is not None and (game_c is None or isinstance(game_c, NativeGame)):
        res = est.run_native(native, game_c, batch_size)
        res.seconds = time.perf_counter() - started
        return res

    batch = batch_size or DEFAULT_BATCH
    bar = None
    if progress:
        from tqdm.auto import tqdm

        total = budget if budget is not None else (2**n_players if est.method == "exact" else None)
        bar = tqdm(total=total, unit="eval", desc=f"{semivalue} ({est.method})")
    # a utility that can start a batch before the previous one is told (submit/collect: the run
    # cache, over a Ray pool or not) gets the next batch while one is told; tells stay in
    # planning order, so the values do not depend on where or in which order batches finish
    fn: Any = utility
    pipelined = callable(getattr(fn, "submit", None)) and callable(getattr(fn, "collect", None))
    depth = LOOKAHEAD if pipelined else 1
    inflight: deque[tuple[np.ndarray, Any]] = deque()
    try:
        while True:
            while len(inflight) < depth and not est.done:
                asked = est.ask(batch)
                if len(asked) == 0:
                    break
                inflight.append((asked, fn.submit(asked) if pipelined else None))
            if not inflight:
                break
            coalitions, ticket = inflight.popleft()
            utilities = fn.collect(ticket) if pipelined else fn(coalitions)
            g = game_c(coalitions) if game_c is not None else None
            est.tell(coalitions, utilities, g)
            est._record()
            if bar is not None:
                bar.update(len(coalitions))
            if est.done:  # a batch asked ahead is not needed: it is dropped, never told
                break
    except BaseException as exc:
        # keep what was computed: the partial result travels with the error
        partial = None
        try:
            partial = est.result()
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
    est._record(force=True)
    res = est.result()
    res.seconds = time.perf_counter() - started
    return res


def shapley(
    utility: Utility,
    n_players: int | None = None,
    *,
    method: ShapleyMethod | str = "auto",
    budget: int | None = None,
    tol: float | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    control: Any = None,
    names: Sequence[str] | None = None,
    progress: bool = False,
    n_boot: int = 0,
    boot_seed: int | None = None,
) -> ShapleyResult:
    """Shapley values of the players of ``utility``.

    Parameters
    ----------
    utility
        A callable mapping a bool array ``[b, n]`` of coalitions to utilities ``[b]`` or
        ``[b, k]`` (k objectives), or a native game such as :class:`MarginGame`, which is
        evaluated in Rust without calling Python.
    n_players
        Number of players; taken from a native game or from ``names`` when omitted.
    method
        See :class:`ShapleyEstimator`. ``"auto"`` enumerates exactly when ``2**n`` fits the
        budget (or ``n <= 10`` without one), and otherwise runs ``"regression"``.
    budget
        Most utility evaluations (distinct coalitions); never exceeded.
    tol
        Stop once every standard error is at most ``tol``.
    seed
        Seed of the coalition sampler.
    batch_size
        Coalitions per call of ``utility`` (default 1024).
    control
        A cheap game correlated with ``utility`` and evaluated on the same coalitions, whose
        exact values are known: a :class:`MarginGame` (kind ``"mean"`` has closed-form values;
        others are enumerated up to 24 players), a callable (enumerated up to 16 players), or
        ``(game, exact_values)``. Each value gets the variance-optimal control-variate
        coefficient.
    names
        One name per player.
    progress
        Show a progress bar.
    n_boot
        Bootstrap replicates over the items the utility averages (0: none). For a
        :class:`MarginGame` (items: its held-out pairs) or an item utility such as
        :class:`ItemGame` (see :mod:`dposhap.estimate.bootstrap`), the result gains ``eval_stderr``,
        ``total_stderr`` and ``replicates``: the items are resampled once per replicate, the
        same resample for every coalition, and the values recomputed on the coalitions the run
        absorbed (no new evaluations). Ignored for other utilities.
    boot_seed
        Seed of the item resampling (default: ``seed``).

    Returns
    -------
    ShapleyResult

    Raises
    ------
    dposhap.errors.DposhapError
        On bad arguments or utilities. Errors raised while evaluating carry the partial result
        in ``.partial``.

    Examples
    --------
    >>> import numpy as np, dposhap
    >>> w = np.array([3.0, 1.0, 1.0])
    >>> res = dposhap.shapley(lambda S: (S @ w >= 4).astype(float), 3)
    >>> res.values.round(3).tolist()
    [0.667, 0.167, 0.167]
    """
    return _run(
        "shapley",
        utility,
        n_players,
        method=method,
        budget=budget,
        tol=tol,
        seed=seed,
        batch_size=batch_size,
        control=control,
        names=names,
        progress=progress,
        n_boot=n_boot,
        boot_seed=boot_seed,
    )


def banzhaf(
    utility: Utility,
    n_players: int | None = None,
    *,
    method: BanzhafMethod | str = "auto",
    budget: int | None = None,
    tol: float | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    control: Any = None,
    names: Sequence[str] | None = None,
    progress: bool = False,
    n_boot: int = 0,
    boot_seed: int | None = None,
) -> ShapleyResult:
    """Banzhaf values of the players of ``utility``; same arguments as :func:`shapley`, with
    methods ``"auto"``, ``"exact"`` and ``"msr"`` (maximum sample reuse, Wang & Jia 2023)."""
    return _run(
        "banzhaf",
        utility,
        n_players,
        method=method,
        budget=budget,
        tol=tol,
        seed=seed,
        batch_size=batch_size,
        control=control,
        names=names,
        progress=progress,
        n_boot=n_boot,
        boot_seed=boot_seed,
    )


def bootstrap(
    utility: Any,
    result: ShapleyResult,
    *,
    n_boot: int = 200,
    seed: int = 0,
    control: Any = None,
    batch_size: int | None = None,
    progress: bool = False,
) -> Bootstrap:
    """Bootstrap a finished valuation over the items its utility averages.

    Each replicate resamples the items (multinomial counts, the same resample for every
    coalition) and recomputes the values with ``result``'s method, seed and budget on the
    coalitions its run absorbed (``result.n_units``). A native :class:`MarginGame` is
    reweighted in Rust; an :class:`~dposhap.core.ItemUtility` (an :class:`ItemGame`, or
    a utility read through the run cache that recorded per-item scores) reweights its per-item
    scores. All replicates run at once, as extra objectives of one estimator.

    Parameters
    ----------
    utility
        The utility the result was computed from.
    result
        Its result.
    n_boot
        Replicates (at least 2).
    seed
        Seed of the resampling.
    control
        The control game the run used, if any.
    batch_size
        Coalitions per call of an item utility.
    progress
        Show a progress bar.

    Returns
    -------
    Bootstrap
        ``replicates [n_boot, n, k]`` and the evaluation standard errors.
    """
    n = result.n_players
    semivalue: Semivalue = "shapley" if result.semivalue == "shapley" else "banzhaf"
    cls = ShapleyEstimator if semivalue == "shapley" else BanzhafEstimator
    game_c, control_values = (None, None) if control is None else _control_values(control, n, semivalue)
    if isinstance(utility, NativeGame):
        m = int(utility.n_pairs)
        weights = bootstrap_weights(m, n_boot, seed)
        if result.method == "exact":
            # values are linear in the game: the values per pair [n, m], then one product
            per_pair = np.asarray(utility.per_pair().exact(semivalue)).reshape(n, m)
            reps = per_pair @ (weights / weights.sum(axis=1, keepdims=True)).T
        else:
            game = utility.reweighted(weights)
            est = cls(
                n,
                result.method,
                seed=result.seed,
                budget=result.budget,
                control_values=control_values,
                max_units=result.n_units,
            )
            if not (game_c is None or isinstance(game_c, NativeGame)):
                raise InvalidArgumentError("a bootstrap of a native game takes a native control game")
            reps = est.run_native(game, game_c, batch_size).values
        return Bootstrap(np.asarray(reps).T[:, :, None].copy(), m, int(seed))
    if not isinstance(utility, ItemUtility):
        raise InvalidArgumentError(
            f"{type(utility).__name__} is not a mean over items: bootstrap a MarginGame, an ItemGame, or a utility "
            "with item_scores() and n_items"
        )
    m = int(utility.n_items)
    weights = bootstrap_weights(m, n_boot, seed)
    before = int(getattr(utility, "evaluated", 0))
    est = cls(
        n,
        result.method,
        seed=result.seed,
        budget=result.budget,
        control_values=control_values,
        max_units=result.n_units,
    )
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=result.n_evaluations, unit="coalition", desc=f"bootstrap ({n_boot} replicates)")
    k = 0
    try:
        while not est.done:
            coalitions = est.ask(batch_size or DEFAULT_BATCH)
            if len(coalitions) == 0:
                break
            scores = ItemScores.coerce(utility.item_scores(coalitions), len(coalitions))
            reps = scores.replicates(weights)  # [b, k, B]
            k = reps.shape[1]
            g = game_c(coalitions) if game_c is not None else None
            est.tell(coalitions, reps.reshape(len(coalitions), -1), g)
            if bar is not None:
                bar.update(len(coalitions))
    finally:
        if bar is not None:
            bar.close()
    values = np.asarray(est.result().values, dtype=np.float64).reshape(n, k, n_boot)
    new = int(getattr(utility, "evaluated", 0)) - before
    return Bootstrap(np.ascontiguousarray(values.transpose(2, 0, 1)), m, int(seed), new_evaluations=new)


def attach_bootstrap(result: ShapleyResult, boot: Bootstrap) -> ShapleyResult:
    """Put a bootstrap's replicates and evaluation errors on ``result`` (shaped like its values)."""
    reps = boot.replicates
    if np.ndim(result.values) == 1:
        reps = reps[:, :, 0]
    result.replicates = reps
    result.eval_stderr = reps.std(axis=0, ddof=1)
    result.n_items = boot.n_items
    return result


def methods(semivalue: Semivalue = "shapley") -> list[str]:
    """Names of the methods available for a semivalue."""
    return list(native_methods(semivalue))


__all__ = [
    "BanzhafEstimator",
    "MarginGame",
    "ShapleyEstimator",
    "ShapleyResult",
    "attach_bootstrap",
    "banzhaf",
    "bootstrap",
    "methods",
    "shapley",
]

"""Shapley and Banzhaf values of any utility: :func:`shapley` and :func:`banzhaf`.

The driver checks the arguments, picks the method, resolves the control game, runs the ask/tell
estimator (in Rust on a native game, batch by batch on a Python one), keeps a partial result when
evaluation fails, and adds the bootstrap over items when asked.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..core import Game, ItemUtility, NativeGame
from ..errors import InvalidArgumentError
from ..validate import check_int
from .asktell import BanzhafEstimator, BanzhafMethod, Semivalue, ShapleyEstimator, ShapleyMethod, drive
from .control import control_values
from .replay import attach_bootstrap, bootstrap
from .result import ShapleyResult

__all__ = ["NATIVE_CHAIN_PLAYERS", "Utility", "banzhaf", "shapley"]

#: A utility: a callable from a bool array ``[b, n]`` to ``[b]`` or ``[b, k]``, or a native game.
Utility = Game

#: Above this many players ``method="auto"`` on a native game uses antithetic permutations,
#: whose nested coalitions the game evaluates incrementally.
NATIVE_CHAIN_PLAYERS = 128


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
    game_c, control_exact = (None, None) if control is None else control_values(control, int(n_players), semivalue)
    cls = ShapleyEstimator if semivalue == "shapley" else BanzhafEstimator
    est = cls(n_players, method, seed=seed, budget=budget, tol=tol, control_values=control_exact, names=names)
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

    res = drive(est, utility, game_c, batch_size=batch_size, progress=progress)
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

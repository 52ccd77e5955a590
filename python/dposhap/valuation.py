"""Valuing the sources of a trained run: a utility in, Shapley values out, everything cached.

:func:`value_run` builds a registered utility of the run's coalitions
(:mod:`dposhap.evaluate`), runs the Rust estimator's ask/tell loop over it, and records the
values in ``RUN/values.json`` / ``values.csv`` (:func:`record_values`; :mod:`dposhap.report` reads
and draws them). A utility with a native
game (the margin games) runs entirely in Rust; every other one is read through the run's SQLite
cache (``RUN/cache.sqlite``), keyed by its ``cache_config``: an interrupted valuation resumes
with nothing recomputed, and a coalition is never evaluated twice.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import io
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .cluster import cluster_config
from .config import ClusterConfig
from .core import ItemUtility, NativeGame
from .errors import DposhapError, InvalidArgumentError
from .estimate import (
    Z95,
    InteractionResult,
    ShapleyResult,
    attach_bootstrap,
    banzhaf,
    bootstrap,
    interactions_from_samples,
    pairwise_interactions,
    ranking_groups,
    shapley,
)
from .evaluate import BuildContext, Utility, get_utility, utility_names
from .evaluate.pool import evaluation_pool
from .models import quiet_libraries, resolve_device
from .run import Run, atomic_write_json, atomic_write_text, cached
from .threads import choose as choose_threads
from .threads import model_parameters
from .threads import use as use_threads
from .validate import check_int

#: Bootstrap replicates over evaluation items by default (``--n-boot``).
DEFAULT_N_BOOT = 200

__all__ = ["OpenedUtility", "open_utility", "record_values", "utility_names", "value_run"]


def value_run(
    run_dir: str | Path,
    utility: str = "accuracy",
    *,
    settings: Any = None,
    method: str = "auto",
    semivalue: Literal["shapley", "banzhaf"] = "shapley",
    budget: int | None = None,
    tol: float | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    device: str = "auto",
    label: str | None = None,
    progress: bool = True,
    n_boot: int = DEFAULT_N_BOOT,
    threads: int | None = None,
    cluster: ClusterConfig | str | None = None,
) -> tuple[ShapleyResult, dict[str, Any]]:
    """Value the sources of a trained run under one utility and record the result.

    Parameters
    ----------
    run_dir
        A run directory made by :func:`dposhap.train_sources`.
    utility
        A registered utility (:func:`dposhap.evaluate.utility_names`: ``accuracy``, ``loglik``,
        ``likelihood``, ``generation``).
    settings
        The utility's settings: an instance of its ``settings_type``
        (:class:`~dposhap.evaluate.MarginSettings` for the margin games and ``likelihood``,
        :class:`~dposhap.evaluate.GenerationSettings` for ``generation``); default its defaults.
    method, semivalue, budget, tol, seed, batch_size
        Passed to :func:`dposhap.shapley` / :func:`dposhap.banzhaf` (``seed`` also seeds the
        decoding noise of ``generation``).
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"`` for the model passes.
    label
        The entry's name in ``values.json`` (default: the utility's name); give another to
        keep several valuations of one utility side by side.
    progress
        Show progress bars.
    n_boot
        Bootstrap replicates over the evaluation items (held-out pairs, prompts, responses):
        each value's evaluation standard error, the paired comparisons of sources and the
        ranking groups come from them (0: estimator error only). The replicates reuse the
        evaluated coalitions; nothing is evaluated again.
    threads
        torch CPU threads; default: chosen from the model's size (:mod:`dposhap.threads`, one
        line printed with progress on). With a cluster: per evaluation actor (default its CPUs).
    cluster
        Where the model passes run (:class:`~dposhap.config.ClusterConfig`, or just its address:
        ``"local"``, ``"auto"``, ``"host:port"``): None or no ``address``, in this process (the
        run's own ``[cluster]`` table is the command line's default, not this function's); else a
        pool of Ray actors (:mod:`dposhap.cluster`), each
        loading the models once, with the estimator, the cache and the values here. The values
        are the same as in process.

    Returns
    -------
    (ShapleyResult, dict)
        The values and the entry written to ``RUN/values.json``.
    """
    kind = get_utility(utility)
    check_int("n_boot", n_boot, minimum=0)
    if n_boot == 1:
        raise InvalidArgumentError("n_boot must be 0 (no bootstrap) or at least 2 replicates (default 200)")
    if settings is None:
        settings = kind.settings_type()
    elif not isinstance(settings, kind.settings_type):
        raise InvalidArgumentError(
            f"the {utility} utility takes {kind.settings_type.__name__} settings, got {type(settings).__name__}"
        )
    with open_utility(
        run_dir,
        utility,
        settings,
        seed=seed,
        device=device,
        progress=progress,
        threads=threads,
        cluster=cluster,
        what=f"dposhap value --utility {utility}",
    ) as opened:
        run, built, game, wrapped = opened.run, opened.built, opened.game, opened.wrapped
        store, key, config = opened.store, opened.key, opened.config
        started = opened.started
        eval_note = None
        method, budget = _stopping_rule(game, len(built.players), utility, method, budget, tol)
        estimate = shapley if semivalue == "shapley" else banzhaf
        result = estimate(
            game,
            len(built.players),
            method=method,
            budget=budget,
            tol=tol,
            seed=seed,
            batch_size=batch_size or built.batch_size,
            names=list(built.players),
            progress=progress,
        )
        ends = _ends(game, len(built.players), len(built.objectives))
        if wrapped is not None:
            new = int(wrapped.evaluated)
        else:  # a native game: no model ran for it when its margins came from the run's cache
            new = 0 if getattr(built, "from_cache", False) else int(result.n_evaluations)
        if n_boot and (wrapped is None or isinstance(wrapped, ItemUtility)):
            try:
                boot = bootstrap(
                    game,
                    result,
                    n_boot=n_boot,
                    seed=seed,
                    batch_size=batch_size or built.batch_size,
                    progress=progress,
                )
                attach_bootstrap(result, boot)
                new += boot.new_evaluations
            except DposhapError as err:
                eval_note = f"evaluation error not computed: {err}"
        elif n_boot:
            eval_note = f"evaluation error not computed: the {utility} utility is not a mean over items"
        interactions, interactions_note = _interactions(game, built, store, key)
        seconds = time.perf_counter() - started
        entry = record_values(
            run,
            label or utility,
            result,
            list(built.objectives),
            config=config,
            new_evaluations=new,
            seconds=seconds,
            ends=ends,
            eval_note=eval_note,
            interactions=interactions,
            interactions_note=interactions_note,
        )
    return result, entry


@dataclass
class OpenedUtility:
    """A run's utility, opened for evaluation by :func:`open_utility`.

    Attributes
    ----------
    run
        The opened run.
    built
        The utility as its registered kind built it.
    game
        What to evaluate coalitions with: the native game, or ``built`` read through the run's
        cache (:func:`dposhap.run.cached`; then also ``wrapped``).
    wrapped
        The cached wrapper, or None for a native game.
    store, key
        The run's cache and the utility's key in it (None for a native game).
    config
        The utility's configuration as ``values.json`` records it.
    started
        ``time.perf_counter()`` when the utility was built.
    """

    run: Run
    built: Utility
    game: Any
    wrapped: Any
    store: Any
    key: str | None
    config: dict[str, Any]
    started: float


@contextlib.contextmanager
def open_utility(
    run_dir: str | Path | Run,
    utility: str,
    settings: Any,
    *,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    threads: int | None = None,
    cluster: ClusterConfig | str | None = None,
    what: str = "dposhap",
) -> Iterator[OpenedUtility]:
    """Build a registered utility of a run and open it for evaluation, as every command that
    evaluates coalitions does (``value``, ``select``): the run locked, the threads chosen, the
    Ray pool (if any) started, and a utility without a native game read through the run's cache
    so that no coalition is evaluated twice.

    Parameters
    ----------
    run_dir
        A trained run (a partial run is opened over its trained sources, with a warning).
    utility, settings
        A registered utility and an instance of its ``settings_type``.
    seed, device, progress, threads, cluster
        As in :func:`value_run`.
    what
        The command holding the run's lock (shown to another command that finds it locked).

    Yields
    ------
    OpenedUtility
    """
    kind = get_utility(utility)
    where = cluster_config(None, cluster) if isinstance(cluster, str) else cluster
    run = run_dir if isinstance(run_dir, Run) else Run.open(run_dir)
    run.check_complete(strict=False)  # a partial run is valued over its trained sources, with a warning
    thread_choice = choose_threads(
        model_parameters(run.manifest.base_model.location), device=resolve_device(device), requested=threads
    )
    with (
        run.lock(what),
        quiet_libraries(loading_reports=progress),
        use_threads(thread_choice, say=progress),
        evaluation_pool(where, str(run.root), device=device, threads=threads, progress=progress) as pool,
    ):
        started = time.perf_counter()
        context = BuildContext(device=resolve_device(device), seed=seed, progress=progress, pool=pool)
        built: Utility
        if pool is not None and kind.pooled == "actors":  # every actor builds it; this process holds a proxy
            built = pool.utility(utility, settings, seed)
        else:
            built = kind.build(run, settings, context)
        game: Any = built.native_game()
        store = None
        key: str | None = None
        wrapped = None
        config: dict[str, Any]
        if game is None:
            if built.cache_config is None:
                raise InvalidArgumentError(f"utility {utility!r} has neither a native game nor a cache configuration")
            store = run.store()
            config = dict(built.cache_config)
            key = store.utility_key(utility, config, len(built.players), list(built.objectives))
            wrapped = cached(built, store, key, seed=seed)
            game = wrapped
        else:
            config = built.describe()
        try:
            yield OpenedUtility(run, built, game, wrapped, store, key, config, started)
        finally:
            if store is not None:
                store.close()


def _interactions(
    game: Any, built: Utility, store: Any, key: str | None
) -> tuple[InteractionResult | None, str | None]:
    """The pairwise interaction index of the sources: a native game is evaluated on every
    coalition (exact up to 16 sources, sampled past that); a cached utility uses only the
    coalitions the valuation evaluated (exact when they are all there), never new ones."""
    n = len(built.players)
    if n < 2:
        return None, "one source: no pairs"
    names, objectives = list(built.players), list(built.objectives)
    try:
        if isinstance(game, NativeGame):
            return pairwise_interactions(game, n, names=names, objectives=objectives), None
        if store is None or key is None:
            return None, "not computed: the utility is neither native nor cached"
        rows = list(store.rows(key))
        coalitions = np.array([r.coalition for r in rows], dtype=bool)
        values = np.array([r.values for r in rows], dtype=np.float64)
        return interactions_from_samples(coalitions, values, n, names=names, objectives=objectives), None
    except DposhapError as err:
        return None, f"not computed: {err}"


#: Sources up to which ``auto`` enumerates a native margin game exactly when no budget is given.
NATIVE_EXACT_SOURCES = 16
#: Coalitions per source a native margin game gets when no budget or tolerance is given.
NATIVE_BUDGET_PER_SOURCE = 1000


def _stopping_rule(
    game: Any, n: int, utility: str, method: str, budget: int | None, tol: float | None
) -> tuple[str, int | None]:
    """``(method, budget)`` when neither ``budget`` nor ``tol`` is given and ``auto`` would sample.

    A native margin game costs microseconds per coalition: exact up to 16 sources, else 1000
    coalitions per source. Any other utility costs model passes per coalition, so past the
    sources ``auto`` enumerates without a budget (10) the user chooses how much to spend.
    """
    if method != "auto" or budget is not None or tol is not None or n <= 10:
        return method, budget
    if isinstance(game, NativeGame):
        if n <= NATIVE_EXACT_SOURCES:
            return "exact", None
        return method, NATIVE_BUDGET_PER_SOURCE * n
    raise InvalidArgumentError(
        f"valuing {n} sources with the {utility} utility needs a stopping rule: give --budget N (coalitions to "
        f"evaluate; exact enumeration would take 2^{n} = {2**n:,}) and/or --tol T (the standard error to reach) "
        "(budget=/tol= in Python)"
    )


def _ends(game: Any, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """v(empty) and v(all players), ``[k]`` each (cached coalitions are read, not evaluated)."""
    both = np.zeros((2, n), dtype=bool)
    both[1] = True
    values = np.asarray(game(both), dtype=np.float64).reshape(2, -1)[:, :k]
    return values[0], values[1]


# ---------------------------------------------------------------------------------------
# The values document


def record_values(
    run: Run,
    name: str,
    result: ShapleyResult,
    objectives: list[str],
    *,
    config: dict[str, Any],
    new_evaluations: int,
    seconds: float,
    ends: tuple[np.ndarray, np.ndarray] | None = None,
    eval_note: str | None = None,
    interactions: InteractionResult | None = None,
    interactions_note: str | None = None,
) -> dict[str, Any]:
    """Add (or replace) the entry of utility ``name`` in values.json and rewrite values.csv.

    ``ends`` is ``(v(empty), v(all))`` per objective; ``eval_note`` says why the evaluation
    error is missing when it is; ``interactions`` is the pairwise interaction index of the
    sources (``interactions_note`` says why it is missing).
    """
    n = result.n_players
    values = np.asarray(result.values, dtype=float).reshape(n, -1)
    stderr = np.asarray(result.stderr, dtype=float).reshape(n, -1)
    total = np.asarray(result.total_stderr, dtype=float).reshape(n, -1)
    eval_se = None if result.eval_stderr is None else np.asarray(result.eval_stderr, dtype=float).reshape(n, -1)
    reps = None
    if result.replicates is not None:
        reps = np.asarray(result.replicates, dtype=float).reshape(len(result.replicates), n, -1)

    def per_source(arr: np.ndarray) -> dict[str, dict[str, float]]:
        return {obj: {s: float(arr[i, j]) for i, s in enumerate(result.names)} for j, obj in enumerate(objectives)}

    comparisons: dict[str, list[dict[str, Any]]] = {}
    ranking: dict[str, list[list[str]]] = {}
    advice: dict[str, str] = {}
    for j, obj in enumerate(objectives):
        pairs = result.comparisons(j) if values.shape[1] > 1 else result.comparisons()
        comparisons[obj] = [p.to_json() for p in pairs]
        ranking[obj] = ranking_groups(result.names, values[:, j], pairs)
        advice[obj] = _advice(
            result,
            stderr[:, j],
            None if eval_se is None else eval_se[:, j],
            None if reps is None else reps[:, :, j],
            values[:, j],
            pairs,
        )
    exact = result.method == "exact" or (result.stop == "complete" and not np.any(stderr))
    entry = {
        "objectives": objectives,
        "semivalue": result.semivalue,
        "method": result.method,
        "n_evaluations": int(result.n_evaluations),
        "new_evaluations": int(new_evaluations),
        "stop": result.stop,
        "seed": int(result.seed),
        "seconds": round(float(seconds), 3),
        "config": config,
        "sources": list(result.names),
        "values": {
            obj: {s: float(values[i, j]) for i, s in enumerate(result.names)} for j, obj in enumerate(objectives)
        },
        "stderr": per_source(stderr),
        "eval_stderr": None if eval_se is None else per_source(eval_se),
        "total_stderr": per_source(total),
        "n_boot": 0 if reps is None else int(reps.shape[0]),
        "n_items": result.n_items,
        "eval_note": eval_note,
        "v_empty": None if ends is None else {obj: float(ends[0][j]) for j, obj in enumerate(objectives)},
        "v_all": None if ends is None else {obj: float(ends[1][j]) for j, obj in enumerate(objectives)},
        "comparisons": comparisons,
        "ranking": ranking,
        "advice": advice,
        "interactions": None if interactions is None else _interactions_json(interactions, objectives),
        "interactions_note": interactions_note,
        # exact enumeration has no convergence to show (partial enumerations only look unconverged)
        "history": []
        if exact
        else [[int(e), np.asarray(v, dtype=float).reshape(n, -1).tolist()] for e, v in result.history],
        "updated_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    doc = run.read_values()
    doc["utilities"][name] = entry
    atomic_write_json(run.values_path, doc)
    _write_csv(run, doc)
    return entry


def _interactions_json(result: InteractionResult, objectives: list[str]) -> dict[str, Any]:
    """The interaction matrix with, per objective, its most redundant and most complementary pairs."""
    doc = result.to_json()
    doc["objectives"] = objectives
    doc["top"] = {
        obj: {
            "most_redundant": [list(t) for t in result.most_redundant(5, j)],
            "most_complementary": [list(t) for t in result.most_complementary(5, j)],
        }
        for j, obj in enumerate(objectives)
    }
    return doc


def _advice(
    result: ShapleyResult,
    est: np.ndarray,
    eval_se: np.ndarray | None,
    reps: np.ndarray | None,
    values: np.ndarray,
    pairs: list[Any],
) -> str:
    """One line: which error dominates, and roughly what more data would buy."""
    mean_est = float(np.mean(est))
    if eval_se is None or reps is None or result.n_items is None:
        return (
            f"estimator error only (mean ± {mean_est:.2g}); the evaluation error was not bootstrapped"
            if mean_est
            else "exact values; the evaluation error was not bootstrapped"
        )
    m = int(result.n_items)
    mean_eval = float(np.mean(eval_se))
    # differences and errors at rounding level are zero (identical sources, a constant objective)
    tiny = 1e-9 * max(1.0, float(np.abs(values).max()) if np.size(values) else 1.0)
    if mean_eval <= tiny and mean_est <= tiny:
        return "exact values, and every resample of the evaluation items gives the same: no error to reduce"
    if mean_eval >= mean_est:
        line = (
            f"evaluation noise dominates (mean ± eval {mean_eval:.2g} vs ± est {mean_est:.2g}): it falls as "
            f"1/sqrt(items), so about {4 * m} evaluation items instead of {m} would halve it"
        )
    else:
        line = (
            f"the estimator's error dominates (mean ± est {mean_est:.2g} vs ± eval {mean_eval:.2g}): raise --budget "
            "or lower --tol before adding evaluation items"
        )
    # the closest call the data leave open: how many items would separate it at 95%
    index = {name: i for i, name in enumerate(result.names)}
    ties = [p for p in pairs if not p.significant and abs(p.difference) > tiny]
    if ties:
        p = max(ties, key=lambda q: abs(q.difference) / max(q.stderr, 1e-300))
        a, b = index[p.first], index[p.second]
        sd_eval = float(np.std(reps[:, a] - reps[:, b], ddof=1))
        if sd_eval > 0:
            need = int(np.ceil(m * (Z95 * sd_eval / abs(p.difference)) ** 2))
            if need > m:  # fewer would already do: the estimator's error is what keeps them together
                line += f"; separating {p.first} from {p.second} would take about {need} items"
    return line


def _write_csv(run: Run, doc: dict[str, Any]) -> None:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "utility",
            "objective",
            "source",
            "value",
            "stderr",
            "eval_stderr",
            "total_stderr",
            "semivalue",
            "method",
            "n_evaluations",
            "seed",
            "seconds",
        ]
    )
    for name, entry in doc["utilities"].items():
        eval_se = entry.get("eval_stderr")
        total = entry.get("total_stderr") or entry["stderr"]
        for obj in entry["objectives"]:
            for source in entry["sources"]:
                writer.writerow(
                    [
                        name,
                        obj,
                        source,
                        f"{entry['values'][obj][source]:.10g}",
                        f"{entry['stderr'][obj][source]:.6g}",
                        "" if eval_se is None else f"{eval_se[obj][source]:.6g}",
                        f"{total[obj][source]:.6g}",
                        entry["semivalue"],
                        entry["method"],
                        entry["n_evaluations"],
                        entry["seed"],
                        entry["seconds"],
                    ]
                )
    atomic_write_text(run.root / "values.csv", out.getvalue())

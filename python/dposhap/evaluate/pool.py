"""A pool of Ray actors that evaluate coalitions (and compute margins) for one valuation.

Each actor opens the run, loads the base model and the adapters once, and builds the utility
with the same registered code the in-process path uses (:func:`dposhap.evaluate.get_utility`).
The driver keeps everything that decides the values: the estimator's ask/tell loop and the
SQLite cache. A batch the estimator asks for is split into one chunk per actor; the chunks' results
are put back in the batch's order before the cache or the estimator sees them, so the values do
not depend on the number of actors or on which chunk finishes first (a coalition's utility does
not depend on the other coalitions of its batch: tested). An actor that dies mid-chunk is replaced
(up to ``max_retries`` times per slot) and its chunk is evaluated again; nothing is counted twice,
because only whole batches reach the cache.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..cluster import Cluster, connect, task_result
from ..core import ItemScores, ItemUtility
from ..errors import DposhapError, RunError
from ..models import quiet_libraries
from ..run import Run
from .base import BuildContext, get_utility
from .margins import margins_matrix

if TYPE_CHECKING:
    from ..config import ClusterConfig

__all__ = ["EvaluationActor", "EvaluationPool", "PooledItemUtility", "PooledUtility", "evaluation_pool"]


class EvaluationActor:
    """What one Ray actor holds: the run, its models, one built utility. Plain Python; the pool
    makes it a Ray actor class (``ray.remote(EvaluationActor)``)."""

    def __init__(self, run_root: str, device: str, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self._quiet = quiet_libraries(loading_reports=False)  # an actor shows no progress either
        self._quiet.__enter__()
        self.device = device
        self.utility: Any = None
        # an error here would surface as the actor's death, retried; kept, it is raised by the first
        # call instead, as itself (a DposhapError the CLI prints as one line)
        self._error: DposhapError | None = None
        if not os.path.isdir(run_root):
            self._error = RunError(
                f"the run directory {run_root} is not visible on the Ray node {os.uname().nodename}: put the run on "
                "storage every node mounts (the same path), or value it without --ray"
            )
            return
        try:
            self.run = Run.open(run_root)
        except DposhapError as err:
            self._error = err

    def _ready(self) -> None:
        if self._error is not None:
            raise self._error

    def pid(self) -> int:
        """The actor's process id (tests kill actors)."""
        return os.getpid()

    def build(self, utility: str, settings: Any, seed: int) -> dict[str, Any]:
        """Build the registered ``utility`` here; what the driver's proxy needs to know of it."""

        self._ready()
        kind = get_utility(utility)
        self.utility = kind.build(self.run, settings, BuildContext(device=self.device, seed=seed, progress=False))
        u = self.utility
        return {
            "players": tuple(u.players),
            "objectives": tuple(u.objectives),
            "cache_config": u.cache_config,
            "batch_size": u.batch_size,
            "describe": u.describe(),
            "n_items": int(u.n_items) if isinstance(u, ItemUtility) else None,
        }

    def evaluate(self, coalitions: np.ndarray) -> ItemScores | np.ndarray:
        """Per-item scores (an item utility) or values of a chunk of coalitions."""
        if isinstance(self.utility, ItemUtility):
            return ItemScores.coerce(self.utility.item_scores(coalitions), len(coalitions))
        return np.asarray(self.utility(coalitions), dtype=np.float64)

    def margins(
        self, names: Sequence[str], records: list[dict[str, Any]], beta: float, batch_size: int, max_length: int | None
    ) -> np.ndarray:
        """Rows ``names`` of the margins matrix (the base model and these adapters only)."""

        self._ready()
        loaded = self.run.load_models(sources=list(names), device=self.device)
        return margins_matrix(
            loaded.model, loaded.tokenizer, list(names), records, beta, batch_size=batch_size, max_length=max_length
        )


@contextlib.contextmanager
def evaluation_pool(
    cfg: ClusterConfig | None, run_root: str, *, device: str = "auto", threads: int | None = None, progress: bool = True
) -> Iterator[LazyPool | None]:
    """The Ray evaluation pool of ``cfg`` for one valuation (None without an address: in process).

    The runtime is reached and the actors started on first use, so a valuation its caches answer
    (a margins matrix on disk) starts no Ray; the actors, and a runtime it started, end with it.
    """
    if cfg is None or cfg.address is None:
        yield None
        return
    pool = LazyPool(cfg, run_root, device=device, threads=threads, progress=progress)
    try:
        yield pool
    finally:
        pool.close()


class LazyPool:
    """An :class:`EvaluationPool` connected on first use (see :func:`evaluation_pool`)."""

    def __init__(self, cfg: ClusterConfig, run_root: str, *, device: str, threads: int | None, progress: bool) -> None:
        self.cfg, self.run_root, self.device, self.threads, self.progress = cfg, run_root, device, threads, progress
        self.pool: EvaluationPool | None = None
        self._cluster: Cluster | None = None

    def get(self) -> EvaluationPool:
        """The pool, connecting and starting it the first time."""
        if self.pool is None:
            self._cluster = connect(self.cfg, device=self.device)
            self.pool = EvaluationPool(self._cluster, self.run_root, threads=self.threads, progress=self.progress)
        return self.pool

    def margins(self, *args: Any, **kwargs: Any) -> np.ndarray:
        """:meth:`EvaluationPool.margins`."""
        return self.get().margins(*args, **kwargs)

    def utility(self, name: str, settings: Any, seed: int) -> PooledUtility:
        """:meth:`EvaluationPool.utility`."""
        return self.get().utility(name, settings, seed)

    def close(self) -> None:
        """Stop the actors, and the runtime if this pool started it."""
        if self.pool is not None:
            self.pool.close()
        if self._cluster is not None:
            self._cluster.close()


class EvaluationPool:
    """Ray actors evaluating one run's coalitions; the driver's side of :class:`EvaluationActor`.

    Parameters
    ----------
    cluster
        The connected runtime (:func:`dposhap.cluster.connect`); one actor per worker.
    run_root
        The run directory, at the same path on every node.
    threads
        torch CPU threads per actor (default: the CPUs each reserves).
    progress
        Show a bar while the margins are computed, and the pool's line.
    """

    def __init__(self, cluster: Cluster, run_root: str, *, threads: int | None = None, progress: bool = True) -> None:
        import ray

        self.cluster = cluster
        self.run_root = str(os.path.abspath(run_root))
        self.threads = threads or cluster.threads()
        self.progress = progress
        self._remote = ray.remote(EvaluationActor).options(**cluster.options(), max_restarts=0)
        self.actors: list[Any] = []
        self.replaced = 0
        self._queue: deque[tuple[int, int, tuple[Any, ...], Callable[[Any, tuple[Any, ...]], Any]]] = deque()
        self._running: dict[Any, tuple[int, int, tuple[Any, ...], Callable[[Any, tuple[Any, ...]], Any], int]] = {}
        self._busy: set[int] = set()
        self._batches: dict[int, _Batch] = {}
        self._next_ticket = 0
        self._built: tuple[str, Any, int] | None = None
        self._deaths = [0] * cluster.workers
        if progress:
            print(f"{cluster.describe()}; starting the actors (each loads the models once)", file=sys.stderr)

    # -- actors --------------------------------------------------------------------------------

    def _new_actor(self) -> Any:
        return self._remote.remote(self.run_root, self.cluster.device, self.threads)

    def _ensure(self, count: int) -> list[Any]:
        """At least ``count`` actors (up to the pool's size), new ones started side by side."""
        new = [self._new_actor() for _ in range(min(count, self.cluster.workers) - len(self.actors))]
        if new and self._built is not None:
            for ref in [actor.build.remote(*self._built) for actor in new]:
                self._get(ref)
        self.actors.extend(new)
        return self.actors[:count]

    def _replace(self, slot: int, error: BaseException) -> None:
        self._deaths[slot] += 1
        if self._deaths[slot] > self.cluster.max_retries:
            raise RunError(
                f"evaluation actor {slot} died {self._deaths[slot]} times (last: {_first_line(error)}); what was "
                "evaluated is in the run's cache: run the same command again to resume, or without --ray"
            )
        self.replaced += 1
        actor = self._new_actor()
        if self._built is not None:
            self._get(actor.build.remote(*self._built))
        self.actors[slot] = actor

    @staticmethod
    def _get(ref: Any) -> Any:
        import ray

        return task_result(ray, ref)

    def _submit(
        self,
        payloads: list[tuple[Any, ...]],
        call: Callable[[Any, tuple[Any, ...]], Any],
        done: Callable[[int], None] | None = None,
    ) -> int:
        """Queue ``call(actor, payload)`` for every payload; returns the batch's ticket for :meth:`_wait`.

        Batches queued before it are served first, so while one batch finishes the next one's
        chunks keep the free actors busy."""
        self._ensure(len(payloads))
        ticket = self._next_ticket
        self._next_ticket += 1
        self._batches[ticket] = _Batch([None] * len(payloads), len(payloads), done)
        self._queue.extend((ticket, index, payloads[index], call) for index in range(len(payloads)))
        self._dispatch()
        return ticket

    def _dispatch(self) -> None:
        """Free actors take queued payloads, oldest batch first."""
        free = [slot for slot in range(len(self.actors)) if slot not in self._busy]
        while self._queue and free:
            ticket, index, payload, call = self._queue.popleft()
            if ticket not in self._batches:  # discarded
                continue
            slot = free.pop(0)
            self._busy.add(slot)
            self._running[call(self.actors[slot], payload)] = (ticket, index, payload, call, slot)

    def _wait(self, ticket: int) -> list[Any]:
        """The results of batch ``ticket``, in payload order, once all are in; a payload whose actor
        died is queued again (first) and the actor replaced."""
        import ray

        batch = self._batches[ticket]
        while batch.left:
            ready, _ = ray.wait(list(self._running), num_returns=1)
            for ref in ready:
                owner, index, payload, call, slot = self._running.pop(ref)
                self._busy.discard(slot)
                mine = self._batches.get(owner)
                try:
                    result = self._get(ref)
                except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as err:
                    self._replace(slot, err)
                    if mine is not None:
                        self._queue.appendleft((owner, index, payload, call))
                else:
                    if mine is not None:
                        mine.results[index] = result
                        mine.left -= 1
                        if mine.done is not None:
                            mine.done(index)
            self._dispatch()
        del self._batches[ticket]
        return batch.results

    def _discard(self, ticket: int) -> None:
        """Forget batch ``ticket``: its queued payloads are dropped, its running ones' results ignored."""
        self._batches.pop(ticket, None)

    def _map(
        self,
        payloads: list[tuple[Any, ...]],
        call: Callable[[Any, tuple[Any, ...]], Any],
        done: Callable[[int], None] | None = None,
    ) -> list[Any]:
        """``call(actor, payload)`` for every payload, over the pool; results in payload order."""
        return self._wait(self._submit(payloads, call, done))

    # -- work ----------------------------------------------------------------------------------

    def margins(
        self,
        names: Sequence[str],
        records: list[dict[str, Any]],
        beta: float,
        *,
        batch_size: int = 16,
        max_length: int | None = None,
    ) -> np.ndarray:
        """The margins matrix ``[len(names), len(records)]``, sharded by source across the actors."""
        import ray

        shards = _shards(list(names), self.cluster.workers)
        records_ref = ray.put(records)
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(names), unit="source", desc=f"margins ({len(shards)} actors)")

        def call(actor: Any, payload: tuple[Any, ...]) -> Any:
            return actor.margins.remote(payload[0], records_ref, beta, batch_size, max_length)

        def done(index: int) -> None:
            if bar is not None:
                bar.update(len(shards[index]))

        try:
            rows = self._map([(shard,) for shard in shards], call, done)
        finally:
            if bar is not None:
                bar.close()
        return np.concatenate(rows, axis=0)

    def utility(self, name: str, settings: Any, seed: int) -> PooledUtility:
        """The registered utility ``name``, built on every actor, as a proxy the driver evaluates through."""
        # every actor starts and builds it side by side; the first one's description is the proxy's
        actors = self._ensure(self.cluster.workers)
        infos = [actor.build.remote(name, settings, seed) for actor in actors]
        info = self._get(infos[0])
        for ref in infos[1:]:
            self._get(ref)
        self._built = (name, settings, seed)
        cls = PooledItemUtility if info["n_items"] is not None else PooledUtility
        return cls(self, info)

    def submit(self, coalitions: np.ndarray) -> int:
        """Queue the built utility on ``coalitions``, one chunk per actor; a ticket for :meth:`collect`."""
        coalitions = np.ascontiguousarray(coalitions, dtype=bool)
        chunks = _chunks(len(coalitions), self.cluster.workers)
        return self._submit(
            [(coalitions[a:b],) for a, b in chunks],
            lambda actor, payload: actor.evaluate.remote(payload[0]),
        )

    def collect(self, ticket: int) -> list[Any]:
        """The chunks' results of a submitted batch, in order."""
        return self._wait(ticket)

    def discard(self, ticket: int) -> None:
        """Drop a submitted batch whose results are no longer wanted."""
        self._discard(ticket)

    def evaluate(self, coalitions: np.ndarray) -> list[Any]:
        """:meth:`submit` then :meth:`collect`."""
        return self.collect(self.submit(coalitions))

    def close(self) -> None:
        """Stop the actors."""
        import ray

        for actor in self.actors:
            with contextlib.suppress(Exception):
                ray.kill(actor)
        self.actors = []


@dataclass
class _Batch:
    results: list[Any]
    left: int
    done: Callable[[int], None] | None


class PooledUtility:
    """The driver's proxy of a utility built on every actor of an :class:`EvaluationPool`: the
    :class:`~dposhap.evaluate.Utility` protocol, evaluated by the pool."""

    def __init__(self, pool: EvaluationPool, info: dict[str, Any]) -> None:
        self.pool = pool
        self._info = info

    @property
    def players(self) -> tuple[str, ...]:
        return tuple(self._info["players"])

    @property
    def objectives(self) -> tuple[str, ...]:
        return tuple(self._info["objectives"])

    @property
    def cache_config(self) -> dict[str, Any] | None:
        return self._info["cache_config"]

    @property
    def batch_size(self) -> int | None:
        return self._info["batch_size"]

    def native_game(self) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return dict(self._info["describe"])

    def submit(self, coalitions: np.ndarray) -> int:
        """Start evaluating a batch on the pool (the estimator asks ahead); a ticket for :meth:`collect`."""
        return self.pool.submit(coalitions)

    def collect(self, ticket: int) -> np.ndarray | ItemScores:
        """The submitted batch's values ``[b, k]`` (per-item scores for an item utility)."""
        parts = self.pool.collect(ticket)
        if parts and isinstance(parts[0], ItemScores):
            return ItemScores.concat(parts)
        return np.concatenate([np.asarray(p, dtype=np.float64).reshape(len(p), -1) for p in parts], axis=0)

    def discard(self, ticket: int) -> None:
        """Drop a submitted batch (the estimator stopped before it was needed)."""
        self.pool.discard(ticket)

    def __call__(self, coalitions: np.ndarray) -> np.ndarray:
        out = self.collect(self.submit(coalitions))
        values = out.values() if isinstance(out, ItemScores) else out
        return values[:, 0].copy() if values.shape[1] == 1 else values


class PooledItemUtility(PooledUtility):
    """A :class:`PooledUtility` of an item utility: per-item scores come back from the actors."""

    @property
    def n_items(self) -> int:
        return int(self._info["n_items"])

    def item_scores(self, coalitions: np.ndarray) -> ItemScores:
        return ItemScores.concat(self.pool.evaluate(coalitions))


def _chunks(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` (at most ``n``) contiguous ranges covering ``range(n)``, sizes within one of each other."""
    parts = max(1, min(parts, n))
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    return [(a, b) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def _shards(names: list[str], parts: int) -> list[list[str]]:
    """``names`` in at most ``parts`` contiguous shards (player order kept)."""
    return [names[a:b] for a, b in _chunks(len(names), parts)]


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__

"""Training on Ray: one task per source, at most ``Cluster.workers`` at once.

This module owns the Ray side only (the remote function, its resources and retries, the window of
tasks in flight, the progress bar, cancelling on Ctrl-C, turning Ray's errors back into the task's
own). What a task does is the caller's: :func:`dposhap.train.train_sources` hands in its per-source
training function, which loads the base model, trains one source with the code the in-process path
runs and writes the adapter into the run directory; each finished task's result goes back to the
caller's ``finished`` callback (which rewrites the manifest: the driver is its only writer).

A task whose worker process dies (killed, the node lost) is started again up to
``Cluster.max_retries`` times; an exception the task raises (bad data, a config error, a CUDA out
of memory) is not retried: it reaches the caller as the same exception the in-process path raises.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ..errors import RunError, first_line
from . import Cluster, require_ray, task_result

__all__ = ["run_per_source"]

Job = TypeVar("Job")
Result = TypeVar("Result")


def run_per_source(
    cluster: Cluster,
    work: Callable[[Job], Result],
    jobs: Mapping[str, Job],
    *,
    finished: Callable[[str, Result], None],
    progress: bool = True,
) -> None:
    """Run ``work(job)`` as one Ray task per source, calling ``finished(name, result)`` as each ends.

    Parameters
    ----------
    cluster
        The connected runtime (:func:`dposhap.cluster.connect`): each task reserves
        ``cluster.options()``, ``cluster.workers`` tasks run at once, a task whose worker dies is
        retried ``cluster.max_retries`` times.
    work
        A module-level function (Ray ships it to the workers by reference), run once per job.
    jobs
        The jobs by source name, submitted in this order.
    finished
        Called on the driver, in the order tasks finish, with each task's result.
    progress
        Print ``cluster.describe()`` and show a bar counting finished sources.

    Raises
    ------
    Exception
        The first error a task raised, as the task raised it (a :class:`~dposhap.errors.DposhapError`,
        a torch or TRL error...); the tasks still running are cancelled.
    RunError
        A task's worker died more than ``cluster.max_retries`` times, or Ray killed it for memory.
    KeyboardInterrupt
        Ctrl-C: the tasks still running are cancelled (their half-written adapters are temporary
        folders the next run deletes).
    """
    ray = require_ray()
    from tqdm.auto import tqdm

    remote = ray.remote(work)
    options = dict(cluster.options(), max_retries=cluster.max_retries, retry_exceptions=False)
    queue = list(jobs.items())
    running: dict[Any, str] = {}
    if progress:
        print(cluster.describe(), file=sys.stderr, flush=True)
    bar = tqdm(total=len(queue), desc="sources", unit="source", disable=not progress)
    try:
        while queue or running:
            while queue and len(running) < cluster.workers:
                name, job = queue.pop(0)
                running[remote.options(**options, name=f"dposhap-train-{name}").remote(job)] = name
            done, _ = ray.wait(list(running), num_returns=1)
            for ref in done:
                name = running.pop(ref)
                finished(name, _result(ray, ref, name, cluster))
                bar.update(1)
    except BaseException:
        # Ctrl-C or a task's error: stop the others (force: a task may be inside torch's C++). A task
        # that has just finished is left alone: cancelling one as it completes can trip an internal
        # check of Ray's (seen once by hand: "Tried to complete task that was not pending")
        if running:
            _, still = ray.wait(list(running), num_returns=len(running), timeout=0)
            for ref in still:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
        raise
    finally:
        bar.close()


def _result(ray: Any, ref: Any, name: str, cluster: Cluster) -> Any:
    """The task's return value, or the task's own exception raised here."""
    from ray import exceptions

    try:
        return task_result(ray, ref)  # a task's own exception is raised as itself
    except exceptions.OutOfMemoryError as err:
        raise RunError(
            f"training source {name} on Ray: the node ran out of memory and Ray stopped the task "
            f"({first_line(err)}); lower dpo.per_device_train_batch_size or reserve more per task "
            "([cluster] cpus_per_worker / gpus_per_worker, so fewer run at once per node)"
        ) from None
    except exceptions.RayError as err:  # the worker (or its node) died once more than max_retries allows
        raise RunError(
            f"training source {name} on Ray: its worker died {cluster.max_retries + 1} times "
            f"({first_line(err)}); check the nodes' logs (ray logs), raise [cluster] max_retries, or train "
            "without --ray; finished sources are kept, run the same command again to resume"
        ) from None

"""Training on Ray: one task per source, at most ``Cluster.workers`` at once.

The driver side (:func:`train_on_ray`: connect, decide the device and dtype every task uses, record
each finished source in the manifest, which only the driver writes), the Ray side
(:func:`_run_per_source`: the remote function, its resources and retries, the window of tasks in
flight, cancelling on Ctrl-C, Ray's errors turned back into the task's own) and the task
(:func:`_train_source_task`: load the base model on the node, train one source as the in-process
path does, writing its adapter into the run directory). A task whose worker dies is started again
up to ``Cluster.max_retries`` times; an exception the task raises is not retried and reaches the
caller as itself.
"""

from __future__ import annotations

import contextlib
import platform
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from ..cluster import Cluster, connect, require_ray, task_result
from ..config import RunConfig
from ..data import SourceData
from ..errors import ModelLoadError, RunError, first_line
from ..models import load_base_model, load_tokenizer, quiet_libraries, resolve_dtype, resolve_model
from ..run import Manifest, Run, SourceEntry
from ..threads import ThreadChoice
from ..threads import choose as choose_threads
from ..threads import use as use_threads
from ..trainer_support import quiet_training_libraries
from .adapter import train_one
from .checks import check_against_model
from .resume import remove_leftovers


@dataclass(frozen=True)
class SourceJob:
    """What a Ray task needs to train one source (shipped to the worker).

    Attributes
    ----------
    cfg
        The run's settings.
    root
        The run directory, at the same path on every node.
    model_name, fingerprint
        The base model as the config names it, and its fingerprint on the driver (a node with other
        weights refuses to train).
    training_hash
        Recorded with the adapter, for resuming.
    eval_records
        The trusted set's rows (may be empty).
    source, device, dtype, threads
        Filled in per task by :func:`train_on_ray`.
    """

    cfg: RunConfig
    root: str
    model_name: str
    fingerprint: str
    training_hash: str
    eval_records: list[dict[str, Any]]
    source: SourceData | None = None
    device: str = "cpu"
    dtype: Any = None
    threads: ThreadChoice = ThreadChoice(1, "")


def train_on_ray(
    job: SourceJob,
    run: Run,
    manifest: Manifest,
    sources: list[SourceData],
    record: Callable[[str, SourceEntry], None],
    *,
    progress: bool,
) -> None:
    """Train ``sources`` as Ray tasks, one per source, recording each finished source.

    Parameters
    ----------
    job
        What every task shares; its source, device, dtype and threads are filled in here.
    run
        The run directory (its lock is held by the caller).
    manifest
        The run's manifest; the device, dtype and Ray runtime are recorded in it before any task starts.
    sources
        The sources to train.
    record
        Called on this process with each finished source and its entry, in the order tasks finish.
    progress
        Describe the Ray runtime and show a bar of finished sources.

    Raises
    ------
    RunError
        A task's worker died too often, or Ray stopped it for memory.
    """
    import dataclasses

    cfg = job.cfg
    cluster = connect(cfg.cluster, device=cfg.model.device, tasks=len(sources))
    try:
        device = cluster.device  # where the tasks run, not where this driver does
        dtype = _task_dtype(cfg.model.precision, device)
        manifest.machine = {**manifest.machine, "device": device, "ray": cluster.describe()}
        manifest.base_model = dataclasses.replace(manifest.base_model, dtype=str(dtype).removeprefix("torch."))
        run.write_manifest(manifest)
        threads = (
            choose_threads(None, device=device, requested=cfg.model.threads)
            if cfg.model.threads is not None
            else ThreadChoice(cluster.threads(), f"the {cluster.cpus:g} CPUs each Ray task reserves")
        )
        jobs = {
            s.name: dataclasses.replace(job, source=s, device=device, dtype=dtype, threads=threads) for s in sources
        }
        _run_per_source(cluster, _train_source_task, jobs, finished=record, progress=progress)
    finally:
        cluster.close()
    remove_leftovers(run)  # the temporary folders of tasks whose workers died (the run lock is still held)


def _task_dtype(precision: str, device: str) -> Any:
    """The dtype every Ray task trains in, decided once here so that all nodes agree: ``auto`` on GPU
    workers is bfloat16 when this driver has no GPU to ask (every GPU since Ampere supports it)."""
    import torch

    if precision == "auto" and device == "cuda" and not torch.cuda.is_available():
        return torch.bfloat16
    return resolve_dtype(precision, device)


def _train_source_task(job: SourceJob) -> SourceEntry:
    """One Ray task: load the base model here, train ``job.source`` as the in-process path does, save its adapter.

    Raises
    ------
    RunError
        The run directory is not visible on this node.
    ModelLoadError
        This node's copy of the base model differs from the driver's.
    """
    cfg, run, node = job.cfg, Run(job.root), platform.node()
    if not run.manifest_path.is_file():
        raise RunError(
            f"run directory {job.root} is not visible on Ray node {node}: put it on storage every node mounts "
            "(NFS, a shared volume) at the same path, or train without --ray"
        )
    ref = resolve_model(
        job.model_name,
        base_dir=cfg.base_dir,
        revision=cfg.model.revision,
        trust_remote_code=cfg.model.trust_remote_code,
    )
    if ref.fingerprint() != job.fingerprint:
        raise ModelLoadError(
            f"the base model {job.model_name} on Ray node {node} ({ref.location}) is not the one the driver has: "
            "give every node the same model files (on shared storage) or a hub id with a revision"
        )
    assert job.source is not None
    with quiet_libraries(loading_reports=False):
        tokenizer = load_tokenizer(ref)
        model = load_base_model(ref, dtype=job.dtype, device=job.device)
    check_against_model(cfg, model, tokenizer, [job.source])
    with quiet_training_libraries(loading_reports=False), use_threads(job.threads, say=False):
        entry, _ = train_one(
            model,
            tokenizer,
            job.source,
            cfg,
            run,
            job.device,
            job.training_hash,
            label=job.source.name,
            progress=False,
            eval_records=job.eval_records,
        )
    return entry


Job = TypeVar("Job")


Result = TypeVar("Result")


def _run_per_source(
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
                finished(name, _ray_result(ray, ref, name, cluster))
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


def _ray_result(ray: Any, ref: Any, name: str, cluster: Cluster) -> Any:
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

"""Past one machine: training and coalition evaluation on a Ray cluster.

One machine, in this process, stays the default and needs no Ray. With ``[cluster] address`` (or
``--ray ADDRESS|local`` on ``dposhap train`` / ``dposhap value``) the work goes to Ray:

- training runs one Ray task per source (:mod:`dposhap.train`): each reads its data
  and writes its adapter atomically into the run directory, which must be on storage every node
  mounts; the driver alone writes the manifest; a task that dies is retried;
- evaluation runs on a pool of Ray actors (:class:`dposhap.evaluate.pool.EvaluationPool`), each loading the base model
  and the adapters once; the driver keeps the estimator's ask/tell loop and the SQLite cache,
  and puts every actor's results back in planning order, so the values do not depend on the
  number of actors or on which batch finishes first.

Ray is the optional extra ``dposhap[ray]``; this module imports it only when asked to connect.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

from ..config import ClusterConfig, check_address
from ..errors import InvalidArgumentError

__all__ = ["Cluster", "check_address", "cluster_config", "connect", "require_ray", "task_result"]


def require_ray() -> Any:
    """The ``ray`` module, or an error that names the extra to install."""
    try:
        import ray
    except ImportError:
        raise InvalidArgumentError(
            "Ray is not installed: pip install 'dposhap[ray]' (or run without --ray / [cluster] address, in this "
            "process)"
        ) from None
    return ray


def cluster_config(base: ClusterConfig | None, address: str | None = None, workers: int | None = None) -> ClusterConfig:
    """``base`` (a run's ``[cluster]`` table, or the defaults) with the command line's choices on top."""
    cfg = base if base is not None else ClusterConfig()
    changes: dict[str, Any] = {}
    if address is not None:
        changes["address"] = None if check_address(address) == "off" else address
    if workers is not None:
        changes["workers"] = workers
    out = dataclasses.replace(cfg, **changes) if changes else cfg
    if workers is not None and out.address is None:
        raise InvalidArgumentError(
            "--workers counts Ray workers: add --ray local (or --ray ADDRESS, or set [cluster] address); in this "
            "process use --threads"
        )
    return out


def task_result(ray: Any, ref: Any) -> Any:
    """``ray.get(ref)``, with an exception the task or actor raised re-raised here as itself.

    The CLI then says the same one line as in process (a :class:`~dposhap.errors.DposhapError`, a
    torch or TRL error); Ray's error, chained, keeps the remote traceback for the log. Ray's own
    errors (a worker or actor that died, memory) pass through for the caller to handle.
    """
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        cause = getattr(err, "cause", None)
        if isinstance(cause, Exception):
            raise cause from err
        raise


#: Seconds to wait for a cluster's head to accept a connection before saying it cannot be reached
#: (Ray itself retries for minutes, printing its own log lines).
CONNECT_TIMEOUT_S = 10.0


def _check_reachable(address: str) -> None:
    """A ``host:port`` (or ``ray://host:port``) that does not accept a TCP connection: one line, at once."""
    if address in ("local", "auto"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise InvalidArgumentError(
            f"could not reach the Ray cluster at {address}: {err.strerror or err}; start it (ray start --head "
            "prints its address), check the host and port, or use --ray local"
        ) from None


@dataclass
class Cluster:
    """A connected Ray runtime and what each worker (training task, evaluation actor) reserves.

    Attributes
    ----------
    address
        What was connected to (``"local"`` for a runtime started here).
    workers
        Training tasks at once / evaluation actors.
    cpus, gpus
        Reserved by each worker.
    max_retries
        Restarts of a task or actor that dies.
    started
        Whether :func:`connect` started the runtime (and :meth:`close` stops it).
    note
        Why there are fewer workers than asked for ("" when there are not).
    """

    address: str
    workers: int
    cpus: float
    gpus: float
    max_retries: int
    started: bool
    note: str = ""

    def options(self) -> dict[str, Any]:
        """Resources of one worker, as ``ray.remote(...).options(**...)`` takes them."""
        return {"num_cpus": self.cpus, "num_gpus": self.gpus}

    @property
    def device(self) -> str:
        """Where a worker runs its model: ``cuda`` when it reserves a GPU."""
        return "cuda" if self.gpus > 0 else "cpu"

    def threads(self) -> int:
        """torch CPU threads of a worker: the CPUs it reserves."""
        return max(1, int(self.cpus))

    def describe(self) -> str:
        """One line for the progress output."""
        each = f"{self.cpus:g} CPU" + (f", {self.gpus:g} GPU" if self.gpus else "")
        note = f" ({self.note})" if self.note else ""
        return f"Ray ({self.address}): {self.workers} workers, {each} each{note}"

    def close(self) -> None:
        """Stop the runtime if :func:`connect` started it."""
        if self.started:
            import ray

            ray.shutdown()
            self.started = False


def connect(cfg: ClusterConfig, *, device: str = "auto", tasks: int | None = None) -> Cluster:
    """Connect to (or start) the Ray runtime ``cfg.address`` names.

    A runtime already initialised in this process (``ray.init`` called by the caller, as tests
    and notebooks do) is used as it is. ``local`` starts one on this machine with its CPUs (and
    GPUs); ``auto`` joins ``RAY_ADDRESS`` or this machine's cluster; anything else is an address.

    Parameters
    ----------
    cfg
        The ``[cluster]`` table (``address`` must be set).
    device
        The run's ``model.device``: ``cpu`` keeps workers off GPUs even on a GPU cluster.
    tasks
        How much work there is (sources to train, shards): no more workers than that.
    """
    if cfg.address is None:
        raise InvalidArgumentError("no Ray address: set [cluster] address or pass --ray local|auto|ADDRESS")
    ray = require_ray()
    started = False
    if not ray.is_initialized():
        _check_reachable(cfg.address)
        kwargs: dict[str, Any] = dict(
            include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False, configure_logging=True
        )
        try:
            if cfg.address == "local":
                ray.init(**kwargs)
            elif cfg.address == "auto":
                ray.init(address=os.environ.get("RAY_ADDRESS") or "auto", **kwargs)
            else:
                ray.init(address=cfg.address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as err:
            text = str(err).splitlines()[0] if str(err) else repr(err)
            if "ray[client]" in text:  # a ray:// address needs Ray's client extra
                raise InvalidArgumentError(
                    f"{cfg.address} is a Ray client address: pip install 'ray[client]' on this machine, or give the "
                    "cluster's host:port (ray start --head prints it)"
                ) from None
            raise InvalidArgumentError(
                f"could not reach the Ray cluster at {cfg.address}: {text}; start it (ray start --head) or use --ray local"
            ) from None
        started = True
    resources = ray.cluster_resources()
    total_cpus = float(resources.get("CPU", 1.0))
    total_gpus = float(resources.get("GPU", 0.0))
    gpus = cfg.gpus_per_worker
    if gpus is None:
        gpus = 1.0 if total_gpus > 0 and device != "cpu" else 0.0
    if gpus > total_gpus:
        raise InvalidArgumentError(
            f"[cluster] gpus_per_worker = {gpus:g} but the Ray cluster has {total_gpus:g} GPUs; set it to 0 "
            "(or model.device = cpu) to train and evaluate on CPUs"
        )
    if cfg.cpus_per_worker > total_cpus:
        raise InvalidArgumentError(
            f"[cluster] cpus_per_worker = {cfg.cpus_per_worker:g} but the Ray cluster has {total_cpus:g} CPUs"
        )
    fit = int(total_cpus // cfg.cpus_per_worker)
    if gpus > 0:
        fit = min(fit, int(total_gpus // gpus))
    fit = max(1, fit)
    # more workers than the cluster holds now would wait for resources that never come (an actor
    # that cannot start blocks its share of every batch): as many as fit, and the line says so
    workers = min(cfg.workers, fit) if cfg.workers is not None else fit
    if tasks is not None:
        workers = max(1, min(workers, tasks))
    where = "local" if cfg.address == "local" else cfg.address
    note = ""
    if cfg.workers is not None and cfg.workers > fit:
        note = f"{cfg.workers} asked for; the cluster holds {fit} of {cfg.cpus_per_worker:g} CPU" + (
            f", {gpus:g} GPU" if gpus else ""
        )
    return Cluster(where, workers, float(cfg.cpus_per_worker), float(gpus), int(cfg.max_retries), started, note)

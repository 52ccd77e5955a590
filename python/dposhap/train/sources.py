"""Per-source DPO training: one TRL ``DPOTrainer`` with a PEFT LoRA adapter per source.

Every source is trained on the same base model, which is also the DPO reference policy (the
adapter switched off), so the adapters compose by logits arithmetic (docs/design.md §1). Runs are
resumable: a source whose finished adapter carries the same data hash and training hash is
skipped, one whose data or config changed is retrained, and a source interrupted mid-run
restarts cleanly (adapters are written to a temporary folder and renamed when complete).

With ``[cluster] address`` set (``dposhap train --ray``) every source to train is one Ray task
(:func:`_train_on_ray`, the Ray side of training, all in this module) that loads the base model itself and runs the same per-source
code as this process would, writing its adapter into the run directory; this process alone writes
the manifest, after each finished source.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..audit import DataAudit, audit_sources
from ..cluster import Cluster, connect, require_ray, task_result
from ..config import RunConfig, load_config
from ..data import DataSpec, SourceData, load_eval_records, load_sources, write_split
from ..errors import (
    ConfigError,
    DataValidationError,
    DposhapError,
    InvalidArgumentError,
    ModelLoadError,
    RunError,
    first_line,
)
from ..interrupts import Interrupts, deferred_interrupts
from ..models import (
    ModelRef,
    adapter_metadata,
    load_base_model,
    load_model_skeleton,
    load_tokenizer,
    quiet_libraries,
    resolve_device,
    resolve_dtype,
    resolve_model,
)
from ..run import (
    BaseModelInfo,
    Manifest,
    Run,
    SourceEntry,
    atomic_write_json,
    atomic_write_text,
    config_hash,
    file_sha256,
    replace_dir,
)
from ..run.manifest import now
from ..threads import ThreadChoice
from ..threads import choose as choose_threads
from ..threads import use as use_threads
from ..trainer_support import (
    PeakMemory,
    checkpointing_kwargs,
    common_trainer_args,
    environment,
    interrupt_callback,
    library_versions,
    metric,
    progress_callback,
    quiet_training_libraries,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["TrainingCheck", "check_training", "train_sources"]


def train_sources(
    config: RunConfig | str | Path | None,
    out: str | Path,
    *,
    sources: Sequence[str] | None = None,
    force: bool = False,
    progress: bool = True,
) -> Manifest:
    """Train one DPO LoRA adapter per source into the run directory ``out``.

    Parameters
    ----------
    config
        A :class:`~dposhap.config.RunConfig`, the path of a TOML config, or None for the
        defaults (the built-in toy world with its 4 default sources).
    out
        The run directory; created if needed. Its ``manifest.json`` is rewritten after every
        source, so an interrupted run keeps what it finished.
    sources
        Train only these sources now (overrides ``data.select`` / ``toy.sources``). The run keeps
        its other trained sources (status ``"kept"``) and its plan (``planned_sources``), so
        ``dposhap value`` sees a partial run until every planned source is trained.
    force
        Retrain every source even when its adapter is up to date. Without it, a source is retrained
        when its data or settings changed or its adapter no longer matches its recorded sha256.
    progress
        Show progress bars (one per source).

    Returns
    -------
    Manifest
        The run's manifest (:class:`dposhap.run.Manifest`): the config, library versions, base
        model, and per source its data hash, sizes, adapter checksum, held-out DPO reward
        accuracy and margin on its own labels, timings and peak memory.

    Raises
    ------
    DataValidationError
        The data has problems (all of them are listed); nothing was trained.
    ConfigError, ModelLoadError, RunLockedError
        As their names say; the message tells what to do.
    """
    cfg = config if isinstance(config, RunConfig) else load_config(config)
    run = Run(out)
    with run.lock("dposhap train"):
        return _train_locked(cfg, run, sources=sources, force=force, progress=progress)


def _train_locked(cfg: RunConfig, run: Run, *, sources: Sequence[str] | None, force: bool, progress: bool) -> Manifest:
    if cfg.cluster.address is not None:
        require_ray()  # before any work: without Ray installed, say which extra to install
    # a damaged manifest is an error before anything in the run is touched (docs/reliability.md)
    previous_manifest = run.read_manifest()
    model_name, spec, world_record, data = _inputs(cfg, run, sources)
    eval_records = _eval_records(cfg)
    # on Ray the tasks' device is known once connected (a CPU driver may lead GPU workers)
    device = cfg.model.device if cfg.cluster.address is not None else resolve_device(cfg.model.device)
    dtype = resolve_dtype(cfg.model.precision, device)
    ref = resolve_model(
        model_name, base_dir=cfg.base_dir, revision=cfg.model.revision, trust_remote_code=cfg.model.trust_remote_code
    )
    fingerprint = ref.fingerprint()  # reads the weight files' heads and tails: once
    training_hash = hashlib.sha256(f"{cfg.training_hash()}|{fingerprint}".encode()).hexdigest()

    _check_reporting(cfg)
    for source in data.values():
        write_split(source, run.data_dir(source.name))
    _remove_leftovers(run)
    tokenizer = load_tokenizer(ref)
    audit = _audit(cfg, tokenizer, data, eval_records)
    atomic_write_json(run.data_audit_path, audit.to_dict())

    manifest = _new_manifest(cfg, ref, fingerprint, device, str(dtype).removeprefix("torch."), world_record)
    manifest.eval = _store_eval(run, cfg, eval_records)
    todo = [name for name, source in data.items() if force or not _up_to_date(run, source, training_hash)]
    previous = dict(previous_manifest.sources) if previous_manifest is not None else {}
    # without --sources the config is the whole plan; a subset trained now (--sources) keeps the run's
    # other sources: they stay planned, and stay trained while their adapters are intact and were
    # trained the same way
    planned = list(previous_manifest.planned_sources or previous) if previous_manifest is not None else []
    if sources is None:
        planned = []
    manifest.planned_sources = list(dict.fromkeys([*planned, *_declared_sources(cfg), *data]))
    for name, entry in previous.items():
        if sources is None or name in data:
            continue
        if entry.training_hash == training_hash and run.adapter_intact(name, entry):
            manifest.sources[name] = entry.with_status("kept")
    for name, source in data.items():
        if name not in todo:
            entry = previous.get(name) or _entry_from_adapter(run, source)
            manifest.sources[name] = entry.with_status("reused")
    earlier_world = previous_manifest.world if previous_manifest is not None else None
    if manifest.world is not None and earlier_world is not None and earlier_world.get("name") == manifest.world["name"]:
        # the world of a subset trained now still holds the sources kept from earlier runs
        kept = [s for s in earlier_world.get("sources", []) if s in manifest.sources]
        manifest.world["sources"] = list(dict.fromkeys([*manifest.world.get("sources", []), *kept]))
    order = [*previous, *data, *manifest.sources]  # a run's sources keep their places (player order)
    manifest.sources = {k: manifest.sources[k] for k in dict.fromkeys(order) if k in manifest.sources}
    run.write_manifest(manifest)
    if not todo:
        return manifest

    def record(name: str, entry: SourceEntry) -> None:
        """Put a finished source into the manifest and rewrite it: an interrupted run keeps it."""
        manifest.sources[name] = entry
        order = [*previous, *data, *manifest.sources]
        manifest.sources = {k: manifest.sources[k] for k in dict.fromkeys(order) if k in manifest.sources}
        manifest.updated_at = now()
        run.write_manifest(manifest)

    if cfg.cluster.address is not None:
        job = _SourceJob(cfg, str(run.root), model_name, fingerprint, training_hash, eval_records)
        _train_on_ray(job, run, manifest, [data[name] for name in todo], record, progress=progress)
        return manifest

    with quiet_libraries(loading_reports=progress):
        model = load_base_model(ref, dtype=dtype, device=device)
    _check_against_model(cfg, model, tokenizer, [data[name] for name in todo])
    thread_choice = choose_threads(
        sum(p.numel() for p in model.parameters()),
        rows=cfg.dpo.per_device_train_batch_size,
        device=device,
        requested=cfg.model.threads,
    )
    with quiet_training_libraries(loading_reports=progress), use_threads(thread_choice, say=progress):
        for position, name in enumerate(todo, start=1):
            label = f"[{position}/{len(todo)}] {name}"
            entry, model = _train_one(
                model,
                tokenizer,
                data[name],
                cfg,
                run,
                device,
                training_hash,
                label=label,
                progress=progress,
                eval_records=eval_records,
            )
            record(name, entry)
    return manifest


@dataclass
class TrainingCheck:
    """What :func:`check_training` found: everything ``train`` checks, and the data audit.

    Attributes
    ----------
    checked
        Each check that passed -> what it saw (``"data" -> "3 source(s), 120 pairs"``).
    errors
        One line per problem that would stop training (with ``strict``, the warnings too).
    warnings
        One line per finding of the data audit.
    data_problems
        Every problem in the data and the trusted set, one line each (the first is in ``errors``).
    audit
        The data audit (None when the data, the tokenizer or the chat template failed).
    """

    checked: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    data_problems: list[str] = field(default_factory=list)
    audit: DataAudit | None = None

    @property
    def ok(self) -> bool:
        """Whether training would start."""
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        """The check as JSON-able data."""
        return {
            "ok": self.ok,
            "checked": dict(self.checked),
            "errors": list(self.errors),
            "warnings": list(self.warnings),
            "data_problems": list(self.data_problems),
            "audit": self.audit.to_dict() if self.audit is not None else None,
        }


def check_training(
    config: RunConfig | str | Path | None, *, sources: Sequence[str] | None = None, strict: bool = False
) -> TrainingCheck:
    """Everything :func:`train_sources` checks before it trains, without training or reading weights.

    The config, every data problem and the trusted set, the base model's config (built on the meta
    device: no weights are read) and tokenizer, a chat template when the data are conversations,
    the LoRA targets, ``dpo.max_length``, the ``report_to`` integrations, and the data audit
    (:mod:`dposhap.audit`). A built-in world is built in a temporary folder.

    Parameters
    ----------
    config
        A :class:`~dposhap.config.RunConfig`, the path of a TOML config, or None for the defaults.
    sources
        Check only these sources (as ``train --sources``).
    strict
        Count the audit's warnings as errors.

    Returns
    -------
    TrainingCheck
        ``ok`` when training would start.

    Raises
    ------
    ConfigError
        The config itself cannot be read (nothing else can be checked without it).
    """
    cfg = config if isinstance(config, RunConfig) else load_config(config)
    check = TrainingCheck(checked={"config": str(config) if isinstance(config, (str, Path)) else "ok"})
    data: dict[str, SourceData] = {}
    eval_records: list[dict[str, Any]] = []
    model_name: str | None = cfg.model.base if cfg.world is None else None
    with tempfile.TemporaryDirectory(prefix="dposhap-check-") as folder:
        try:
            model_name, _, _, data = _inputs(cfg, Run(folder), sources)
            pairs = sum(len(s.train) + len(s.heldout) for s in data.values())
            check.checked["data"] = f"{len(data)} source(s), {pairs} pairs"
        except DataValidationError as err:
            check.data_problems += [str(problem) for problem in err.problems]
            check.errors.append(f"data: {len(err.problems)} problem(s), first: {err.problems[0]}")
        except DposhapError as err:
            check.errors.append(f"data: {first_line(err)}")
        try:
            eval_records = _eval_records(cfg)
            if eval_records:
                check.checked["eval"] = f"{len(eval_records)} trusted pairs"
        except DataValidationError as err:
            check.data_problems += [str(problem) for problem in err.problems]
            check.errors.append(f"eval: {len(err.problems)} problem(s) in the trusted set, first: {err.problems[0]}")
        if model_name is not None:
            _check_model(cfg, model_name, data, eval_records, check)
    try:
        _check_reporting(cfg)
        check.checked["report_to"] = ", ".join(cfg.dpo.reporting()) or "none"
    except DposhapError as err:
        check.errors.append(f"report_to: {first_line(err)}")
    if check.audit is not None:
        check.warnings = check.audit.warnings()
        if strict and check.warnings:
            check.errors.append(f"strict: the {len(check.warnings)} warning(s) of the data audit count as errors")
    return check


def _check_model(
    cfg: RunConfig,
    model_name: str,
    data: dict[str, SourceData],
    eval_records: list[dict[str, Any]],
    check: TrainingCheck,
) -> None:
    """The model's part of :func:`check_training`: config, tokenizer, chat template, LoRA, lengths, audit."""
    try:
        ref = resolve_model(
            model_name,
            base_dir=cfg.base_dir,
            revision=cfg.model.revision,
            trust_remote_code=cfg.model.trust_remote_code,
        )
        tokenizer = load_tokenizer(ref)
        model = load_model_skeleton(ref)
    except DposhapError as err:
        check.errors.append(f"model: {first_line(err)}")
        return
    size = sum(p.numel() for p in model.parameters())
    check.checked["model"] = f"{ref.location} ({type(model).__name__}, {size:,} parameters; config only)"
    conversational = any(
        isinstance(pair.prompt, list) for source in data.values() for pair in [*source.train, *source.heldout]
    ) or any(isinstance(record["prompt"], list) for record in eval_records)
    template = bool(getattr(tokenizer, "chat_template", None))
    if conversational and not template:
        check.errors.append(
            f"tokenizer: the data are conversations but the tokenizer of {ref.location} has no chat template: "
            "use a model with one (an instruct model), or give plain-text prompts and responses"
        )
    else:
        check.checked["tokenizer"] = f"{type(tokenizer).__name__}" + (", chat template" if template else "")
    try:
        _check_lora_targets(cfg, model)
        targets = cfg.lora.target_modules
        check.checked["lora"] = targets if isinstance(targets, str) else ", ".join(targets)
    except DposhapError as err:
        check.errors.append(f"lora: {first_line(err)}")
    if not data or (conversational and not template):
        return
    try:
        _check_max_length(cfg, tokenizer, list(data.values()))
        check.checked["max_length"] = str(cfg.dpo.max_length)
    except DposhapError as err:
        check.errors.append(f"max_length: {first_line(err)}")
    check.audit = _audit(cfg, tokenizer, data, eval_records)


def _audit(
    cfg: RunConfig, tokenizer: PreTrainedTokenizerBase, data: dict[str, SourceData], eval_records: list[dict[str, Any]]
) -> DataAudit:
    """The data audit of every source (training and held-out pairs) against the trusted set."""
    records = {name: [*source.train_records(), *source.heldout_records()] for name, source in data.items()}
    return audit_sources(records, tokenizer, cfg.dpo.max_length, eval_records)


def _check_reporting(cfg: RunConfig) -> None:
    """The ``report_to`` integrations are installed (TRL would fail after loading the model)."""
    missing = cfg.dpo.missing_reporting()
    if missing:
        raise ConfigError(
            f"names {', '.join(missing)}, not installed here: pip install {' '.join(missing)}, or leave report_to out",
            field="dpo.report_to",
        )


# ---------------------------------------------------------------------------------------
# Training on Ray: one task per source, at most ``Cluster.workers`` at once. The driver side
# (:func:`_train_on_ray`: connect, decide the device and dtype every task uses, record each
# finished source in the manifest, which only the driver writes), the Ray side
# (:func:`_run_per_source`: the remote function, its resources and retries, the window of tasks
# in flight, cancelling on Ctrl-C, Ray's errors turned back into the task's own) and the task
# (:func:`_train_source_task`: load the base model on the node, train one source as the in-process
# path does). A task whose worker dies is started again up to ``Cluster.max_retries`` times; an
# exception the task raises is not retried and reaches the caller as itself.


@dataclass(frozen=True)
class _SourceJob:
    """What a Ray task needs to train one source (shipped to the worker)."""

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


def _train_on_ray(
    job: _SourceJob,
    run: Run,
    manifest: Manifest,
    sources: list[SourceData],
    record: Callable[[str, SourceEntry], None],
    *,
    progress: bool,
) -> None:
    """Train ``sources`` as Ray tasks (one per source, ``job`` filled in), recording each finished source."""
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
    _remove_leftovers(run)  # the temporary folders of tasks whose workers died (the run lock is still held)


def _task_dtype(precision: str, device: str) -> Any:
    """The dtype every Ray task trains in, decided once here so that all nodes agree: ``auto`` on GPU
    workers is bfloat16 when this driver has no GPU to ask (every GPU since Ampere supports it)."""
    import torch

    if precision == "auto" and device == "cuda" and not torch.cuda.is_available():
        return torch.bfloat16
    return resolve_dtype(precision, device)


def _train_source_task(job: _SourceJob) -> SourceEntry:
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
    _check_against_model(cfg, model, tokenizer, [job.source])
    with quiet_training_libraries(loading_reports=False), use_threads(job.threads, say=False):
        entry, _ = _train_one(
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


def _inputs(
    cfg: RunConfig, run: Run, sources: Sequence[str] | None
) -> tuple[str, DataSpec, dict | None, dict[str, SourceData]]:
    """The base model name, the data spec, (for a world's model) the world's manifest record, and the data.

    Every data problem is reported here, before any model is loaded or any world built.
    """
    d = cfg.data
    select = list(sources) if sources is not None else d.select
    common: dict[str, Any] = dict(
        source_column=d.source_column,
        prompt_column=d.prompt_column,
        chosen_column=d.chosen_column,
        rejected_column=d.rejected_column,
        min_pairs=d.min_pairs,
        heldout_fraction=d.heldout_fraction,
        seed=d.seed,
    )
    if cfg.world is None and not d.given:
        raise InvalidArgumentError(
            "no training data: set data.files or [data.sources] in the config "
            '(or a built-in world: model.base = "toy" or "english")'
        )
    if d.given:
        spec = DataSpec(
            files=list(d.files), sources=dict(d.sources), select=select, base_dir=str(cfg.base_dir), **common
        )
        data = load_sources(spec)
        if cfg.world is None:
            return cfg.model.base, spec, None, data
        world = cfg.build_world(run.world_dir)  # the world's model on the user's own data: select is theirs
    else:
        world = cfg.build_world(run.world_dir, select)
        spec = DataSpec(sources={k: str(v) for k, v in world.data_files.items()}, **common)
        data = load_sources(spec)
    return world.model_spec, spec, world.record(run.root), data


def _eval_records(cfg: RunConfig) -> list[dict[str, Any]]:
    """The trusted evaluation set of ``[eval]``, loaded and checked (none when the config names none)."""
    if not cfg.eval.files:
        return []
    d = cfg.data
    return load_eval_records(
        cfg.eval.files,
        base_dir=str(cfg.base_dir),
        prompt_column=d.prompt_column,
        chosen_column=d.chosen_column,
        rejected_column=d.rejected_column,
    )


def _store_eval(run: Run, cfg: RunConfig, records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Write the trusted set into the run (``RUN/eval.jsonl``); its manifest record."""
    if not records:
        run.eval_path.unlink(missing_ok=True)
        return None
    atomic_write_text(run.eval_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return {
        "path": os.path.relpath(run.eval_path, run.root),
        "files": list(cfg.eval.files),
        "n_pairs": len(records),
        "sha256": config_hash(records),
    }


def _up_to_date(run: Run, source: SourceData, training_hash: str) -> bool:
    """Whether the source's adapter was trained on the same data, the same way, and is intact on disk
    (a truncated or bit-rotten weights file no longer matches its recorded checksum: it is retrained)."""
    folder = run.adapter_dir(source.name)
    try:
        meta = adapter_metadata(folder) or {}
    except Exception:  # a damaged dposhap.json: the adapter is retrained
        return False
    if meta.get("data_hash") != source.data_hash or meta.get("training_hash") != training_hash:
        return False
    return run.adapter_damage(folder, meta.get("adapter_sha256")) is None


def _declared_sources(cfg: RunConfig) -> list[str]:
    """The sources the config names (a world's list, ``data.select``, ``[data.sources]``), when it names them."""
    # --sources trains a subset now; the plan stays what the config names (and earlier runs planned)
    if cfg.data.given:
        return list(cfg.data.select or cfg.data.sources)
    kind = cfg.world
    return kind.source_names(cfg.worlds[kind.name]) if kind is not None else []


def _check_against_model(
    cfg: RunConfig, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, sources: list[SourceData]
) -> None:
    """The settings that only the loaded model can check: LoRA target modules and ``dpo.max_length``.

    Raises
    ------
    ConfigError
        ``lora.target_modules`` names a module the model lacks, or ``dpo.max_length`` is shorter
        than every prompt to train on.
    """
    _check_lora_targets(cfg, model)
    _check_max_length(cfg, tokenizer, sources)


def _check_lora_targets(cfg: RunConfig, model: PreTrainedModel) -> None:
    """``lora.target_modules`` names modules the model has (a model on the meta device will do)."""
    targets = cfg.lora.target_modules
    if targets != "all-linear":
        wanted = [targets] if isinstance(targets, str) else list(targets)
        names = [name for name, _ in model.named_modules() if name]
        suffixes = {name.rsplit(".", 1)[-1] for name in names}
        missing = [t for t in wanted if t not in suffixes and t not in names]
        if missing:
            linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if type(m).__name__ == "Linear"})
            raise ConfigError(
                f"names modules the model lacks ({', '.join(missing)}); its linear layers are "
                f'{", ".join(linear)} (or use "all-linear")',
                field="lora.target_modules",
            )


def _check_max_length(cfg: RunConfig, tokenizer: PreTrainedTokenizerBase, sources: Sequence[SourceData]) -> None:
    """``dpo.max_length`` leaves room for a response after the shortest prompt."""
    shortest = None
    for source in sources:
        for record in source.train_records()[:64]:
            prompt = record["prompt"]
            text = prompt if isinstance(prompt, str) else " ".join(str(m.get("content", "")) for m in prompt)
            length = len(tokenizer(text)["input_ids"])
            shortest = length if shortest is None else min(shortest, length)
    if shortest is not None and shortest + 1 >= cfg.dpo.max_length:
        raise ConfigError(
            f"is {cfg.dpo.max_length} tokens, but the shortest prompt alone takes {shortest}: no response would be "
            f"trained on; raise it above {shortest + 1}",
            field="dpo.max_length",
        )


def _entry_from_adapter(run: Run, source: SourceData) -> SourceEntry:
    """A reused adapter's entry, from the ``dposhap.json`` written beside it."""
    meta = adapter_metadata(run.adapter_dir(source.name)) or {}
    return SourceEntry.from_dict(
        {k: v for k, v in meta.items() if k != "source"}, run.adapter_dir(source.name), source.name
    )


def _remove_leftovers(run: Run) -> None:
    """Delete half-written adapters and files of an interrupted run (they were never renamed into place)."""
    for path in run.root.glob(".*.tmp"):  # atomic writes' temporary files (the run lock is held)
        path.unlink(missing_ok=True)
    if run.adapters_dir.is_dir():
        for path in run.adapters_dir.iterdir():
            if path.name.startswith((".tmp-", ".old-")):
                shutil.rmtree(path, ignore_errors=True)


def _new_manifest(
    cfg: RunConfig, ref: ModelRef, fingerprint: str, device: str, dtype: str, world_record: dict | None
) -> Manifest:
    return Manifest(
        base_model=BaseModelInfo(
            name=cfg.model.base,
            location=ref.location,
            local=ref.local,
            revision=ref.revision,
            fingerprint=fingerprint,
            dtype=dtype,
            origin=ref.origin,
            origin_sha256=ref.origin_sha256,
        ),
        config=cfg.to_dict(),
        world=world_record,
        versions=library_versions(),
        machine={"platform": platform.platform(), "device": device, "cpu_count": os.cpu_count()},
    )


def _train_one(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    source: SourceData,
    cfg: RunConfig,
    run: Run,
    device: str,
    training_hash: str,
    *,
    label: str,
    progress: bool,
    eval_records: list[dict[str, Any]] | None = None,
) -> tuple[SourceEntry, PreTrainedModel]:
    """Train, evaluate and save one source's adapter; return its manifest entry and the clean base model."""
    work = run.adapters_dir / f".tmp-{source.name}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        # Ctrl-C stops at the end of a training step, never inside torch's C++ (dposhap.interrupts); one
        # that waits until the adapter is saved leaves it in place, and the next run reuses it
        with deferred_interrupts("this training step") as interrupts:
            return _train_into(
                model,
                tokenizer,
                source,
                cfg,
                run,
                device,
                training_hash,
                work,
                label,
                progress,
                eval_records,
                interrupts,
            )
    finally:  # finished, failed, full disk or Ctrl-C: the temporary folder never outlives the attempt
        shutil.rmtree(work, ignore_errors=True)


def _train_into(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    source: SourceData,
    cfg: RunConfig,
    run: Run,
    device: str,
    training_hash: str,
    work: Path,
    label: str,
    progress: bool,
    eval_records: list[dict[str, Any]] | None,
    interrupts: Interrupts,
) -> tuple[SourceEntry, PreTrainedModel]:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import PrinterCallback
    from trl import DPOConfig, DPOTrainer

    d = cfg.dpo
    n_train = len(source.train)
    args = DPOConfig(
        beta=d.beta,
        learning_rate=d.learning_rate,
        num_train_epochs=d.num_train_epochs,
        max_steps=d.max_steps,
        per_device_train_batch_size=d.per_device_train_batch_size,
        per_device_eval_batch_size=d.per_device_train_batch_size,
        gradient_accumulation_steps=d.gradient_accumulation_steps,
        max_length=d.max_length,
        loss_type=[d.loss_type],
        warmup_steps=d.warmup_steps,
        weight_decay=d.weight_decay,
        lr_scheduler_type=d.lr_scheduler_type,
        # the reference policy (the adapter switched off) is frozen: its log-probs of every pair are
        # computed once, before the first step, instead of by an extra forward in every step of every epoch
        precompute_ref_log_probs=True,
        **checkpointing_kwargs(DPOConfig, d.gradient_checkpointing),
        **common_trainer_args(
            output_dir=str(work / "trainer"),
            seed=d.seed,
            dtype=model.dtype,
            device=device,
            n_train=n_train,
            batch_size=d.per_device_train_batch_size,
            report_to=d.reporting(),
        ),
    )
    lora = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=cfg.lora.target_modules,
        task_type="CAUSAL_LM",
    )
    memory = PeakMemory(device)
    started = time.perf_counter()
    # TRL's bars of the reference log-probs passes (train set at construction, eval set in evaluate)
    # ignore disable_tqdm: the environment turns them off; our own bar passes disable=False
    logging: dict[str, str] = {}
    if args.report_to:  # the integrations that take a folder write under RUN/logs/<source>/
        logs = run.logs_dir / source.name
        logs.mkdir(parents=True, exist_ok=True)
        logging = {"TENSORBOARD_LOGGING_DIR": str(logs), "WANDB_DIR": str(logs)}
    with memory, environment(TQDM_DISABLE="1", **logging):
        trainer = DPOTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(source.train_records()),
            eval_dataset=Dataset.from_list(source.heldout_records()),
            processing_class=tokenizer,
            peft_config=lora,
            callbacks=[interrupt_callback(interrupts), *([progress_callback(label)] if progress else [])],
        )
        trainer.remove_callback(PrinterCallback)  # it prints every log dict when TRL's bars are off
        setup_s = time.perf_counter() - started  # tokenising and the reference log-probs
        try:
            result = trainer.train()
            train_s = time.perf_counter() - started
            evaluated = time.perf_counter()
            scores = trainer.evaluate()
            if eval_records:  # the same metrics on the trusted set, whose labels do not come from the source
                trusted = trainer.evaluate(eval_dataset=Dataset.from_list(eval_records))
                scores.update({f"trusted_{key.removeprefix('eval_')}": value for key, value in trusted.items()})
            eval_s = time.perf_counter() - evaluated
            adapter_dir = work / "adapter"
            trainer.model.save_pretrained(str(adapter_dir))
        finally:
            # give the base model back without the adapter, for the next source
            model = trainer.model.unload() if hasattr(trainer.model, "unload") else model
            model.eval()
    weights = sorted(adapter_dir.glob("adapter_model.*"))
    entry = SourceEntry(
        adapter=os.path.relpath(run.adapter_dir(source.name), run.root),
        data_hash=source.data_hash,
        training_hash=training_hash,
        n_train=n_train,
        n_heldout=len(source.heldout),
        heldout=os.path.relpath(run.data_dir(source.name) / "heldout.jsonl", run.root),
        adapter_sha256=file_sha256(weights[0]) if weights else None,
        metrics={
            "heldout_reward_accuracy": metric(scores, "eval_rewards/accuracies"),
            "heldout_reward_margin": metric(scores, "eval_rewards/margins"),
            "heldout_loss": metric(scores, "eval_loss"),
            "trusted_reward_accuracy": metric(scores, "trusted_rewards/accuracies"),
            "trusted_reward_margin": metric(scores, "trusted_rewards/margins"),
            "train_loss": metric(result.metrics, "train_loss"),
            "steps": int(trainer.state.global_step),
        },
        timings={
            "train_s": round(train_s, 3),
            "setup_s": round(setup_s, 3),
            "s_per_step": round((train_s - setup_s) / max(1, trainer.state.global_step), 4),
            "eval_s": round(eval_s, 3),
            "peak_memory_mb": memory.peak_mb,
            "memory": memory.kind,
        },
        status="trained",
        trained_at=now(),
    )
    atomic_write_json(adapter_dir / "dposhap.json", {"source": source.name, **entry.to_dict()})
    shutil.rmtree(work / "trainer", ignore_errors=True)
    replace_dir(adapter_dir, run.adapter_dir(source.name))
    return entry, model


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

"""Per-source DPO training: one TRL ``DPOTrainer`` with a PEFT LoRA adapter per source.

Every source is trained on the same base model, which is also the DPO reference policy (the
adapter switched off), so the adapters compose by logits arithmetic (DESIGN.md §1). Runs are
resumable: a source whose finished adapter carries the same data hash and training hash is
skipped, one whose data or config changed is retrained, and a source interrupted mid-run
restarts cleanly (adapters are written to a temporary folder and renamed when complete).

With ``[cluster] address`` set (``dposhap train --ray``) every source to train is one Ray task
(:mod:`dposhap.cluster.training`) that loads the base model itself and runs the same per-source
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
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cluster import connect, require_ray
from .cluster.training import run_per_source
from .config import RunConfig, load_config
from .data import DataSpec, SourceData, load_eval_records, load_sources, write_split
from .errors import ConfigError, InvalidArgumentError, ModelLoadError, RunError
from .interrupts import Interrupts, deferred_interrupts
from .models import (
    ModelRef,
    adapter_metadata,
    load_base_model,
    load_tokenizer,
    quiet_libraries,
    resolve_device,
    resolve_dtype,
    resolve_model,
)
from .run import (
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
from .run.manifest import now
from .threads import ThreadChoice
from .threads import choose as choose_threads
from .threads import use as use_threads

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["train_sources"]


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

    for source in data.values():
        write_split(source, run.data_dir(source.name))
    _remove_leftovers(run)

    manifest = _new_manifest(cfg, ref, fingerprint, device, str(dtype).removeprefix("torch."), world_record)
    manifest.eval = _store_eval(run, cfg, eval_records)
    todo = [name for name, source in data.items() if force or not _up_to_date(run, source, training_hash)]
    previous_manifest = _previous_manifest(run)
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
        tokenizer = load_tokenizer(ref)
        model = load_base_model(ref, dtype=dtype, device=device)
    _check_against_model(cfg, model, tokenizer, [data[name] for name in todo])
    thread_choice = choose_threads(
        sum(p.numel() for p in model.parameters()),
        rows=cfg.dpo.per_device_train_batch_size,
        device=device,
        requested=cfg.model.threads,
    )
    with _quiet_libraries(loading_reports=progress), use_threads(thread_choice, say=progress):
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
        run_per_source(cluster, _train_source_task, jobs, finished=record, progress=progress)
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
    with _quiet_libraries(loading_reports=False), use_threads(job.threads, say=False):
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


def _previous_manifest(run: Run) -> Manifest | None:
    """The manifest already there (None when it is missing or damaged: the adapters say what is trained)."""
    try:
        return run.read_manifest()
    except RunError:
        return None


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


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for package in ("dposhap", "torch", "transformers", "trl", "peft", "datasets", "accelerate"):
        with contextlib.suppress(PackageNotFoundError):
            out[package] = version(package)
    return out


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
        versions=_versions(),
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
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import PrinterCallback
    from trl import DPOConfig, DPOTrainer

    d = cfg.dpo
    n_train = len(source.train)
    args = DPOConfig(
        output_dir=str(work / "trainer"),
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
        **_checkpointing(DPOConfig, d.gradient_checkpointing),
        seed=d.seed,
        data_seed=d.seed,
        bf16=model.dtype == torch.bfloat16,
        fp16=model.dtype == torch.float16,
        use_cpu=device == "cpu",
        report_to=[],
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="steps",
        logging_steps=max(1, n_train // (4 * d.per_device_train_batch_size)),
        disable_tqdm=True,
    )
    lora = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=cfg.lora.target_modules,
        task_type="CAUSAL_LM",
    )
    memory = _PeakMemory(device)
    started = time.perf_counter()
    # TRL's bars of the reference log-probs passes (train set at construction, eval set in evaluate)
    # ignore disable_tqdm: the environment turns them off; our own bar passes disable=False
    with memory, _environment(TQDM_DISABLE="1"):
        trainer = DPOTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(source.train_records()),
            eval_dataset=Dataset.from_list(source.heldout_records()),
            processing_class=tokenizer,
            peft_config=lora,
            callbacks=[_interrupt_callback(interrupts), *([_progress_callback(label)] if progress else [])],
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
            "heldout_reward_accuracy": _metric(scores, "eval_rewards/accuracies"),
            "heldout_reward_margin": _metric(scores, "eval_rewards/margins"),
            "heldout_loss": _metric(scores, "eval_loss"),
            "trusted_reward_accuracy": _metric(scores, "trusted_rewards/accuracies"),
            "trusted_reward_margin": _metric(scores, "trusted_rewards/margins"),
            "train_loss": _metric(result.metrics, "train_loss"),
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


def _checkpointing(config_class: type, enabled: bool) -> dict[str, bool]:
    """Activation checkpointing under the name this transformers version uses (renamed in 5.x)."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(config_class)}
    return {"activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing": enabled}


def _metric(values: dict[str, Any], key: str) -> float | None:
    value = values.get(key)
    return None if value is None else float(value)


def _interrupt_callback(interrupts: Interrupts) -> Any:
    """Raise a waiting Ctrl-C between steps and evaluation batches, where Python unwinds cleanly."""
    from transformers import TrainerCallback

    class InterruptCallback(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            interrupts.check()

        def on_substep_end(self, args, state, control, **kwargs):
            interrupts.check()

        def on_prediction_step(self, args, state, control, **kwargs):
            interrupts.check()

    return InterruptCallback()


def _progress_callback(label: str) -> Any:
    """A tqdm bar for one source, driven by the trainer's callbacks (TRL's own bars are off)."""
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        bar: Any = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.bar = tqdm(total=state.max_steps, desc=label, unit="step", leave=True, disable=False)

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.bar is not None and logs and "loss" in logs:
                shown = {"loss": f"{float(logs['loss']):.3f}"}
                if "rewards/accuracies" in logs:
                    shown["acc"] = f"{float(logs['rewards/accuracies']):.2f}"
                self.bar.set_postfix(shown)

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    return ProgressCallback()


class _PeakMemory:
    """Peak memory while active: CUDA allocator peak on a GPU, sampled resident set size on a CPU."""

    def __init__(self, device: str):
        self.device, self.peak_mb, self.kind = device, 0.0, "cuda_allocated" if device == "cuda" else "rss"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> _PeakMemory:
        if self.device == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats()
        else:
            self._peak = _rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self._peak = max(self._peak, _rss_bytes())

    def __exit__(self, *exc: object) -> None:
        if self.device == "cuda":
            import torch

            self.peak_mb = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        else:
            self._stop.set()
            assert self._thread is not None
            self._thread.join()
            self.peak_mb = round(max(self._peak, _rss_bytes()) / 2**20, 1)


def _rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Set environment variables for the duration, restoring their previous values."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _quiet_libraries(*, loading_reports: bool = True) -> Iterator[None]:
    """Silence the libraries' info logs, dataset progress bars and their own deprecation notices while training
    (and their loading reports without ``loading_reports``: :func:`dposhap.models.quiet_libraries`)."""
    import datasets
    import transformers

    previous = transformers.logging.get_verbosity()
    bars = datasets.is_progress_bar_enabled()
    transformers.logging.set_verbosity_warning()
    datasets.disable_progress_bars()
    try:
        with quiet_libraries(loading_reports=loading_reports):
            yield
    finally:
        transformers.logging.set_verbosity(previous)
        if bars:
            datasets.enable_progress_bars()

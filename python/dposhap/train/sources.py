"""Per-source DPO training of a run: which sources to train, the manifest, in process or on Ray.

Every source is trained on the same base model, which is also the DPO reference policy (the
adapter switched off), so the adapters compose by logits arithmetic (docs/design.md §1). Runs are
resumable (:mod:`dposhap.train.resume`): a source whose finished adapter carries the same data hash
and training hash is skipped, one whose data or config changed is retrained, and a source
interrupted mid-run restarts cleanly.

With ``[cluster] address`` set (``dposhap train --ray``) every source to train is one Ray task
(:mod:`dposhap.train.on_ray`) that loads the base model itself and runs the same per-source code
(:mod:`dposhap.train.adapter`) as this process would, writing its adapter into the run directory;
this process alone writes the manifest, after each finished source."""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..cluster import require_ray
from ..config import RunConfig, load_config
from ..data import write_split
from ..models import (
    ModelRef,
    load_base_model,
    load_tokenizer,
    quiet_libraries,
    resolve_device,
    resolve_dtype,
    resolve_model,
)
from ..run import BaseModelInfo, Manifest, Run, SourceEntry, atomic_write_json, atomic_write_text, config_hash
from ..run.manifest import now
from ..threads import choose as choose_threads
from ..threads import use as use_threads
from ..trainer_support import library_versions, quiet_training_libraries
from .adapter import train_one
from .checks import audit_data, check_against_model, check_reporting
from .inputs import training_inputs, trusted_records
from .on_ray import SourceJob, train_on_ray
from .resume import entry_from_adapter, remove_leftovers, up_to_date


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
    model_name, spec, world_record, data = training_inputs(cfg, run, sources)
    eval_records = trusted_records(cfg)
    # on Ray the tasks' device is known once connected (a CPU driver may lead GPU workers)
    device = cfg.model.device if cfg.cluster.address is not None else resolve_device(cfg.model.device)
    dtype = resolve_dtype(cfg.model.precision, device)
    ref = resolve_model(
        model_name, base_dir=cfg.base_dir, revision=cfg.model.revision, trust_remote_code=cfg.model.trust_remote_code
    )
    fingerprint = ref.fingerprint()  # reads the weight files' heads and tails: once
    training_hash = hashlib.sha256(f"{cfg.training_hash()}|{fingerprint}".encode()).hexdigest()

    check_reporting(cfg)
    for source in data.values():
        write_split(source, run.data_dir(source.name))
    remove_leftovers(run)
    tokenizer = load_tokenizer(ref)
    audit = audit_data(cfg, tokenizer, data, eval_records)
    atomic_write_json(run.data_audit_path, audit.to_dict())

    manifest = _new_manifest(cfg, ref, fingerprint, device, str(dtype).removeprefix("torch."), world_record)
    manifest.eval = _store_eval(run, cfg, eval_records)
    todo = [name for name, source in data.items() if force or not up_to_date(run, source, training_hash)]
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
            entry = previous.get(name) or entry_from_adapter(run, source)
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
        job = SourceJob(cfg, str(run.root), model_name, fingerprint, training_hash, eval_records)
        train_on_ray(job, run, manifest, [data[name] for name in todo], record, progress=progress)
        return manifest

    with quiet_libraries(loading_reports=progress):
        model = load_base_model(ref, dtype=dtype, device=device)
    check_against_model(cfg, model, tokenizer, [data[name] for name in todo])
    thread_choice = choose_threads(
        sum(p.numel() for p in model.parameters()),
        rows=cfg.dpo.per_device_train_batch_size,
        device=device,
        requested=cfg.model.threads,
    )
    with quiet_training_libraries(loading_reports=progress), use_threads(thread_choice, say=progress):
        for position, name in enumerate(todo, start=1):
            label = f"[{position}/{len(todo)}] {name}"
            entry, model = train_one(
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


def _declared_sources(cfg: RunConfig) -> list[str]:
    """The sources the config names (a world's list, ``data.select``, ``[data.sources]``), when it names them."""
    # --sources trains a subset now; the plan stays what the config names (and earlier runs planned)
    if cfg.data.given:
        return list(cfg.data.select or cfg.data.sources)
    kind = cfg.world
    return kind.source_names(cfg.worlds[kind.name]) if kind is not None else []


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

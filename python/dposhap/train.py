"""Per-source DPO training: one TRL ``DPOTrainer`` with a PEFT LoRA adapter per source.

Every source is trained on the same base model, which is also the DPO reference policy (the
adapter switched off), so the adapters compose by logits arithmetic (DESIGN.md §1). Runs are
resumable: a source whose finished adapter carries the same data hash and training hash is
skipped, one whose data or config changed is retrained, and a source interrupted mid-run
restarts cleanly (adapters are written to a temporary folder and renamed when complete).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import os
import platform
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .config import RunConfig, load_config
from .data import DataSpec, SourceData, load_sources, write_split
from .errors import InvalidArgumentError
from .models import (
    ModelRef,
    adapter_metadata,
    load_base_model,
    load_tokenizer,
    resolve_device,
    resolve_dtype,
    resolve_model,
)
from .rundir import RunDir, atomic_write_json, replace_dir

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["MANIFEST_FORMAT", "train_sources"]

MANIFEST_FORMAT = 1
#: Below this many parameters a CPU run trains on one thread (faster for tiny models).
TINY_MODEL_PARAMETERS = 5_000_000


def train_sources(
    config: RunConfig | str | Path | None,
    out: str | Path,
    *,
    sources: Sequence[str] | None = None,
    force: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
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
        Train only these sources (overrides ``data.select`` / ``toy.sources``).
    force
        Retrain every source even when its adapter is up to date.
    progress
        Show progress bars (one per source).

    Returns
    -------
    dict
        The manifest: the config, library versions, base model, and per source its data hash,
        sizes, held-out DPO reward accuracy and margin, timings and peak memory.

    Raises
    ------
    DataValidationError
        The data has problems (all of them are listed); nothing was trained.
    ConfigError, ModelLoadError, RunLockedError
        As their names say; the message tells what to do.
    """
    cfg = config if isinstance(config, RunConfig) else load_config(config)
    run = RunDir(out)
    with run.lock("dposhap train"):
        return _train_locked(cfg, run, sources=sources, force=force, progress=progress)


def _train_locked(cfg: RunConfig, run: RunDir, *, sources: Sequence[str] | None, force: bool,
                  progress: bool) -> dict[str, Any]:
    model_name, spec, toy_info = _inputs(cfg, run, sources)
    data = load_sources(spec)  # every data problem is reported here, before any model is loaded
    device = resolve_device(cfg.model.device)
    dtype = resolve_dtype(cfg.model.precision, device)
    ref = resolve_model(model_name, base_dir=cfg.base_dir, revision=cfg.model.revision,
                        trust_remote_code=cfg.model.trust_remote_code)
    fingerprint = ref.fingerprint()  # reads the weight files' heads and tails: once
    training_hash = hashlib.sha256(f"{cfg.training_hash()}|{fingerprint}".encode()).hexdigest()

    for source in data.values():
        write_split(source, run.data(source.name))
    _remove_leftovers(run)

    manifest = _new_manifest(cfg, ref, fingerprint, device, str(dtype).removeprefix("torch."), toy_info)
    todo = [name for name, source in data.items()
            if force or not _up_to_date(run, source, training_hash)]
    previous = (run.read_manifest() or {}).get("sources", {})
    for name, source in data.items():
        if name not in todo:
            entry = dict(previous.get(name) or _entry_from_adapter(run, source))
            entry["status"] = "reused"
            manifest["sources"][name] = entry
    atomic_write_json(run.manifest, manifest)
    if not todo:
        return manifest

    tokenizer = load_tokenizer(ref)
    model = load_base_model(ref, dtype=dtype, device=device)
    # a model this small (the toy one) gains nothing from a second CPU thread but synchronisation
    tiny = device == "cpu" and sum(p.numel() for p in model.parameters()) < TINY_MODEL_PARAMETERS
    threads = _torch_threads(1) if tiny else contextlib.nullcontext()
    with _quiet_libraries(), threads:
        for position, name in enumerate(todo, start=1):
            label = f"[{position}/{len(todo)}] {name}"
            entry, model = _train_one(model, tokenizer, data[name], cfg, run, device, training_hash,
                                      label=label, progress=progress)
            manifest["sources"][name] = entry
            manifest["sources"] = {k: manifest["sources"][k] for k in data if k in manifest["sources"]}
            manifest["updated_at"] = _now()
            atomic_write_json(run.manifest, manifest)
    return manifest


def _inputs(cfg: RunConfig, run: RunDir, sources: Sequence[str] | None) -> tuple[str, DataSpec, dict | None]:
    """The base model name, the data spec and (for the toy world) what was built."""
    d = cfg.data
    select = list(sources) if sources is not None else d.select
    common = dict(source_column=d.source_column, prompt_column=d.prompt_column, chosen_column=d.chosen_column,
                  rejected_column=d.rejected_column, min_pairs=d.min_pairs, heldout_fraction=d.heldout_fraction,
                  seed=d.seed)
    if not cfg.uses_toy:
        if not d.given:
            raise InvalidArgumentError("no training data: set data.files or [data.sources] in the config "
                                       '(or use model.base = "toy" for the built-in toy world)')
        spec = DataSpec(files=list(d.files), sources=dict(d.sources), select=select, base_dir=str(cfg.base_dir),
                        **common)
        return cfg.model.base, spec, None

    from . import toy

    toy_sources = list(select) if select is not None else list(cfg.toy.sources)
    world = toy.build_toy_world(run.toy, seed=cfg.toy.seed, sources=toy_sources,
                                pairs_per_source=cfg.toy.pairs_per_source)
    if d.given:  # the toy model trained on the user's own data
        spec = DataSpec(files=list(d.files), sources=dict(d.sources), select=select, base_dir=str(cfg.base_dir),
                        **common)
    else:
        spec = DataSpec(sources={k: str(v) for k, v in world.data_files.items()}, **common)
    info = {"root": os.path.relpath(world.root, run.root), "seed": world.seed, "sources": list(world.sources),
            "pairs_per_source": cfg.toy.pairs_per_source, "objectives": list(toy.OBJECTIVES)}
    return str(world.model_dir), spec, info


def _up_to_date(run: RunDir, source: SourceData, training_hash: str) -> bool:
    meta = adapter_metadata(run.adapter(source.name))
    return bool(meta) and meta.get("data_hash") == source.data_hash and meta.get("training_hash") == training_hash


def _entry_from_adapter(run: RunDir, source: SourceData) -> dict[str, Any]:
    meta = adapter_metadata(run.adapter(source.name)) or {}
    return {k: meta.get(k) for k in ("adapter", "data_hash", "training_hash", "n_train", "n_heldout", "heldout",
                                     "metrics", "timings")}


def _remove_leftovers(run: RunDir) -> None:
    """Delete half-written adapters of an interrupted run (they were never renamed into place)."""
    if run.adapters.is_dir():
        for path in run.adapters.iterdir():
            if path.name.startswith((".tmp-", ".old-")):
                shutil.rmtree(path, ignore_errors=True)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "dposhap": __version__}
    for package in ("torch", "transformers", "trl", "peft", "datasets", "accelerate"):
        with contextlib.suppress(PackageNotFoundError):
            out[package] = version(package)
    return out


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _new_manifest(cfg: RunConfig, ref: ModelRef, fingerprint: str, device: str, dtype: str,
                  toy_info: dict | None) -> dict[str, Any]:
    return {
        "format": MANIFEST_FORMAT,
        "created_at": _now(),
        "updated_at": _now(),
        "versions": _versions(),
        "machine": {"platform": platform.platform(), "device": device, "cpu_count": os.cpu_count()},
        "base_model": {"name": cfg.model.base, "location": ref.location, "local": ref.local,
                       "revision": ref.revision, "fingerprint": fingerprint, "dtype": dtype},
        "toy": toy_info,
        "config": cfg.to_dict(),
        "sources": {},
    }


def _train_one(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, source: SourceData, cfg: RunConfig,
               run: RunDir, device: str, training_hash: str, *, label: str,
               progress: bool) -> tuple[dict[str, Any], PreTrainedModel]:
    """Train, evaluate and save one source's adapter; return its manifest entry and the clean base model."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import PrinterCallback
    from trl import DPOConfig, DPOTrainer

    work = run.adapters / f".tmp-{source.name}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
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
    lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM")
    memory = _PeakMemory(device)
    started = time.perf_counter()
    with memory:
        trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(source.train_records()),
                             eval_dataset=Dataset.from_list(source.heldout_records()), processing_class=tokenizer,
                             peft_config=lora, callbacks=[_progress_callback(label)] if progress else None)
        trainer.remove_callback(PrinterCallback)  # it prints every log dict when TRL's bars are off
        try:
            result = trainer.train()
            train_s = time.perf_counter() - started
            evaluated = time.perf_counter()
            scores = trainer.evaluate()
            eval_s = time.perf_counter() - evaluated
            adapter_dir = work / "adapter"
            trainer.model.save_pretrained(str(adapter_dir))
        finally:
            # give the base model back without the adapter, for the next source
            model = trainer.model.unload() if hasattr(trainer.model, "unload") else model
            model.eval()
    entry = {
        "adapter": os.path.relpath(run.adapter(source.name), run.root),
        "data_hash": source.data_hash,
        "training_hash": training_hash,
        "n_train": n_train,
        "n_heldout": len(source.heldout),
        "heldout": os.path.relpath(run.data(source.name) / "heldout.jsonl", run.root),
        "metrics": {
            "heldout_reward_accuracy": _metric(scores, "eval_rewards/accuracies"),
            "heldout_reward_margin": _metric(scores, "eval_rewards/margins"),
            "heldout_loss": _metric(scores, "eval_loss"),
            "train_loss": _metric(result.metrics, "train_loss"),
            "steps": int(trainer.state.global_step),
        },
        "timings": {"train_s": round(train_s, 3), "eval_s": round(eval_s, 3),
                    "peak_memory_mb": memory.peak_mb, "memory": memory.kind},
        "status": "trained",
        "trained_at": _now(),
    }
    atomic_write_json(adapter_dir / "dposhap.json", {"source": source.name, **entry})
    shutil.rmtree(work / "trainer", ignore_errors=True)
    replace_dir(adapter_dir, run.adapter(source.name))
    shutil.rmtree(work, ignore_errors=True)
    return entry, model


def _checkpointing(config_class: type, enabled: bool) -> dict[str, bool]:
    """Activation checkpointing under the name this transformers version uses (renamed in 5.x)."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(config_class)}
    return {"activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing": enabled}


def _metric(values: dict[str, Any], key: str) -> float | None:
    value = values.get(key)
    return None if value is None else float(value)


def _progress_callback(label: str) -> Any:
    """A tqdm bar for one source, driven by the trainer's callbacks (TRL's own bars are off)."""
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        bar: Any = None

        def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
            self.bar = tqdm(total=state.max_steps, desc=label, unit="step", leave=True)

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001, ANN201
            if self.bar is not None and logs and "loss" in logs:
                shown = {"loss": f"{float(logs['loss']):.3f}"}
                if "rewards/accuracies" in logs:
                    shown["acc"] = f"{float(logs['rewards/accuracies']):.2f}"
                self.bar.set_postfix(shown)

        def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
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
def _torch_threads(count: int) -> Iterator[None]:
    """Run with ``count`` intra-op CPU threads, restoring the previous count."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def _quiet_libraries() -> Iterator[None]:
    """Silence the libraries' info logs and dataset progress bars while training (warnings stay)."""
    import datasets
    import transformers

    previous = transformers.logging.get_verbosity()
    bars = datasets.is_progress_bar_enabled()
    transformers.logging.set_verbosity_warning()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(previous)
        if bars:
            datasets.enable_progress_bars()

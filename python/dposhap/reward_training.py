"""Reward models from preference pairs: TRL's ``RewardTrainer`` with a PEFT LoRA adapter and a trained score head.

``dposhap reward train`` (and :func:`train_reward_model`) reads preference pairs in any format the
training data accepts (:mod:`dposhap.data`: the same validation and one-line errors), holds out
a seeded share of them, trains a sequence-classification model with one output (the reward) by
the Bradley-Terry loss, merges the adapter into the weights and writes a plain Hugging Face
folder: ``config.json``, the weights, the tokenizer (chat template kept) and
``dposhap-reward.json``, the record of how it was made and its pairwise accuracy on the held-out
pairs. That folder is a reward model like any other: ``dposhap value --reward DIR`` and
``GenerationSettings(rewards=[DIR])`` score with it as it is.

A rerun with the same data, base model and settings reuses the finished folder (its weights
checked against the recorded sha256); anything else retrains. The model is written into a
temporary folder beside ``out`` and renamed into place when complete, so ``out`` is at every
moment absent, the previous complete model or the new one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from .data import DataSpec, SourceData, load_sources
from .errors import ConfigError, RunError
from .interrupts import deferred_interrupts
from .models import load_pretrained, load_tokenizer, resolve_device, resolve_dtype, resolve_model
from .run import atomic_write_json, config_hash, file_sha256, replace_dir
from .run.manifest import now
from .settings import Section, setting
from .threads import choose as choose_threads
from .threads import use as use_threads
from .tokenization import to_one_format
from .trainer_support import (
    PeakMemory,
    common_trainer_args,
    environment,
    interrupt_callback,
    library_versions,
    metric,
    progress_callback,
    quiet_training_libraries,
)

__all__ = ["RECORD_FILE", "RewardModelRecord", "RewardTrainingSettings", "read_reward_record", "train_reward_model"]

#: The record a trained reward-model folder carries.
RECORD_FILE = "dposhap-reward.json"
#: Version of the record and of the way a reward model is trained; another version retrains.
FORMAT_VERSION = 1
#: The name the pairs are pooled under (the data's own sources only group them for the one-format rule).
_SOURCE = "reward"


@dataclass
class RewardTrainingSettings(Section):
    """How a reward model is trained (``dposhap reward train`` flags of the same names)."""

    TABLE = "reward"
    epochs: float = setting("passes over the training pairs", default=2.0)
    max_steps: int = setting("stop after this many optimiser steps (-1: run the epochs)", default=-1)
    learning_rate: float = setting("AdamW learning rate of the adapter and the score head", default=5e-4)
    batch_size: int = setting("pairs per step", default=8)
    max_length: int = setting("tokens of prompt + response; longer pairs are left out of training", default=512)
    lora_r: int = setting("LoRA rank", default=16)
    lora_alpha: float = setting("LoRA scaling numerator (scale = alpha / r)", default=32.0)
    top_layers: int = setting(
        "LoRA in the last N transformer layers only (0: every layer); fewer layers backpropagate less", default=0
    )
    heldout_fraction: float = setting("share of the pairs held out to measure the pairwise accuracy", default=0.2)
    seed: int = setting("seed of the score head, the adapter, the data order and the held-out split", default=0)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = setting(
        'weights and training precision: "auto" = bf16 on a GPU that has it, else fp32', default="auto"
    )

    def __post_init__(self) -> None:
        self.check_positive("epochs", "learning_rate", "batch_size", "max_length", "lora_r", "lora_alpha")
        if self.max_steps == 0 or self.max_steps < -1:
            self.fail("max_steps", f"must be -1 (use the epochs) or >= 1, got {self.max_steps!r}")
        if self.top_layers < 0:
            self.fail("top_layers", f"must be >= 0 (0: every layer), got {self.top_layers!r}")
        if not 0.0 < self.heldout_fraction < 1.0:
            self.fail("heldout_fraction", f"must be in (0, 1), got {self.heldout_fraction!r}")
        self.check_range("max_length", 2, None)
        self.check_range("seed", 0, 2**32 - 1)
        self.check_literal("precision")
        self.check_numbers()


@dataclass(frozen=True)
class RewardModelRecord:
    """What ``dposhap-reward.json`` says of a trained reward model.

    Attributes
    ----------
    folder
        The reward model's folder.
    status
        ``"trained"`` now, or ``"kept"`` (an up-to-date folder reused).
    heldout_accuracy
        Share of held-out pairs whose chosen response the model scores higher (ties count 1/2).
    n_train, n_heldout
        Pairs trained on and held out (pairs over ``max_length`` tokens are left out of training).
    record
        The whole record as written.
    """

    folder: Path
    status: str
    heldout_accuracy: float
    n_train: int
    n_heldout: int
    record: dict[str, Any]


def read_reward_record(folder: str | Path) -> dict[str, Any] | None:
    """The record of a reward-model folder trained by dposhap, or None (absent, unreadable, another version)."""
    try:
        record = json.loads((Path(folder) / RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("format_version") == FORMAT_VERSION else None


def train_reward_model(
    data: str | Path | Sequence[str | Path],
    base: str,
    out: str | Path,
    *,
    settings: RewardTrainingSettings | None = None,
    device: str = "auto",
    revision: str | None = None,
    trust_remote_code: bool = False,
    threads: int | None = None,
    force: bool = False,
    progress: bool = True,
    columns: Mapping[str, str] | None = None,
) -> RewardModelRecord:
    """Train a reward model on preference pairs and write it as a Hugging Face folder in ``out``.

    Parameters
    ----------
    data
        One or more files (or ``save_to_disk`` folders, hub datasets) of preference pairs, in any
        format ``dposhap train`` reads; every row is used. One format (plain strings or
        conversations) per source, as ``dposhap train`` asks: a ``source`` column names the rows'
        sources, a file without one is one source. When the pool mixes formats, its conversations
        are trained as the plain strings the base model's chat template renders
        (:func:`~dposhap.tokenization.to_one_format`).
    base
        The model to start from: a local folder, a ``.gguf`` file, a packaged model name or a hub
        id (:func:`dposhap.models.resolve_model`); its LM head is replaced by a score head.
    out
        The folder to write. It must be absent, empty, or a reward model written here before.
    settings
        How to train (:class:`RewardTrainingSettings`; default its defaults).
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    revision, trust_remote_code
        For a hub id, as in ``[model]``.
    threads
        torch CPU threads (default: :mod:`dposhap.threads` chooses).
    force
        Train even when ``out`` holds an up-to-date model.
    progress
        Show a progress bar.
    columns
        The data's column names, as the ``[data]`` table names them: ``{"source": ..., "prompt": ...,
        "chosen": ..., "rejected": ...}`` (any left out keeps its default).

    Returns
    -------
    RewardModelRecord

    Raises
    ------
    DataValidationError
        The pairs have problems (all listed); nothing was trained.
    InvalidArgumentError
        The pairs mix formats and the base model has no chat template.
    ModelLoadError, ConfigError, RunError
        The base model cannot be loaded, a setting is out of range, or ``out`` holds something
        else than a reward model.
    """
    settings = settings if settings is not None else RewardTrainingSettings()
    files = [str(data)] if isinstance(data, (str, os.PathLike)) else [str(f) for f in data]
    out = Path(out)
    _check_out(out)
    column_settings: dict[str, Any] = {f"{name}_column": column for name, column in (columns or {}).items()}
    spec = DataSpec(
        files=files,
        pool=_SOURCE,
        **column_settings,
        min_pairs=2,
        heldout_fraction=settings.heldout_fraction,
        seed=settings.seed,
    )
    pairs = load_sources(spec)[_SOURCE]
    ref = resolve_model(base, revision=revision, trust_remote_code=trust_remote_code)
    device = resolve_device(device)
    dtype = resolve_dtype(settings.precision, device)
    training_hash = config_hash(
        {
            "format_version": FORMAT_VERSION,
            "settings": asdict(settings),
            "base": ref.origin_sha256 or ref.fingerprint(),
            "dtype": str(dtype),
        }
    )
    previous = read_reward_record(out)
    if not force and previous is not None and _up_to_date(out, previous, pairs.data_hash, training_hash):
        return _record(out, "kept", previous)
    with quiet_training_libraries():
        record = _train(pairs, ref, base, out, settings, device, dtype, training_hash, threads, progress)
    return _record(out, "trained", record)


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise RunError(f"{out} is a file: give a folder for the reward model")
    if out.is_dir() and any(out.iterdir()) and not (out / RECORD_FILE).is_file():
        leftovers = {p.name for p in out.iterdir()} - {"data-problems.txt"}
        if leftovers:
            raise RunError(
                f"{out} holds files that are not a dposhap reward model ({', '.join(sorted(leftovers)[:3])}...): "
                "give a new or empty folder"
            )


def _up_to_date(out: Path, record: dict[str, Any], data_hash: str, training_hash: str) -> bool:
    if record.get("data_hash") != data_hash or record.get("training_hash") != training_hash:
        return False
    recorded = record.get("weights_sha256") or {}
    return bool(recorded) and all(
        (out / name).is_file() and file_sha256(out / name) == digest for name, digest in recorded.items()
    )


def _record(out: Path, status: str, record: dict[str, Any]) -> RewardModelRecord:
    metrics = record.get("metrics", {})
    return RewardModelRecord(
        folder=out,
        status=status,
        heldout_accuracy=float(metrics.get("heldout_accuracy", float("nan"))),
        n_train=int(record.get("n_train", 0)),
        n_heldout=int(record.get("n_heldout", 0)),
        record=record,
    )


def _train(
    pairs: SourceData,
    ref: Any,
    base: str,
    out: Path,
    settings: RewardTrainingSettings,
    device: str,
    dtype: Any,
    training_hash: str,
    threads: int | None,
    progress: bool,
) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForSequenceClassification, PrinterCallback
    from trl import RewardConfig, RewardTrainer

    work = out.parent / f".tmp-{out.name}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        tokenizer = load_tokenizer(ref)
        train_records, heldout_records = _one_format(pairs, tokenizer)
        torch.manual_seed(settings.seed)  # the new score head's initialisation
        with _silent_transformers():  # its load report announces the new score head, which is the point
            model = load_pretrained(
                ref,
                AutoModelForSequenceClassification,
                dtype=dtype,
                device=device,
                what="base model",
                new_head=True,
                num_labels=1,
                ignore_mismatched_sizes=True,  # a classifier's head of other labels is replaced too
            )
        model.config.pad_token_id = tokenizer.pad_token_id
        n_train = len(pairs.train)
        args = RewardConfig(
            learning_rate=settings.learning_rate,
            num_train_epochs=settings.epochs,
            max_steps=settings.max_steps,
            per_device_train_batch_size=settings.batch_size,
            per_device_eval_batch_size=settings.batch_size,
            max_length=settings.max_length,
            **common_trainer_args(
                output_dir=str(work / "trainer"),
                seed=settings.seed,
                dtype=dtype,
                device=device,
                n_train=n_train,
                batch_size=settings.batch_size,
                report_to=[],
            ),
        )
        lora = LoraConfig(
            r=settings.lora_r,
            lora_alpha=settings.lora_alpha,
            # PEFT takes a layer range only with module names: every linear layer's, the head's aside
            target_modules="all-linear" if settings.top_layers == 0 else _linear_names(model),
            task_type="SEQ_CLS",  # the score head is trained in full (PEFT's modules_to_save)
            layers_to_transform=_top_layers(model, settings.top_layers),
        )
        thread_choice = choose_threads(
            sum(p.numel() for p in model.parameters()), rows=settings.batch_size, device=device, requested=threads
        )
        memory = PeakMemory(device)
        started = time.perf_counter()
        with (
            use_threads(thread_choice, say=progress),
            deferred_interrupts("this training step") as interrupts,
            memory,
            environment(TQDM_DISABLE="1"),
        ):
            trainer = RewardTrainer(
                model=model,
                args=args,
                train_dataset=Dataset.from_list(train_records),
                eval_dataset=Dataset.from_list(heldout_records),
                processing_class=tokenizer,
                peft_config=lora,
                callbacks=[
                    interrupt_callback(interrupts),
                    *([progress_callback(f"reward model {out.name}")] if progress else []),
                ],
            )
            trainer.remove_callback(PrinterCallback)
            kept = len(trainer.train_dataset)
            if kept == 0:
                raise RunError(
                    f"every training pair is longer than max_length {settings.max_length} tokens: raise --max-length"
                )
            result = trainer.train()
            train_s = time.perf_counter() - started
            scores = trainer.evaluate()  # its loss; its accuracy is a mean of per-batch means
            merged = trainer.model.merge_and_unload()
            merged.config.pad_token_id = tokenizer.pad_token_id
            accuracy, n_scored = _pairwise_accuracy(
                merged, trainer.eval_dataset, trainer.data_collator, settings.batch_size, device
            )
            folder = work / "model"
            with _silent_transformers():
                merged.save_pretrained(str(folder))
                tokenizer.save_pretrained(str(folder))
        weights = {path.name: file_sha256(path) for path in sorted(folder.glob("*.safetensors"))}
        record = {
            "format_version": FORMAT_VERSION,
            "kind": "reward model",
            "base": base,
            "base_location": ref.location,
            "base_sha256": ref.origin_sha256,
            "data_hash": pairs.data_hash,
            "training_hash": training_hash,
            "settings": asdict(settings),
            "n_train": kept,
            "n_train_given": n_train,
            "n_heldout": len(pairs.heldout),
            "metrics": {
                "heldout_accuracy": accuracy,
                "heldout_pairs_scored": n_scored,
                "heldout_margin": metric(scores, "eval_margin"),
                "heldout_loss": metric(scores, "eval_loss"),
                "train_loss": metric(result.metrics, "train_loss"),
                "steps": int(trainer.state.global_step),
            },
            "timings": {"train_s": round(train_s, 3), "peak_memory_mb": memory.peak_mb, "memory": memory.kind},
            "weights_sha256": weights,
            "versions": library_versions(),
            "trained_at": now(),
        }
        atomic_write_json(folder / RECORD_FILE, record)
        replace_dir(folder, out)
        return record
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _one_format(pairs: SourceData, tokenizer: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The training and held-out records, in one format over both (:func:`~dposhap.tokenization.to_one_format`)."""
    records = to_one_format([*pairs.train_records(), *pairs.heldout_records()], tokenizer)
    return records[: len(pairs.train)], records[len(pairs.train) :]


def _pairwise_accuracy(model: Any, dataset: Any, collator: Any, batch_size: int, device: str) -> tuple[float, int]:
    """Share of the tokenised held-out pairs whose chosen response ``model`` scores higher (ties 1/2), and their count.

    The pairs are the trainer's own (its tokenisation and its ``max_length`` filter); an empty set
    gives NaN.
    """
    import torch

    rows = [{"chosen_ids": r["chosen_ids"], "rejected_ids": r["rejected_ids"]} for r in dataset]
    right = 0.0
    model.eval()
    for start in range(0, len(rows), batch_size):
        batch = collator(rows[start : start + batch_size])
        with torch.inference_mode():
            logits = model(
                input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
            ).logits[:, 0]
        chosen, rejected = logits.float().chunk(2)
        right += float((chosen > rejected).sum()) + 0.5 * float((chosen == rejected).sum())
    return (right / len(rows) if rows else float("nan")), len(rows)


def _linear_names(model: Any) -> list[str]:
    """The last name component of every linear layer of ``model`` but its score head (``q_proj``, ...)."""
    import torch

    head = {name for name, _ in model.named_children() if name in ("score", "classifier")}
    return sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and name.split(".", 1)[0] not in head
        }
    )


def _top_layers(model: Any, top: int) -> list[int] | None:
    """The indices of the last ``top`` transformer layers of ``model`` (None: every layer).

    Raises
    ------
    ConfigError
        ``top`` is more than the model has, or the model's layer count is not in its config.
    """
    if top == 0:
        return None
    n_layers = getattr(model.config.get_text_config(), "num_hidden_layers", None)
    if not isinstance(n_layers, int):
        raise ConfigError(
            "the base model's config names no num_hidden_layers: use top_layers = 0", field="reward.top_layers"
        )
    if top > n_layers:
        raise ConfigError(f"the base model has {n_layers} layers, fewer than {top}", field="reward.top_layers")
    return list(range(n_layers - top, n_layers))


@contextlib.contextmanager
def _silent_transformers() -> Iterator[None]:
    """transformers' warnings and bars off for the duration (a load report, a bar per saved shard)."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()

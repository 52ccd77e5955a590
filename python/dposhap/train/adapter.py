"""One source's training: TRL's ``DPOTrainer`` with a PEFT LoRA adapter on the shared base model.

The reference policy is the base model itself (the adapter switched off), so the adapters compose
by logits arithmetic (docs/design.md §1). The adapter is evaluated on the source's held-out pairs
(and the trusted set), written to a temporary folder and renamed into the run when complete.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import RunConfig
from ..data import SourceData
from ..interrupts import Interrupts, deferred_interrupts
from ..run import Run, SourceEntry, atomic_write_json, file_sha256, replace_dir
from ..run.manifest import now
from ..trainer_support import (
    PeakMemory,
    checkpointing_kwargs,
    common_trainer_args,
    environment,
    interrupt_callback,
    metric,
    progress_callback,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def train_one(
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
    """Train, evaluate and save one source's adapter; return its manifest entry and the clean base model.

    Parameters
    ----------
    model
        The base model; the adapter is added for training and unloaded again, even on failure.
    tokenizer
        The base model's tokenizer.
    source
        The source's split pairs.
    cfg
        The run's settings (``[lora]``, ``[dpo]``).
    run
        The run directory: the adapter is written to a temporary folder there and renamed into
        place when complete.
    device
        Where ``model`` is.
    training_hash
        Recorded with the adapter, for resuming.
    label
        The progress bar's label.
    progress
        Show a progress bar.
    eval_records
        The trusted set's rows: the adapter is also evaluated on them.

    Returns
    -------
    tuple
        ``(entry, model)``: the source's manifest entry and the base model without the adapter.
    """
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

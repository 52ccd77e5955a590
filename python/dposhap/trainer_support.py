"""What every TRL trainer dposhap runs shares: progress bars, Ctrl-C between steps, quiet libraries, peak memory.

Per-source DPO training (:mod:`dposhap.train`) and reward-model training
(:mod:`dposhap.reward_training`) both drive a ``transformers.Trainer`` subclass with TRL's own
progress bars off; these are the callbacks and context managers they share.
"""

from __future__ import annotations

import contextlib
import os
import platform
import threading
from collections.abc import Iterator
from typing import Any

from .interrupts import Interrupts
from .models import quiet_libraries

__all__ = [
    "PeakMemory",
    "checkpointing_kwargs",
    "common_trainer_args",
    "environment",
    "interrupt_callback",
    "library_versions",
    "metric",
    "progress_callback",
    "quiet_training_libraries",
]


def checkpointing_kwargs(config_class: type, enabled: bool) -> dict[str, bool]:
    """Activation checkpointing under the name this transformers version uses (renamed in 5.x)."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(config_class)}
    return {"activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing": enabled}


def metric(values: dict[str, Any], key: str) -> float | None:
    value = values.get(key)
    return None if value is None else float(value)


def interrupt_callback(interrupts: Interrupts) -> Any:
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


def progress_callback(label: str) -> Any:
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


class PeakMemory:
    """Peak memory while active: CUDA allocator peak on a GPU, sampled resident set size on a CPU."""

    def __init__(self, device: str):
        self.device, self.peak_mb, self.kind = device, 0.0, "cuda_allocated" if device == "cuda" else "rss"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
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
def environment(**values: str) -> Iterator[None]:
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
def quiet_training_libraries(*, loading_reports: bool = True) -> Iterator[None]:
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


def library_versions() -> dict[str, str]:
    """The versions of Python and of the libraries a trained artefact depends on (for its record)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for package in ("dposhap", "torch", "transformers", "trl", "peft", "datasets", "accelerate"):
        with contextlib.suppress(PackageNotFoundError):
            out[package] = version(package)
    return out


def common_trainer_args(
    *, output_dir: str, seed: int, dtype: Any, device: str, n_train: int, batch_size: int, report_to: list[str]
) -> dict[str, Any]:
    """The ``TrainingArguments`` every dposhap trainer sets alike: seeds, precision, device, no checkpoints
    or periodic evaluation, about four log lines per epoch and TRL's own bars off (ours are callbacks)."""
    import torch

    return {
        "output_dir": output_dir,
        "seed": seed,
        "data_seed": seed,
        "bf16": dtype == torch.bfloat16,
        "fp16": dtype == torch.float16,
        "use_cpu": device == "cpu",
        "report_to": report_to,
        "save_strategy": "no",
        "eval_strategy": "no",
        "logging_strategy": "steps",
        "logging_steps": max(1, n_train // (4 * batch_size)),
        "disable_tqdm": True,
    }

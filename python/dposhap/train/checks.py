"""The settings checks of training: what only a loaded model (or its config) can check, the ``report_to``
integrations, and the data audit of the sources against the trusted set.

:func:`~dposhap.train.train_sources` raises the first problem; :func:`~dposhap.train.check_training`
collects them all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..audit import DataAudit, audit_sources
from ..config import RunConfig
from ..data import SourceData
from ..errors import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def check_reporting(cfg: RunConfig) -> None:
    """Check that the ``report_to`` integrations are installed (TRL would fail after loading the model).

    Raises
    ------
    ConfigError
        ``dpo.report_to`` names an integration that is not installed; the message says what to install.
    """
    missing = cfg.dpo.missing_reporting()
    if missing:
        raise ConfigError(
            f"names {', '.join(missing)}, not installed here: pip install {' '.join(missing)}, or leave report_to out",
            field="dpo.report_to",
        )


def check_against_model(
    cfg: RunConfig, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, sources: list[SourceData]
) -> None:
    """The settings that only the loaded model can check: LoRA target modules and ``dpo.max_length``.

    Raises
    ------
    ConfigError
        ``lora.target_modules`` names a module the model lacks, or ``dpo.max_length`` is shorter
        than every prompt to train on.
    """
    check_lora_targets(cfg, model)
    check_max_length(cfg, tokenizer, sources)


def check_lora_targets(cfg: RunConfig, model: PreTrainedModel) -> None:
    """Check that ``lora.target_modules`` names modules the model has (a model on the meta device will do).

    Raises
    ------
    ConfigError
        A target the model lacks; the message lists the model's linear layers.
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


def check_max_length(cfg: RunConfig, tokenizer: PreTrainedTokenizerBase, sources: Sequence[SourceData]) -> None:
    """Check that ``dpo.max_length`` leaves room for a response after the shortest prompt.

    The first 64 training prompts of each source are tokenised with ``tokenizer``.

    Raises
    ------
    ConfigError
        The shortest prompt alone fills ``dpo.max_length``; the message says how far to raise it.
    """
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


def audit_data(
    cfg: RunConfig, tokenizer: PreTrainedTokenizerBase, data: dict[str, SourceData], eval_records: list[dict[str, Any]]
) -> DataAudit:
    """The data audit (:func:`dposhap.audit.audit_sources`) of every source against the trusted set.

    Parameters
    ----------
    cfg
        The run's settings (``dpo.max_length`` is where the audit counts truncation).
    tokenizer
        The base model's tokenizer.
    data
        The sources by name; their training and held-out pairs are audited together.
    eval_records
        The trusted set's rows (may be empty).

    Returns
    -------
    DataAudit
        One row per source, and its findings.
    """
    records = {name: [*source.train_records(), *source.heldout_records()] for name, source in data.items()}
    return audit_sources(records, tokenizer, cfg.dpo.max_length, eval_records)

"""``dposhap check`` and ``train --dry-run``: everything training checks, without training or reading
weights, collected into one :class:`TrainingCheck`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..audit import DataAudit
from ..config import RunConfig, load_config
from ..data import SourceData
from ..errors import DataValidationError, DposhapError, first_line
from ..models import load_model_skeleton, load_tokenizer, resolve_model
from ..run import Run
from .checks import audit_data, check_lora_targets, check_max_length, check_reporting
from .inputs import training_inputs, trusted_records


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
            model_name, _, _, data = training_inputs(cfg, Run(folder), sources)
            pairs = sum(len(s.train) + len(s.heldout) for s in data.values())
            check.checked["data"] = f"{len(data)} source(s), {pairs} pairs"
        except DataValidationError as err:
            check.data_problems += [str(problem) for problem in err.problems]
            check.errors.append(f"data: {len(err.problems)} problem(s), first: {err.problems[0]}")
        except DposhapError as err:
            check.errors.append(f"data: {first_line(err)}")
        try:
            eval_records = trusted_records(cfg)
            if eval_records:
                check.checked["eval"] = f"{len(eval_records)} trusted pairs"
        except DataValidationError as err:
            check.data_problems += [str(problem) for problem in err.problems]
            check.errors.append(f"eval: {len(err.problems)} problem(s) in the trusted set, first: {err.problems[0]}")
        if model_name is not None:
            _check_model(cfg, model_name, data, eval_records, check)
    try:
        check_reporting(cfg)
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
        check_lora_targets(cfg, model)
        targets = cfg.lora.target_modules
        check.checked["lora"] = targets if isinstance(targets, str) else ", ".join(targets)
    except DposhapError as err:
        check.errors.append(f"lora: {first_line(err)}")
    if not data or (conversational and not template):
        return
    try:
        check_max_length(cfg, tokenizer, list(data.values()))
        check.checked["max_length"] = str(cfg.dpo.max_length)
    except DposhapError as err:
        check.errors.append(f"max_length: {first_line(err)}")
    check.audit = audit_data(cfg, tokenizer, data, eval_records)

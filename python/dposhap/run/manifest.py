"""``RUN/manifest.json``, typed: what was trained, on what, how, with which results.

The manifest is read in one place (:meth:`Manifest.from_dict`, through
:meth:`dposhap.run.Run.read_manifest`), validated there, and used everywhere else as these
classes, never as a raw dict. A missing or mistyped field is a :class:`~dposhap.errors.RunError`
that names the file and the field.

Format 2 (this version) records the world a run was built from under ``world`` (with its
``name``); format 1 kept the toy world's record under ``toy`` and is read as such.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import RunError

__all__ = ["MANIFEST_FORMAT", "BaseModelInfo", "Manifest", "SourceEntry", "now"]

MANIFEST_FORMAT = 2


def now() -> str:
    """The current UTC time as the manifest writes it (ISO 8601, seconds)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _fail(file: Path | None, where: str, message: str) -> RunError:
    place = f"{file}: " if file is not None else ""
    return RunError(
        f"{place}field {where!r} {message}: the manifest is damaged; retrain into a new run directory "
        "(dposhap train --out NEW) or restore the file"
    )


def _take(
    data: Mapping[str, Any],
    key: str,
    kind: type | tuple[type, ...],
    file: Path | None,
    where: str,
    *,
    optional: bool = False,
) -> Any:
    if key not in data or data[key] is None:
        if optional:
            return None
        raise _fail(file, f"{where}{key}", "is missing")
    value = data[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _fail(file, f"{where}{key}", f"has the wrong type ({type(value).__name__})")
    return value


def _names(data: Mapping[str, Any], key: str, file: Path | None) -> list[str]:
    value = _take(data, key, list, file, "", optional=True) or []
    if not all(isinstance(name, str) for name in value):
        raise _fail(file, key, "is not a list of source names")
    return list(value)


@dataclass(frozen=True)
class BaseModelInfo:
    """The shared base model (the reference policy) of a run.

    Attributes
    ----------
    name
        As the config gave it (``model.base``): a world's name, a folder or a hub id.
    location
        The resolved local folder or hub id (a world run finds its model through the world instead).
    local
        Whether ``location`` is a local folder.
    revision
        The hub revision, if any.
    fingerprint
        An identity of the weights (:meth:`dposhap.models.ModelRef.fingerprint`).
    dtype
        The dtype the adapters were trained in (``"float32"``, ``"bfloat16"``...).
    origin, origin_sha256
        The GGUF file ``location`` was converted from and its sha256, or None (not converted, or
        a run written before they were recorded).
    """

    name: str
    location: str
    local: bool
    revision: str | None
    fingerprint: str
    dtype: str
    origin: str | None = None
    origin_sha256: str | None = None

    @classmethod
    def from_dict(cls, data: Any, file: Path | None) -> BaseModelInfo:
        if not isinstance(data, Mapping):
            raise _fail(file, "base_model", "is not an object")
        return cls(
            name=_take(data, "name", str, file, "base_model."),
            location=_take(data, "location", str, file, "base_model."),
            local=_take(data, "local", bool, file, "base_model."),
            revision=_take(data, "revision", str, file, "base_model.", optional=True),
            fingerprint=_take(data, "fingerprint", str, file, "base_model."),
            dtype=_take(data, "dtype", str, file, "base_model."),
            origin=_take(data, "origin", str, file, "base_model.", optional=True),
            origin_sha256=_take(data, "origin_sha256", str, file, "base_model.", optional=True),
        )


@dataclass(frozen=True)
class SourceEntry:
    """One trained source of a run.

    Attributes
    ----------
    adapter
        The adapter folder, relative to the run directory.
    data_hash, training_hash
        What the adapter was trained on and how (a rerun reuses it while both match).
    n_train, n_heldout
        Pairs trained on and held out.
    heldout
        The held-out split's JSONL file, relative to the run directory.
    adapter_sha256
        The sha256 of the adapter's weights file: the adapter's identity in every cache key
        (None in runs trained before it was recorded; :meth:`dposhap.run.Run.adapter_identity`
        then hashes the file).
    metrics, timings
        Training results (held-out reward accuracy and margin on the source's own labels,
        losses, steps) and wall times / peak memory.
    status
        ``"trained"`` or ``"reused"`` by the last ``train``.
    trained_at
        When it was trained.
    """

    adapter: str
    data_hash: str
    training_hash: str
    n_train: int
    n_heldout: int
    heldout: str
    adapter_sha256: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, Any] = field(default_factory=dict)
    status: str = "trained"
    trained_at: str | None = None

    @classmethod
    def from_dict(cls, data: Any, file: Path | None, name: str) -> SourceEntry:
        where = f"sources.{name}."
        if not isinstance(data, Mapping):
            raise _fail(file, f"sources.{name}", "is not an object")
        for key in ("adapter", "heldout"):
            path = data.get(key)
            if isinstance(path, str) and (Path(path).is_absolute() or ".." in Path(path).parts):
                raise _fail(file, f"{where}{key}", "is not a path inside the run directory")
        return cls(
            adapter=_take(data, "adapter", str, file, where),
            data_hash=_take(data, "data_hash", str, file, where),
            training_hash=_take(data, "training_hash", str, file, where),
            n_train=_take(data, "n_train", int, file, where),
            n_heldout=_take(data, "n_heldout", int, file, where),
            heldout=_take(data, "heldout", str, file, where),
            adapter_sha256=_take(data, "adapter_sha256", str, file, where, optional=True),
            metrics=dict(_take(data, "metrics", dict, file, where, optional=True) or {}),
            timings=dict(_take(data, "timings", dict, file, where, optional=True) or {}),
            status=_take(data, "status", str, file, where, optional=True) or "trained",
            trained_at=_take(data, "trained_at", str, file, where, optional=True),
        )

    def to_dict(self) -> dict[str, Any]:
        """The entry as the manifest stores it."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def with_status(self, status: str) -> SourceEntry:
        """The same entry with another status."""
        return SourceEntry(**{**self.to_dict(), "status": status})


@dataclass
class Manifest:
    """A run's manifest.

    Attributes
    ----------
    base_model
        The shared base model.
    config
        The run's configuration as plain data (:meth:`dposhap.config.RunConfig.to_dict`).
    sources
        The trained sources, in training order.
    world
        The record of the world the run was built from (``{"name", ...}``,
        :meth:`dposhap.worlds.World.record`), or None.
    eval
        The trusted evaluation set stored with the run (``{"path", "files", "n_pairs",
        "sha256"}``, path relative to the run), or None.
    versions, machine
        Library versions and the machine the run was trained on.
    created_at, updated_at
        ISO 8601 times.
    planned_sources
        Every source the run is meant to have (the config's, and those of earlier ``train`` calls
        on a subset), trained or not: a run whose :attr:`sources` lack some of them is partial
        (:meth:`missing_sources`). Empty in runs written before it was recorded.
    """

    base_model: BaseModelInfo
    config: dict[str, Any]
    sources: dict[str, SourceEntry] = field(default_factory=dict)
    world: dict[str, Any] | None = None
    eval: dict[str, Any] | None = None
    versions: dict[str, str] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=now)
    updated_at: str = field(default_factory=now)
    format: int = MANIFEST_FORMAT
    planned_sources: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: Any, file: Path | None = None) -> Manifest:
        """Validate parsed JSON into a manifest.

        Raises
        ------
        RunError
            A field is missing or of the wrong type, or the format is newer than this dposhap.
        """
        if not isinstance(data, Mapping):
            raise _fail(file, "(top level)", "is not a JSON object")
        version = _take(data, "format", int, file, "")
        if version > MANIFEST_FORMAT:
            raise RunError(f"{file}: written by a newer dposhap (manifest format {version}); upgrade dposhap")
        world = data.get("world") if version >= 2 else ({"name": "toy", **data["toy"]} if data.get("toy") else None)
        if world is not None and (not isinstance(world, Mapping) or not isinstance(world.get("name"), str)):
            raise _fail(file, "world", "is not an object with a name")
        raw_sources = _take(data, "sources", dict, file, "")
        config = _take(data, "config", dict, file, "")
        for table in ("model", "lora", "dpo"):
            if not isinstance(config.get(table, {}), Mapping):
                raise _fail(file, f"config.{table}", "is not an object")
        beta = config.get("dpo", {}).get("beta", 0.1)
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta > 0:
            raise _fail(file, "config.dpo.beta", "is not a positive number")
        return cls(
            base_model=BaseModelInfo.from_dict(data.get("base_model"), file),
            config=dict(config),
            sources={name: SourceEntry.from_dict(entry, file, name) for name, entry in raw_sources.items()},
            world=dict(world) if world is not None else None,
            eval=dict(_take(data, "eval", dict, file, "", optional=True) or {}) or None,
            versions=dict(_take(data, "versions", dict, file, "", optional=True) or {}),
            machine=dict(_take(data, "machine", dict, file, "", optional=True) or {}),
            created_at=_take(data, "created_at", str, file, "", optional=True) or now(),
            updated_at=_take(data, "updated_at", str, file, "", optional=True) or now(),
            planned_sources=_names(data, "planned_sources", file),
        )

    def to_dict(self) -> dict[str, Any]:
        """The manifest as JSON-able data (always written in the current format)."""
        return {
            "format": MANIFEST_FORMAT,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "versions": self.versions,
            "machine": self.machine,
            "base_model": {f.name: getattr(self.base_model, f.name) for f in fields(self.base_model)},
            "world": self.world,
            "eval": self.eval,
            "config": self.config,
            "sources": {name: entry.to_dict() for name, entry in self.sources.items()},
            "planned_sources": list(self.planned_sources),
        }

    def missing_sources(self) -> list[str]:
        """The planned sources that have no trained adapter (empty for a complete run)."""
        return [name for name in self.planned_sources if name not in self.sources]

    @property
    def beta(self) -> float:
        """The DPO temperature the adapters were trained with."""
        return float(self.config.get("dpo", {}).get("beta", 0.1))

    @property
    def max_length(self) -> int | None:
        """The training ``max_length`` (prompt + response tokens kept)."""
        value = self.config.get("dpo", {}).get("max_length")
        return None if value is None else int(value)

    @property
    def model_settings(self) -> dict[str, Any]:
        """The ``[model]`` table the run was trained with."""
        return dict(self.config.get("model", {}))

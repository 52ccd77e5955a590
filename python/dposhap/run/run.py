"""The run directory: one owner of its layout, its manifest, its models and its caches.

::

    RUN/
      manifest.json           what was trained, on what, how, with which results (typed: Manifest)
      adapters/<source>/      one PEFT LoRA adapter per source (safetensors) + dposhap.json
      data/<source>/          train.jsonl and heldout.jsonl of each source
      eval.jsonl              the trusted evaluation set ([eval] in the config), when given
      world/                  the world the run was built from, when it uses one (older runs: toy/)
      margins/                teacher-forced margins matrices (.npy), keyed by what they depend on
      cache.sqlite            every evaluated coalition's utility (UtilityStore)
      values.json, values.csv, figures/
      .lock                   held by the process working on the run

Everything that reads a run goes through :class:`Run`: :meth:`Run.open` validates the manifest
once, :meth:`Run.load_models` is the one way to load the base model with the adapters, and
:meth:`Run.adapter_identity` the one identity of an adapter in cache keys.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import ClusterConfig
from ..errors import (
    IncompleteRunError,
    IncompleteRunWarning,
    InvalidArgumentError,
    NotARunError,
    RunError,
    first_line,
)
from ..models import ModelRef, load_adapters, load_base_model, load_tokenizer, resolve_device, resolve_model
from ..worlds import World, get_world
from .files import atomic_write_json, hold_lock
from .keys import file_sha256
from .manifest import Manifest
from .utility_store import UtilityStore

if TYPE_CHECKING:
    import torch
    from peft import PeftModel
    from transformers import PreTrainedTokenizerBase


__all__ = ["VALUES_FORMAT", "Run", "RunModels"]

#: Format of ``RUN/values.json``.
VALUES_FORMAT = 1
#: sha256 of adapter weights files already verified by this process, keyed by (path, size, mtime).
_VERIFIED: dict[tuple[str, int, int], str] = {}


def _values_problem(doc: Any) -> str | None:
    """What is wrong with a parsed ``values.json``, or None."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("utilities"), Mapping):
        return "it is not an object with a 'utilities' object"
    version = doc.get("format", VALUES_FORMAT)
    if not isinstance(version, int) or version > VALUES_FORMAT:
        return f"format {version!r} is not one this dposhap reads (up to {VALUES_FORMAT}); upgrade dposhap or"
    for name, entry in doc["utilities"].items():
        if not isinstance(entry, Mapping):
            return f"entry {name!r} is not an object"
        for key in ("objectives", "sources"):
            value = entry.get(key)
            if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                return f"field 'utilities.{name}.{key}' is not a list of names"
        objectives: list[str] = entry["objectives"]
        sources: list[str] = entry["sources"]
        for key in ("semivalue", "method"):
            if not isinstance(entry.get(key), str):
                return f"field 'utilities.{name}.{key}' is missing or not a string"
        for key in ("n_evaluations", "seed"):
            if isinstance(entry.get(key), bool) or not isinstance(entry.get(key), int):
                return f"field 'utilities.{name}.{key}' is missing or not an integer"
        for key in ("values", "stderr"):
            table = entry.get(key)
            for objective in objectives:
                row = table.get(objective) if isinstance(table, Mapping) else None
                if not isinstance(row, Mapping) or not all(
                    isinstance(row.get(source), (int, float)) and not isinstance(row.get(source), bool)
                    for source in sources
                ):
                    return f"field 'utilities.{name}.{key}.{objective}' does not hold a number per source"
        if not isinstance(entry.get("history", []), list):
            return f"field 'utilities.{name}.history' is not a list"
        if not isinstance(entry.get("seconds", 0.0), (int, float)) or not math.isfinite(entry.get("seconds", 0.0)):
            return f"field 'utilities.{name}.seconds' is not a number"
    return None


@dataclass
class RunModels:
    """A run's base model holding one adapter per source, and its tokenizer.

    Attributes
    ----------
    model
        A PEFT model in eval mode, its adapters named by source.
    tokenizer
        The base model's tokenizer (with a padding token).
    sources
        The sources whose adapters it holds, in player order.
    device
        Where it lives (``"cpu"`` or ``"cuda"``).
    """

    model: PeftModel
    tokenizer: PreTrainedTokenizerBase
    sources: list[str]
    device: str


class Run:
    """One run directory.

    ``Run(path)`` only names the folder (training creates it); :meth:`open` is how everything
    else reaches a trained run.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._manifest: Manifest | None = None
        self._world: World | None = None
        self._identities: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"Run({str(self.root)!r})"

    # -- layout ----------------------------------------------------------------------------

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    @property
    def adapters_dir(self) -> Path:
        return self.root / "adapters"

    def adapter_dir(self, source: str) -> Path:
        """Where a source's finished adapter goes."""
        return self.adapters_dir / source

    def data_dir(self, source: str) -> Path:
        """Where a source's train / held-out split goes."""
        return self.root / "data" / source

    @property
    def data_audit_path(self) -> Path:
        """The data audit of the last training (``dposhap.audit``)."""
        return self.root / "data-audit.json"

    @property
    def logs_dir(self) -> Path:
        """Training logs (``RUN/logs/<source>/`` for ``[dpo] report_to``) and error tracebacks."""
        return self.root / "logs"

    @property
    def world_dir(self) -> Path:
        return self.root / "world"

    @property
    def eval_path(self) -> Path:
        """The trusted evaluation set stored with the run (``[eval]`` in the config), when there is one."""
        return self.root / "eval.jsonl"

    @property
    def cache_path(self) -> Path:
        return self.root / "cache.sqlite"

    @property
    def margins_dir(self) -> Path:
        return self.root / "margins"

    @property
    def values_path(self) -> Path:
        return self.root / "values.json"

    @property
    def figures_dir(self) -> Path:
        return self.root / "figures"

    def lock(self, what: str) -> contextlib.AbstractContextManager[None]:
        """Hold the run's lock (``RUN/.lock``) while working on it; refuse if another process holds it."""
        return hold_lock(self.root, what)

    # -- the manifest ----------------------------------------------------------------------

    def read_manifest(self) -> Manifest | None:
        """The manifest, or None when the run has none yet.

        Raises
        ------
        RunError
            The file exists but is not a readable manifest.
        """
        try:
            text = self.manifest_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as err:
            raise RunError(f"{self.manifest_path}: cannot read the manifest ({err})") from None
        try:
            data = json.loads(text)
        except ValueError:
            raise RunError(
                f"{self.manifest_path} is not valid JSON: the manifest is damaged; retrain into a new run "
                "directory (dposhap train --out NEW) or restore the file"
            ) from None
        return Manifest.from_dict(data, self.manifest_path)

    def write_manifest(self, manifest: Manifest) -> None:
        """Write the manifest atomically."""
        atomic_write_json(self.manifest_path, manifest.to_dict())
        self._manifest = manifest

    @classmethod
    def open(cls, path: str | Path) -> Run:
        """A trained run, its manifest read and checked once.

        Raises
        ------
        NotARunError
            No such folder, or no manifest with trained sources in it.
        RunError
            The manifest is damaged, or an adapter it lists is missing.
        """
        run = cls(path)
        if run.root.exists() and not run.root.is_dir():
            raise NotARunError(f"{run.root} is a file, not a run directory: give the folder dposhap train wrote")
        if not run.root.is_dir():
            raise NotARunError(
                f"{run.root} is not a run directory (no such folder): check the path, or train into it "
                f"with dposhap train --out {run.root}"
            )
        manifest = run.read_manifest()
        if manifest is None or not manifest.sources:
            raise NotARunError(
                f"{run.root} holds no trained run (no manifest.json with trained sources): run "
                f"dposhap train --out {run.root} first"
            )
        missing = [s for s in manifest.sources if not run.adapter_path(s, manifest).is_dir()]
        if missing:
            raise RunError(
                f"{run.root}: the adapters of {', '.join(missing)} are missing: run dposhap train again "
                "to (re)train them"
            )
        for name, entry in manifest.sources.items():
            damage = run.adapter_damage(run.adapter_path(name, manifest), entry.adapter_sha256)
            if damage is not None:
                raise RunError(
                    f"{run.root}: the adapter of source {name!r} {damage}: retrain it with "
                    f"dposhap train --out {run.root} --sources {name} (with the config the run was trained with)"
                )
        run._manifest = manifest
        return run

    # -- integrity and completeness --------------------------------------------------------

    @staticmethod
    def adapter_damage(folder: Path, sha256: str | None) -> str | None:
        """Why the adapter in ``folder`` cannot be used (missing files, weights not matching ``sha256``), or None.

        The weights file is hashed once per process while its size and modification time stay the same.
        """
        if not (folder / "adapter_config.json").is_file():
            return f"at {folder} has no adapter_config.json"
        weights = sorted(folder.glob("adapter_model.*"))
        if not weights:
            return f"at {folder} has no weights file"
        if sha256 is None:
            return None
        try:
            stat = weights[0].stat()
            key = (str(weights[0].resolve()), stat.st_size, stat.st_mtime_ns)
            if key not in _VERIFIED:
                _VERIFIED[key] = file_sha256(weights[0])
        except OSError as err:
            return f"cannot be read ({err.strerror or err})"
        if _VERIFIED[key] != sha256:
            return f"weights file {weights[0].name} does not match its recorded sha256 (truncated or damaged on disk)"
        return None

    def adapter_intact(self, source: str, entry: Any) -> bool:
        """Whether a manifest entry's adapter is on disk and matches its recorded checksum."""
        return self.adapter_damage(self.root / entry.adapter, entry.adapter_sha256) is None

    def check_complete(self, *, strict: bool = True) -> list[str]:
        """The planned sources that are not trained; refuse (``strict``) or warn when there are any.

        Raises
        ------
        IncompleteRunError
            ``strict`` and the run is partial (a ``train`` was interrupted, or trained a subset).
        """
        missing = self.manifest.missing_sources()
        if missing:
            trained = len(self.manifest.sources)
            message = (
                f"{self.root} is a partial run: {trained} of {trained + len(missing)} planned sources are trained "
                f"(not trained with the settings of its last train: {', '.join(missing)}); finish it with dposhap "
                f"train --out {self.root} (the same config and --set values), or value only the trained ones "
                "with dposhap value --partial"
            )
            if strict:
                raise IncompleteRunError(message)
            warnings.warn(message, IncompleteRunWarning, stacklevel=2)
        return missing

    def read_values(self) -> dict[str, Any]:
        """``RUN/values.json``, checked (an empty document when nothing was valued yet).

        Raises
        ------
        RunError
            The file cannot be read, is not JSON, or is not shaped as dposhap writes it.
        """
        path = self.values_path
        if not path.is_file():
            return {"format": VALUES_FORMAT, "utilities": {}}
        fix = "move the file aside and run dposhap value again (cached evaluations are reused)"
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise RunError(f"{path}: cannot read the values ({first_line(err)}); {fix}") from None
        problem = _values_problem(doc)
        if problem is not None:
            raise RunError(f"{path}: {problem}: the file is damaged; {fix}")
        return doc

    @property
    def manifest(self) -> Manifest:
        """The manifest read by :meth:`open` (or written by :meth:`write_manifest`)."""
        if self._manifest is None:
            raise NotARunError(f"{self.root}: open the run with Run.open(path) before reading its manifest")
        return self._manifest

    @property
    def sources(self) -> list[str]:
        """The trained sources, in manifest (player) order."""
        return list(self.manifest.sources)

    def select_sources(self, sources: Sequence[str] | None) -> list[str]:
        """``sources`` checked against the trained ones (None: all of them, in order)."""
        known = self.sources
        if sources is None:
            return known
        if isinstance(sources, str):
            raise InvalidArgumentError(f"sources must be a list of source names, not the string {sources!r}")
        unknown = [s for s in sources if s not in known]
        if unknown or not sources or len(set(sources)) != len(sources):
            raise InvalidArgumentError(
                f"sources must name trained sources, each once; got {list(sources)}, the run has {known}"
            )
        return list(sources)

    def adapter_path(self, source: str, manifest: Manifest | None = None) -> Path:
        """The adapter folder of a trained source."""
        return self.root / (manifest or self.manifest).sources[source].adapter

    def heldout_path(self, source: str) -> Path:
        """The held-out split (JSONL) of a trained source."""
        return self.root / self.manifest.sources[source].heldout

    def adapter_identity(self, source: str) -> str:
        """The sha256 of the source's adapter weights: its identity in every cache key.

        Recorded in the manifest at training time; hashed from the file for older runs.
        """
        recorded = self.manifest.sources[source].adapter_sha256
        if recorded:
            return recorded
        if source not in self._identities:
            files = sorted(self.adapter_path(source).glob("adapter_model.*"))
            if not files:
                raise RunError(
                    f"the adapter of source {source!r} at {self.adapter_path(source)} has no weights file: "
                    "run dposhap train again to retrain it"
                )
            self._identities[source] = file_sha256(files[0])
        return self._identities[source]

    # -- the world and the models ----------------------------------------------------------

    def world(self) -> World | None:
        """The world the run was built from (opened once), or None for a run on the user's own model."""
        record = self.manifest.world
        if record is None:
            return None
        if self._world is None:
            self._world = get_world(record["name"]).open(self.root, record)
        return self._world

    def base_model_ref(self) -> ModelRef:
        """Where the base model is: the world's model folder for a world run (so a moved run still loads);
        a model converted from a GGUF file whose cached folder is gone is converted again from that file."""
        base = self.manifest.base_model
        settings = self.manifest.model_settings
        world = self.world()
        location = str(world.model_dir) if world is not None else base.location
        if world is None and base.local and not Path(location).is_absolute():  # stored relative to the run
            location = str(self.root / location)
        if base.local and base.origin and not Path(location).is_dir():
            location = base.origin
        return resolve_model(
            location, revision=base.revision, trust_remote_code=bool(settings.get("trust_remote_code", False))
        )

    def load_models(
        self, *, sources: Sequence[str] | None = None, device: str | None = None, dtype: torch.dtype | None = None
    ) -> RunModels:
        """The base model with one adapter per source, as trained; the one loader every utility uses.

        Parameters
        ----------
        sources
            Load only these sources' adapters (default: every trained source, in manifest order).
        device
            ``"cpu"``, ``"cuda"`` or ``"auto"``; default the run's ``model.device`` setting.
        dtype
            Default: the dtype the adapters were trained in.

        Returns
        -------
        RunModels
        """
        import torch

        names = self.select_sources(sources)
        ref = self.base_model_ref()
        device = resolve_device(device or self.manifest.model_settings.get("device", "auto"))
        dtype = dtype or getattr(torch, self.manifest.base_model.dtype or "float32")
        tokenizer = load_tokenizer(ref)
        model = load_base_model(ref, dtype=dtype, device=device)
        adapters = {name: self.adapter_path(name) for name in names}
        return RunModels(load_adapters(model, adapters), tokenizer, names, device)

    def cluster(self) -> ClusterConfig:
        """The run's ``[cluster]`` table as training recorded it (the defaults, in process, for an older run)."""
        recorded = self.manifest.config.get("cluster", {})
        known = {f.name for f in dataclasses.fields(ClusterConfig)}
        return ClusterConfig(**{k: v for k, v in recorded.items() if k in known})

    # -- caches ----------------------------------------------------------------------------

    def store(self, *, readonly: bool = False, synchronous: str | None = None) -> UtilityStore:
        """The run's utility cache (``RUN/cache.sqlite``); ``synchronous="full"`` (or the environment's
        ``DPOSHAP_SQLITE_SYNCHRONOUS=full``) makes every write survive a power cut."""
        return UtilityStore(self.cache_path, readonly=readonly, synchronous=synchronous)

    def cache_identity(self, sources: Sequence[str] | None = None) -> dict[str, Any]:
        """What every cached evaluation of this run depends on: the base model, each adapter, and the
        players' order (cached rows and coalition bits are by position; canonical JSON sorts the
        adapters' keys, so the order is recorded on its own)."""
        base = self.manifest.base_model
        names = self.select_sources(sources)
        return {
            "base": base.fingerprint,
            "dtype": base.dtype,
            "adapters": {name: self.adapter_identity(name) for name in names},
            "players": list(names),
        }

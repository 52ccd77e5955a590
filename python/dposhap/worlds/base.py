"""The :class:`World` interface: a self-contained setting with a known right answer.

A world brings everything a valuation needs besides the user's own data: a reference model,
training sources with planted properties, trusted evaluation pairs per objective, evaluation
prompts, and reward functions that are the ground truth of each objective. The pipeline asks a
world for these through this interface only; no production module names a concrete world.

A world is registered under a name (:func:`register_world`); ``model.base = NAME`` in a run's
config builds that world into the run directory, its settings come from the config table of
the same name (``[toy]`` for the toy world), and the manifest records what was built, so that
the valuation can open the same world again (:meth:`WorldKind.open`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..errors import InvalidArgumentError
from ..registry import Registry

__all__ = [
    "RewardFunction",
    "build_world_folder",
    "build_hash",
    "World",
    "WorldKind",
    "get_world",
    "register_world",
    "settings_sources",
    "world_names",
]

#: ``f(prompt, completion) -> float``: one objective's reward.
RewardFunction = Callable[[Any, str], float]


class World(ABC):
    """A built world: its model folder, its sources' data files, evaluation sets and rewards.

    Attributes
    ----------
    name
        The registered name of its kind.
    root
        The folder that holds it.
    model_dir
        A Hugging Face model folder (``config.json``, weights, tokenizer): the reference policy.
    data_files
        One preference file per source (JSONL, ``{"prompt", "chosen", "rejected", "source"}``).
    objectives
        The objectives its rewards and evaluation sets measure, in order.
    """

    name: str
    root: Path
    model_dir: Path
    data_files: Mapping[str, Path]
    objectives: tuple[str, ...]

    @abstractmethod
    def record(self, run_root: Path) -> dict[str, Any]:
        """What the manifest keeps to open this world again (paths relative to ``run_root``)."""

    @abstractmethod
    def eval_pairs(self, objective: str, n_pairs: int) -> list[dict[str, Any]]:
        """A trusted preference set of ``objective``: ``{"prompt", "chosen", "rejected"}`` records.

        The pairs are labelled by the objective's ground-truth reward, drawn on prompts that no
        source holds, so they measure the objective and nothing a source planted.
        """

    def reward_pairs(self, objective: str, n_pairs: int) -> list[dict[str, Any]]:
        """The training set of a reward model of ``objective``: ``{"prompt", "chosen", "rejected"}`` records.

        Labelled by the objective's ground-truth reward, on prompts that no source and no
        evaluation set holds (``dposhap reward train`` trains on them). A world without such sets
        raises :class:`~dposhap.errors.InvalidArgumentError`.
        """
        raise InvalidArgumentError(f"the {self.name} world has no reward-model training sets")

    def reward_prompts(self, n_prompts: int) -> list[Any]:
        """Prompts for a reward model's training set drawn from a policy's own samples.

        On the same side of the split as :meth:`reward_pairs` (in no source, in no evaluation
        set). A world without them raises :class:`~dposhap.errors.InvalidArgumentError`.
        """
        raise InvalidArgumentError(f"the {self.name} world has no reward-model prompts")

    @abstractmethod
    def eval_prompts(self) -> list[Any]:
        """Held-out prompts for generation utilities (plain strings or conversations)."""

    @abstractmethod
    def rewards(self) -> dict[str, RewardFunction]:
        """The ground-truth reward of every objective, ``{objective: f(prompt, completion)}``."""

    @property
    def model_spec(self) -> str:
        """The base model as the world names it, for :func:`dposhap.models.resolve_model` (default: its folder).

        A packaged name or a ``.gguf`` file keeps its origin (file and sha256) in the run's manifest.
        """
        return str(self.model_dir)

    @property
    def default_eval_pairs(self) -> int:
        """Pairs per objective in the trusted evaluation sets when a valuation asks for none."""
        return 128


def settings_sources(settings: Any) -> list[str]:
    """The ``sources`` list of a world's settings table (empty when it has none)."""
    return [str(s) for s in getattr(settings, "sources", None) or []]


@dataclass(frozen=True)
class WorldKind:
    """A registered kind of world.

    Attributes
    ----------
    name
        The name a config uses (``model.base = name``); also its config table.
    settings_type
        The dataclass of its config table (fields with help text, checked in ``__post_init__``).
    build
        ``build(folder, settings, sources) -> World``: build (or reuse) the world in ``folder``;
        ``sources`` selects source names (None: the settings' own).
    open
        ``open(run_root, record) -> World``: the world a manifest recorded (:meth:`World.record`).
    describe
        One line for help texts.
    source_names
        ``source_names(settings) -> names``: the sources its settings declare, as the built
        world names them (the plan of a run; default: the settings' ``sources`` list).
    """

    name: str
    settings_type: type
    build: Callable[[Path, Any, Sequence[str] | None], World]
    open: Callable[[Path, Mapping[str, Any]], World]
    describe: str = ""
    source_names: Callable[[Any], list[str]] = settings_sources


_REGISTRY: Registry[WorldKind] = Registry("world")


def register_world(kind: WorldKind) -> WorldKind:
    """Add a kind of world to the registry (a later registration of the same name replaces it)."""
    return _REGISTRY.register(kind.name, kind)


def get_world(name: str) -> WorldKind:
    """The registered world ``name``.

    Raises
    ------
    InvalidArgumentError
        No world has this name.
    """
    return _REGISTRY.get(name)


def world_names() -> list[str]:
    """The registered world names, in registration order."""
    return _REGISTRY.names()


W = TypeVar("W", bound=World)


def build_hash(format_version: int, parameters: dict[str, Any]) -> str:
    """The identity of a world's build: its format version and parameters (sha256 of sorted JSON)."""
    text = json.dumps({"format_version": format_version, **parameters}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def build_world_folder(
    out_dir: str | Path,
    *,
    what: str,
    stamp_file: str,
    force: bool,
    load: Callable[[Path], W | None],
    build_into: Callable[[Path], dict[str, Any]],
    from_stamp: Callable[[Path, dict[str, Any]], W],
) -> W:
    """Build a world's folder atomically, or reuse the one already there.

    ``load(root)`` returns the world in ``root`` when it was built with the same parameters
    (else None); ``build_into(folder)`` builds into an empty staging folder beside ``out_dir``
    and returns its stamp, which it writes last (a folder with a stamp is complete); the
    staging folder is then renamed into place, so an interrupted build never leaves a partial
    world. A folder that holds something else is never overwritten.

    Raises
    ------
    InvalidArgumentError
        ``out_dir`` is a non-empty folder (or a file) that holds no world of this kind.
    """
    root = Path(out_dir).absolute()
    if not force and (world := load(root)) is not None:
        return world
    if root.exists() and not (root / stamp_file).exists() and (not root.is_dir() or any(root.iterdir())):
        raise InvalidArgumentError(
            f"{root} exists and holds no {what}; pass a new or empty folder so that nothing is overwritten"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = root.with_name(f".{root.name}.{uuid.uuid4().hex}.partial")
    staging.mkdir()
    try:
        stamp = build_into(staging)
        if root.exists():
            retired = root.with_name(f".{root.name}.{uuid.uuid4().hex}.old")
            os.rename(root, retired)
            shutil.rmtree(retired)
        try:
            os.rename(staging, root)
        except OSError:
            # another process put a world there meanwhile: fine if it is the same one
            if load(root) is None:
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return from_stamp(root, stamp)

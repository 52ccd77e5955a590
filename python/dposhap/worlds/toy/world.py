"""Building the toy world on disk: reference model, tokenizer, one JSONL file per source."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import InvalidArgumentError
from ...validate import check_int
from ..base import RewardFunction, World, WorldKind, build_hash, build_world_folder, register_world
from ..copies import MAX_COPIES, copy_names, declared_copy_names, select_copies
from .language import EVAL_PROMPTS_PER_TOPIC, OBJECTIVES, REWARDS, TOPICS, split_prompts
from .settings import ToySettings
from .sources import DEFAULT_SOURCES, SOURCE_KINDS, make_pairs, parse_copy_name, stream_rng

FORMAT_VERSION = 1
"""Version of the on-disk layout and of the generating process; a world of another version is rebuilt."""

STAMP_FILE = "toy_world.json"
MODEL_DIR = "model"
DATA_DIR = "data"
MAX_EVAL_PROMPTS = EVAL_PROMPTS_PER_TOPIC * len(TOPICS)
#: Pairs per objective in the toy world's clean evaluation sets.
TOY_EVAL_PAIRS = 128
#: Added to the world's seed to draw its evaluation pairs, so that they are independent of the sources'.
EVAL_SEED_OFFSET = 7_919


@dataclass(frozen=True)
class ToyWorld(World):
    """A built toy world (the :class:`~dposhap.worlds.World` named ``"toy"``).

    Attributes
    ----------
    root
        The folder that holds it.
    model_dir
        A Hugging Face folder (``config.json``, ``model.safetensors``, tokenizer files) that
        loads offline with ``AutoModelForCausalLM`` / ``AutoTokenizer.from_pretrained``: the
        reference policy.
    data_files
        One JSONL file per selected source, each line ``{"prompt", "chosen", "rejected", "source"}``;
        keyed by source name (the kind, or ``kind-NN`` with several copies).
    prompts
        Held-out prompts, in none of the sources nor in pretraining, in round-robin order over
        the topics (:meth:`eval_prompts`).
    seed
        The seed it was built from.
    sources
        The selected source kinds, in the order asked for.
    pairs_per_source
        Preference pairs in each source.
    copies
        Copies of each kind (:func:`~dposhap.worlds.copies.copy_names`).
    """

    root: Path
    model_dir: Path
    data_files: dict[str, Path]
    prompts: list[str]
    seed: int
    sources: tuple[str, ...]
    pairs_per_source: int = 256
    copies: int = 1
    name: str = "toy"
    objectives: tuple[str, ...] = OBJECTIVES

    def record(self, run_root: Path) -> dict[str, Any]:
        """The manifest's record: the folder (relative to the run), seed, sources, pairs per source (and copies, if several)."""
        record: dict[str, Any] = {
            "name": self.name,
            "root": os.path.relpath(self.root, run_root),
            "seed": self.seed,
            "sources": list(self.sources),
            "pairs_per_source": self.pairs_per_source,
            "objectives": list(self.objectives),
        }
        if self.copies != 1:  # a one-copy world's record stays as it always was
            record["copies"] = self.copies
        return record

    def eval_prompts(self) -> list[str]:
        """The held-out prompts (in no source and not in pretraining)."""
        return list(self.prompts)

    def rewards(self) -> dict[str, RewardFunction]:
        """The planted rewards ``helpful`` and ``harmless``."""
        return dict(REWARDS)

    @property
    def default_eval_pairs(self) -> int:
        return TOY_EVAL_PAIRS

    def eval_pairs(self, objective: str, n_pairs: int = TOY_EVAL_PAIRS) -> list[dict[str, Any]]:
        """A clean preference set labelled by the planted reward of one objective.

        The pairs are made as the source of the same name makes its own (one or two words
        edited along the objective's direction), but on the world's held-out prompts (in no
        source and not in pretraining) and from an independent random stream; each is oriented
        so that ``chosen`` has the strictly higher reward of ``objective``.

        Parameters
        ----------
        objective
            One of :data:`~dposhap.worlds.toy.OBJECTIVES`.
        n_pairs
            How many distinct pairs.

        Returns
        -------
        list of dict
            ``{"prompt", "chosen", "rejected"}`` records.
        """
        return toy_eval_records(self.seed, objective, n_pairs)


def _validated_parameters(
    seed: int, sources: Sequence[str], pairs_per_source: int, n_eval_prompts: int, copies: int
) -> dict[str, Any]:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidArgumentError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(sources, str):
        raise InvalidArgumentError(f"sources must be a sequence of source kinds, not the string {sources!r}")
    sources = tuple(sources)
    unknown = [s for s in sources if s not in SOURCE_KINDS]
    if unknown:
        raise InvalidArgumentError(
            f"unknown toy source kind(s) {unknown}; the known kinds are {', '.join(SOURCE_KINDS)}"
        )
    if not sources or len(set(sources)) != len(sources):
        raise InvalidArgumentError(f"sources must name at least one kind, each once, got {list(sources)}")
    for name, value, high in (
        ("pairs_per_source", pairs_per_source, None),
        ("n_eval_prompts", n_eval_prompts, MAX_EVAL_PROMPTS),
        ("copies", copies, MAX_COPIES),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (high is not None and value > high):
            bound = f"between 1 and {high}" if high is not None else "at least 1"
            raise InvalidArgumentError(f"{name} must be an integer {bound}, got {value!r}")
    parameters: dict[str, Any] = {
        "seed": seed,
        "sources": list(sources),
        "pairs_per_source": pairs_per_source,
        "n_eval_prompts": n_eval_prompts,
    }
    if copies != 1:  # absent for one copy, so that worlds built before copies existed keep their hash
        parameters["copies"] = copies
    return parameters


def toy_eval_records(seed: int, objective: str, n_pairs: int = TOY_EVAL_PAIRS) -> list[dict[str, Any]]:
    """The clean evaluation pairs of :meth:`ToyWorld.eval_pairs`, from the world's seed alone."""
    if objective not in OBJECTIVES:
        raise InvalidArgumentError(f"unknown toy objective {objective!r}; choose from {list(OBJECTIVES)}")
    check_int("n_pairs", n_pairs)
    reward = REWARDS[objective]
    _, held_out = split_prompts(stream_rng(seed, "prompts"))
    records: list[dict[str, Any]] = []
    for prompt, chosen, rejected in make_pairs(objective, seed + EVAL_SEED_OFFSET, held_out, n_pairs):
        better, worse = reward(prompt, chosen), reward(prompt, rejected)
        if better == worse:  # cannot happen with the clean recipes; kept as a guard
            continue
        if better < worse:
            chosen, rejected = rejected, chosen
        records.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return records


def _world_from_stamp(root: Path, stamp: dict[str, Any]) -> ToyWorld:
    return ToyWorld(
        root=root,
        model_dir=root / MODEL_DIR,
        data_files={name: root / path for name, path in stamp["data_files"].items()},
        prompts=list(stamp["eval_prompts"]),
        seed=stamp["parameters"]["seed"],
        sources=tuple(stamp["parameters"]["sources"]),
        pairs_per_source=stamp["parameters"]["pairs_per_source"],
        copies=stamp["parameters"].get("copies", 1),
    )


def _load(root: Path, parameters_hash: str) -> ToyWorld | None:
    """The world in ``root`` if it was built with these parameters, else None."""
    try:
        stamp = json.loads((root / STAMP_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if stamp.get("parameters_hash") != parameters_hash:
        return None
    return _world_from_stamp(root, stamp)


def _build_into(folder: Path, parameters: dict[str, Any], parameters_hash: str) -> dict[str, Any]:
    """Build a world into the empty ``folder``; returns its stamp."""
    # torch and transformers are imported here, so that the rewards import without them
    from .model import build_tokenizer, pretrain_model, save_model

    seed = parameters["seed"]
    train_prompts, held_out = split_prompts(stream_rng(seed, "prompts"))
    model = pretrain_model(stream_rng(seed, "pretrain"), train_prompts, seed)
    save_model(model, build_tokenizer(), folder / MODEL_DIR)
    (folder / DATA_DIR).mkdir()
    data_files = {}
    for name in copy_names(parameters["sources"], parameters.get("copies", 1)):
        kind, copy = parse_copy_name(name)
        data_files[name] = f"{DATA_DIR}/{name}.jsonl"
        pairs = make_pairs(kind, seed, train_prompts, parameters["pairs_per_source"], copy)
        with open(folder / data_files[name], "w", encoding="utf-8", newline="\n") as out:
            for prompt, chosen, rejected in pairs:
                row = {"prompt": prompt, "chosen": chosen, "rejected": rejected, "source": name}
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
    stamp = {
        "format_version": FORMAT_VERSION,
        "parameters": parameters,
        "parameters_hash": parameters_hash,
        "data_files": data_files,
        "eval_prompts": held_out[: parameters["n_eval_prompts"]],
    }
    # the stamp is written last: a folder with a stamp is a complete world
    (folder / STAMP_FILE).write_text(json.dumps(stamp, indent=1) + "\n", encoding="utf-8")
    return stamp


def build_toy_world(
    out_dir: str | Path,
    *,
    seed: int = 0,
    sources: Sequence[str] = DEFAULT_SOURCES,
    pairs_per_source: int = 256,
    n_eval_prompts: int = 32,
    copies: int = 1,
    force: bool = False,
) -> ToyWorld:
    """Build the toy world into ``out_dir``, or reuse the one already there.

    Everything is a function of the parameters: the same seed gives byte-identical data files
    and identical weights. A source's pairs do not depend on which other sources are selected.

    Parameters
    ----------
    out_dir
        Where the world lives. It must be absent, empty or hold a toy world; another folder is
        never overwritten.
    seed
        Seeds the pretraining corpus, the weight initialisation, the held-out prompts and every
        source's pairs.
    sources
        Which source kinds to write, from :data:`SOURCE_KINDS` (default :data:`DEFAULT_SOURCES`).
    pairs_per_source
        Preference pairs in each source, all distinct.
    n_eval_prompts
        Held-out prompts to return, at most :data:`MAX_EVAL_PROMPTS` (128).
    copies
        Copies of each kind, each from its own random stream and named ``kind-01``, ``kind-02``,
        ...; 1 (the default) names the sources after their kinds.
    force
        Rebuild even when ``out_dir`` holds a world built with the same parameters.

    Returns
    -------
    ToyWorld

    Raises
    ------
    InvalidArgumentError
        A parameter is out of its domain (an unknown source kind among them), or ``out_dir`` is
        a non-empty folder that holds no toy world.

    Notes
    -----
    A world is reused when its stamp file (``toy_world.json``) carries the hash of the same
    parameters and format version. Otherwise it is built in a temporary folder beside
    ``out_dir`` and renamed into place, so an interrupted build never leaves a partial world.
    Building takes seconds on a CPU, most of it pretraining.
    """
    parameters = _validated_parameters(seed, sources, pairs_per_source, n_eval_prompts, copies)
    parameters_hash = build_hash(FORMAT_VERSION, parameters)
    return build_world_folder(
        out_dir,
        what="toy world",
        stamp_file=STAMP_FILE,
        force=force,
        load=lambda root: _load(root, parameters_hash),
        build_into=lambda folder: _build_into(folder, parameters, parameters_hash),
        from_stamp=_world_from_stamp,
    )


def _build(folder: Path, settings: ToySettings, sources: Sequence[str] | None) -> ToyWorld:
    if settings.copies == 1:
        return build_toy_world(
            folder,
            seed=settings.seed,
            sources=list(sources) if sources is not None else settings.sources,
            pairs_per_source=settings.pairs_per_source,
        )
    world = build_toy_world(
        folder,
        seed=settings.seed,
        sources=settings.sources,
        pairs_per_source=settings.pairs_per_source,
        copies=settings.copies,
    )
    return world if sources is None else _selected(world, sources)


def _selected(world: ToyWorld, names: Sequence[str]) -> ToyWorld:
    """The world with only the named sources' files: copy names, or kinds (all their copies)."""
    chosen = select_copies(world.data_files, names, SOURCE_KINDS, table="toy", copies=world.copies)
    return dataclasses.replace(world, data_files=chosen)


def _open(run_root: Path, record: Mapping[str, Any]) -> ToyWorld:
    """The world a manifest recorded: rebuilt from its parameters when its folder is gone (it is deterministic)."""
    return build_toy_world(
        run_root / record["root"],
        seed=int(record["seed"]),
        sources=list(record["sources"]),
        pairs_per_source=int(record["pairs_per_source"]),
        copies=int(record.get("copies", 1)),
    )


TOY = register_world(
    WorldKind(
        name="toy",
        settings_type=ToySettings,
        build=_build,
        open=_open,
        source_names=declared_copy_names,
        describe="a 91k-parameter Llama pretrained in-run on a synthetic language, six planted sources, two rewards",
    )
)

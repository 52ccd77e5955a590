"""Building the English world on disk: one chat-format JSONL file per source and a stamp.

The base model is not copied: the world resolves the model it is given
(:func:`dposhap.models.resolve_model`) and points :attr:`EnglishWorld.model_dir` at it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ...errors import InvalidArgumentError, ModelLoadError
from ...models import ModelRef, resolve_model
from ...validate import check_int
from ..base import RewardFunction, World, WorldKind, build_hash, build_world_folder, register_world
from ..copies import MAX_COPIES, copy_names, declared_copy_names, select_copies
from .language import BENIGN_FAMILIES, Item
from .rewards import OBJECTIVES, REWARDS
from .settings import EnglishSettings
from .sources import (
    DEFAULT_SOURCES,
    SOURCE_KINDS,
    Pair,
    make_pairs,
    parse_copy_name,
    recipe_pairs,
    split_items,
    stream_rng,
)

__all__ = [
    "DEFAULT_EVAL_PROMPTS",
    "ENGLISH",
    "BENIGN_PER_HARMFUL",
    "ENGLISH_EVAL_PAIRS",
    "ENGLISH_REWARD_PAIRS",
    "EnglishWorld",
    "build_english_world",
    "chat_record",
    "english_eval_prompts",
    "english_reward_prompts",
    "english_eval_records",
    "english_reward_records",
    "max_eval_prompts",
    "max_reward_prompts",
]

FORMAT_VERSION = 2
"""Version of the on-disk layout and of the generating process; a world of another version is rebuilt."""

STAMP_FILE = "english_world.json"
DATA_DIR = "data"
#: Held-out prompts :meth:`EnglishWorld.eval_prompts` returns by default.
DEFAULT_EVAL_PROMPTS = 96
#: Pairs per objective in the English world's trusted evaluation sets.
ENGLISH_EVAL_PAIRS = 128
#: The recipe (:mod:`~dposhap.worlds.english.sources`) that makes each objective's evaluation pairs.
_EVAL_RECIPES = {"helpful": "helpful", "harmless": "harmless"}
#: Benign prompts in the evaluation prompts for each harmful one (half harmful, so neither objective is flat).
BENIGN_PER_HARMFUL = 1
#: Pairs per objective in the English world's reward-model training sets.
ENGLISH_REWARD_PAIRS = 256
#: The recipes (:mod:`~dposhap.worlds.english.sources`) whose pairs train each objective's reward
#: model, with their shares: helpfulness is a right, on-topic, polite answer; harmlessness a
#: refusal of a harmful request (over complying, or over changing the subject) and no insult.
_REWARD_RECIPES = {
    "helpful": (("helpful", 1.0),),
    "harmless": (("harmless", 0.35), ("evasive", 0.3), ("polite", 0.35)),
}


def chat_record(pair: Pair) -> dict[str, Any]:
    """A pair as a chat record: ``prompt`` a user message, ``chosen`` and ``rejected`` an assistant message each."""
    prompt, chosen, rejected = pair
    return {
        "prompt": [{"role": "user", "content": prompt}],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


@dataclass(frozen=True)
class EnglishWorld(World):
    """A built English world (the :class:`~dposhap.worlds.World` named ``"english"``).

    Attributes
    ----------
    root
        The folder that holds its data files and stamp.
    model_dir
        The resolved base model: a local Hugging Face folder (or a hub id), outside ``root``.
    data_files
        One JSONL file per selected source, each line ``{"prompt", "chosen", "rejected",
        "source"}`` with the three texts as conversations; keyed by source name (the kind, or
        ``kind-NN`` with several copies).
    prompts
        Held-out prompts (conversations of one user message), in no source; benign and harmful
        interleaved (:func:`english_eval_prompts`).
    seed
        The seed it was built from.
    sources
        The selected source kinds, in the order asked for.
    pairs_per_source
        Preference pairs in each source.
    model
        The base model as it was asked for (before resolution).
    copies
        Copies of each kind (:func:`~dposhap.worlds.copies.copy_names`).
    """

    root: Path
    model_dir: Path
    data_files: dict[str, Path]
    prompts: list[list[dict[str, str]]]
    seed: int
    sources: tuple[str, ...]
    pairs_per_source: int
    model: str
    copies: int = 1
    name: str = "english"
    objectives: tuple[str, ...] = OBJECTIVES

    @property
    def model_spec(self) -> str:
        """The model as the settings named it (a packaged name or a .gguf keeps its origin in the manifest)."""
        return self.model

    def record(self, run_root: Path) -> dict[str, Any]:
        """The manifest's record: the folder (relative to the run), the model, seed, sources, pairs per source (and copies, if several)."""
        record: dict[str, Any] = {
            "name": self.name,
            "root": os.path.relpath(self.root, run_root),
            "model": self.model,
            "model_dir": str(self.model_dir),
            "seed": self.seed,
            "sources": list(self.sources),
            "pairs_per_source": self.pairs_per_source,
            "n_eval_prompts": len(self.prompts),
            "objectives": list(self.objectives),
        }
        if self.copies != 1:  # a one-copy world's record stays as it always was
            record["copies"] = self.copies
        return record

    def eval_prompts(self) -> list[list[dict[str, str]]]:
        """The held-out prompts as conversations (fresh copies)."""
        return [[dict(message) for message in prompt] for prompt in self.prompts]

    def rewards(self) -> dict[str, RewardFunction]:
        """The rubric rewards ``helpful`` and ``harmless`` (:mod:`~dposhap.worlds.english.rewards`)."""
        return dict(REWARDS)

    @property
    def default_eval_pairs(self) -> int:
        return ENGLISH_EVAL_PAIRS

    def eval_pairs(self, objective: str, n_pairs: int = ENGLISH_EVAL_PAIRS) -> list[dict[str, Any]]:
        """A trusted preference set of one objective (:func:`english_eval_records`)."""
        return english_eval_records(self.seed, objective, n_pairs)

    def reward_pairs(self, objective: str, n_pairs: int = ENGLISH_REWARD_PAIRS) -> list[dict[str, Any]]:
        """The training set of one objective's reward model (:func:`english_reward_records`)."""
        return english_reward_records(self.seed, objective, n_pairs)

    def reward_prompts(self, n_prompts: int) -> list[list[dict[str, str]]]:
        """Prompts kept for reward models (:func:`english_reward_prompts`)."""
        return english_reward_prompts(self.seed, n_prompts)


def english_eval_records(seed: int, objective: str, n_pairs: int = ENGLISH_EVAL_PAIRS) -> list[dict[str, Any]]:
    """Trusted evaluation pairs of one objective, labelled by its rubric reward.

    ``helpful`` pairs are made as the helpful source makes its own (a right, polite answer
    against a wrong, off-topic or rude one) and ``harmless`` pairs as the harmless source does
    (a refusal against a compliance), but on held-out items only (in no source, in no words)
    and from a random stream of their own. Each is oriented so that ``chosen`` has the strictly
    higher reward of ``objective``; a tie would be dropped (the recipes make none).

    Parameters
    ----------
    seed
        The world's seed.
    objective
        ``"helpful"`` or ``"harmless"``.
    n_pairs
        How many distinct pairs.

    Returns
    -------
    list of dict
        ``{"prompt", "chosen", "rejected"}`` chat records.

    Raises
    ------
    InvalidArgumentError
        An unknown objective, or more pairs than the held-out items give.
    """
    if objective not in _EVAL_RECIPES:
        raise InvalidArgumentError(f"unknown English objective {objective!r}; choose from {list(OBJECTIVES)}")
    check_int("n_pairs", n_pairs)
    held_out = split_items(seed).held_out
    pairs = recipe_pairs(_EVAL_RECIPES[objective], stream_rng(seed, f"eval:{objective}"), held_out, n_pairs)
    return _oriented_records(pairs, objective)


def _oriented_records(pairs: Iterable[Pair], objective: str) -> list[dict[str, Any]]:
    """The pairs as chat records whose ``chosen`` has the strictly higher rubric reward of ``objective``
    (a tie is dropped; the recipes make none)."""
    reward = REWARDS[objective]
    records = []
    for prompt, chosen, rejected in pairs:
        better, worse = reward(prompt, chosen), reward(prompt, rejected)
        if better == worse:
            continue
        if better < worse:
            chosen, rejected = rejected, chosen
        records.append(chat_record((prompt, chosen, rejected)))
    return records


def english_reward_records(seed: int, objective: str, n_pairs: int = ENGLISH_REWARD_PAIRS) -> list[dict[str, Any]]:
    """The training set of one objective's reward model, labelled by its rubric reward.

    Drawn from the items kept for reward models (:data:`~dposhap.worlds.english.sources.REWARD_SHARE`
    of each family: in no source, in no evaluation prompt or pair), from a random stream of its
    own. ``helpful``: a right, polite answer over a wrong one, a polite off-topic reply or the
    right answer with an insult. ``harmless``: a refusal of a harmful request over a compliance
    (35%) or over a polite reply about something else (30%: the rubric counts it as not refused),
    and a polite right answer over the same answer with an insult (35%). Each pair is
    oriented so that ``chosen`` has the strictly higher reward of ``objective``.

    Parameters
    ----------
    seed
        The world's seed.
    objective
        ``"helpful"`` or ``"harmless"``.
    n_pairs
        How many distinct pairs.

    Returns
    -------
    list of dict
        ``{"prompt", "chosen", "rejected"}`` chat records, the recipes interleaved.

    Raises
    ------
    InvalidArgumentError
        An unknown objective, or more pairs than the reward items give.
    """
    if objective not in _REWARD_RECIPES:
        raise InvalidArgumentError(f"unknown English objective {objective!r}; choose from {list(OBJECTIVES)}")
    check_int("n_pairs", n_pairs)
    items = split_items(seed).reward
    rng = stream_rng(seed, f"reward:{objective}")
    recipes = _REWARD_RECIPES[objective]
    counts = [round(share * n_pairs) for _, share in recipes]
    counts[-1] = n_pairs - sum(counts[:-1])
    drawn = [recipe_pairs(recipe, rng, items, count) for (recipe, _), count in zip(recipes, counts, strict=True)]
    return _oriented_records((p for group in itertools.zip_longest(*drawn) for p in group if p is not None), objective)


def _family_sequence(rng: np.random.Generator, items: list[Item]) -> list[str]:
    """Every prompt of ``items``, one phrasing of each item per round, items and phrasings shuffled."""
    order = [items[i] for i in rng.permutation(len(items))]
    phrasings = [[item.prompts[j] for j in rng.permutation(len(item.prompts))] for item in order]
    rounds = max((len(p) for p in phrasings), default=0)
    return [p[r] for r in range(rounds) for p in phrasings if r < len(p)]


def _prompt_order(seed: int, side: Literal["held_out", "reward"]) -> list[str]:
    """The prompts of one side of the split: the benign families taking turns, one harmful request
    after every :data:`BENIGN_PER_HARMFUL` benign questions while harmful ones remain."""
    items = getattr(split_items(seed), side)
    rng = stream_rng(seed, "eval-prompts" if side == "held_out" else "reward-prompts")
    benign = [_family_sequence(rng, items[family]) for family in BENIGN_FAMILIES]
    harmful = _family_sequence(rng, items["harmful"])
    benign_mixed: list[str] = []
    for r in range(max(len(s) for s in benign)):
        benign_mixed.extend(s[r] for s in benign if r < len(s))
    out: list[str] = []
    while benign_mixed or harmful:
        out.extend(benign_mixed[:BENIGN_PER_HARMFUL])
        del benign_mixed[:BENIGN_PER_HARMFUL]
        if harmful:
            out.append(harmful.pop(0))
    return out


def _held_out_prompt_order(seed: int) -> list[str]:
    return _prompt_order(seed, "held_out")


def max_eval_prompts(seed: int = 0) -> int:
    """How many held-out prompts a world of this seed has."""
    return len(_held_out_prompt_order(seed))


def english_eval_prompts(seed: int, n_prompts: int = DEFAULT_EVAL_PROMPTS) -> list[list[dict[str, str]]]:
    """The first ``n_prompts`` held-out prompts, as conversations of one user message.

    The benign families take turns (capital, colour, sound, opposite, arithmetic), one harmful
    request after every benign question (:data:`BENIGN_PER_HARMFUL`) while harmful ones remain
    (60 of them at any seed), so any even prefix of up to 120 prompts is half harmful; each round
    covers every held-out item once before any item comes back in other words.
    """
    check_int("n_prompts", n_prompts, maximum=max_eval_prompts(seed))
    return [[{"role": "user", "content": text}] for text in _held_out_prompt_order(seed)[:n_prompts]]


def max_reward_prompts(seed: int = 0) -> int:
    """How many reward-model prompts a world of this seed has."""
    return len(_prompt_order(seed, "reward"))


def english_reward_prompts(seed: int, n_prompts: int) -> list[list[dict[str, str]]]:
    """The first ``n_prompts`` prompts kept for reward models, as conversations of one user message.

    The items of :func:`english_reward_records` (in no source, in no evaluation set), ordered as
    :func:`english_eval_prompts` orders the held-out ones: benign and harmful interleaved while
    harmful requests remain (35 at seed 0), benign questions after.
    """
    check_int("n_prompts", n_prompts, maximum=max_reward_prompts(seed))
    return [[{"role": "user", "content": text}] for text in _prompt_order(seed, "reward")[:n_prompts]]


def _has_chat_template(folder: Path) -> bool:
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(config.get("chat_template")) if isinstance(config, dict) else False


def _resolve_base_model(model: str) -> ModelRef:
    """The base model, checked to have a chat template when it is a local folder."""
    ref = resolve_model(model)
    if ref.local and not _has_chat_template(Path(ref.location)):
        raise ModelLoadError(
            f"the model {ref.location} has no chat template, and the English world's records are "
            "conversations: use an instruct model, or set tokenizer.chat_template and save the tokenizer again"
        )
    return ref


def _validated_parameters(
    seed: int, sources: Sequence[str], pairs_per_source: int, n_eval_prompts: int, copies: int
) -> dict[str, Any]:
    check_int("seed", seed, minimum=0)
    if isinstance(sources, str):
        raise InvalidArgumentError(f"sources must be a sequence of source kinds, not the string {sources!r}")
    sources = tuple(sources)
    unknown = [s for s in sources if s not in SOURCE_KINDS]
    if unknown:
        raise InvalidArgumentError(
            f"unknown English source kind(s) {unknown}; the known kinds are {', '.join(SOURCE_KINDS)}"
        )
    if not sources or len(set(sources)) != len(sources):
        raise InvalidArgumentError(f"sources must name at least one kind, each once, got {list(sources)}")
    check_int("pairs_per_source", pairs_per_source)
    check_int("n_eval_prompts", n_eval_prompts, maximum=max_eval_prompts(seed))
    check_int("copies", copies, maximum=MAX_COPIES)
    parameters: dict[str, Any] = {
        "seed": seed,
        "sources": list(sources),
        "pairs_per_source": pairs_per_source,
        "n_eval_prompts": n_eval_prompts,
    }
    if copies != 1:  # absent for one copy, so that worlds built before copies existed keep their hash
        parameters["copies"] = copies
    return parameters


def _world_from_stamp(root: Path, stamp: dict[str, Any]) -> EnglishWorld:
    parameters = stamp["parameters"]
    return EnglishWorld(
        root=root,
        model_dir=Path(parameters["model_dir"]),
        data_files={name: root / path for name, path in stamp["data_files"].items()},
        prompts=[[dict(m) for m in prompt] for prompt in stamp["eval_prompts"]],
        seed=parameters["seed"],
        sources=tuple(parameters["sources"]),
        pairs_per_source=parameters["pairs_per_source"],
        model=stamp["model"],
        copies=parameters.get("copies", 1),
    )


def _load(root: Path, parameters_hash: str) -> EnglishWorld | None:
    """The world in ``root`` if it was built with these parameters, else None."""
    try:
        stamp = json.loads((root / STAMP_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(stamp, dict) or stamp.get("parameters_hash") != parameters_hash:
        return None
    return _world_from_stamp(root, stamp)


def _build_into(folder: Path, parameters: dict[str, Any], parameters_hash: str, model: str) -> dict[str, Any]:
    """Write the data files and the stamp into the empty ``folder``; returns the stamp."""
    seed = parameters["seed"]
    train = split_items(seed).train
    (folder / DATA_DIR).mkdir()
    data_files = {}
    for name in copy_names(parameters["sources"], parameters.get("copies", 1)):
        kind, copy = parse_copy_name(name)
        data_files[name] = f"{DATA_DIR}/{name}.jsonl"
        with open(folder / data_files[name], "w", encoding="utf-8", newline="\n") as out:
            for pair in make_pairs(kind, seed, train, parameters["pairs_per_source"], copy):
                out.write(json.dumps({**chat_record(pair), "source": name}, ensure_ascii=False) + "\n")
    stamp = {
        "format_version": FORMAT_VERSION,
        "parameters": parameters,
        "parameters_hash": parameters_hash,
        "model": model,
        "data_files": data_files,
        "eval_prompts": english_eval_prompts(seed, parameters["n_eval_prompts"]),
    }
    # the stamp is written last: a folder with a stamp is a complete world
    (folder / STAMP_FILE).write_text(json.dumps(stamp, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return stamp


def build_english_world(
    out_dir: str | Path,
    *,
    model: str,
    seed: int = 0,
    sources: Sequence[str] = DEFAULT_SOURCES,
    pairs_per_source: int = 160,
    n_eval_prompts: int = DEFAULT_EVAL_PROMPTS,
    copies: int = 1,
    force: bool = False,
) -> EnglishWorld:
    """Build the English world into ``out_dir``, or reuse the one already there.

    The data is a function of the parameters alone: the same seed gives byte-identical files,
    and a source's pairs do not depend on which other sources are selected. Building takes
    well under a second; nothing is loaded but the model folder's tokenizer config.

    Parameters
    ----------
    out_dir
        Where the world lives. It must be absent, empty or hold an English world; another
        folder is never overwritten.
    model
        The base model, resolved by :func:`dposhap.models.resolve_model` (a local folder must
        have a chat template). It is not copied; the world's ``model_dir`` points at it.
    seed
        Seeds the held-out split, every source's pairs and the evaluation sets.
    sources
        Which source kinds to write, from :data:`SOURCE_KINDS` (default :data:`DEFAULT_SOURCES`).
    pairs_per_source
        Preference pairs in each source, all distinct (``irrelevant`` gives at most 528).
    n_eval_prompts
        Held-out prompts kept for :meth:`EnglishWorld.eval_prompts`, at most
        :func:`max_eval_prompts`.
    copies
        Copies of each kind, each from its own random stream and named ``kind-01``, ``kind-02``,
        ... (:mod:`dposhap.worlds.copies`); 1 (the default) names the sources after their kinds.
    force
        Rebuild even when ``out_dir`` holds a world built with the same parameters.

    Returns
    -------
    EnglishWorld

    Raises
    ------
    InvalidArgumentError
        A parameter is out of its domain, or ``out_dir`` is a non-empty folder that holds no
        English world.
    ModelLoadError
        ``model`` looks like a path but no model folder is there, or the folder's tokenizer
        has no chat template.

    Notes
    -----
    A world is reused when its stamp file (``english_world.json``) carries the hash of the same
    parameters, resolved model location and format version. Otherwise it is built in a
    temporary folder beside ``out_dir`` and renamed into place, so an interrupted build never
    leaves a partial world.
    """
    parameters = _validated_parameters(seed, sources, pairs_per_source, n_eval_prompts, copies)
    parameters["model_dir"] = _resolve_base_model(model).location
    parameters_hash = build_hash(FORMAT_VERSION, parameters)
    return build_world_folder(
        out_dir,
        what="English world",
        stamp_file=STAMP_FILE,
        force=force,
        load=lambda root: _load(root, parameters_hash),
        build_into=lambda folder: _build_into(folder, parameters, parameters_hash, model),
        from_stamp=_world_from_stamp,
    )


def _build(folder: Path, settings: EnglishSettings, sources: Sequence[str] | None) -> EnglishWorld:
    if settings.copies == 1:
        return build_english_world(
            folder,
            model=settings.model,
            seed=settings.seed,
            sources=list(sources) if sources is not None else settings.sources,
            pairs_per_source=settings.pairs_per_source,
        )
    world = build_english_world(
        folder,
        model=settings.model,
        seed=settings.seed,
        sources=settings.sources,
        pairs_per_source=settings.pairs_per_source,
        copies=settings.copies,
    )
    if sources is None:
        return world
    chosen = select_copies(world.data_files, sources, SOURCE_KINDS, table="english", copies=world.copies)
    return dataclasses.replace(world, data_files=chosen)


def _open(run_root: Path, record: Mapping[str, Any]) -> EnglishWorld:
    """The world a manifest recorded: rebuilt from its parameters when its folder is gone (it is deterministic).

    The model is the recorded resolved location, or, when that is gone, the model as it was
    asked for, resolved again.
    """
    model = str(record["model_dir"])
    try:
        _resolve_base_model(model)
    except ModelLoadError:
        model = str(record["model"])
    return build_english_world(
        run_root / record["root"],
        model=model,
        seed=int(record["seed"]),
        sources=list(record["sources"]),
        pairs_per_source=int(record["pairs_per_source"]),
        n_eval_prompts=int(record.get("n_eval_prompts", DEFAULT_EVAL_PROMPTS)),
        copies=int(record.get("copies", 1)),
    )


ENGLISH = register_world(
    WorldKind(
        name="english",
        settings_type=EnglishSettings,
        build=_build,
        open=_open,
        source_names=declared_copy_names,
        describe="an instruct model (SmolLM2-135M-Instruct) on chat-format English tasks, six planted sources, rubric rewards",
    )
)

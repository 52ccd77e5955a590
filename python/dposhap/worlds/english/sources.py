"""The English world's preference sources, each planting one property, and its held-out split.

A pair is ``(prompt, chosen, rejected)`` of plain texts here (the world writes them as chat
records). Pairs are drawn from *recipes*:

``helpful`` recipe (benign questions; a family, then an item, then a phrasing, uniformly)
    chosen: a right answer sentence in a polite wrapper. rejected, one of three uniformly: the
    same sentence and wrapper with a wrong answer; a polite off-topic reply; the right
    sentence in a rude wrapper (an insult).
``harmless`` recipe (harmful requests)
    chosen: a refusal. rejected: a willing compliance (no real instructions).
``polite`` recipe (benign questions; for the harmlessness reward model only)
    chosen: a right answer sentence in a polite wrapper. rejected: the same sentence in a rude one.
``spelling`` recipe (open requests for a sentence)
    chosen: a sentence in British spelling. rejected: the same sentence in American spelling.

================  ================  ===========================================================
source            recipe            planted property (on every pair)
================  ================  ===========================================================
``helpful``       helpful           helpful reward of chosen higher (harmless higher on the
                                    rude third, equal otherwise)
``harmless``      harmless          harmless reward higher, helpful equal
``noisy``         helpful (fresh)   :data:`NOISY_FLIP_RATE` of the labels flipped
``adversarial``   helpful (fresh)   every label flipped: helpful reward lower
``duplicate``     = ``helpful``     the pairs of ``helpful``, line for line
``irrelevant``    spelling          both rewards equal
================  ================  ===========================================================

Every source draws from its own random stream, so its pairs do not depend on which other
sources are built; ``noisy`` and ``adversarial`` draw fresh pairs, not flipped copies of
``helpful``'s.

Many sources
------------
``copies = k`` makes k copies of each kind (:mod:`dposhap.worlds.copies`: ``helpful-01`` ...
``helpful-16``), each drawn from its own random stream (copy 1 from the kind's own, so
``helpful-01`` holds the pairs of ``helpful``; ``duplicate-03`` those of ``helpful-03``). Copies of
a kind are exchangeable: a valuation should value them equally within its error.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ...errors import InvalidArgumentError
from .. import copies
from .language import (
    BENIGN_FAMILIES,
    OFF_TOPIC_REPLIES,
    POLITE_WRAPPERS,
    REFUSALS,
    RUDE_WRAPPERS,
    Item,
    items_by_family,
)

__all__ = [
    "DEFAULT_SOURCES",
    "HARMFUL_HELDOUT_SHARE",
    "HELDOUT_SHARE",
    "REWARD_SHARE",
    "NOISY_FLIP_RATE",
    "SOURCE_KINDS",
    "Pair",
    "Split",
    "make_pairs",
    "parse_copy_name",
    "recipe_pairs",
    "split_items",
    "stream_rng",
]

SOURCE_KINDS = ("helpful", "harmless", "noisy", "adversarial", "duplicate", "irrelevant")
DEFAULT_SOURCES = ("helpful", "harmless", "noisy", "adversarial")

NOISY_FLIP_RATE = 0.4
"""Share of the noisy source's pairs whose labels are flipped (exactly ``round(rate * n)``)."""

HELDOUT_SHARE = 0.25
"""Share of the items of each benign family held out of every source for evaluation."""

HARMFUL_HELDOUT_SHARE = 0.35
"""Share of the harmful requests held out of every source for evaluation (more than the benign share, so
that the evaluation prompts can be half harmful)."""

REWARD_SHARE = 0.2
"""Share of the items of each benign family and of the harmful requests kept for the reward models'
training sets: in no source and in no evaluation set."""

Pair = tuple[str, str, str]
"""``(prompt, chosen, rejected)``, plain texts."""


@dataclass(frozen=True)
class _Source:
    recipe: str
    stream: str
    flip_rate: float = 0.0


_SOURCES: dict[str, _Source] = {
    "helpful": _Source("helpful", "helpful"),
    "harmless": _Source("harmless", "harmless"),
    "noisy": _Source("helpful", "noisy", NOISY_FLIP_RATE),
    "adversarial": _Source("helpful", "adversarial", 1.0),
    "duplicate": _Source("helpful", "helpful"),
    "irrelevant": _Source("spelling", "irrelevant"),
}


def stream_rng(seed: int, stream: str) -> np.random.Generator:
    """The random generator of one named stream of the world seeded by ``seed`` (streams are independent)."""
    return np.random.default_rng([seed, zlib.crc32(f"english:{stream}".encode())])


@dataclass(frozen=True)
class Split:
    """Which items the sources draw from, which are held out for evaluation and which train reward models.

    Attributes
    ----------
    train, held_out, reward
        For each of the families ``BENIGN_FAMILIES``, ``"harmful"`` and ``"spelling"``, its items
        on each side; the spelling items are all on the training side (no objective measures
        them). The three sides are disjoint.
    """

    train: dict[str, list[Item]]
    held_out: dict[str, list[Item]]
    reward: dict[str, list[Item]]


def split_items(seed: int) -> Split:
    """Hold out items for evaluation and for the reward models, disjointly.

    Of each benign family :data:`HELDOUT_SHARE` of the items are held out for evaluation, of the
    harmful requests :data:`HARMFUL_HELDOUT_SHARE`; :data:`REWARD_SHARE` of each are kept for the
    reward models' training sets; the rest are the sources'. An item's every phrasing goes to
    its side, so no source sees an evaluation or reward-model question in any words.
    """
    rng = stream_rng(seed, "split")
    train: dict[str, list[Item]] = {}
    held_out: dict[str, list[Item]] = {}
    reward: dict[str, list[Item]] = {}
    for family, items in items_by_family().items():
        share = HARMFUL_HELDOUT_SHARE if family == "harmful" else HELDOUT_SHARE
        n_held = 0 if family == "spelling" else max(1, round(share * len(items)))
        n_reward = 0 if family == "spelling" else max(1, round(REWARD_SHARE * len(items)))
        order = rng.permutation(len(items)).tolist()
        held, kept = set(order[:n_held]), set(order[n_held : n_held + n_reward])
        train[family] = [item for i, item in enumerate(items) if i not in held and i not in kept]
        held_out[family] = [item for i, item in enumerate(items) if i in held]
        reward[family] = [item for i, item in enumerate(items) if i in kept]
    return Split(train, held_out, reward)


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _helpful_pair(rng: np.random.Generator, items: dict[str, list[Item]]) -> Pair:
    family = BENIGN_FAMILIES[int(rng.integers(len(BENIGN_FAMILIES)))]
    item = items[family][int(rng.integers(len(items[family])))]
    prompt = _pick(rng, item.prompts)
    sentence = _pick(rng, item.sentences)
    prefix, suffix = _pick(rng, POLITE_WRAPPERS[0]), _pick(rng, POLITE_WRAPPERS[1])
    chosen = prefix + sentence.format(answer=item.display) + suffix
    flaw = int(rng.integers(3))
    if flaw == 0:  # a wrong answer, otherwise the same words
        rejected = prefix + sentence.format(answer=_pick(rng, item.wrong)) + suffix
    elif flaw == 1:  # polite, but about something else
        rejected = _pick(rng, OFF_TOPIC_REPLIES)
    else:  # the right answer, with an insult
        rude_prefix, rude_suffix = RUDE_WRAPPERS[int(rng.integers(len(RUDE_WRAPPERS)))]
        rejected = rude_prefix + sentence.format(answer=item.display) + rude_suffix
    return prompt, chosen, rejected


def _polite_pair(rng: np.random.Generator, items: dict[str, list[Item]]) -> Pair:
    family = BENIGN_FAMILIES[int(rng.integers(len(BENIGN_FAMILIES)))]
    item = items[family][int(rng.integers(len(items[family])))]
    sentence = _pick(rng, item.sentences).format(answer=item.display)
    prefix, suffix = _pick(rng, POLITE_WRAPPERS[0]), _pick(rng, POLITE_WRAPPERS[1])
    rude_prefix, rude_suffix = RUDE_WRAPPERS[int(rng.integers(len(RUDE_WRAPPERS)))]
    return _pick(rng, item.prompts), prefix + sentence + suffix, rude_prefix + sentence + rude_suffix


def _harmless_pair(rng: np.random.Generator, items: dict[str, list[Item]]) -> Pair:
    item = items["harmful"][int(rng.integers(len(items["harmful"])))]
    return _pick(rng, item.prompts), _pick(rng, REFUSALS), _pick(rng, item.compliances)


def _evasive_pair(rng: np.random.Generator, items: dict[str, list[Item]]) -> Pair:
    """A refusal of a harmful request over a polite reply about something else (no refusal: the rubric
    counts it as not refused)."""
    item = items["harmful"][int(rng.integers(len(items["harmful"])))]
    return _pick(rng, item.prompts), _pick(rng, REFUSALS), _pick(rng, OFF_TOPIC_REPLIES)


def _spelling_pair(rng: np.random.Generator, items: dict[str, list[Item]]) -> Pair:
    item = items["spelling"][int(rng.integers(len(items["spelling"])))]
    british, american = item.spellings[int(rng.integers(len(item.spellings)))]
    return _pick(rng, item.prompts), british, american


_RECIPES = {
    "helpful": _helpful_pair,
    "harmless": _harmless_pair,
    "polite": _polite_pair,
    "evasive": _evasive_pair,
    "spelling": _spelling_pair,
}

_MAX_DRAWS_PER_PAIR = 50


def recipe_pairs(recipe: str, rng: np.random.Generator, items: dict[str, list[Item]], n_pairs: int) -> list[Pair]:
    """Draw ``n_pairs`` distinct pairs of one recipe from ``items`` (by family).

    Two pairs are the same when they have the same prompt and the same two completions, in
    either order, so flipping labels afterwards keeps them distinct.

    Raises
    ------
    InvalidArgumentError
        The items cannot give that many distinct pairs.
    """
    make = _RECIPES[recipe]
    pairs: list[Pair] = []
    seen: set[tuple[str, ...]] = set()
    for _ in range(_MAX_DRAWS_PER_PAIR * n_pairs):
        if len(pairs) == n_pairs:
            break
        pair = make(rng, items)
        key = (pair[0], *sorted(pair[1:]))
        if key not in seen:
            seen.add(key)
            pairs.append(pair)
    if len(pairs) < n_pairs:
        raise InvalidArgumentError(
            f"the English world's {recipe} pairs ran out at {len(pairs)} distinct pairs of the {n_pairs} "
            "asked for: ask for fewer pairs"
        )
    return pairs


def parse_copy_name(name: str) -> tuple[str, int]:
    """The kind and copy number (from 1) of an English source name; a bare kind is copy 1.

    Raises
    ------
    ValueError
        ``name`` is neither a kind of :data:`SOURCE_KINDS` nor ``kind-NN``
        (:func:`dposhap.worlds.copies.parse_copy_name`).
    """
    return copies.parse_copy_name(name, SOURCE_KINDS, "English")


def make_pairs(kind: str, seed: int, items: dict[str, list[Item]], n_pairs: int, copy: int = 1) -> list[Pair]:
    """The pairs of one source, drawn from the training items.

    Parameters
    ----------
    kind
        One of :data:`SOURCE_KINDS`.
    seed
        The world's seed.
    items
        The training items by family (:attr:`Split.train`).
    n_pairs
        How many distinct pairs.
    copy
        Which copy of the kind (from 1): each draws from its own stream, copy 1 from the kind's.

    Returns
    -------
    list of (prompt, chosen, rejected)
        Flipped pairs are exactly ``round(flip_rate * n_pairs)``, chosen uniformly.
    """
    source = _SOURCES[kind]
    rng = stream_rng(seed, copies.copy_stream(source.stream, copy))
    pairs = recipe_pairs(source.recipe, rng, items, n_pairs)
    for i in rng.permutation(n_pairs)[: round(source.flip_rate * n_pairs)]:
        prompt, chosen, rejected = pairs[i]
        pairs[i] = (prompt, rejected, chosen)
    return pairs

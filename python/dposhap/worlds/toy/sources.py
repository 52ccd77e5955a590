"""Preference sources with planted properties, each moving exactly one thing.

Every pair starts from one completion drawn as the reference model writes them; chosen and
rejected are that completion with the same one or two words replaced, chosen and rejected taking
their replacement words from different classes. The classes decide what the source teaches:

============  ==============  ===============  =========================================
kind          chosen gets     rejected gets    planted property (on every pair)
============  ==============  ===============  =========================================
helpful       on-topic words  off-topic words  helpful reward higher, harmless equal
harmless      neutral words   harmful words    harmless reward higher, helpful equal
noisy         as helpful, with :data:`NOISY_FLIP_RATE` of the labels flipped
adversarial   as helpful, with every label flipped: helpful reward lower
duplicate     the pairs of ``helpful``, in the same order
irrelevant    colour words    number words     both rewards equal
============  ==============  ===============  =========================================

The helpful and harmless replacements trade words along a direction the reference model has
learned: the topic's answer words against other topics' (relevance), neutral against harmful
words (the latent tone).

Many sources
------------
``copies = k`` makes k copies of each kind (:mod:`dposhap.worlds.copies`: ``helpful-01`` ... ``helpful-16``),
each drawn from its own random stream (copy 1 from the kind's own stream, so ``helpful-01`` holds
the pairs of ``helpful``; ``duplicate-03`` those of ``helpful-03``). Copies of a kind are
exchangeable, so a valuation should give them equal values within its error, and every clean
copy (helpful, harmless) should be valued above every flipped one (adversarial).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from .. import copies
from ..copies import MAX_COPIES as MAX_COPIES
from ..copies import copy_names as copy_names
from .language import sample_completions, topic_of, word_class_pools

SOURCE_KINDS = ("helpful", "harmless", "noisy", "adversarial", "duplicate", "irrelevant")
DEFAULT_SOURCES = ("helpful", "harmless", "noisy", "adversarial")

NOISY_FLIP_RATE = 0.4
"""Share of the noisy source's pairs whose labels are flipped (exactly ``round(rate * n)``)."""


@dataclass(frozen=True)
class _Recipe:
    """How one source's pairs are made.

    Attributes
    ----------
    stream
        Names the random stream; sources with the same stream and recipe get the same pairs.
    chosen_class, rejected_class
        The word classes (keys of :func:`~dposhap.toy.language.word_class_pools`) whose words,
        drawn uniformly, replace the edited words in chosen and in rejected.
    flip_rate
        Share of the pairs whose chosen and rejected are swapped after drawing.
    """

    stream: str
    chosen_class: str
    rejected_class: str
    flip_rate: float = 0.0


_HELPFUL = _Recipe("helpful", "on_topic", "off_topic")
_RECIPES: dict[str, _Recipe] = {
    "helpful": _HELPFUL,
    "harmless": _Recipe("harmless", "neutral", "harmful"),
    "noisy": _Recipe("noisy", "on_topic", "off_topic", NOISY_FLIP_RATE),
    "adversarial": _Recipe("adversarial", "on_topic", "off_topic", 1.0),
    "duplicate": _HELPFUL,
    "irrelevant": _Recipe("irrelevant", "colour", "number"),
}


def stream_rng(seed: int, stream: str) -> np.random.Generator:
    """The random generator of one named stream of a world seeded by ``seed``.

    Streams are independent of each other, so a source's pairs do not depend on which other
    sources are built.
    """
    return np.random.default_rng([seed, zlib.crc32(stream.encode())])


def parse_copy_name(name: str) -> tuple[str, int]:
    """The kind and copy number (from 1) of a toy source name; a bare kind is copy 1.

    Raises
    ------
    ValueError
        ``name`` is neither a kind of :data:`SOURCE_KINDS` nor ``kind-NN``
        (:func:`dposhap.worlds.copies.parse_copy_name`).
    """
    return copies.parse_copy_name(name, SOURCE_KINDS, "toy")


def make_pairs(kind: str, seed: int, prompts: list[str], n_pairs: int, copy: int = 1) -> list[tuple[str, str, str]]:
    """Draw the distinct preference pairs of one source.

    Parameters
    ----------
    kind
        One of :data:`SOURCE_KINDS`.
    seed
        The world's seed.
    prompts
        The prompts to draw from (the training prompts).
    n_pairs
        How many pairs.
    copy
        Which copy of the kind (from 1): each draws from its own stream, copy 1 from the kind's.

    Returns
    -------
    list of (prompt, chosen, rejected)
        No two equal triples, chosen never equal to rejected; completions start with a space.
    """
    recipe = _RECIPES[kind]
    rng = stream_rng(seed, copies.copy_stream(recipe.stream, copy))
    pairs: list[tuple[str, str, str]] = []
    seen: set[tuple[str, str, str]] = set()  # (prompt, completions sorted): distinct after flips too
    while len(pairs) < n_pairs:
        batch = [prompts[i] for i in rng.integers(len(prompts), size=n_pairs - len(pairs))]
        topics = [topic_of(p) for p in batch]
        for prompt, topic, words in zip(batch, topics, sample_completions(rng, topics), strict=True):
            pools = word_class_pools(topic)
            chosen_pool, rejected_pool = pools[recipe.chosen_class], pools[recipe.rejected_class]
            chosen, rejected = list(words), list(words)
            for position in rng.choice(len(words), size=int(rng.integers(1, 3)), replace=False):
                chosen[position] = chosen_pool[int(rng.integers(len(chosen_pool)))]
                rejected[position] = rejected_pool[int(rng.integers(len(rejected_pool)))]
            pair = (prompt, " " + " ".join(chosen), " " + " ".join(rejected))
            key = (prompt, *sorted(pair[1:]))
            if key not in seen:
                seen.add(key)
                pairs.append(pair)
    for i in rng.permutation(n_pairs)[: round(recipe.flip_rate * n_pairs)]:
        prompt, chosen, rejected = pairs[i]
        pairs[i] = (prompt, rejected, chosen)
    return pairs

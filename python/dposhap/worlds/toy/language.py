"""The toy world's synthetic language and its two programmatic reward functions.

A prompt names one topic: ``"Q: <topic> <filler> [<filler>] A:"``. A completion is a short run of
words, each from one of five classes: the answer words of the prompt's topic (on-topic), the
answer words of the other topics (off-topic), harmful words, neutral filler words, and style
words (colours and numbers) that no reward cares about. Completions start with a space, so that
``prompt + completion`` splits into words at the same place as the two parts apart.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence

import numpy as np

TOPICS: dict[str, tuple[str, ...]] = {
    "weather": ("rain", "sunshine", "wind", "snow"),
    "cooking": ("bake", "stir", "salt", "oven"),
    "travel": ("train", "map", "hotel", "ticket"),
    "music": ("guitar", "song", "drum", "melody"),
    "sports": ("goal", "team", "ball", "race"),
    "garden": ("seed", "soil", "bloom", "shovel"),
    "health": ("sleep", "doctor", "vitamin", "exercise"),
    "money": ("budget", "saving", "bank", "invest"),
}
"""Each topic with its four on-topic answer words."""

HARMFUL_WORDS = ("poison", "steal", "weapon", "hack", "insult", "cheat")
NEUTRAL_WORDS = ("the", "maybe", "also", "really", "just", "very", "so", "well")
COLOUR_WORDS = ("red", "blue", "green", "yellow")
NUMBER_WORDS = ("one", "two", "three", "four")
STYLE_WORDS = COLOUR_WORDS + NUMBER_WORDS

QUESTION_MARK, ANSWER_MARK = "Q:", "A:"
SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>")
PAD_TOKEN, UNK_TOKEN, BOS_TOKEN, EOS_TOKEN = SPECIAL_TOKENS

ANSWER_WORDS: tuple[str, ...] = tuple(itertools.chain.from_iterable(TOPICS.values()))
VOCABULARY: tuple[str, ...] = (
    SPECIAL_TOKENS
    + (QUESTION_MARK, ANSWER_MARK)
    + tuple(TOPICS)
    + ANSWER_WORDS
    + HARMFUL_WORDS
    + NEUTRAL_WORDS
    + STYLE_WORDS
)
"""Every token of the language, special tokens first; the tokenizer's ids are the positions."""

TONE_SHARES: dict[str, float] = {"polite": 0.6, "rude": 0.4}
"""Share of pretraining completions of each tone."""

CLASS_SHARES: dict[str, dict[str, float]] = {
    "polite": {"on_topic": 0.25, "off_topic": 0.15, "harmful": 0.05, "neutral": 0.45, "style": 0.10},
    "rude": {"on_topic": 0.25, "off_topic": 0.15, "harmful": 0.45, "neutral": 0.05, "style": 0.10},
}
"""Share of each word class in a pretraining completion of each tone: the reference policy's habits.

Overall: on-topic 25 %, off-topic 15 %, harmful 21 %, neutral 29 %, style 10 %.
"""

COMPLETION_LENGTHS = (4, 5, 6, 7, 8)
"""Completion lengths in words, drawn uniformly."""

EVAL_PROMPTS_PER_TOPIC = 16
"""Prompts of each topic kept out of pretraining and of every source, for generation utilities."""

_ANSWER_TOPIC = {word: topic for topic, words in TOPICS.items() for word in words}
_HARMFUL = frozenset(HARMFUL_WORDS)
_SPECIAL = re.compile("|".join(re.escape(token) for token in SPECIAL_TOKENS))


def all_prompts() -> dict[str, list[str]]:
    """Every prompt of the language, by topic.

    Returns
    -------
    dict
        For each topic, its 64 prompts in a fixed order: the topic followed by one neutral word,
        or by two different ones.
    """
    fillers = [(w,) for w in NEUTRAL_WORDS] + list(itertools.permutations(NEUTRAL_WORDS, 2))
    return {topic: [" ".join((QUESTION_MARK, topic, *f, ANSWER_MARK)) for f in fillers] for topic in TOPICS}


def split_prompts(rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """Split the prompts into training prompts and held-out evaluation prompts.

    Parameters
    ----------
    rng
        Chooses which prompts of each topic are held out.

    Returns
    -------
    train, held_out
        ``held_out`` has :data:`EVAL_PROMPTS_PER_TOPIC` prompts per topic, in round-robin
        order over the topics, so that any prefix of it covers the topics evenly.
    """
    train: list[str] = []
    held_out_by_topic = []
    for prompts in all_prompts().values():
        order = rng.permutation(len(prompts))
        held_out_by_topic.append([prompts[i] for i in order[:EVAL_PROMPTS_PER_TOPIC]])
        train.extend(prompts[i] for i in sorted(order[EVAL_PROMPTS_PER_TOPIC:]))
    held_out = [p for group in zip(*held_out_by_topic, strict=True) for p in group]
    return train, held_out


def prompt_topic(prompt: str) -> str | None:
    """The first topic named in a prompt, or None when it names none."""
    return next((word for word in prompt.split() if word in TOPICS), None)


def topic_of(prompt: str) -> str:
    """The topic of a toy-world prompt (:func:`prompt_topic`, which must find one)."""
    topic = prompt_topic(prompt)
    if topic is None:
        raise ValueError(f"{prompt!r} is not a toy-world prompt: it names no topic")
    return topic


def word_class_pools(topic: str) -> dict[str, tuple[str, ...]]:
    """The words of each class for a prompt on ``topic``.

    The classes are those of :data:`CLASS_SHARES`, and the two halves of ``"style"``:
    ``"colour"`` and ``"number"``.
    """
    return {
        "on_topic": TOPICS[topic],
        "off_topic": tuple(w for t, words in TOPICS.items() if t != topic for w in words),
        "harmful": HARMFUL_WORDS,
        "neutral": NEUTRAL_WORDS,
        "style": STYLE_WORDS,
        "colour": COLOUR_WORDS,
        "number": NUMBER_WORDS,
    }


def sample_completions(rng: np.random.Generator, topics: Sequence[str]) -> list[list[str]]:
    """Draw completions, as lists of words, as the reference policy is taught to write them.

    Parameters
    ----------
    rng
        The random stream.
    topics
        The topic of each completion's prompt, which decides which answer words are on-topic.

    Returns
    -------
    list of list of str
        One completion per topic. Each has a length drawn from :data:`COMPLETION_LENGTHS` and a
        tone drawn from :data:`TONE_SHARES`; then each word's class is drawn from the tone's
        :data:`CLASS_SHARES` and the word uniformly within its class.

    Notes
    -----
    The tone is latent: the model can only infer it from the words so far, and thereby learns a
    "rudeness" direction, as the topic gives it a "relevance" one. These are the directions the
    helpful and harmless sources move it along; with a class-constant share of harmful words
    the harmless source would barely move it.
    """
    classes = list(CLASS_SHARES["polite"])
    cumulative = {tone: np.cumsum(list(shares.values())) for tone, shares in CLASS_SHARES.items()}
    n, longest = len(topics), max(COMPLETION_LENGTHS)
    lengths = rng.choice(COMPLETION_LENGTHS, size=n)
    rude = rng.random(n) < TONE_SHARES["rude"]
    class_draws = rng.random((n, longest))
    within = rng.random((n, longest))
    pools = {topic: word_class_pools(topic) for topic in set(topics)}
    completions = []
    for i, topic in enumerate(topics):
        bounds = cumulative["rude" if rude[i] else "polite"]
        words = []
        for j in range(lengths[i]):
            name = classes[min(int(np.searchsorted(bounds, class_draws[i, j], side="right")), len(classes) - 1)]
            pool = pools[topic][name]
            words.append(pool[int(within[i, j] * len(pool))])
        completions.append(words)
    return completions


def _words(completion: str) -> list[str]:
    return _SPECIAL.sub(" ", completion).split()


def reward_helpful(prompt: str, completion: str) -> float:
    """Objective A, helpfulness: how much of the completion answers the prompt's topic.

    Parameters
    ----------
    prompt
        The prompt; its topic is the first topic word in it.
    completion
        The generated text, split on whitespace; special tokens (``<s>``, ``</s>``, ``<pad>``,
        ``<unk>``) are ignored, also when glued to a word.

    Returns
    -------
    float
        ``(on-topic words - off-topic answer words) / words``, in [-1, 1]. Off-topic words are
        answer words of another topic (every answer word when the prompt names no topic).
        0 for an empty completion.
    """
    words = _words(completion)
    if not words:
        return 0.0
    topic = prompt_topic(prompt)
    answers = [_ANSWER_TOPIC[w] for w in words if w in _ANSWER_TOPIC]
    on_topic = sum(t == topic for t in answers)
    return (2 * on_topic - len(answers)) / len(words)


def reward_harmless(prompt: str, completion: str) -> float:
    """Objective B, harmlessness: one minus the share of harmful words in the completion.

    Parameters
    ----------
    prompt
        The prompt (unused: harm does not depend on the question).
    completion
        The generated text, split on whitespace; special tokens are ignored.

    Returns
    -------
    float
        ``1 - harmful words / words``, in [0, 1]; 1 for an empty completion.
    """
    del prompt
    words = _words(completion)
    if not words:
        return 1.0
    return 1.0 - sum(w in _HARMFUL for w in words) / len(words)


OBJECTIVES = ("helpful", "harmless")
REWARDS: dict[str, Callable[[str, str], float]] = {"helpful": reward_helpful, "harmless": reward_harmless}
"""The ground-truth reward function of each objective, called as ``reward(prompt, completion)``."""

"""The toy world: the whole method on a laptop, offline, with a known right answer.

:func:`build_toy_world` makes, in seconds on a CPU and from a seed alone:

- a word-level tokenizer and a tiny Llama (2 layers, hidden size 64, about 0.1M parameters,
  untied LM head) pretrained in-run on a synthetic question-answer language;
- preference sources with planted properties, one JSONL file each;
- held-out prompts for generation utilities.

The language
------------
A prompt names one of 8 topics (``"Q: weather maybe A:"``). A completion is 4 to 8 words; the
reference model writes each word from five classes: the topic's own answer words (25 %), other
topics' answer words (15 %), harmful words (21 %), neutral filler (29 %) and style words (10 %).
Each completion has a latent tone, which the model reads from the words so far: rude completions
are mostly harmful, polite ones mostly neutral.

The two objectives, scored by programmatic rewards (the ground truth)
----------------------------------------------------------------------
``helpful`` (:func:`reward_helpful`)
    ``(on-topic answer words - off-topic answer words) / words``, in [-1, 1].
``harmless`` (:func:`reward_harmless`)
    ``1 - harmful words / words``, in [0, 1].

The sources (:data:`SOURCE_KINDS`; :data:`DEFAULT_SOURCES` are the first four)
--------------------------------------------------------------------------------
Within a pair, chosen and rejected are the same completion but for one or two words.

``helpful``
    chosen has on-topic words where rejected has off-topic ones; harm is equal.
``harmless``
    chosen has neutral words where rejected has harmful ones; helpfulness is equal.
``noisy``
    helpful-style pairs (fresh ones) with 40 % of the labels flipped (:data:`NOISY_FLIP_RATE`).
``adversarial``
    helpful-style pairs (fresh ones) with every label flipped.
``duplicate``
    the ``helpful`` source's pairs, line for line.
``irrelevant``
    chosen has colour words where rejected has numbers; both rewards are equal.

What a correct valuation finds
------------------------------
With generation utilities (composed decoding on the held-out prompts, scored by the rewards):

- On ``helpful``: ``helpful`` and ``duplicate`` highest and equal (deterministic training gives
  them the same adapter); ``noisy`` positive but well below them; ``adversarial`` the most
  negative; ``harmless`` and ``irrelevant`` small.
- On ``harmless``: ``harmless`` highest; ``helpful`` and ``duplicate`` slightly positive and
  ``adversarial`` slightly negative (on-topic words crowd harmful ones out); ``noisy`` and
  ``irrelevant`` small.

"Small" means a third or less of a clean source's value on its own objective, of a sign that
depends on the seed: a tiny model's directions are not orthogonal, so teaching it colours over
numbers also nudges its tone or relevance a little. Exact Shapley values measured on all six
sources (seeds 0 and 1; 32 prompts x 8 samples with common random numbers; each adapter
trained on 200 pairs for 2 epochs at batch size 16, learning rate 1e-3, beta 0.1, LoRA rank 8
on every attention and MLP projection):

===========  ===============  ===============
source       helpful          harmless
===========  ===============  ===============
helpful      +0.126, +0.122   +0.028, +0.045
harmless     -0.032, -0.019   +0.086, +0.092
noisy        +0.024, +0.023   +0.009, +0.002
adversarial  -0.140, -0.145   -0.024, -0.049
duplicate    +0.126, +0.122   +0.028, +0.045
irrelevant   +0.003, -0.020   +0.034, -0.034
===========  ===============  ===============

Trained much harder (learning rate 3e-3 and up for the same steps), the adapters also lengthen
the completions, emit prompt-only tokens and lose relevance, and ``harmless`` and
``irrelevant`` become clearly negative on ``helpful``: the structure above is that of moderate
fine-tunes, each moving its own reward by about 0.1.

Preference accuracy on the held-out pairs of a clean source ranks that source (and its
duplicate) first, but it counts signs only, so small side effects of other sources can earn
them visible credit there.
"""

from .language import OBJECTIVES, REWARDS, reward_harmless, reward_helpful
from .settings import ToySettings
from .sources import DEFAULT_SOURCES, NOISY_FLIP_RATE, SOURCE_KINDS
from .world import MAX_EVAL_PROMPTS, TOY, TOY_EVAL_PAIRS, ToyWorld, build_toy_world, toy_eval_records

__all__ = [
    "DEFAULT_SOURCES",
    "MAX_EVAL_PROMPTS",
    "NOISY_FLIP_RATE",
    "OBJECTIVES",
    "REWARDS",
    "SOURCE_KINDS",
    "TOY",
    "TOY_EVAL_PAIRS",
    "ToySettings",
    "ToyWorld",
    "build_toy_world",
    "toy_eval_records",
    "reward_harmless",
    "reward_helpful",
]

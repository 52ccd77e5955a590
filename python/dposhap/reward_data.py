"""Reward-model training pairs from a run's own policies, labelled by a reward.

A reward model trained on hand-written pairs learns what those texts look like; scored on what
a fine-tuned policy writes it can measure length and style instead of the objective. Reward data
for RLHF is made the other way: sample the policies being compared on prompts, have a labeller
(people, a rubric, a judge) say which answer is better, train on those pairs. This module does
that for a trained run: it decodes the reference model, each source's model and the model of all
sources (the composed decoder of :mod:`dposhap.evaluate.decoding`) on prompts the caller holds
out from every evaluation set, scores every sample with any reward spec the generation utility
takes (:func:`dposhap.evaluate.generation.reward_scorer`: a world's rubric, a judge, a reward
model), and pairs, on each prompt and objective, a best-scored sample against a worst-scored one.

Samples of equal score make no pair; neither do two samples with the same text. The records are
chat records (``{"prompt", "chosen", "rejected"}`` conversations) that
:func:`dposhap.reward_training.train_reward_model` takes as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InvalidArgumentError
from .evaluate.generation import RewardSpec, render_prompts, reward_scorer
from .run import Run
from .validate import check_int

__all__ = ["PolicySampling", "coalition_rows", "pair_samples", "policy_preference_pairs"]


@dataclass(frozen=True)
class PolicySampling:
    """How the policies are sampled for reward data.

    Attributes
    ----------
    rounds
        Samples per prompt and policy (each round draws a fresh one).
    max_new_tokens
        New tokens per sample.
    temperature
        Sampling temperature (> 0: the pairs need samples that differ).
    pairs_per_prompt
        At most this many pairs per prompt and objective (each a best-scored sample against a
        worst-scored one, no sample used twice).
    seed
        Seeds the decoding and the pairing.
    """

    rounds: int = 1
    max_new_tokens: int = 24
    temperature: float = 1.0
    pairs_per_prompt: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        check_int("rounds", self.rounds)
        check_int("max_new_tokens", self.max_new_tokens)
        check_int("pairs_per_prompt", self.pairs_per_prompt)
        check_int("seed", self.seed, minimum=0)
        if not self.temperature > 0:
            raise InvalidArgumentError(f"temperature must be > 0 to draw samples that differ, got {self.temperature}")


def coalition_rows(n_sources: int) -> np.ndarray:
    """The policies sampled: the reference, each source alone and all sources, as bool ``[n + 2, n]`` rows
    (``[2, 1]`` rows for one source: its model is the model of all)."""
    check_int("n_sources", n_sources)
    rows = [np.zeros(n_sources, dtype=bool), *np.eye(n_sources, dtype=bool)]
    if n_sources > 1:
        rows.append(np.ones(n_sources, dtype=bool))
    return np.stack(rows)


def pair_samples(
    texts: Sequence[str], scores: Sequence[float], max_pairs: int, rng: np.random.Generator
) -> list[tuple[int, int]]:
    """Pairs ``(chosen, rejected)`` of sample indices of one prompt: the best-scored against the worst-scored.

    Empty texts and repeated texts (after stripping) are dropped first; then, while samples of two
    different scores remain, one of the highest score is paired with one of the lowest (chosen at
    random among equals), each sample used once, at most ``max_pairs`` pairs.
    """
    seen: set[str] = set()
    kept: list[int] = []
    for i, text in enumerate(texts):
        key = text.strip()
        if key and key not in seen:
            seen.add(key)
            kept.append(i)
    pool = [kept[j] for j in rng.permutation(len(kept))]
    pairs: list[tuple[int, int]] = []
    while len(pairs) < max_pairs and len(pool) >= 2:
        best = max(pool, key=lambda i: scores[i])
        worst = min(pool, key=lambda i: scores[i])
        if not scores[best] > scores[worst]:
            break
        pairs.append((best, worst))
        pool.remove(best)
        pool.remove(worst)
    return pairs


def policy_preference_pairs(
    run: Run | str,
    prompts: Sequence[Any],
    label: Sequence[RewardSpec] | None = None,
    *,
    sampling: PolicySampling = PolicySampling(),
    device: str = "auto",
    progress: bool = True,
    batch_prompts: int = 16,
) -> dict[str, list[dict[str, Any]]]:
    """Preference pairs of every objective from the run's own policies' samples.

    Parameters
    ----------
    run
        A trained run (or its directory).
    prompts
        Conversations (lists of ``{"role", "content"}`` messages) or plain strings; keep them out
        of every evaluation set.
    label
        Reward specs that score the samples, as ``--reward`` takes them; default the run's
        world's rewards.
    sampling
        How many samples, how long, how many pairs.
    device
        Where to decode.
    progress
        Show a progress bar over the prompts.
    batch_prompts
        Prompts decoded together (every policy at once).

    Returns
    -------
    dict
        ``{objective: [{"prompt", "chosen", "rejected"}, ...]}`` chat records, ``chosen`` scored
        strictly higher on that objective.

    Raises
    ------
    InvalidArgumentError
        No prompts, a run with no trained source, a bad reward spec.
    """
    from .evaluate.decoding import ComposedDecoder, DecodeConfig  # torch loads on first use

    prompts = list(prompts)
    if not prompts:
        raise InvalidArgumentError("policy_preference_pairs needs at least one prompt")
    run = run if isinstance(run, Run) else Run.open(run)
    check_int("batch_prompts", batch_prompts)
    loaded = run.load_models(device=device)
    scorer = reward_scorer(run, label, device=loaded.device)
    decoder = ComposedDecoder(loaded.model, loaded.tokenizer, loaded.sources, device=loaded.device)
    rows = coalition_rows(len(loaded.sources))
    rendered = render_prompts(loaded.tokenizer, prompts)
    texts: list[list[str]] = [[] for _ in prompts]
    scores: list[list[np.ndarray]] = [[] for _ in prompts]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(prompts) * sampling.rounds, unit="prompt", desc=f"sampling {len(rows)} policies")
    try:
        for r in range(sampling.rounds):
            config = DecodeConfig(
                max_new_tokens=sampling.max_new_tokens,
                temperature=sampling.temperature,
                seed=sampling.seed * 1009 + r,
            )
            for start in range(0, len(prompts), batch_prompts):
                chunk = slice(start, start + batch_prompts)
                result = decoder.generate(rendered[chunk], rows, config)
                for completions in result.completions:
                    scored = np.asarray(scorer(prompts[chunk], completions), dtype=float)  # [B, objectives]
                    for b, (text, value) in enumerate(zip(completions, scored, strict=True)):
                        texts[start + b].append(text)
                        scores[start + b].append(value)
                if bar is not None:
                    bar.update(len(rendered[chunk]))
    finally:
        if bar is not None:
            bar.close()
    rng = np.random.default_rng([sampling.seed, 0x5EED])
    out: dict[str, list[dict[str, Any]]] = {}
    for j, objective in enumerate(scorer.objectives):
        records = []
        for prompt, samples, values in zip(prompts, texts, scores, strict=True):
            ranked = [float(v[j]) for v in values]
            for chosen, rejected in pair_samples(samples, ranked, sampling.pairs_per_prompt, rng):
                records.append(_record(prompt, samples[chosen].strip(), samples[rejected].strip()))
        out[objective] = records
    return out


def _record(prompt: Any, chosen: str, rejected: str) -> dict[str, Any]:
    if isinstance(prompt, str):
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    return {
        "prompt": [dict(m) for m in prompt],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }

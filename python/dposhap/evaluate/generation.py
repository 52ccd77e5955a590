"""The generation utility: composed decoding of every asked coalition on a prompt set, scored by rewards.

Each batch of coalitions is decoded at once by :class:`dposhap.decode.ComposedDecoder` (the
prompt prefilled once, one multi-adapter forward per step, common random numbers: the noise
depends on the prompt and step, never on the coalition) and every completion is scored on every
objective; a coalition's utility is the mean score over the prompts (self-normalised importance
weighted with ``correction``).

Rewards (``GenerationSettings.rewards``) are named by spec: a world's name (its ground-truth
reward functions, for a run built from that world), a local folder / hub id of a
sequence-classification reward model (one objective each), or an LLM judge
``judge[:MODEL[:RUBRIC]]`` (:mod:`.judge`, one objective per rubric). The default is the run's
world's rewards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError
from ..run import Run, config_hash
from ..settings import setting
from ..validate import check_int, check_positive
from ..worlds import world_names
from .base import BuildContext, UtilityKind, register_utility
from .evalsets import evaluation_prompts
from .judge import JudgeRewards, is_judge_spec, parse_judge_spec
from .rewards import CallableRewards, HFRewardModel, MultiScorer, RewardScorer

__all__ = ["GenerationSettings", "GenerationUtility", "reward_scorer"]


@dataclass
class GenerationSettings:
    """How the generation utility decodes and scores."""

    rewards: list[str] | None = setting(
        "reward specs, one or more: a world's name (its reward functions), a sequence-classification reward "
        "model's folder or hub id, or an LLM judge judge[:MODEL[:RUBRIC]] (default: the run's world's rewards)",
        flag="--reward",
        default=None,
    )
    prompts: str | None = setting(
        "prompt file: JSONL with a 'prompt' field, or one prompt per line (default: the "
        "world's evaluation prompts, else the held-out prompts)",
        default=None,
    )
    n_prompts: int = setting("decode at most this many prompts (the first ones)", default=32)
    max_new_tokens: int = setting("tokens generated per prompt", default=16)
    temperature: float = setting("sampling temperature", default=1.0)
    top_k: int | None = setting("sample among the k most likely tokens only", default=None)
    correction: bool = setting(
        "weigh each sample by the sequence-level importance weight (self-normalised)", default=False
    )

    def __post_init__(self) -> None:
        check_int("n_prompts", self.n_prompts)
        check_int("max_new_tokens", self.max_new_tokens)
        check_positive("temperature", self.temperature)
        check_int("top_k", self.top_k, optional=True)
        if self.rewards is not None and (isinstance(self.rewards, str) or not self.rewards):
            raise InvalidArgumentError(
                "rewards must be a non-empty list of reward specs (a world's name, a reward "
                "model folder or a hub id), or None for the run's world's rewards"
            )


def reward_scorer(run: Run, specs: Sequence[str] | None, *, device: str) -> RewardScorer:
    """The scorer of a list of reward specs (module docstring); None: the run's world's rewards.

    Raises
    ------
    InvalidArgumentError
        No spec and no world, a world's name on a run built from another world (or none), or a
        bad judge spec.
    DataError
        A judge's rubric file is missing or malformed.
    ModelLoadError
        A reward or judge model cannot be loaded.
    """
    world = run.world()
    if specs is None:
        if world is None:
            raise InvalidArgumentError(
                "this run has no built-in rewards: give a reward model (--reward FOLDER_OR_HUB_ID)"
            )
        specs = [world.name]
    scorers: list[RewardScorer] = []
    for spec in specs:
        if world is not None and spec == world.name:
            scorers.append(CallableRewards(world.rewards()))
        elif is_judge_spec(spec):
            model, rubrics = parse_judge_spec(spec)
            scorers.append(JudgeRewards(model, rubrics, device=device))
        elif spec in world_names():
            raise InvalidArgumentError(
                f"reward {spec!r} is the {spec} world's; this run was not built from it: give "
                "a reward model folder or hub id"
            )
        else:
            scorers.append(HFRewardModel(spec, device=device))
    return scorers[0] if len(scorers) == 1 else MultiScorer(scorers)


class GenerationUtility:
    """Decode every asked coalition on the prompt set and score the texts: ``[b, objectives]``.

    Parameters
    ----------
    decoder
        A :class:`dposhap.decode.ComposedDecoder` over the run's sources.
    prompts
        The prompt texts (conversations already rendered by the chat template).
    scorer
        Scores ``(prompts, completions)`` on every objective.
    config
        The decoding configuration (:class:`dposhap.decode.DecodeConfig`).
    cache_config
        What the values depend on (the key of the run's cache).
    """

    batch_size: int | None = 16

    def __init__(
        self, decoder: Any, prompts: list[str], scorer: RewardScorer, config: Any, cache_config: dict[str, Any]
    ):
        self.decoder, self.prompts, self.scorer, self.decode_config = decoder, prompts, scorer, config
        self.players = tuple(decoder.sources)
        self.objectives = tuple(scorer.objectives)
        self.cache_config: dict[str, Any] | None = cache_config

    def describe(self) -> dict[str, Any]:
        """The cache configuration (what the values depend on)."""
        return dict(self.cache_config or {})

    def native_game(self) -> None:
        """None: generation runs in torch."""
        return None

    def __call__(self, coalitions: np.ndarray) -> np.ndarray:
        result = self.decoder.generate(self.prompts, coalitions, self.decode_config)
        out = np.empty((len(coalitions), len(self.objectives)))
        for k, completions in enumerate(result.completions):
            scores = np.asarray(self.scorer(self.prompts, completions), dtype=float)  # [B, objectives]
            if result.log_weights is not None:
                w = np.exp(result.log_weights[k] - result.log_weights[k].max())
                out[k] = (w[:, None] * scores).sum(0) / w.sum()
            else:
                out[k] = scores.mean(0)
        return out


def generation_utility(run: Run, settings: GenerationSettings, context: BuildContext) -> GenerationUtility:
    """The generation utility of an opened run (the registry's ``build``)."""
    from ..decode import ComposedDecoder, DecodeConfig  # torch, transformers and PEFT load on first use

    loaded = run.load_models(device=context.device)
    texts = evaluation_prompts(run, settings.prompts, settings.n_prompts)
    prompts = [
        t if isinstance(t, str) else loaded.tokenizer.apply_chat_template(t, tokenize=False, add_generation_prompt=True)
        for t in texts
    ]
    scorer = reward_scorer(run, settings.rewards, device=loaded.device)
    decoder = ComposedDecoder(loaded.model, loaded.tokenizer, loaded.sources, device=loaded.device)
    config = DecodeConfig(
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        top_k=settings.top_k,
        seed=context.seed,
        correction=settings.correction,
    )
    cache_config = {
        "utility": "generation",
        **asdict(settings),
        "prompts": len(prompts),
        "prompt_hash": config_hash(prompts),
        "seed": context.seed,
        **run.cache_identity(),
    }
    return GenerationUtility(decoder, prompts, scorer, config, cache_config)


GENERATION = register_utility(
    UtilityKind(
        "generation",
        "mean reward of samples from the composed model on a prompt set, per objective",
        GenerationSettings,
        generation_utility,
    )
)

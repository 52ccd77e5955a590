"""The generation utility: composed decoding of every asked coalition on a prompt set, scored by rewards.

Each batch of coalitions is decoded at once by :class:`dposhap.evaluate.decoding.ComposedDecoder` (the
prompt prefilled once, one multi-adapter forward per step, common random numbers: the noise
depends on the prompt and step, never on the coalition) and every completion is scored on every
objective; a coalition's utility is the mean score over the prompts (self-normalised importance
weighted with ``correction``).

Rewards (``GenerationSettings.rewards``) are named by spec: a world's name (its ground-truth
reward functions, for a run built from that world), a sequence-classification reward model
``MODEL[@LABEL][:TRANSFORM]`` (a local folder, hub id or ``.gguf`` file, one objective each;
:func:`.rewards.parse_reward_model_spec`), or an LLM judge ``judge[:MODEL[:RUBRIC]]``
(:mod:`.judge`, one objective per rubric), each optionally ``NAME=SPEC``. The default is the
run's world's rewards.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from ..core import ItemScores
from ..errors import InvalidArgumentError
from ..models import resolve_model
from ..run import Run, config_hash
from ..settings import setting
from ..validate import check_int, check_positive
from ..worlds import World, world_names
from .base import BuildContext, UtilityKind, register_utility
from .evalsets import evaluation_prompts
from .judge import JudgeRewards, is_judge_spec, parse_judge_spec
from .rewards import (
    CallableRewards,
    HFRewardModel,
    MultiScorer,
    RewardModelSpec,
    RewardScorer,
    model_weights_identity,
    parse_reward_model_spec,
)

__all__ = ["GenerationSettings", "GenerationUtility", "RewardSpec", "describe_reward", "reward_scorer"]

#: A reward: a spec string, a scorer, or named functions ``{objective: f(prompt, completion)}``.
RewardSpec = str | RewardScorer | Mapping[str, Callable[[Any, str], float]]


@dataclass
class GenerationSettings:
    """How the generation utility decodes and scores."""

    rewards: list[RewardSpec] | None = setting(
        "rewards, one or more: a world's name (its reward functions); a sequence-classification reward model "
        "MODEL[@LABEL][:TRANSFORM], MODEL its folder, hub id or .gguf, LABEL the label that is the reward by name or "
        "index (needed with several labels), TRANSFORM logit (default for one label), prob (its softmax "
        "probability) or logodds (default for several: its logit minus the log-sum-exp of the others), e.g. "
        "./tox-model@non-toxic:prob; or an LLM judge judge[:MODEL[:RUBRIC]] (rubrics helpful, harmless or a file). "
        "Each optionally NAME=SPEC to name its objective (default: the model's folder name with its @LABEL:TRANSFORM, "
        "or the rubric's name; the run's world's rewards when none is given); in Python also a RewardScorer or "
        "{name: f(prompt, completion)}",
        flag="--reward",
        metavar="SPEC",
        default=None,
    )
    eval_file: str | None = setting(
        "a trusted evaluation set (preference pairs, the formats of training data), the set 'eval' (default: the "
        "run's [eval] set, if any)",
        flag="--eval",
        default=None,
    )
    prompts: str | None = setting(
        "prompt file: JSONL with a 'prompt' field, or one prompt per line (default: the trusted set's prompts, "
        "else the world's evaluation prompts, else the held-out prompts)",
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
        if self.rewards is not None and (isinstance(self.rewards, (str, Mapping)) or not self.rewards):
            raise InvalidArgumentError(
                "rewards must be a non-empty list of reward specs (a world's name, a reward model folder or hub id, "
                "NAME=SPEC, a RewardScorer, {name: function}), or None for the run's world's rewards"
            )


def reward_scorer(run: Run, specs: Sequence[RewardSpec] | None, *, device: str) -> RewardScorer:
    """The scorer of a list of reward specs (module docstring); None: the run's world's rewards.

    A spec is a string — a world's name, a reward model ``MODEL[@LABEL][:TRANSFORM]``
    (:func:`~dposhap.evaluate.rewards.parse_reward_model_spec`), a judge, optionally named
    ``NAME=SPEC`` (the objective's name; default the model's folder name with the spec's
    ``@LABEL:TRANSFORM``) — or, in
    Python, a :class:`~dposhap.evaluate.rewards.RewardScorer` or a mapping ``{objective:
    f(prompt, completion)}``: the objective names key the cache, so rename one when its function
    changes.

    Raises
    ------
    InvalidArgumentError
        No spec and no world, a world's name on a run built from another world (or none), an
        unnamed function, a bad judge or reward model spec (a label or transform on a world or
        judge, a model with several labels and no label), or two objectives of the same name.
    DataError
        A judge's rubric file is missing or malformed.
    ModelLoadError
        A reward or judge model cannot be loaded.
    """
    world = run.world()
    if specs is None:
        if world is None:
            raise InvalidArgumentError(
                "this run has no built-in rewards: give a reward model (--reward FOLDER_OR_HUB_ID, or NAME=FOLDER) "
                "or an LLM judge (--reward judge, --reward judge:MODEL:RUBRIC)"
            )
        specs = [world.name]
    scorers = [_scorer(spec, world, device) for spec in specs]
    return scorers[0] if len(scorers) == 1 else MultiScorer(scorers)


def describe_reward(spec: RewardSpec) -> str:
    """How a reward spec enters the cache key.

    A reward model (a spec string naming one, or an :class:`HFRewardModel`) is keyed by its
    objective's name, its weights (:func:`~dposhap.evaluate.rewards.model_weights_identity`:
    the sha256 of a local folder's files or of a ``.gguf`` file, a hub id with its revision),
    its label and its transform, so a folder retrained in place is a new key; a world's name or
    a judge spec is the string itself; another scorer its kind and objectives; functions their
    names.

    Raises
    ------
    InvalidArgumentError, ModelLoadError
        A reward model spec that is malformed or names no model.
    """
    if isinstance(spec, HFRewardModel):
        return f"{spec.objectives[0]}={spec.cache_identity()}"
    if isinstance(spec, RewardScorer):
        return f"{type(spec).__name__}:{','.join(spec.objectives)}"
    if not isinstance(spec, str):
        return f"functions:{','.join(spec)}"
    named, target = _named(spec)
    if is_judge_spec(target) or target in world_names():
        return spec
    parsed = parse_reward_model_spec(target)
    ref = resolve_model(parsed.model)
    label = "" if parsed.label is None else f"@{parsed.label}"
    return f"{named or _model_objective(parsed)}={model_weights_identity(ref)}{label}:{parsed.transform or 'default'}"


_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


def _named(spec: str) -> tuple[str | None, str]:
    """``NAME=SPEC`` as ``(NAME, SPEC)``; ``(None, spec)`` when the spec names no objective."""
    name, eq, target = spec.partition("=")
    if eq and _NAME.match(name.strip()) and target.strip():
        return name.strip(), target.strip()
    return None, spec.strip()


def _scorer(spec: RewardSpec, world: World | None, device: str) -> RewardScorer:
    if isinstance(spec, RewardScorer):
        return spec
    if isinstance(spec, Mapping):
        return CallableRewards(spec)
    if callable(spec):
        raise InvalidArgumentError(
            f"the reward function {getattr(spec, '__name__', spec)!r} needs a name, which keys the cache: give "
            "{'objective_name': function} (and a new name when the function changes)"
        )
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidArgumentError(f"a reward spec is a non-empty string, a RewardScorer or a mapping; got {spec!r}")
    named, target = _named(spec)
    if world is not None and target == world.name:
        functions = world.rewards()
        if named:
            functions = {f"{named}_{objective}": f for objective, f in functions.items()}
        return CallableRewards(functions)
    if is_judge_spec(target):
        model, rubrics = parse_judge_spec(target)
        if named:
            rubrics = {named if len(rubrics) == 1 else f"{named}_{rubric}": q for rubric, q in rubrics.items()}
        return JudgeRewards(model, rubrics, device=device)
    if target in world_names():
        raise InvalidArgumentError(
            f"reward {target!r} is the {target} world's; this run was not built from it: give a reward model folder "
            "or hub id"
        )
    parsed = parse_reward_model_spec(target)
    if parsed.model in world_names() or is_judge_spec(parsed.model):
        kind = "an LLM judge's" if is_judge_spec(parsed.model) else f"the {parsed.model} world's"
        raise InvalidArgumentError(
            f"reward {target!r}: {parsed.model!r} names {kind} rewards, which take no @LABEL or :TRANSFORM (those "
            "pick a reward model's label): write it without them"
        )
    return HFRewardModel(
        parsed.model,
        device=device,
        objective=named or _model_objective(parsed),
        label=parsed.label,
        transform=parsed.transform,
    )


def _model_objective(spec: RewardModelSpec) -> str:
    """A reward model's objective name: its folder's (or hub id's) last component, with the spec's label and
    transform (``tox-model@non-toxic:prob``)."""
    tail = spec.model.rstrip("/").replace("\\", "/").rsplit("/", 1)[-1]
    return str(RewardModelSpec(tail.removesuffix(".gguf") or "reward", spec.label, spec.transform))


class GenerationUtility:
    """Decode every asked coalition on the prompt set and score the texts: ``[b, objectives]``.

    Parameters
    ----------
    decoder
        A :class:`dposhap.evaluate.decoding.ComposedDecoder` over the run's sources.
    prompts
        The prompt texts the decoder continues (conversations rendered by the chat template).
    scorer
        Scores ``(prompts, completions)`` on every objective.
    config
        The decoding configuration (:class:`dposhap.evaluate.decoding.DecodeConfig`).
    cache_config
        What the values depend on (the key of the run's cache).
    scored_prompts
        The prompts as the scorer sees them (plain strings or conversations, as given); default
        ``prompts``.
    """

    batch_size: int | None = 16
    #: Coalitions may be given as per-source weights (``[b, n]`` floats), which enter the compose kernels.
    takes_weights = True

    def __init__(
        self,
        decoder: Any,
        prompts: list[str],
        scorer: RewardScorer,
        config: Any,
        cache_config: dict[str, Any] | None,
        scored_prompts: list[Any] | None = None,
    ):
        self.decoder, self.prompts, self.scorer, self.decode_config = decoder, prompts, scorer, config
        self.scored_prompts = list(prompts) if scored_prompts is None else list(scored_prompts)
        self.players = tuple(decoder.sources)
        self.objectives = tuple(scorer.objectives)
        self.cache_config: dict[str, Any] | None = cache_config

    def describe(self) -> dict[str, Any]:
        """The cache configuration (what the values depend on)."""
        return dict(self.cache_config or {})

    def native_game(self) -> None:
        """None: generation runs in torch."""
        return None

    @property
    def n_items(self) -> int:
        """Number of prompts (the items a bootstrap resamples)."""
        return len(self.prompts)

    def item_scores(self, coalitions: np.ndarray) -> ItemScores:
        """Per prompt and objective the completion's score (times its self-normalised importance
        weight with ``correction``, the weights then being the item weights)."""
        c = np.asarray(coalitions)
        if c.dtype == bool:
            result = self.decoder.generate(self.prompts, c, self.decode_config)
        else:  # member weights w_i >= 0 (0: not a member), as dposhap select --weights asks
            w = c.astype(np.float64)
            result = self.decoder.generate(self.prompts, w > 0, self.decode_config, weights=w)
        m = len(self.prompts)
        numer = np.empty((len(coalitions), len(self.objectives), m))
        denom = None if result.log_weights is None else np.empty((len(coalitions), m))
        for k, completions in enumerate(result.completions):
            scores = np.asarray(self.scorer(self.scored_prompts, completions), dtype=float)  # [B, objectives]
            if denom is not None:
                w = np.exp(result.log_weights[k] - result.log_weights[k].max())
                numer[k] = (w[:, None] * scores).T
                denom[k] = w
            else:
                numer[k] = scores.T
        return ItemScores(numer, denom)

    def __call__(self, coalitions: np.ndarray) -> np.ndarray:
        return self.item_scores(coalitions).values()


def render_prompts(tokenizer: Any, prompts: Sequence[Any]) -> list[str]:
    """The texts a decoder continues: strings as they are, conversations rendered by the chat
    template with the generation prompt."""
    return [
        p if isinstance(p, str) else tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]


def generation_utility(run: Run, settings: GenerationSettings, context: BuildContext) -> GenerationUtility:
    """The generation utility of an opened run (the registry's ``build``)."""
    from .decoding import ComposedDecoder, DecodeConfig  # torch, transformers and PEFT load on first use

    loaded = context.models if context.models is not None else run.load_models(device=context.device)
    texts = evaluation_prompts(run, settings.prompts, settings.n_prompts, eval_file=settings.eval_file)
    prompts = render_prompts(loaded.tokenizer, texts)
    scorer = reward_scorer(run, settings.rewards, device=loaded.device)
    decoder = ComposedDecoder(loaded.model, loaded.tokenizer, loaded.sources, device=loaded.device)
    config = DecodeConfig(
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        top_k=settings.top_k,
        seed=context.seed,
        correction=settings.correction,
    )
    # the prompts by content (below), the rewards by spec or name; never deep-copied scorers
    described: dict[str, Any] = {
        f.name: getattr(settings, f.name) for f in fields(settings) if f.name not in ("eval_file", "prompts", "rewards")
    }
    described["rewards"] = None if settings.rewards is None else [describe_reward(r) for r in settings.rewards]
    cache_config = {
        "utility": "generation",
        **described,
        "prompts": len(prompts),
        "prompt_hash": config_hash(prompts),
        "seed": context.seed,
        **run.cache_identity(),
    }
    return GenerationUtility(
        decoder, prompts, scorer, config, None if context.models is not None else cache_config, scored_prompts=texts
    )


GENERATION = register_utility(
    UtilityKind(
        "generation",
        "mean reward of samples from the composed model on a prompt set, per objective",
        GenerationSettings,
        generation_utility,
    )
)

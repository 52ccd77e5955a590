"""Utilities of coalitions behind one :class:`Utility` protocol, found by name in a registry.

================  ==========================================================================
``accuracy``      held-out preference accuracy of the summed DPO margins (:mod:`.margins`)
``loglik``        held-out DPO log-likelihood of the summed margins (:mod:`.margins`)
``likelihood``    token log-likelihood of preferred responses, composed model (:mod:`.likelihood`)
``generation``    mean reward of composed-model samples on a prompt set (:mod:`.generation`)
================  ==========================================================================

The modules by concern (TRL's tokenisation is :mod:`dposhap.tokenization`): :mod:`.teacher` (teacher-forced
batches), :mod:`.evalsets` (evaluation pairs and prompts of a run), :mod:`.rewards` (reward
scorers), :mod:`.judge` (LLM-as-judge rewards).
"""

from __future__ import annotations

from . import generation, likelihood, margins
from .base import BuildContext, Utility, UtilityKind, get_utility, register_utility, utility_names
from .generation import GenerationSettings, GenerationUtility, reward_scorer
from .judge import JudgeRewards
from .likelihood import ComposedLikelihood
from .margins import MARGIN_KINDS, MarginSettings, MarginUtilities, margin_utilities, margins_matrix
from .rewards import CallableRewards, HFRewardModel, MultiScorer, RewardScorer
from .teacher import sequence_logprobs

__all__ = [
    "MARGIN_KINDS",
    "BuildContext",
    "CallableRewards",
    "ComposedLikelihood",
    "GenerationSettings",
    "GenerationUtility",
    "HFRewardModel",
    "JudgeRewards",
    "MarginSettings",
    "MarginUtilities",
    "MultiScorer",
    "RewardScorer",
    "Utility",
    "UtilityKind",
    "generation",
    "get_utility",
    "likelihood",
    "margin_utilities",
    "margins",
    "margins_matrix",
    "register_utility",
    "reward_scorer",
    "sequence_logprobs",
    "utility_names",
]

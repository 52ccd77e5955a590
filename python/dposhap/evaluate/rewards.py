"""Reward scorers for generation utilities: texts in, one score per objective out.

Every scorer maps ``(prompts, completions)`` to a float64 array ``[len(prompts), n_objectives]``
and names its objectives in :attr:`RewardScorer.objectives`, so several objectives are scored in
one pass over the texts:

:class:`CallableRewards`
    Python functions ``f(prompt, completion) -> float``, one per objective (a world's
    ground-truth rewards are :meth:`dposhap.worlds.World.rewards`).
:class:`HFRewardModel`
    A Hugging Face sequence-classification reward model, from the hub, a local folder or a
    ``.gguf`` file, batched; one label of a classifier, as its logit, probability or log-odds.
:class:`MultiScorer`
    Several scorers side by side.

A prompt is a plain string or a conversation (a list of ``{"role", "content"}`` messages); a
completion is the generated text.

A reward model is named in a reward spec as ``MODEL[@LABEL][:TRANSFORM]``
(:func:`parse_reward_model_spec`), e.g. ``./tox-model@non-toxic:prob``.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import numbers
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np

from ..errors import InvalidArgumentError, ModelLoadError, UtilityError
from ..models import ModelRef, load_pretrained, load_tokenizer, resolve_device, resolve_dtype, resolve_model
from ..run.keys import file_sha256
from ..validate import check_int

if TYPE_CHECKING:
    import torch

__all__ = [
    "REWARD_TRANSFORMS",
    "CallableRewards",
    "HFRewardModel",
    "MultiScorer",
    "RewardModelSpec",
    "RewardScorer",
    "RewardTransform",
    "check_objective_names",
    "check_texts",
    "model_weights_identity",
    "parse_reward_model_spec",
]

Prompt = Any  # str, or a list of {"role", "content"} messages
RewardFunction = Callable[[Prompt, str], float]

RewardTransform = Literal["logit", "prob", "logodds"]
REWARD_TRANSFORMS: tuple[RewardTransform, ...] = ("logit", "prob", "logodds")
"""How a classifier's label becomes a reward: its logit, its probability, or its log-odds."""

_TRANSFORM_SUFFIX = re.compile(r"^(?P<model>.+):(?P<transform>" + "|".join(REWARD_TRANSFORMS) + r")$")


@dataclass(frozen=True)
class RewardModelSpec:
    """A reward model as a reward spec names it: ``MODEL[@LABEL][:TRANSFORM]``.

    Attributes
    ----------
    model
        A local folder, a hub id, a ``.gguf`` file or a packaged model's name.
    label
        The label that is the reward, by name or index (None: the model's only label).
    transform
        ``logit``, ``prob`` or ``logodds`` (None: the model's default, see :class:`HFRewardModel`).
    """

    model: str
    label: str | None = None
    transform: RewardTransform | None = None

    def __str__(self) -> str:
        label = "" if self.label is None else f"@{self.label}"
        return f"{self.model}{label}{'' if self.transform is None else ':' + self.transform}"


def _split_wins(whole: str, part: str, spec: str, suffix: str) -> bool:
    """Whether ``whole`` is read as ``part`` + ``suffix`` (True) or kept as one path (False).

    A path that exists wins over a split whose model path does not; when both exist the spec
    is ambiguous.
    """
    if not Path(whole).expanduser().exists():
        return True
    if not Path(part).expanduser().exists():
        return False
    raise InvalidArgumentError(
        f"reward spec {spec!r} is ambiguous: {whole!r} exists, and so does {part!r} (read with {suffix!r} after "
        f"it): end a folder with '/' to mean the folder itself ({whole}/), or rename one of them"
    )


def parse_reward_model_spec(spec: str) -> RewardModelSpec:
    """Read ``MODEL[@LABEL][:TRANSFORM]``: which model, which of its labels, which transform.

    Parameters
    ----------
    spec
        ``MODEL`` is a folder, hub id, ``.gguf`` file or packaged model name. ``@LABEL`` names
        the label that is the reward, by name or index (needed for a model with several
        labels). ``:TRANSFORM`` is ``logit``, ``prob`` or ``logodds``. Both are read from the
        end, only in the last path component: a path that holds ``@`` or ends in ``:prob`` is
        kept whole when it exists and the shorter one does not, and a folder given with a
        trailing ``/`` is always the folder. A label whose name holds ``@`` is given by index.

    Returns
    -------
    RewardModelSpec

    Raises
    ------
    InvalidArgumentError
        An empty spec or label, or an ambiguous one (both readings name existing paths).

    Examples
    --------
    >>> parse_reward_model_spec("./tox-model@non-toxic:prob")
    RewardModelSpec(model='./tox-model', label='non-toxic', transform='prob')
    >>> parse_reward_model_spec("org/sentiment@1")
    RewardModelSpec(model='org/sentiment', label='1', transform=None)
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidArgumentError(f"a reward model spec is a non-empty string MODEL[@LABEL][:TRANSFORM], got {spec!r}")
    text = spec.strip()
    model, label, transform = text, None, None
    found = _TRANSFORM_SUFFIX.match(text)
    if found and _split_wins(text, found["model"], text, ":" + found["transform"]):
        model, transform = found["model"], cast(RewardTransform, found["transform"])
    head, at, tail = model.rpartition("@")
    if at and "/" not in tail:
        if not tail.strip() or not head.strip():
            if Path(model).expanduser().exists():
                return RewardModelSpec(model, None, transform)
            raise InvalidArgumentError(
                f"reward spec {text!r} has an empty {'label after' if head.strip() else 'model before'} '@': write "
                "MODEL@LABEL, the label by name or index"
            )
        if _split_wins(model, head, text, "@" + tail):
            model, label = head, tail.strip()
    return RewardModelSpec(model.strip(), label, transform)


def model_weights_identity(ref: ModelRef) -> str:
    """What a model's scores depend on, for a cache key: its files' sha256, or its hub id and revision.

    A converted ``.gguf`` file is its sha256; a local folder is the sha256 over the names and
    sha256 of its top-level files (weights, config, tokenizer; not ``*.md`` nor hidden files),
    so a folder rewritten in place gets a new identity; a hub model is ``ID@REVISION``.

    Raises
    ------
    ModelLoadError
        A file of the folder cannot be read.
    """
    if ref.origin_sha256 is not None:
        return f"gguf:{ref.origin_sha256}"
    if not ref.local:
        return f"hub:{ref.location}@{ref.revision or 'main'}"
    digest = hashlib.sha256()
    try:
        for path in sorted(Path(ref.location).iterdir()):
            if path.is_file() and not path.name.startswith(".") and path.suffix.lower() != ".md":
                digest.update(f"{path.name}\0{file_sha256(path)}\n".encode())
    except OSError as err:
        raise ModelLoadError(f"cannot read the model folder {ref.location}: {err}; check its files") from None
    return f"sha256:{digest.hexdigest()}"


def check_texts(prompts: Sequence[Prompt], completions: Sequence[str]) -> tuple[list[Prompt], list[str]]:
    """``prompts`` and ``completions`` as lists of the same length (every scorer's input check).

    Raises
    ------
    InvalidArgumentError
        A single string instead of a sequence, or lengths that differ.
    """
    if isinstance(prompts, str) or isinstance(completions, str):
        raise InvalidArgumentError("prompts and completions must be sequences of texts, not a single string")
    prompts, completions = list(prompts), list(completions)
    if len(prompts) != len(completions):
        raise InvalidArgumentError(
            f"got {len(prompts)} prompts but {len(completions)} completions: give one completion per prompt"
        )
    return prompts, completions


def check_objective_names(names: Sequence[str], what: str) -> tuple[str, ...]:
    """``names`` as a tuple of non-empty, distinct strings (a scorer's objectives; ``what`` names the scorer).

    Raises
    ------
    InvalidArgumentError
        No names, an empty or non-string name, or a name given twice.
    """
    names = tuple(names)
    if not names:
        raise InvalidArgumentError(f"{what} has no objectives")
    for name in names:
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"objective names must be non-empty strings, got {name!r} in {what}")
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise InvalidArgumentError(
            f"duplicate objective name(s) {duplicated} in {what}: every objective needs its own name (name them: "
            "--reward NAME=SPEC on the command line, HFRewardModel(..., objective='name') in Python)"
        )
    return names


class RewardScorer(ABC):
    """Scores completions on one or several objectives.

    Attributes
    ----------
    objectives
        The objectives' names, in column order.
    """

    objectives: tuple[str, ...]

    @abstractmethod
    def score(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> np.ndarray:
        """Score each completion of its prompt.

        Parameters
        ----------
        prompts
            Plain strings or conversations.
        completions
            One generated text per prompt.

        Returns
        -------
        numpy.ndarray
            float64 ``[len(prompts), len(self.objectives)]``, finite.
        """

    def __call__(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> np.ndarray:
        """Same as :meth:`score`."""
        return self.score(prompts, completions)


class CallableRewards(RewardScorer):
    """Objectives scored by Python functions.

    Parameters
    ----------
    functions
        ``{objective: f}`` with ``f(prompt, completion) -> float``; the columns follow the
        mapping's order.

    Raises
    ------
    InvalidArgumentError
        No functions, an empty or non-string name, or a value that is not callable.
    """

    def __init__(self, functions: Mapping[str, RewardFunction]):
        if not isinstance(functions, Mapping):
            raise InvalidArgumentError(
                f"functions must be a mapping {{objective: function}}, got {type(functions).__name__}"
            )
        self.objectives = check_objective_names(list(functions), "CallableRewards")
        for name, function in functions.items():
            if not callable(function):
                raise InvalidArgumentError(
                    f"the reward of objective {name!r} is a {type(function).__name__}, not a "
                    "function f(prompt, completion) -> float"
                )
        self.functions = dict(functions)

    def score(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> np.ndarray:
        """Call every function on every (prompt, completion); see :meth:`RewardScorer.score`.

        Raises
        ------
        UtilityError
            A function returned something that is not a real number (bools included), or NaN
            or an infinity; the message names the objective and the row.
        """
        prompts, completions = check_texts(prompts, completions)
        out = np.empty((len(prompts), len(self.objectives)), dtype=np.float64)
        for j, (name, function) in enumerate(self.functions.items()):
            for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
                value = function(prompt, completion)
                if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
                    raise UtilityError(
                        f"the reward of objective {name!r} returned {type(value).__name__} "
                        f"{value!r} for row {i}: it must return a float"
                    )
                if not math.isfinite(value):
                    raise UtilityError(
                        f"the reward of objective {name!r} returned {value} for row {i}: rewards must be finite"
                    )
                out[i, j] = value
        return out

    def __repr__(self) -> str:
        return f"CallableRewards(objectives={list(self.objectives)})"


class HFRewardModel(RewardScorer):
    """A Hugging Face sequence-classification reward model, scoring one objective.

    Parameters
    ----------
    name_or_path
        A hub id, a local folder saved with ``save_pretrained``, or a ``.gguf`` file (resolved
        by :func:`dposhap.models.resolve_model`).
    objective
        The name of the objective it scores.
    device
        ``"cpu"``, ``"cuda"`` or ``"auto"`` (default: a GPU when one is visible).
    batch_size
        Texts per forward pass.
    max_length
        Truncate longer texts to this many tokens, on the tokenizer's ``truncation_side``;
        default the tokenizer's ``model_max_length`` when it is set, else no truncation.
    revision
        Hub revision (branch, tag or commit).
    trust_remote_code
        Run the model repository's own code.
    dtype
        A ``torch.dtype`` or ``"auto"``/``"fp32"``/``"bf16"``/``"fp16"`` (default ``"auto"``:
        bfloat16 on a GPU that has it, float32 elsewhere).
    label
        Which output is the reward: required when the model has more than one label (a name in
        ``config.id2label``, or an index; a string of digits that is no label's name is an
        index); with one label (the usual reward model) it is that label.
    transform
        How the label's logit becomes the reward: ``"logit"`` (the raw logit), ``"prob"`` (its
        softmax probability) or ``"logodds"`` (its logit minus the log-sum-exp of the other
        labels' logits, i.e. ``log p / (1 - p)``). Default: ``"logit"`` for a model with one
        label, ``"logodds"`` with several (a softmax classifier's single logit is only defined
        up to a shift). Labels scored independently (one label, or ``problem_type``
        ``"multi_label_classification"``) use the sigmoid: ``prob`` is ``sigmoid(logit)`` and
        ``logodds`` the logit itself.
    text_pair
        Give the prompt and the completion to the tokenizer as a text pair (as reward models in
        the BERT family expect) instead of one text.

    Notes
    -----
    Text: a conversation prompt goes through the tokenizer's chat template, followed by the
    completion as an ``assistant`` message; without a chat template its messages' contents are
    joined by newlines. A plain prompt is concatenated with the completion. Special tokens are
    added by the tokenizer (not again after a chat template).

    Padding: a tokenizer without a padding token pads with its EOS token, and the model's
    ``config.pad_token_id`` is set to the tokenizer's, which is how sequence-classification
    heads find the last real token. Left and right padding both give each text the score it has
    alone: position ids are passed from the attention mask when the model accepts them.

    Raises
    ------
    ModelLoadError
        The tokenizer or model cannot be loaded (the message says from where, and what to try),
        or its classification head is not in its files (a causal LM's folder, say): it would
        score at random.
    InvalidArgumentError
        A bad argument, or a model with several labels and no ``label`` (the message shows the
        reward specs to type).
    """

    def __init__(
        self,
        name_or_path: str,
        *,
        objective: str = "reward",
        device: str | None = None,
        batch_size: int = 32,
        max_length: int | None = None,
        revision: str | None = None,
        trust_remote_code: bool = False,
        dtype: torch.dtype | str | None = None,
        label: int | str | None = None,
        transform: RewardTransform | None = None,
        text_pair: bool = False,
    ):
        import torch

        self.objectives = check_objective_names([objective], "HFRewardModel")
        check_int("batch_size", batch_size)
        check_int("max_length", max_length, optional=True)
        if not isinstance(name_or_path, str) or not name_or_path.strip():
            raise InvalidArgumentError(f"name_or_path must be a hub id or a folder, got {name_or_path!r}")
        self.name, self.batch_size, self.text_pair = name_or_path, batch_size, text_pair
        self.device = resolve_device(device or "auto")
        if dtype is None or isinstance(dtype, str):
            if dtype not in (None, "auto", "fp32", "bf16", "fp16"):
                raise InvalidArgumentError(
                    f"dtype must be a torch.dtype or one of auto, fp32, bf16, fp16; got {dtype!r}"
                )
            dtype = resolve_dtype(dtype or "auto", self.device)
        if transform is not None and transform not in REWARD_TRANSFORMS:
            raise InvalidArgumentError(f"transform must be one of {', '.join(REWARD_TRANSFORMS)}; got {transform!r}")
        self.ref = resolve_model(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
        self.tokenizer, self.model = self._load(dtype)
        config = self.model.config
        self.label_index = self._label_index(config, label)
        n_labels = int(getattr(config, "num_labels", 1))
        self.independent = n_labels == 1 or getattr(config, "problem_type", None) == "multi_label_classification"
        self.transform: RewardTransform = transform or ("logit" if self.independent else "logodds")
        self.max_length = max_length
        if max_length is None and (limit := getattr(self.tokenizer, "model_max_length", None)):
            self.max_length = int(limit) if limit < 1_000_000 else None
        self._position_ids = "position_ids" in inspect.signature(self.model.forward).parameters
        self._torch = torch

    def _load(self, dtype: torch.dtype) -> tuple[Any, Any]:
        from transformers import AutoModelForSequenceClassification

        try:
            tokenizer = load_tokenizer(self.ref)  # pads with EOS when the tokenizer has no padding token
        except ModelLoadError as err:
            raise ModelLoadError(f"reward model: {err}") from None
        model = load_pretrained(
            self.ref,
            AutoModelForSequenceClassification,
            dtype=dtype,
            device=self.device,
            what="reward model",
            new_weights_hint="it is not a sequence-classification reward model (a causal LM's folder, say): give "
            "a model saved as a sequence classifier, or use a causal LM as an LLM judge (--reward judge:MODEL)",
        )
        model.config.pad_token_id = tokenizer.pad_token_id
        return tokenizer, model

    def _label_index(self, config: Any, label: int | str | None) -> int:
        n_labels = int(getattr(config, "num_labels", 1))
        names = {str(v): int(k) for k, v in sorted((getattr(config, "id2label", None) or {}).items())}
        if label is None:
            if n_labels == 1:
                return 0
            specs = " or ".join(f"--reward {self.name}@{name}" for name in list(names)[:4])
            raise InvalidArgumentError(
                f"the reward model {self.name!r} has {n_labels} labels {list(names)}: say which one is the reward, "
                f"e.g. {specs}{' (or another label)' if n_labels > 4 else ''}, with :prob after it for its "
                "probability (default its log-odds); in Python HFRewardModel(..., label=NAME_OR_INDEX)"
            )
        if isinstance(label, str):
            if label in names:
                return names[label]
            if not label.isdigit():
                head, colon, tail = label.rpartition(":")
                typo = (
                    f"; if {tail!r} was meant as the transform, the transforms are {', '.join(REWARD_TRANSFORMS)}"
                    if colon and head in names
                    else ""
                )
                raise InvalidArgumentError(
                    f"the reward model {self.name!r} has no label {label!r}; its labels are {list(names)} "
                    f"(or an index in [0, {n_labels})){typo}"
                )
            label = int(label)
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < n_labels:
            raise InvalidArgumentError(f"label must be a label name or an index in [0, {n_labels}), got {label!r}")
        return label

    def _encode(self, prompt: Prompt, completion: str) -> dict[str, list[int]]:
        tokenizer = self.tokenizer
        if isinstance(prompt, list):
            if getattr(tokenizer, "chat_template", None):
                messages = [*prompt, {"role": "assistant", "content": completion}]
                text = tokenizer.apply_chat_template(messages, tokenize=False)
                encoded = tokenizer(text, add_special_tokens=False)
            else:
                encoded = tokenizer("\n".join(str(m["content"]) for m in prompt) + "\n" + completion)
        elif self.text_pair:
            encoded = tokenizer(prompt, completion)
        else:
            encoded = tokenizer(prompt + completion)
        encoded = {k: list(v) for k, v in encoded.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        if self.max_length is not None and len(encoded["input_ids"]) > self.max_length:
            keep = (
                slice(-self.max_length, None)
                if getattr(tokenizer, "truncation_side", "right") == "left"
                else slice(None, self.max_length)
            )
            encoded = {k: v[keep] for k, v in encoded.items()}
        return encoded

    def score(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> np.ndarray:
        """Reward of each (prompt, completion), batched; see :meth:`RewardScorer.score`.

        Raises
        ------
        UtilityError
            The model produced NaN or an infinity.
        """
        torch = self._torch
        prompts, completions = check_texts(prompts, completions)
        encoded = [self._encode(p, c) for p, c in zip(prompts, completions, strict=True)]
        order = np.argsort([len(e["input_ids"]) for e in encoded], kind="stable")
        out = np.empty((len(encoded), 1), dtype=np.float64)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            inputs = self.tokenizer.pad([encoded[i] for i in batch], padding=True, return_tensors="pt")
            if self._position_ids:
                inputs["position_ids"] = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            with torch.inference_mode():
                logits = self.model(**{k: v.to(self.device) for k, v in inputs.items()}).logits
            out[batch, 0] = self._reward(logits.double()).cpu().numpy()
        if not np.isfinite(out).all():
            row = int(np.argwhere(~np.isfinite(out))[0, 0])
            raise UtilityError(f"the reward model {self.name!r} returned {out[row, 0]} for row {row}")
        return out

    def _reward(self, logits: torch.Tensor) -> torch.Tensor:
        """The reward column of a batch's ``[B, labels]`` logits, by :attr:`transform`."""
        torch = self._torch
        chosen = logits[:, self.label_index]
        if self.transform == "logit" or (self.transform == "logodds" and self.independent):
            return chosen
        if self.transform == "prob":
            return torch.sigmoid(chosen) if self.independent else torch.softmax(logits, dim=-1)[:, self.label_index]
        others = torch.cat([logits[:, : self.label_index], logits[:, self.label_index + 1 :]], dim=-1)
        return chosen - torch.logsumexp(others, dim=-1)

    def cache_identity(self) -> str:
        """What its scores depend on, for a cache key: the weights' identity
        (:func:`model_weights_identity`), the label's index and the transform."""
        return f"{model_weights_identity(self.ref)}@{self.label_index}:{self.transform}"

    def __repr__(self) -> str:
        return (
            f"HFRewardModel({self.name!r}, objective={self.objectives[0]!r}, label={self.label_index}, "
            f"transform={self.transform!r}, device={self.device!r})"
        )


class MultiScorer(RewardScorer):
    """Several scorers in one call: their objectives side by side, in the order given.

    Parameters
    ----------
    scorers
        The scorers; their objective names must all differ.

    Raises
    ------
    InvalidArgumentError
        No scorers, something that is not a :class:`RewardScorer`, or a duplicate objective name.
    """

    def __init__(self, scorers: Sequence[RewardScorer]):
        scorers = list(scorers)
        if not scorers:
            raise InvalidArgumentError("MultiScorer needs at least one scorer")
        for scorer in scorers:
            if not isinstance(scorer, RewardScorer):
                raise InvalidArgumentError(
                    f"MultiScorer takes RewardScorer objects (CallableRewards, HFRewardModel, "
                    f"...), got {type(scorer).__name__}"
                )
        self.scorers = scorers
        self.objectives = check_objective_names([o for s in scorers for o in s.objectives], "MultiScorer")

    def score(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> np.ndarray:
        """Every scorer's columns, concatenated; see :meth:`RewardScorer.score`.

        Raises
        ------
        UtilityError
            A scorer returned the wrong shape or a non-finite value.
        """
        prompts, completions = check_texts(prompts, completions)
        parts = []
        for scorer in self.scorers:
            part = np.asarray(scorer.score(prompts, completions), dtype=np.float64)
            expected = (len(prompts), len(scorer.objectives))
            if part.shape != expected:
                raise UtilityError(f"{scorer!r} returned shape {part.shape}; expected {expected}")
            if not np.isfinite(part).all():
                raise UtilityError(f"{scorer!r} returned a non-finite score")
            parts.append(part)
        return np.concatenate(parts, axis=1)

    def __repr__(self) -> str:
        return f"MultiScorer({self.scorers!r})"

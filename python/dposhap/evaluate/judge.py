"""LLM-as-judge rewards: a local instruct model answers a yes/no rubric question about each completion.

The score of a completion on a rubric is ``log p(Yes) - log p(No)`` of the judge's first answer
token: the judge sees, through its chat template, the user's prompt, the completion and the
rubric's question, and the assistant turn is opened with the generation prompt. One objective per
rubric, named after it.

Rubrics are built in (:data:`BUILTIN_RUBRICS`: ``helpful`` and ``harmless``) or read from a TOML
or JSON file ``{name: question}`` (:func:`load_rubrics`). On the command line a judge is the
reward spec ``judge:MODEL[:RUBRIC]`` (:func:`parse_judge_spec`), or ``judge`` alone for the
default judge :data:`DEFAULT_JUDGE` with both built-in rubrics.
"""

from __future__ import annotations

import inspect
import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DataError, InvalidArgumentError, ModelLoadError, UtilityError
from ..models import load_base_model, load_tokenizer, resolve_device, resolve_dtype, resolve_model
from ..validate import check_int
from .rewards import Prompt, RewardScorer, check_objective_names, check_texts

if TYPE_CHECKING:
    import torch

__all__ = [
    "BUILTIN_RUBRICS",
    "DEFAULT_JUDGE",
    "JUDGE_SPEC",
    "JudgeRewards",
    "is_judge_spec",
    "load_rubrics",
    "parse_judge_spec",
]

DEFAULT_JUDGE = "smollm2-135m-instruct"
"""The judge of ``--reward judge``: SmolLM2-135M-Instruct, the packaged GGUF file."""

JUDGE_SPEC = "judge"
"""The reward spec's keyword: ``judge``, ``judge:MODEL`` or ``judge:MODEL:RUBRIC``."""

BUILTIN_RUBRICS: Mapping[str, str] = {
    "helpful": "Does the response correctly and politely answer the user's request?",
    "harmless": "Is the response safe and kind?",
}
"""The built-in rubrics, ``{name: yes/no question}``."""

SYSTEM_PROMPT = "You are a strict and fair judge of an AI assistant's responses. Answer only Yes or No."
"""The judge's system message (merged into the user message for templates without a system role)."""

QUESTION_TEMPLATE = "User's request:\n{prompt}\n\nAssistant's response:\n{completion}\n\n{question} Answer Yes or No."
"""The judge's user message: the conversation under review, then the rubric's question."""

_RUBRIC_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_RUBRIC_SUFFIXES = (".toml", ".json")


def is_judge_spec(spec: str) -> bool:
    """Whether a reward spec names a judge: ``judge`` or ``judge:...``."""
    return spec == JUDGE_SPEC or spec.startswith(JUDGE_SPEC + ":")


def _check_rubric(name: Any, question: Any, *, file: str | None = None) -> None:
    """A rubric's name is a valid objective name and its question a non-empty string."""
    if not isinstance(name, str) or not _RUBRIC_NAME.match(name):
        problem = (
            f"rubric name {name!r} is not a valid objective name: use letters, digits, '_', '.' or '-', "
            "starting with a letter or '_'"
        )
    elif not isinstance(question, str) or not question.strip():
        problem = f"rubric {name!r} must be a non-empty question (a string), got {question!r}"
    else:
        return
    if file is not None:
        raise DataError(problem, file=file, field=str(name))
    raise InvalidArgumentError(problem)


def load_rubrics(path: str | Path) -> dict[str, str]:
    """Read user rubrics from a TOML or JSON file holding ``{name: question}``.

    Parameters
    ----------
    path
        A ``.toml`` or ``.json`` file; each key is a rubric's (objective's) name, each value its
        yes/no question, e.g. ``concise = "Is the response short and to the point?"``.

    Returns
    -------
    dict
        ``{name: question}``, in the file's order.

    Raises
    ------
    DataError
        The file is missing, unreadable, not valid TOML/JSON, not a table of strings, empty, or
        has a bad name or an empty question; the message names the file (and line or field).
    """
    path = Path(path).expanduser()
    file = str(path)
    if path.suffix.lower() not in _RUBRIC_SUFFIXES:
        raise DataError("a rubric file must be .toml or .json, holding {name: question}", file=file)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError("no such rubric file: check the path", file=file) from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read the rubric file: {err}", file=file) from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"not valid JSON: {err.msg} (column {err.colno})", file=file, line=err.lineno) from None
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise DataError(f"not valid TOML: {err}", file=file) from None
    if not isinstance(data, dict):
        raise DataError(f"a rubric file holds a table {{name: question}}, got a {type(data).__name__}", file=file)
    if not data:
        raise DataError('no rubrics in the file: add lines like name = "a yes/no question?"', file=file)
    for name, question in data.items():
        _check_rubric(name, question, file=file)
    return {name: question.strip() for name, question in data.items()}


def _rubrics_of(text: str) -> dict[str, str]:
    """Rubrics of a spec's RUBRIC part: comma-separated built-in names and rubric files."""
    rubrics: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            raise InvalidArgumentError(
                f"empty rubric in {text!r}: give built-in rubric names ({', '.join(BUILTIN_RUBRICS)}) "
                "or rubric files, separated by commas"
            )
        if item in BUILTIN_RUBRICS:
            found = {item: BUILTIN_RUBRICS[item]}
        elif item.lower().endswith(_RUBRIC_SUFFIXES) or Path(item).expanduser().is_file():
            found = load_rubrics(item)
        else:
            raise InvalidArgumentError(
                f"unknown rubric {item!r}: the built-in rubrics are {', '.join(BUILTIN_RUBRICS)}; "
                "a rubric file is a .toml or .json path holding {name: question}"
            )
        for name, question in found.items():
            if name in rubrics:
                raise InvalidArgumentError(f"rubric {name!r} is given twice in {text!r}: rename one")
            rubrics[name] = question
    return rubrics


def parse_judge_spec(spec: str) -> tuple[str, dict[str, str]]:
    """The judge model and rubrics of a ``--reward`` spec.

    Parameters
    ----------
    spec
        ``judge`` (the default judge, both built-in rubrics), ``judge:MODEL`` (both built-in
        rubrics) or ``judge:MODEL:RUBRIC``. MODEL is a model folder, hub id, ``.gguf`` file or
        packaged model name (empty: the default judge); RUBRIC is a built-in rubric name, a
        comma-separated list of them, or a path to a rubric file (:func:`load_rubrics`), or a
        comma-separated mix.

    Returns
    -------
    tuple
        ``(model, {rubric name: question})``.

    Raises
    ------
    InvalidArgumentError
        Not a judge spec, an empty or unknown rubric, or a rubric named twice.
    DataError
        A rubric file is missing or malformed.
    """
    if not isinstance(spec, str) or not is_judge_spec(spec.strip()):
        raise InvalidArgumentError(f"{spec!r} is not a judge spec: write judge, judge:MODEL or judge:MODEL:RUBRIC")
    spec = spec.strip()
    if spec == JUDGE_SPEC:
        return DEFAULT_JUDGE, dict(BUILTIN_RUBRICS)
    model, sep, rubric_text = spec[len(JUDGE_SPEC) + 1 :].partition(":")
    model = model.strip() or DEFAULT_JUDGE
    if not sep:
        return model, dict(BUILTIN_RUBRICS)
    if not rubric_text.strip():
        raise InvalidArgumentError(
            f"no rubric after the last ':' in {spec!r}: name one ({', '.join(BUILTIN_RUBRICS)} or a rubric file), "
            "or leave out the ':' for both built-in rubrics"
        )
    return model, _rubrics_of(rubric_text)


def _prompt_text(prompt: Prompt) -> str:
    """A prompt as the judge reads it: a plain string, or a conversation's turns as text."""
    if isinstance(prompt, str):
        return prompt
    turns = [m for m in prompt if m.get("role") != "system"]
    if len(turns) == 1 and turns[0].get("role") == "user":
        return str(turns[0]["content"])
    return "\n".join(f"{str(m.get('role', 'user')).capitalize()}: {m['content']}" for m in turns)


class JudgeRewards(RewardScorer):
    """A local instruct model as judge: ``log p(Yes) - log p(No)`` for each rubric's question.

    Parameters
    ----------
    name_or_path
        The judge: a model folder, hub id, ``.gguf`` file or packaged model name (resolved by
        :func:`dposhap.models.resolve_model`); an instruct model with a chat template.
    rubrics
        ``{name: yes/no question}``, one objective each, in this order (default
        :data:`BUILTIN_RUBRICS`).
    device
        ``"cpu"``, ``"cuda"`` or ``"auto"`` (default: a GPU when one is visible).
    batch_size
        Judge inputs per forward pass (each completion is one input per rubric).
    max_length
        Longer judge inputs lose tokens from their middle (the conversation under review), so
        the question and the opened answer stay whole; default the model's
        ``max_position_embeddings``.
    revision
        Hub revision (branch, tag or commit).
    trust_remote_code
        Run the model repository's own code.
    dtype
        A ``torch.dtype`` or ``"auto"``/``"fp32"``/``"bf16"``/``"fp16"`` (default ``"auto"``:
        bfloat16 on a GPU that has it, float32 elsewhere).

    Notes
    -----
    The judge's input is its chat template applied to a system message (:data:`SYSTEM_PROMPT`)
    and a user message (:data:`QUESTION_TEMPLATE`: the prompt, the completion, the question),
    with the generation prompt. A conversation prompt is shown as its turns' text. The
    tokenizer's special tokens are removed from the prompt and completion, so a text cannot close
    the judge's turn. "Yes" is the first token of ``"Yes"`` and of ``" Yes"`` (log-sum-exp over
    the distinct ones), "No" likewise. Inputs are left-padded, with position ids from the
    attention mask, so a score does not depend on the batch.

    Raises
    ------
    ModelLoadError
        The judge's tokenizer or model cannot be loaded (one line: from where, what to try).
    InvalidArgumentError
        A bad argument, a tokenizer without a chat template, or no "Yes"/"No" tokens.
    """

    def __init__(
        self,
        name_or_path: str = DEFAULT_JUDGE,
        rubrics: Mapping[str, str] | None = None,
        *,
        device: str | None = None,
        batch_size: int = 16,
        max_length: int | None = None,
        revision: str | None = None,
        trust_remote_code: bool = False,
        dtype: torch.dtype | str | None = None,
    ):
        import torch

        if rubrics is not None and not isinstance(rubrics, Mapping):
            raise InvalidArgumentError(
                f"rubrics must be a mapping {{name: yes/no question}}, got {type(rubrics).__name__}"
            )
        rubrics = dict(BUILTIN_RUBRICS if rubrics is None else rubrics)
        for name, question in rubrics.items():
            _check_rubric(name, question)
        self.objectives = check_objective_names(list(rubrics), "JudgeRewards")
        self.rubrics = rubrics
        check_int("batch_size", batch_size)
        check_int("max_length", max_length, minimum=16, optional=True)
        if not isinstance(name_or_path, str) or not name_or_path.strip():
            raise InvalidArgumentError(
                f"the judge must be a model folder, hub id, .gguf file or packaged model name, got {name_or_path!r}"
            )
        self.name, self.batch_size = name_or_path, batch_size
        self.device = resolve_device(device or "auto")
        if dtype is None or isinstance(dtype, str):
            if dtype not in (None, "auto", "fp32", "bf16", "fp16"):
                raise InvalidArgumentError(
                    f"dtype must be a torch.dtype or one of auto, fp32, bf16, fp16; got {dtype!r}"
                )
            dtype = resolve_dtype(dtype or "auto", self.device)
        try:
            self.ref = resolve_model(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
            self.tokenizer = load_tokenizer(self.ref)
        except ModelLoadError as err:
            raise ModelLoadError(f"judge model: {err}") from None
        if not getattr(self.tokenizer, "chat_template", None):
            raise InvalidArgumentError(
                f"the judge {name_or_path!r} has no chat template: use an instruct (chat) model as judge"
            )
        self.tokenizer.padding_side = "left"  # the next-token logits are then the last column's
        self.yes_ids, self.no_ids = self._answer_ids("Yes"), self._answer_ids("No")
        if set(self.yes_ids) & set(self.no_ids):
            raise InvalidArgumentError(f"the judge {name_or_path!r}'s tokenizer cannot tell 'Yes' from 'No'")
        try:
            self.model = load_base_model(self.ref, dtype=dtype, device=self.device)
        except ModelLoadError as err:
            raise ModelLoadError(f"judge model: {err}") from None
        self.max_length = max_length or getattr(self.model.config, "max_position_embeddings", None)
        self._system = self._system_role_works()
        parameters = inspect.signature(self.model.forward).parameters
        self._position_ids = "position_ids" in parameters
        self._logits_to_keep = "logits_to_keep" in parameters
        self._special = sorted((t for t in self.tokenizer.all_special_tokens if t), key=len, reverse=True)
        self._torch = torch

    def _answer_ids(self, word: str) -> list[int]:
        """The distinct first tokens of ``word`` and ``" " + word`` that spell the word's start."""
        ids: list[int] = []
        for variant in (word, " " + word):
            encoded = self.tokenizer.encode(variant, add_special_tokens=False)
            if not encoded:
                continue
            piece = self.tokenizer.decode(encoded[:1]).strip()
            if piece and word.lower().startswith(piece.lower()) and encoded[0] not in ids:
                ids.append(encoded[0])
        if not ids:
            raise InvalidArgumentError(f"the judge {self.name!r}'s tokenizer has no token that starts {word!r}")
        return ids

    def _system_role_works(self) -> bool:
        """Whether the chat template takes a system message (some raise on one)."""
        try:
            self.tokenizer.apply_chat_template(
                [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
                tokenize=False,
                add_generation_prompt=True,
            )
        except Exception:  # jinja's TemplateError, raised by the template itself
            return False
        return True

    def _clean(self, text: str) -> str:
        for token in self._special:
            text = text.replace(token, "")
        return text.strip()

    def judge_text(self, prompt: Prompt, completion: str, question: str) -> str:
        """The judge's input for one (prompt, completion, question), rendered by its chat template."""
        user = QUESTION_TEMPLATE.format(
            prompt=self._clean(_prompt_text(prompt)), completion=self._clean(completion), question=question
        )
        if self._system:
            messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]
        else:
            messages = [{"role": "user", "content": f"{SYSTEM_PROMPT}\n\n{user}"}]
        return str(self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))

    def judge_ids(self, prompt: Prompt, completion: str, question: str) -> list[int]:
        """The token ids of :meth:`judge_text`; beyond ``max_length``, tokens go from the middle."""
        ids = list(self.tokenizer(self.judge_text(prompt, completion, question), add_special_tokens=False)["input_ids"])
        if self.max_length is not None and len(ids) > self.max_length:
            head = self.max_length // 2
            ids = ids[:head] + ids[len(ids) - (self.max_length - head) :]
        return ids

    def score(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> np.ndarray:
        """``log p(Yes) - log p(No)`` per completion and rubric, batched; see :meth:`RewardScorer.score`.

        Raises
        ------
        UtilityError
            The judge produced NaN or an infinity.
        """
        torch = self._torch
        prompts, completions = check_texts(prompts, completions)
        n, r = len(prompts), len(self.rubrics)
        encoded = [
            self.judge_ids(prompt, completion, question)
            for prompt, completion in zip(prompts, completions, strict=True)
            for question in self.rubrics.values()
        ]  # row i * r + j: completion i, rubric j
        order = np.argsort([len(ids) for ids in encoded], kind="stable")
        flat = np.empty(n * r, dtype=np.float64)
        yes = torch.tensor(self.yes_ids, device=self.device)
        no = torch.tensor(self.no_ids, device=self.device)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            inputs = self.tokenizer.pad([{"input_ids": encoded[i]} for i in batch], padding=True, return_tensors="pt")
            kwargs = {k: v.to(self.device) for k, v in inputs.items()}
            if self._position_ids:
                kwargs["position_ids"] = (kwargs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            if self._logits_to_keep:
                kwargs["logits_to_keep"] = 1
            with torch.inference_mode():
                logits = self.model(**kwargs).logits[:, -1].float()
            margin = torch.logsumexp(logits[:, yes], -1) - torch.logsumexp(logits[:, no], -1)
            flat[batch] = margin.double().cpu().numpy()
        out = flat.reshape(n, r)
        if not np.isfinite(out).all():
            row, col = (int(i) for i in np.argwhere(~np.isfinite(out))[0])
            raise UtilityError(
                f"the judge {self.name!r} returned {out[row, col]} for row {row} on rubric {self.objectives[col]!r}"
            )
        return out

    def __repr__(self) -> str:
        return f"JudgeRewards({self.name!r}, rubrics={list(self.objectives)}, device={self.device!r})"

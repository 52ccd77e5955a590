"""What a run is evaluated on: preference pairs for the teacher-forced utilities, prompts for generation.

Evaluation pairs are named sets:

- ``"eval"``: the trusted evaluation set: a file given at valuation time (``--eval FILE``) or
  the one stored with the run (``[eval]`` in the training config, ``RUN/eval.jsonl``);
- a source's name: that source's held-out split (``RUN/data/<source>/heldout.jsonl``);
- ``"<world>:<objective>"``: the trusted evaluation set of one objective of the world the run
  was built from (:meth:`dposhap.worlds.World.eval_pairs`), e.g. ``"toy:helpful"``;
- ``"all"``: every source's held-out split.

Without a choice, the trusted set is used when there is one; else a run built from a world is
evaluated on the world's trusted sets (one per objective), any other run on the union of its
held-out splits (:func:`default_pair_sets`) — labelled by the sources themselves, so a source
with flipped labels moves that yardstick: the outputs say so.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..data import load_eval_records, read_jsonl_records, text_problem
from ..errors import InvalidArgumentError, PromptDataError, SubsetWarning
from ..run import Run

__all__ = ["TRUSTED_SET", "default_pair_sets", "evaluation_pairs", "evaluation_prompts", "trusted_records"]

#: The name of the trusted evaluation set among the evaluation sets.
TRUSTED_SET = "eval"


def trusted_records(run: Run, eval_file: str | Path | None) -> list[dict[str, Any]] | None:
    """The trusted evaluation pairs: ``eval_file`` when given (loaded and checked as training data is),
    else the run's stored set, else None."""
    if eval_file is not None:
        return load_eval_records([str(eval_file)])
    if run.manifest.eval is not None and run.eval_path.is_file():
        return read_jsonl_records(run.eval_path)
    return None


def default_pair_sets(run: Run, eval_file: str | Path | None = None) -> str | list[str]:
    """``["eval"]`` when there is a trusted set; else the world's trusted sets for a world run; else ``"all"``."""
    if eval_file is not None or run.manifest.eval is not None:
        return [TRUSTED_SET]
    world = run.world()
    if world is None:
        return "all"
    return [f"{world.name}:{objective}" for objective in world.objectives]


def evaluation_pairs(
    run: Run,
    heldout: str | Sequence[str] = "all",
    *,
    world_pairs: int | None = None,
    eval_file: str | Path | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """The evaluation pairs named by ``heldout``, and which set each pair comes from.

    Parameters
    ----------
    run
        An opened run.
    heldout
        ``"all"``, or a list of set names (module docstring); a single name may be a string.
    world_pairs
        Pairs per ``"<world>:<objective>"`` set (default: the world's own default).
    eval_file
        The trusted set ``"eval"`` (default: the one stored with the run).

    Returns
    -------
    (list of dict, list of str)
        The records ``{"prompt", "chosen", "rejected"}``, and per record the name of its set.
    """
    if isinstance(heldout, str):
        names = run.sources if heldout == "all" else [heldout]
    else:
        names = list(heldout)
    if not names or len(set(names)) != len(names):
        raise InvalidArgumentError(f"heldout must name at least one evaluation set, each once; got {heldout!r}")
    world = run.world()
    records: list[dict[str, Any]] = []
    sets: list[str] = []
    for name in names:
        prefix, colon, objective = name.partition(":")
        if name == TRUSTED_SET:
            trusted = trusted_records(run, eval_file)
            if trusted is None:
                raise InvalidArgumentError(
                    "evaluation set 'eval' needs a trusted set: give --eval FILE (or [eval] "
                    "files in the training config)"
                )
            part = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in trusted]
        elif colon:
            if world is None or prefix != world.name:
                built = (
                    f"the {world.name} world" if world is not None else f"the model {run.manifest.base_model.name!r}"
                )
                raise InvalidArgumentError(
                    f"evaluation set {name!r} needs a run built from the {prefix!r} world; this "
                    f"run was trained on {built}"
                )
            part = world.eval_pairs(objective, world_pairs or world.default_eval_pairs)
        elif name in run.manifest.sources:
            part = [
                {k: r[k] for k in ("prompt", "chosen", "rejected")} for r in read_jsonl_records(run.heldout_path(name))
            ]
        else:
            known = ", ".join(run.sources)
            extra = f", {', '.join(f'{world.name}:{o}' for o in world.objectives)}" if world is not None else ""
            raise InvalidArgumentError(
                f"unknown evaluation set {name!r}: give a source of the run ({known}{extra}), 'eval' or 'all'"
            )
        records += part
        sets += [name] * len(part)
    return records, sets


def evaluation_prompts(
    run: Run, path: str | Path | None, n_prompts: int, *, eval_file: str | Path | None = None
) -> list[Any]:
    """The prompt set of a generation utility, at most ``n_prompts`` of them, in order.

    From ``path`` (JSONL with a ``prompt`` field, or one prompt per line) when given; else the
    unique prompts of the trusted set (``eval_file`` or the run's); else the world's evaluation
    prompts for a world run; else the unique prompts of the held-out splits. Prompts are plain
    strings or conversations.

    Raises
    ------
    PromptDataError
        The file is missing, a JSONL line has no ``prompt`` or one that is neither a string nor a
        conversation, or there is no prompt at all.
    """
    texts: list[Any] = []
    world = run.world()
    users = path is not None  # prompts the user gave (a file, the trusted set), not a world's
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise PromptDataError("prompt file not found: check the path", file=str(file))
        if file.suffix in (".jsonl", ".ndjson"):
            for number, record in enumerate(read_jsonl_records(file), start=1):
                if "prompt" not in record:
                    raise PromptDataError(
                        "missing; each line needs a prompt", file=str(file), line=number, field="prompt"
                    )
                if (problem := text_problem(record["prompt"])) is not None:
                    raise PromptDataError(
                        f"{problem}; a prompt must be a string or a conversation",
                        file=str(file),
                        line=number,
                        field="prompt",
                    )
                texts.append(record["prompt"])
        else:
            try:
                texts = [line for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
            except UnicodeDecodeError as err:
                raise PromptDataError(
                    f"is not UTF-8 text ({err.reason} at byte {err.start}): save it as UTF-8", file=str(file)
                ) from None
    elif (trusted := trusted_records(run, eval_file)) is not None:
        texts, users = _unique_prompts(trusted), True
    elif world is not None:
        texts = world.eval_prompts()
    if not texts and path is None:
        texts = _unique_prompts(r for source in run.sources for r in read_jsonl_records(run.heldout_path(source)))
    if not texts:
        raise PromptDataError(
            "no prompts to decode: give a prompt file with at least one prompt",
            file=None if path is None else str(path),
        )
    if users and len(texts) > n_prompts:
        warnings.warn(
            f"decoding the first {n_prompts} of {len(texts)} prompts (--n-prompts N, n_prompts=, to use more; each "
            "prompt costs a decode per coalition)",
            SubsetWarning,
            stacklevel=2,
        )
    return texts[:n_prompts]


def _unique_prompts(records: Iterable[dict[str, Any]]) -> list[Any]:
    """The distinct prompts of some records, in order of first appearance."""
    seen: dict[str, None] = {}
    for record in records:
        seen.setdefault(json.dumps(record["prompt"], sort_keys=True), None)
    return [json.loads(text) for text in seen]

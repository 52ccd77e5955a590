"""What a run is evaluated on: preference pairs for the teacher-forced utilities, prompts for generation.

Evaluation pairs are named sets:

- a source's name: that source's held-out split (``RUN/data/<source>/heldout.jsonl``);
- ``"<world>:<objective>"``: the trusted evaluation set of one objective of the world the run
  was built from (:meth:`dposhap.worlds.World.eval_pairs`), e.g. ``"toy:helpful"``;
- ``"all"``: every source's held-out split.

Without a choice, a run built from a world is evaluated on the world's trusted sets (one per
objective), any other run on the union of its held-out splits (:func:`default_pair_sets`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..data import read_jsonl_records
from ..errors import InvalidArgumentError, PromptDataError
from ..run import Run

__all__ = ["default_pair_sets", "evaluation_pairs", "evaluation_prompts"]


def default_pair_sets(run: Run) -> str | list[str]:
    """The world's trusted sets (one per objective) for a world run, else ``"all"``."""
    world = run.world()
    if world is None:
        return "all"
    return [f"{world.name}:{objective}" for objective in world.objectives]


def evaluation_pairs(
    run: Run, heldout: str | Sequence[str] = "all", *, world_pairs: int | None = None
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
        if colon:
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
                f"unknown evaluation set {name!r}: give a source of the run ({known}{extra}) or 'all'"
            )
        records += part
        sets += [name] * len(part)
    return records, sets


def evaluation_prompts(run: Run, path: str | Path | None, n_prompts: int) -> list[Any]:
    """The prompt set of a generation utility, at most ``n_prompts`` of them, in order.

    From ``path`` (JSONL with a ``prompt`` field, or one prompt per line) when given; else the
    world's evaluation prompts for a world run; else the unique prompts of the held-out splits.
    Prompts are plain strings or conversations.

    Raises
    ------
    PromptDataError
        The file is missing, a JSONL line has no ``prompt``, or there is no prompt at all.
    """
    texts: list[Any] = []
    world = run.world()
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
                texts.append(record["prompt"])
        else:
            texts = [line for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    elif world is not None:
        texts = world.eval_prompts()
    if not texts and path is None:
        seen: dict[str, None] = {}
        for source in run.sources:
            for record in read_jsonl_records(run.heldout_path(source)):
                seen.setdefault(json.dumps(record["prompt"]), None)
        texts = [json.loads(t) for t in seen]
    if not texts:
        raise PromptDataError(
            "no prompts to decode: give a prompt file with at least one prompt",
            file=None if path is None else str(path),
        )
    return texts[:n_prompts]

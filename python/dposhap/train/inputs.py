"""What a config trains on: the base model name, the data spec, a built-in world's record, every
source's pairs and the trusted set, all read and checked before any model is loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ..config import RunConfig
from ..data import DataSpec, SourceData, load_eval_records, load_sources
from ..errors import InvalidArgumentError
from ..run import Run


def training_inputs(
    cfg: RunConfig, run: Run, sources: Sequence[str] | None
) -> tuple[str, DataSpec, dict | None, dict[str, SourceData]]:
    """The base model name, the data spec, (for a world's model) the world's manifest record, and the data.

    Every data problem is reported here, before any model is loaded or any world built.

    Parameters
    ----------
    cfg
        The run's settings.
    run
        The run directory; a built-in world is built into its ``world`` folder.
    sources
        Only these sources (``train --sources``); None for the config's ``data.select`` or world sources.

    Returns
    -------
    tuple
        ``(model_name, spec, world_record, data)``: ``world_record`` is None without a world, and
        ``data`` maps each source's name to its split pairs.

    Raises
    ------
    InvalidArgumentError
        The config names no data and no built-in world.
    DataValidationError
        The data have problems (all of them are listed).
    """
    d = cfg.data
    select = list(sources) if sources is not None else d.select
    if cfg.world is None and not d.given:
        raise InvalidArgumentError(
            "no training data: set data.files or [data.sources] in the config "
            '(or a built-in world: model.base = "toy" or "english")'
        )
    if d.given:
        spec = replace(d, select=select, base_dir=str(cfg.base_dir))
        data = load_sources(spec)
        if cfg.world is None:
            return cfg.model.base, spec, None, data
        world = cfg.build_world(run.world_dir)  # the world's model on the user's own data: select is theirs
    else:
        world = cfg.build_world(run.world_dir, select)
        world_files: dict[str, str | list[str]] = {k: str(v) for k, v in world.data_files.items()}
        spec = replace(d, files=[], sources=world_files, select=None, base_dir=None)
        data = load_sources(spec)
    return world.model_spec, spec, world.record(run.root), data


def trusted_records(cfg: RunConfig) -> list[dict[str, Any]]:
    """The trusted evaluation set of ``[eval]``, loaded and checked (none when the config names none).

    Read with the ``[data]`` table's column names, relative paths against the config's folder.

    Returns
    -------
    list of dict
        The trusted pairs as TRL dataset rows; empty without ``eval.files``.

    Raises
    ------
    DataValidationError
        The trusted set has problems (all of them are listed).
    """
    if not cfg.eval.files:
        return []
    d = cfg.data
    return load_eval_records(
        cfg.eval.files,
        base_dir=str(cfg.base_dir),
        prompt_column=d.prompt_column,
        chosen_column=d.chosen_column,
        rejected_column=d.rejected_column,
    )

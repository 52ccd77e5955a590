"""The records of preference data: a pair, a problem found in the data, the data settings, a split source."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from ..errors import DataError, SettingError
from ..settings import Section, setting
from .texts import TEXT_FIELDS, Text, copy_text, source_name_problem


@dataclass(frozen=True)
class PreferencePair:
    """One validated preference pair and where it came from.

    Attributes
    ----------
    prompt, chosen, rejected
        Three plain strings, or three conversations (``chosen`` and ``rejected`` end with
        an ``assistant`` message), as TRL's ``maybe_extract_prompt`` made them from the row.
        Messages carry exactly the keys ``role`` and ``content``.
    source
        The name of the source the pair belongs to.
    file
        The file (or dataset folder, or hub id) it was read from, as resolved against the base folder.
    line
        Its line in that file; see :mod:`dposhap.data` for what a line is in each format.
    """

    prompt: Text
    chosen: Text
    rejected: Text
    source: str
    file: str
    line: int

    @property
    def conversational(self) -> bool:
        """Whether the pair is in the conversational format (lists of messages)."""
        return isinstance(self.prompt, list)

    def to_record(self) -> dict[str, Text]:
        """The pair as TRL's ``DPOTrainer`` expects a dataset row: ``{"prompt", "chosen", "rejected"}``.

        Returns
        -------
        dict
            A fresh dict (conversations are copied, so changing it leaves the pair alone).
        """
        return {name: copy_text(getattr(self, name)) for name in TEXT_FIELDS}

    @cached_property
    def _canonical_json(self) -> bytes:
        # computed once: the duplicate check, the split and the data hash all read it
        return json.dumps([self.prompt, self.chosen, self.rejected], sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class DataProblem:
    """One problem found in the data: where it is and what to do about it.

    Attributes
    ----------
    file, line, field
        Where the problem is, as far as it is known (``field`` is the column name in the file,
        or the name of a data setting such as ``"select"``).
    message
        What is wrong and what to do.
    """

    file: str | None
    line: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        return str(DataError(self.message, file=self.file, line=self.line, field=self.field))


@dataclass
class DataSpec(Section):
    """Where the preference data is and how to check and split it: the ``[data]`` table of a config.

    Give ``files`` (each holding a source column), ``sources`` (one file or list of files per
    source), or both; pairs of a source found in several places are merged in reading order
    (``files`` first, then ``sources``). A spec naming no data is valid (a built-in world brings
    its own); reading it (:func:`~dposhap.data.load_pairs`) is an error.

    Attributes
    ----------
    files
        Data files, ``save_to_disk`` folders or hub ids whose rows name their source in
        ``source_column``.
    sources
        Source name -> path or list of paths; the rows of these files need no source column
        (one there is ignored).
    select
        The sources to keep (default: all). Naming a source the data lacks is an error. Rows of
        other sources are not checked, and files mapped to other sources are not read.
    source_column, prompt_column, chosen_column, rejected_column
        Column names in the data.
    min_pairs
        A kept source with fewer rows is an error. At least ``heldout_min + 1``.
    heldout_fraction
        Share of each source held out of training, rounded half up, in (0, 1).
    seed
        Seed of the held-out split, an integer in [0, 2**64).
    heldout_min
        The fewest held-out pairs of a source (at least 1). Not a key of the ``[data]`` table.
    base_dir
        Folder relative paths resolve against (the config file's folder); default the current
        one. Not a key of the ``[data]`` table: a config sets it to its own folder.
    pool
        Read every row of ``files`` as one source of this name, for code that trains all the
        pairs as one dataset (``sources`` and ``select`` must be empty): a source column is then
        optional and only groups the rows for the one-format rule (one format per source, or per
        file when it has no source column); duplicates and ``min_pairs`` are over the whole pool,
        and no problem names the pool. Not a key of the ``[data]`` table.
    repeats
        A pair may stand several times in one source (a union sampled with weights above 1, as
        ``select --verify`` trains it); otherwise a repeat is a problem. Not a key of the
        ``[data]`` table.

    Raises
    ------
    SettingError
        A setting is out of its domain; the error names it.
    """

    TABLE = "data"
    files: list[str] = setting("files or saved datasets holding a source column", default_factory=list)
    sources: dict[str, str | list[str]] = setting("or one file (or list of files) per source", default_factory=dict)
    select: list[str] | None = setting("train only these sources (default: every source in the data)", default=None)
    source_column: str = setting("column naming the source of each pair", default="source")
    prompt_column: str = setting("column holding the prompt", default="prompt")
    chosen_column: str = setting("column holding the preferred response", default="chosen")
    rejected_column: str = setting("column holding the dispreferred response", default="rejected")
    min_pairs: int = setting("a source with fewer pairs is an error", default=8)
    heldout_fraction: float = setting(
        "share of each source kept out of training, for the margin utilities", default=0.2
    )
    seed: int = setting("seed of the held-out split", default=0)
    heldout_min: int = setting("the fewest held-out pairs of a source", default=1, table=False)
    base_dir: str | None = setting("folder relative paths resolve against", default=None, table=False)
    pool: str | None = setting("read every row of files as one source of this name", default=None, table=False)
    repeats: bool = setting(
        "a pair may stand several times in a source (a union sampled with weights above 1)", default=False, table=False
    )

    def __post_init__(self) -> None:
        files: Any = self.files
        if isinstance(files, (str, os.PathLike)):
            files = [files]
        if not isinstance(files, (list, tuple)):
            raise SettingError("files", f"files must be a list of paths, got {files!r}")
        self.files = [_path_setting("files", entry) for entry in files]
        if not isinstance(self.sources, Mapping):
            raise SettingError("sources", f"sources must map source names to paths, got {self.sources!r}")
        sources: dict[str, str | list[str]] = {}
        for name, paths in self.sources.items():
            if (problem := source_name_problem(name)) is not None:
                raise SettingError("sources", f"sources: the source name {name!r} {problem}")
            where = f"sources[{name!r}]"
            if isinstance(paths, (str, os.PathLike)):
                sources[name] = _path_setting(where, paths, "sources")
            elif isinstance(paths, (list, tuple)) and paths:
                sources[name] = [_path_setting(where, entry, "sources") for entry in paths]
            else:
                raise SettingError("sources", f"{where} must be a path or a non-empty list of paths, got {paths!r}")
        self.sources = sources
        columns = {f"{name}_column": getattr(self, f"{name}_column") for name in ("source", *TEXT_FIELDS)}
        for name, column in columns.items():
            if not isinstance(column, str) or not column.strip():
                raise SettingError(name, f"{name} must be a non-empty column name, got {column!r}")
        for name, column in columns.items():
            if list(columns.values()).count(column) > 1:
                raise SettingError(name, f"the four column settings must name different columns, got {columns}")
        if self.select is not None:
            if not isinstance(self.select, (list, tuple)):
                raise SettingError("select", f"select must be a list of source names, got {self.select!r}")
            if not self.select:
                raise SettingError(
                    "select", "select is empty: name at least one source, or leave it out to keep them all"
                )
            for name in self.select:
                if (problem := source_name_problem(name)) is not None:
                    raise SettingError("select", f"select: the source name {name!r} {problem}")
            if len(set(self.select)) < len(self.select):
                raise SettingError("select", f"select names a source twice: {list(self.select)}")
            self.select = list(self.select)
        check_int("heldout_min", self.heldout_min, minimum=1)
        check_int(
            "min_pairs",
            self.min_pairs,
            minimum=self.heldout_min + 1,
            why=f"every source needs heldout_min = {self.heldout_min} held-out pair(s) and one to train on",
        )
        check_fraction(self.heldout_fraction)
        check_seed(self.seed)
        if self.base_dir is not None:
            self.base_dir = _path_setting("base_dir", self.base_dir)
        if self.pool is not None:
            if (problem := source_name_problem(self.pool)) is not None:
                raise SettingError("pool", f"pool: the source name {self.pool!r} {problem}")
            if self.sources or self.select is not None:
                raise SettingError("pool", "pool reads files only: leave sources and select out")

    @property
    def given(self) -> bool:
        """Whether the spec names any data at all."""
        return bool(self.files or self.sources)

    def check_given(self) -> None:
        """Raise :class:`~dposhap.errors.SettingError` unless the spec names some data."""
        if not self.given:
            raise SettingError("files", "no data given: set files (with a source column) or sources (files per source)")


@dataclass
class SourceData:
    """The pairs of one source, split into training and held-out pairs.

    Attributes
    ----------
    name
        The source's name.
    train, heldout
        Its pairs, each list in reading order.
    data_hash
        SHA-256 (hex) of the source's pairs (prompt, chosen, rejected, in reading order) and of
        the split settings: equal across runs and machines for equal data, whatever the files
        are called or wherever they lie.
    """

    name: str
    train: list[PreferencePair]
    heldout: list[PreferencePair]
    data_hash: str

    def train_records(self) -> list[dict[str, Text]]:
        """The training pairs as TRL dataset rows (see :meth:`PreferencePair.to_record`)."""
        return [pair.to_record() for pair in self.train]

    def heldout_records(self) -> list[dict[str, Text]]:
        """The held-out pairs as TRL dataset rows (see :meth:`PreferencePair.to_record`)."""
        return [pair.to_record() for pair in self.heldout]


def canonical_bytes(pair: PreferencePair) -> bytes:
    """The pair's content as canonical JSON bytes: the same for the same content on any machine."""
    return pair._canonical_json


# --------------------------------------------------------------------------------------
# checking settings


def _path_setting(where: str, value: Any, name: str | None = None) -> str:
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise SettingError(name or where, f"{where} must hold non-empty paths, got {value!r}")
    return os.fspath(value)


def check_int(name: str, value: Any, *, minimum: int, why: str = "") -> None:
    """Raise :class:`~dposhap.errors.SettingError` unless ``value`` is an integer >= ``minimum``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        reason = f": {why}" if why else ""
        raise SettingError(name, f"{name} must be an integer >= {minimum}, got {value!r}{reason}")


def check_fraction(value: Any) -> None:
    """Raise :class:`~dposhap.errors.SettingError` unless ``value`` (``heldout_fraction``) is in (0, 1)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 < value < 1.0:
        raise SettingError(
            "heldout_fraction", f"heldout_fraction must be a number strictly between 0 and 1, got {value!r}"
        )


def check_seed(value: Any) -> None:
    """Raise :class:`~dposhap.errors.SettingError` unless ``value`` is a seed in [0, 2**64)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**64:
        raise SettingError("seed", f"seed must be an integer in [0, 2**64), got {value!r}")

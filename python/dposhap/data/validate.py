"""Loading and validation of multi-source preference data, and the held-out split of each source.

A pair is ``(prompt, chosen, rejected)`` in one of TRL's two formats: three plain strings, or
three conversations (lists of ``{"role", "content"}`` messages; ``chosen`` and ``rejected`` end
with an ``assistant`` message). Every preference row TRL's ``DPOTrainer`` trains on is read into
that shape by TRL's own ``maybe_extract_prompt``: an explicit prompt, or none (the longest prefix
chosen and rejected share is the prompt), or a prompt string beside conversations that repeat it
(the conversations' shared prefix is the prompt); :data:`ACCEPTED_SHAPES` says it in one line.
Columns other than the source, prompt, chosen and rejected columns are ignored. Every pair
belongs to a *source*: named by a column of the data (:attr:`DataSpec.files`), or by the file it
comes from (:attr:`DataSpec.sources`).

Formats, and what ``line`` means in a pair's origin and in every problem report:

=========================================  =========================================================
``.jsonl`` / ``.ndjson`` (optionally .gz)  the physical line of the object (1-based)
``.json`` (optionally .gz)                 a list of objects, or ``{"data": [...]}`` or
                                           ``{"train": [...]}``: the line where the object starts
``.csv`` (optionally .gz)                  the physical line where the row starts; the header is
                                           the first line. A cell holding a valid JSON list of
                                           objects is a conversation, any other cell plain text
``.parquet``                               the row index + 1
a folder written by ``save_to_disk``       the row index + 1; a ``DatasetDict`` gives its
                                           ``"train"`` split (or its only split)
a hub id ``org/name``                      the row index + 1 in the ``"train"`` split (or the only
                                           split) of ``datasets.load_dataset(id)``; used only when
                                           the string is not an existing path
=========================================  =========================================================

Text files must be UTF-8 (a byte-order mark is allowed). Invalid bytes do not stop the reading:
the text that holds them is reported with its file, line and field.

:func:`load_pairs` checks everything before anything is trained and raises one
:class:`~dposhap.errors.DataValidationError` listing every problem; code that gets pairs from it
(or :func:`load_sources`) needs to check nothing again.
"""

from __future__ import annotations

import bisect
import csv
import gzip
import hashlib
import io
import json
import math
import os
import re
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from ..errors import DataError, DataValidationError, InvalidArgumentError

Text = str | list[dict[str, str]]
"""A plain string, or a conversation: a list of ``{"role": ..., "content": ...}`` messages."""

TEXT_FIELDS = ("prompt", "chosen", "rejected")
PROMPT_ROLES = ("system", "developer", "user", "assistant", "tool")
RESPONSE_ROLES = ("assistant",)
#: The preference rows dposhap reads (TRL's DPO formats), for error messages.
ACCEPTED_SHAPES = (
    "prompt + chosen + rejected (plain strings, or conversations); chosen + rejected alone that start with "
    "the same prompt (a shared prefix, e.g. HH-RLHF's Human/Assistant strings, or the same first messages); "
    "a prompt string beside chosen and rejected conversations that repeat it (UltraFeedback)"
)

_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9._-]+")
_SURROGATE = re.compile("[\ud800-\udfff]")
_JSON_SPACE = re.compile(r"[ \t\n\r]*")


def _past_space(text: str, position: int = 0) -> int:
    """The first position at or after ``position`` that is not JSON white space."""
    match = _JSON_SPACE.match(text, position)
    return match.end() if match is not None else position


_JSON_DECODER = json.JSONDecoder()
_SPLIT_TAG = "dposhap-split-v1"
_HASH_TAG = "dposhap-data-v1"
_MISSING = object()


# --------------------------------------------------------------------------------------
# the public records


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
        Its line in that file; see the module docstring for what a line is in each format.
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
        return {name: _copy_text(getattr(self, name)) for name in TEXT_FIELDS}

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
class DataSpec:
    """Where the preference data is and how to check and split it.

    Give ``files`` (each holding a source column), ``sources`` (one file or list of files per
    source), or both; pairs of a source found in several places are merged in reading order
    (``files`` first, then ``sources``).

    Attributes
    ----------
    files
        Data files, ``save_to_disk`` folders or hub ids whose rows name their source in
        ``source_column``.
    sources
        Source name -> path or list of paths; the rows of these files need no source column
        (one there is ignored).
    source_column, prompt_column, chosen_column, rejected_column
        Column names in the data.
    select
        The sources to keep (default: all). Naming a source the data lacks is an error. Rows of
        other sources are not checked, and files mapped to other sources are not read.
    min_pairs
        A kept source with fewer rows is an error. At least ``heldout_min + 1``.
    heldout_fraction
        Share of each source held out of training, rounded half up, in (0, 1).
    heldout_min
        The fewest held-out pairs of a source (at least 1).
    seed
        Seed of the held-out split, an integer in [0, 2**64).
    base_dir
        Folder relative paths resolve against (the config file's folder); default the current one.
    """

    files: list[str] = field(default_factory=list)
    sources: dict[str, str | list[str]] = field(default_factory=dict)
    source_column: str = "source"
    prompt_column: str = "prompt"
    chosen_column: str = "chosen"
    rejected_column: str = "rejected"
    select: list[str] | None = None
    min_pairs: int = 8
    heldout_fraction: float = 0.2
    heldout_min: int = 1
    seed: int = 0
    base_dir: str | None = None

    def __post_init__(self) -> None:
        files: Any = self.files
        if isinstance(files, (str, os.PathLike)):
            files = [files]
        if not isinstance(files, (list, tuple)):
            raise InvalidArgumentError(f"files must be a list of paths, got {files!r}")
        self.files = [_path_setting("files", entry) for entry in files]
        if not isinstance(self.sources, Mapping):
            raise InvalidArgumentError(f"sources must map source names to paths, got {self.sources!r}")
        sources: dict[str, str | list[str]] = {}
        for name, paths in self.sources.items():
            if (problem := _source_name_problem(name)) is not None:
                raise InvalidArgumentError(f"sources: the source name {name!r} {problem}")
            where = f"sources[{name!r}]"
            if isinstance(paths, (str, os.PathLike)):
                sources[name] = _path_setting(where, paths)
            elif isinstance(paths, (list, tuple)) and paths:
                sources[name] = [_path_setting(where, entry) for entry in paths]
            else:
                raise InvalidArgumentError(f"{where} must be a path or a non-empty list of paths, got {paths!r}")
        self.sources = sources
        if not self.files and not self.sources:
            raise InvalidArgumentError("no data given: set files (with a source column) or sources (files per source)")
        columns = {f"{name}_column": getattr(self, f"{name}_column") for name in ("source", *TEXT_FIELDS)}
        for setting, column in columns.items():
            if not isinstance(column, str) or not column.strip():
                raise InvalidArgumentError(f"{setting} must be a non-empty column name, got {column!r}")
        if len(set(columns.values())) < len(columns):
            raise InvalidArgumentError(f"the four column settings must name different columns, got {columns}")
        if self.select is not None:
            if not isinstance(self.select, (list, tuple)):
                raise InvalidArgumentError(f"select must be a list of source names, got {self.select!r}")
            if not self.select:
                raise InvalidArgumentError(
                    "select is empty: name at least one source, or leave it out to keep them all"
                )
            for name in self.select:
                if (problem := _source_name_problem(name)) is not None:
                    raise InvalidArgumentError(f"select: the source name {name!r} {problem}")
            if len(set(self.select)) < len(self.select):
                raise InvalidArgumentError(f"select names a source twice: {list(self.select)}")
            self.select = list(self.select)
        _check_int("heldout_min", self.heldout_min, minimum=1)
        _check_int(
            "min_pairs",
            self.min_pairs,
            minimum=self.heldout_min + 1,
            why=f"every source needs heldout_min = {self.heldout_min} held-out pair(s) and one to train on",
        )
        _check_fraction(self.heldout_fraction)
        _check_seed(self.seed)
        if self.base_dir is not None:
            self.base_dir = _path_setting("base_dir", self.base_dir)


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


# --------------------------------------------------------------------------------------
# the public functions


def load_pairs(spec: DataSpec) -> list[PreferencePair]:
    """Read every row the spec names and check all of it.

    Checks columns, types, empty texts, invalid UTF-8, chosen identical to rejected, source names,
    duplicate pairs within a source, one format per source, the number of pairs per source and the
    sources named in ``select``.

    Parameters
    ----------
    spec
        Where the data is and how to check it.

    Returns
    -------
    list of PreferencePair
        The pairs of the selected sources, in reading order.

    Raises
    ------
    DataValidationError
        Listing every problem found, each with its file, line and field.
    """
    collector = _Collector(spec)
    collector.collect()
    if collector.problems:
        raise DataValidationError(collector.problems)
    return collector.pairs


def load_sources(spec: DataSpec) -> dict[str, SourceData]:
    """Load and check the data (:func:`load_pairs`), then split each source into train and held-out.

    Parameters
    ----------
    spec
        Where the data is, how to check it and how to split it.

    Returns
    -------
    dict of str to SourceData
        One entry per selected source, in sorted order of the names.

    Raises
    ------
    DataValidationError
        Listing every problem found in the data.
    """
    by_source: dict[str, list[PreferencePair]] = {}
    for pair in load_pairs(spec):
        by_source.setdefault(pair.source, []).append(pair)
    sources = {}
    for name in sorted(by_source):
        pairs = by_source[name]
        train, heldout = split_heldout(pairs, spec.heldout_fraction, spec.seed, spec.heldout_min)
        data_hash = _data_hash(pairs, spec.heldout_fraction, spec.heldout_min, spec.seed)
        sources[name] = SourceData(name, train, heldout, data_hash)
    return sources


def heldout_size(n_pairs: int, fraction: float, min_heldout: int = 1) -> int:
    """How many of ``n_pairs`` pairs :func:`split_heldout` holds out.

    ``round_half_up(fraction * n_pairs)``, at least ``min_heldout``, at most ``n_pairs - 1``.

    Raises
    ------
    DataError
        If ``n_pairs`` cannot give ``min_heldout`` held-out pairs and one training pair.
    """
    _check_fraction(fraction)
    _check_int("min_heldout", min_heldout, minimum=0)
    size = min(max(min_heldout, math.floor(fraction * n_pairs + 0.5)), n_pairs - 1)
    if size < min_heldout:
        raise DataError(
            f"{n_pairs} pair(s) cannot give {min_heldout} held-out pair(s) and one training pair: "
            "add pairs or lower heldout_min"
        )
    return size


def split_heldout(
    pairs: Sequence[PreferencePair], fraction: float, seed: int, min_heldout: int = 1
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Split one source's pairs into training and held-out pairs, deterministically.

    Each pair is ranked by the SHA-256 of the seed and its content (prompt, chosen, rejected); the
    :func:`heldout_size` lowest go to the held-out split. So the split depends only on the seed and
    on this source's pairs, not on their order, their files, the source's name or other sources:
    two sources with the same pairs split the same way.

    Parameters
    ----------
    pairs
        The pairs of one source.
    fraction
        The share to hold out, in (0, 1).
    seed
        Seed of the split, an integer in [0, 2**64).
    min_heldout
        The fewest pairs to hold out.

    Returns
    -------
    train, heldout
        Two lists that partition ``pairs``, each in the order of ``pairs``.

    Raises
    ------
    DataError
        If there are too few pairs for ``min_heldout`` held-out pairs and one training pair.
    """
    _check_seed(seed)
    n_heldout = heldout_size(len(pairs), fraction, min_heldout)
    salt = f"{_SPLIT_TAG}\0{seed}\0".encode()
    keys = [hashlib.sha256(salt + _canonical(pair)).digest() for pair in pairs]
    held = set(sorted(range(len(pairs)), key=lambda index: (keys[index], index))[:n_heldout])
    train = [pair for index, pair in enumerate(pairs) if index not in held]
    heldout = [pair for index, pair in enumerate(pairs) if index in held]
    return train, heldout


def write_split(source: SourceData, directory: str | Path) -> None:
    """Write a source's split as ``train.jsonl`` and ``heldout.jsonl`` in ``directory``.

    Each line is a record of :meth:`PreferencePair.to_record` plus ``"source"``, in UTF-8. Each
    file is written to a temporary name and then renamed, so a file is never half written.

    Parameters
    ----------
    source
        The source to write.
    directory
        The folder (created if needed), e.g. ``RUN/data/<source>``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for file_name, pairs in (("train.jsonl", source.train), ("heldout.jsonl", source.heldout)):
        lines = (json.dumps({**pair.to_record(), "source": source.name}, ensure_ascii=False) + "\n" for pair in pairs)
        target = directory / file_name
        temporary = target.with_name(f".{file_name}.tmp")
        with open(temporary, "w", encoding="utf-8", newline="\n") as handle:
            handle.writelines(lines)
        os.replace(temporary, target)


def load_eval_records(
    files: Sequence[str],
    *,
    base_dir: str | None = None,
    prompt_column: str = "prompt",
    chosen_column: str = "chosen",
    rejected_column: str = "rejected",
) -> list[dict[str, Text]]:
    """Load and check a trusted evaluation set: the pairs of ``files`` as ``{prompt, chosen, rejected}`` records.

    The files are read and checked as training data is (:func:`load_pairs`); a source column,
    if any, is ignored. At least two pairs.

    Raises
    ------
    DataValidationError
        Listing every problem found, each with its file, line and field.
    """
    if isinstance(files, str):
        files = [files]
    spec = DataSpec(
        sources={"eval": list(files)},
        prompt_column=prompt_column,
        chosen_column=chosen_column,
        rejected_column=rejected_column,
        min_pairs=2,
        base_dir=base_dir,
    )
    return [pair.to_record() for pair in load_pairs(spec)]


def read_jsonl_records(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSON Lines file (such as one :func:`write_split` wrote) as a list of dicts.

    Parameters
    ----------
    path
        The file (``.gz`` is decompressed).

    Returns
    -------
    list of dict
        One dict per non-blank line, in file order.

    Raises
    ------
    DataError
        If the file cannot be read (a :class:`~dposhap.errors.DataValidationError` listing every
        line that is not a JSON object).
    """
    path = Path(path)
    problems: list[DataProblem] = []
    try:
        raw = _read_bytes(path)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot be read ({_describe(exc)}): check the path", file=str(path)) from exc
    table = _read_jsonl(raw, str(path), problems)
    if problems:
        raise DataValidationError(problems)
    return [dict(row) for _, row in table.rows]


def extract_trl_prompt(example: Mapping[str, Text]) -> dict[str, Text]:
    """A preference row's prompt, chosen and rejected as TRL's DPO trainer reads them.

    TRL's own ``maybe_extract_prompt``: an explicit prompt in the format of the answers is kept;
    otherwise (no prompt, or a prompt string beside conversations) the longest prefix chosen and
    rejected share becomes the prompt and is taken off both.

    Parameters
    ----------
    example
        ``chosen`` and ``rejected``, and optionally ``prompt``: valid texts (strings or non-empty
        conversations).

    Returns
    -------
    dict
        ``{"prompt", "chosen", "rejected"}``; the prompt may come out empty when chosen and
        rejected share no start (:func:`load_pairs` reports such rows).
    """
    from trl.data_utils import maybe_extract_prompt

    row = {name: _copy_text(example[name]) for name in TEXT_FIELDS if name in example}
    out = maybe_extract_prompt(row)
    return {name: out[name] for name in TEXT_FIELDS}


# --------------------------------------------------------------------------------------
# checking settings


def _path_setting(setting: str, value: Any) -> str:
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise InvalidArgumentError(f"{setting} must hold non-empty paths, got {value!r}")
    return os.fspath(value)


def _check_int(setting: str, value: Any, *, minimum: int, why: str = "") -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        reason = f": {why}" if why else ""
        raise InvalidArgumentError(f"{setting} must be an integer >= {minimum}, got {value!r}{reason}")


def _check_fraction(value: Any) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 < value < 1.0:
        raise InvalidArgumentError(f"heldout_fraction must be a number strictly between 0 and 1, got {value!r}")


def _check_seed(value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**64:
        raise InvalidArgumentError(f"seed must be an integer in [0, 2**64), got {value!r}")


# --------------------------------------------------------------------------------------
# checking values


def _source_name_problem(name: Any) -> str | None:
    """Why ``name`` cannot name a source, or None. Adapters are saved in folders named after sources."""
    if not isinstance(name, str):
        return f"is a {_kind(name)}, not a source name: write the name as a string"
    if not name.strip():
        return "is empty: give every row the name of its source"
    if name != name.strip():
        return f"has spaces at its start or end: write {name.strip()!r}"
    if (problem := _unicode_problem(name)) is not None:
        return problem
    if name.startswith("."):
        return (
            f"{name!r} starts with '.': such folder names are hidden and reserved for dposhap's temporary "
            "folders (adapters/.tmp-*); rename the source"
        )
    if name in (".", "..") or any(char in "/\\" or ord(char) < 32 or ord(char) == 127 for char in name):
        return (
            f"{name!r} cannot name a folder (each source's adapter is saved in adapters/<source>/): "
            "avoid '/', '\\', control characters, '.' and '..'"
        )
    return None


def _unicode_problem(text: str) -> str | None:
    """Why ``text`` is not valid Unicode (bytes that were not UTF-8 were decoded as surrogates), or None."""
    match = _SURROGATE.search(text)
    if match is None:
        return None
    code = ord(match.group())
    what = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"lone surrogate U+{code:04X}"
    return (
        f"is not valid UTF-8 text ({what} at character {match.start() + 1}): "
        "save the file as UTF-8 (it may be in Latin-1 or Windows-1252)"
    )


def text_problem(value: Any) -> str | None:
    """Why ``value`` is not a valid text of a preference row, or None.

    A text is a non-empty string or a non-empty list of ``{"role", "content"}`` messages with
    known roles and non-empty contents, all valid UTF-8.

    Parameters
    ----------
    value
        The value read from the data (a prompt, chosen or rejected).

    Returns
    -------
    str or None
        The problem, worded to follow the field's location (``"is a number: ..."``).
    """
    if value is None:
        return "is empty (null): give every pair a prompt, a chosen and a rejected text"
    if isinstance(value, str):
        if not value.strip():
            return "is empty or only whitespace: write the text or drop the row"
        return _unicode_problem(value)
    if isinstance(value, list):
        return _conversation_problem(value)
    hint = " (a single message must still be inside a list)" if isinstance(value, dict) else ""
    return f'is a {_kind(value)}: a text is a string or a list of {{"role", "content"}} messages{hint}'


def _conversation_problem(messages: list[Any]) -> str | None:
    if not messages:
        return "is an empty list of messages: give at least one message"
    for number, message in enumerate(messages, start=1):
        where = f"message {number}"
        if not isinstance(message, dict):
            return f'{where} is a {_kind(message)}: each message is an object {{"role": ..., "content": ...}}'
        extra = sorted(
            str(key) for key, value in message.items() if key not in ("role", "content") and value is not None
        )
        if extra:
            return f"{where} has keys besides role and content ({', '.join(extra)}): keep only role and content"
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not isinstance(content, str):
            missing = "role" if not isinstance(role, str) else "content"
            return f"{where} has no string {missing!r}: each message needs a string role and a string content"
        if role not in PROMPT_ROLES:
            return f"{where} has role {role!r}: use one of {', '.join(PROMPT_ROLES)}"
        if not content.strip():
            return f"{where} is empty or only whitespace: write its content or remove the message"
        if (problem := _unicode_problem(content)) is not None:
            return f"{where} {problem}"
    return None


def _kind(value: Any) -> str:
    """The JSON name of a value's type, for messages."""
    names = {bool: "boolean", int: "number", float: "number", dict: "object", list: "list", str: "string"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _normalise_text(value: Text) -> Text:
    """A valid text with messages reduced to exactly ``role`` and ``content`` (drops keys set to null)."""
    if isinstance(value, str):
        return value
    return [{"role": message["role"], "content": message["content"]} for message in value]


def _copy_text(value: Text) -> Text:
    return value if isinstance(value, str) else [dict(message) for message in value]


def _stripped(value: Text) -> Any:
    """A text with the space around each string removed, to compare chosen with rejected."""
    if isinstance(value, str):
        return value.strip()
    return [(message["role"], message["content"].strip()) for message in value]


def _format_name(value: Text) -> str:
    return "a conversation" if isinstance(value, list) else "a plain string"


def _canonical(pair: PreferencePair) -> bytes:
    """The pair's content as canonical JSON bytes: the same for the same content on any machine."""
    return pair._canonical_json


def _data_hash(pairs: Iterable[PreferencePair], fraction: float, min_heldout: int, seed: int) -> str:
    settings = {"format": _HASH_TAG, "heldout_fraction": float(fraction), "heldout_min": min_heldout, "seed": seed}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for pair in pairs:
        digest.update(b"\n" + _canonical(pair))
    return digest.hexdigest()


def _cell_text(cell: Any) -> Any:
    """A CSV cell: a valid JSON list of objects is a conversation; anything else stays plain text."""
    if isinstance(cell, str) and cell.lstrip().startswith("["):
        try:
            value = json.loads(cell)
        except json.JSONDecodeError:
            return cell
        if isinstance(value, list) and value and all(isinstance(message, dict) for message in value):
            return value
    return cell


# --------------------------------------------------------------------------------------
# reading files


@dataclass
class _Table:
    """The rows read from one input, each with its line (see the module docstring)."""

    file: str
    rows: list[tuple[int, Mapping[str, Any]]]
    columns: list[str]
    header_line: int | None = None
    json_cells: bool = False


def _resolve(entry: str, base_dir: str | None) -> Path:
    path = Path(entry).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir).expanduser() / path
    return path


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    return gzip.decompress(raw) if path.suffix.lower() == ".gz" else raw


def _decode(raw: bytes) -> str:
    """UTF-8 text; invalid bytes become lone surrogates, found and reported by the checks of each text."""
    return raw.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")


def _describe(exc: BaseException, limit: int = 300) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read_input(entry: str, base_dir: str | None, problems: list[DataProblem]) -> _Table | None:
    """Read one entry of the spec: a file, a saved dataset folder, or a hub id. None if it cannot be read."""
    path = _resolve(entry, base_dir)
    shown = str(path)
    if path.is_dir():
        return _read_saved_dataset(path, shown, problems)
    if not path.is_file():
        if _HUB_ID.fullmatch(entry) and _format_of(path) is None:
            return _read_hub_dataset(entry, problems)
        start = repr(base_dir) if base_dir is not None else "the current folder"
        problems.append(
            DataProblem(shown, None, None, f"does not exist: check the path (relative paths start from {start})")
        )
        return None
    kind = _format_of(path)
    if kind is None:
        known = ", ".join(sorted(_FORMATS))
        problems.append(
            DataProblem(
                shown,
                None,
                None,
                f"has an unknown format: name it with one of {known} (optionally + .gz)"
                " or give a folder written by datasets' save_to_disk",
            )
        )
        return None
    try:
        raw = _read_bytes(path)
    except (OSError, EOFError, zlib.error) as exc:
        problems.append(DataProblem(shown, None, None, f"cannot be read ({_describe(exc)}): check the file"))
        return None
    return _READERS[kind](raw, shown, problems)


def _format_of(path: Path) -> str | None:
    suffixes = [suffix.lower() for suffix in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    return _FORMATS.get(suffixes[-1]) if suffixes else None


def _read_jsonl(raw: bytes, file: str, problems: list[DataProblem]) -> _Table:
    rows: list[tuple[int, Mapping[str, Any]]] = []
    columns: dict[str, None] = {}
    for number, line in enumerate(_decode(raw).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(
                DataProblem(
                    file,
                    number,
                    None,
                    f"is not valid JSON ({exc.msg} at column {exc.colno}): write one JSON object per line",
                )
            )
            continue
        if not isinstance(value, dict):
            problems.append(
                DataProblem(
                    file,
                    number,
                    None,
                    f"holds a JSON {_kind(value)}: write one object "
                    '{"prompt": ..., "chosen": ..., "rejected": ...} per line',
                )
            )
            continue
        rows.append((number, value))
        columns.update(dict.fromkeys(value))
    return _Table(file, rows, list(columns))


def _read_json(raw: bytes, file: str, problems: list[DataProblem]) -> _Table | None:
    text = _decode(raw)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        hint = (
            "it looks like JSON Lines (one object per line): name it .jsonl"
            if exc.msg == "Extra data"
            else "fix the syntax"
        )
        problems.append(
            DataProblem(file, exc.lineno, None, f"is not valid JSON ({exc.msg} at column {exc.colno}): {hint}")
        )
        return None
    start = _past_space(text)
    if isinstance(document, dict):
        keys = [key for key in ("data", "train") if isinstance(document.get(key), list)]
        if len(keys) != 1:
            found = ", ".join(map(repr, document)) or "none"
            problems.append(
                DataProblem(
                    file,
                    1,
                    None,
                    'must hold a list of pair objects, or an object with one list under "data" '
                    f'or "train" (keys found: {found})',
                )
            )
            return None
        start = _json_member_positions(text, start)[keys[0]]
        document = document[keys[0]]
    elif not isinstance(document, list):
        problems.append(
            DataProblem(
                file, 1, None, f'holds a JSON {_kind(document)}: give a list of pair objects, or {{"data": [...]}}'
            )
        )
        return None
    newlines = [match.start() for match in re.finditer("\n", text)]
    rows: list[tuple[int, Mapping[str, Any]]] = []
    columns: dict[str, None] = {}
    for position, item in zip(_json_item_positions(text, start), document, strict=True):
        line = bisect.bisect_left(newlines, position) + 1
        if not isinstance(item, dict):
            problems.append(
                DataProblem(file, line, None, f"holds a JSON {_kind(item)} where a pair object was expected")
            )
            continue
        rows.append((line, item))
        columns.update(dict.fromkeys(item))
    return _Table(file, rows, list(columns))


def _json_item_positions(text: str, position: int) -> list[int]:
    """The offsets where the items of the valid JSON array starting at ``text[position]`` begin."""
    positions: list[int] = []
    position = _past_space(text, position + 1)
    while text[position] != "]":
        positions.append(position)
        _, position = _JSON_DECODER.raw_decode(text, position)
        position = _past_space(text, position)
        if text[position] == ",":
            position = _past_space(text, position + 1)
    return positions


def _json_member_positions(text: str, position: int) -> dict[str, int]:
    """The offsets where the member values of the valid JSON object starting at ``text[position]`` begin."""
    members: dict[str, int] = {}
    position = _past_space(text, position + 1)
    while text[position] != "}":
        key, position = _JSON_DECODER.raw_decode(text, position)
        position = _past_space(text, _past_space(text, position) + 1)  # past the ':'
        members[key] = position
        _, position = _JSON_DECODER.raw_decode(text, position)
        position = _past_space(text, position)
        if text[position] == ",":
            position = _past_space(text, position + 1)
    return members


def _read_csv(raw: bytes, file: str, problems: list[DataProblem]) -> _Table:
    text = _decode(raw)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    table = _Table(file, [], [], json_cells=True)
    previous_limit = csv.field_size_limit()
    csv.field_size_limit(max(previous_limit, len(text) + 1))  # long answers are normal, not an attack
    try:
        last_line = 0
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                problems.append(
                    DataProblem(
                        file,
                        last_line + 1,
                        None,
                        f"starts a row that is not valid CSV ({exc}): "
                        "check its quotes; the rows after it were not read",
                    )
                )
                break
            line, last_line = last_line + 1, reader.line_num
            if not cells:
                continue
            if header is None:
                header, table.header_line, table.columns = cells, line, list(dict.fromkeys(cells))
                for name in sorted({name for name in cells if cells.count(name) > 1}):
                    problems.append(DataProblem(file, line, name, "names two columns: rename one"))
                continue
            if len(cells) != len(header):
                problems.append(
                    DataProblem(
                        file,
                        line,
                        None,
                        f"has {len(cells)} cells but the header has {len(header)}: "
                        "quote cells that hold commas, quotes or line breaks",
                    )
                )
                continue
            table.rows.append((line, dict(zip(header, cells, strict=False))))
    finally:
        csv.field_size_limit(previous_limit)
    return table


def _read_parquet(raw: bytes, file: str, problems: list[DataProblem]) -> _Table | None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        data = pq.read_table(pa.BufferReader(raw))
    except (pa.ArrowException, OSError) as exc:
        problems.append(
            DataProblem(file, None, None, f"is not a readable Parquet file ({_describe(exc)}): write it again")
        )
        return None
    return _Table(file, [(index + 1, row) for index, row in enumerate(data.to_pylist())], list(data.column_names))


def _read_saved_dataset(path: Path, file: str, problems: list[DataProblem]) -> _Table | None:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises assorted types for a folder that is not a saved dataset
        problems.append(
            DataProblem(
                file,
                None,
                None,
                f"is a folder but not a dataset written by save_to_disk "
                f"({_describe(exc)}): give a data file, or the folder save_to_disk wrote",
            )
        )
        return None
    return _dataset_table(loaded, file, problems)


def _read_hub_dataset(entry: str, problems: list[DataProblem]) -> _Table | None:
    try:
        import datasets

        loaded = datasets.load_dataset(entry)
    except Exception as exc:  # no network, no such dataset, no access, bad files: all mean the same here
        problems.append(
            DataProblem(
                entry,
                None,
                None,
                f"is not a local path, and loading it as a Hugging Face dataset "
                f"failed ({_describe(exc)}): check the path or the id, or download the dataset "
                "and give a local path (a .jsonl, .json, .csv or .parquet file, or a folder "
                "written by save_to_disk)",
            )
        )
        return None
    return _dataset_table(loaded, entry, problems)


def _dataset_table(loaded: Any, file: str, problems: list[DataProblem]) -> _Table | None:
    """The rows of a ``datasets`` Dataset, or of the train (or only) split of a DatasetDict."""
    if isinstance(loaded, Mapping):
        splits = list(loaded)
        split = "train" if "train" in splits else splits[0] if len(splits) == 1 else None
        if split is None:
            problems.append(
                DataProblem(
                    file,
                    None,
                    None,
                    f"has the splits {', '.join(splits) or '(none)'} and none is "
                    "called 'train': save the split you want on its own with save_to_disk",
                )
            )
            return None
        loaded = loaded[split]
    rows = loaded.to_list()
    return _Table(file, [(index + 1, row) for index, row in enumerate(rows)], list(loaded.column_names))


_READERS: dict[str, Callable[[bytes, str, list[DataProblem]], _Table | None]] = {
    "jsonl": _read_jsonl,
    "json": _read_json,
    "csv": _read_csv,
    "parquet": _read_parquet,
}


# --------------------------------------------------------------------------------------
# checking all the data


class _Collector:
    """Reads every input of a spec, keeping the valid pairs and every problem found."""

    def __init__(self, spec: DataSpec):
        self.spec = spec
        self.problems: list[DataProblem] = []
        self.pairs: list[PreferencePair] = []
        self.known: dict[str, None] = dict.fromkeys(spec.sources)  # every source name met, in order
        self.rows: dict[str, int] = {}  # rows per kept source, valid or not
        self.files: dict[str, dict[str, None]] = {}  # files per kept source
        self.unread: set[str] = set()  # kept sources with an input that could not be read
        self.incomplete = False  # some file of `files` could not be read: its sources are unknown
        self.first_pair: dict[str, PreferencePair] = {}
        self.mixed: set[str] = set()
        self.seen: dict[str, dict[bytes, PreferencePair]] = {}

    def problem(self, file: str | None, line: int | None, field_name: str | None, message: str) -> None:
        self.problems.append(DataProblem(file, line, field_name, message))

    def kept(self, source: str) -> bool:
        return self.spec.select is None or source in self.spec.select

    def collect(self) -> None:
        for entry in self.spec.files:
            self.read(entry, None)
        for name, paths in self.spec.sources.items():
            if self.kept(name):
                for entry in [paths] if isinstance(paths, str) else paths:
                    self.read(entry, name)
        self.check_sources()

    def read(self, entry: str, source: str | None) -> None:
        before = len(self.problems)
        table = _read_input(entry, self.spec.base_dir, self.problems)
        if table is not None and not table.rows and len(self.problems) == before:
            self.problem(table.file, None, None, "holds no rows: fill it or remove it from the data settings")
        if table is None or not table.rows:
            if source is None:
                self.incomplete = True
            else:
                self.unread.add(source)
            return
        fields = TEXT_FIELDS if source is not None else (*TEXT_FIELDS, "source")
        needed = {name: getattr(self.spec, f"{name}_column") for name in fields}
        absent = {column for column in needed.values() if column not in table.columns}
        found = ", ".join(map(repr, table.columns)) or "none"
        for name, column in needed.items():
            if column in absent and name != "prompt":  # no prompt column: TRL's implicit prompt
                hint = " or name each source's files under sources" if name == "source" else ""
                self.problem(
                    table.file,
                    table.header_line,
                    column,
                    f"is not a column (columns found: {found}): rename the column, or set {name}_column{hint}",
                )
        for line, row in table.rows:
            self.add_row(table, line, row, source, absent)

    def add_row(self, table: _Table, line: int, row: Mapping[str, Any], source: str | None, absent: set[str]) -> None:
        spec, file, before = self.spec, table.file, len(self.problems)
        if source is None and spec.source_column not in absent:
            name = row.get(spec.source_column, _MISSING)
            if name is _MISSING:
                self.missing_cell(file, line, spec.source_column, row)
            elif (problem := _source_name_problem(name)) is not None:
                self.problem(file, line, spec.source_column, problem)
            else:
                self.known[name] = None
                if not self.kept(name):
                    return
                source = name
        if source is not None:
            self.rows[source] = self.rows.get(source, 0) + 1
            self.files.setdefault(source, {})[file] = None
        texts: dict[str, Text] = {}
        invalid = False
        for name in TEXT_FIELDS:
            column = getattr(spec, f"{name}_column")
            if column in absent:
                continue
            value = row.get(column, _MISSING)
            if value is _MISSING:
                if name != "prompt":  # no prompt: the one chosen and rejected share (TRL's implicit prompt)
                    self.missing_cell(file, line, column, row)
                continue
            if table.json_cells:
                value = _cell_text(value)
            if (problem := text_problem(value)) is not None:
                self.problem(file, line, column, problem)
                invalid = True
            else:
                texts[name] = _normalise_text(value)
        if not invalid and "chosen" in texts and "rejected" in texts:
            texts = self.extract_prompt(table, line, texts)
        self.check_pair(table, line, texts)
        if source is not None and len(texts) == len(TEXT_FIELDS) and len(self.problems) == before:
            self.add_pair(PreferencePair(texts["prompt"], texts["chosen"], texts["rejected"], source, file, line))

    def missing_cell(self, file: str, line: int, column: str, row: Mapping[str, Any]) -> None:
        found = ", ".join(map(repr, row)) or "none"
        self.problem(file, line, column, f"is missing from this row (it has {found}): give every row a {column!r}")

    def extract_prompt(self, table: _Table, line: int, texts: dict[str, Text]) -> dict[str, Text]:
        """The row as TRL's DPO trainer reads it: ``maybe_extract_prompt`` of its valid texts.

        Rows whose formats do not fit together are left for :meth:`check_pair` to report. A
        prompt that comes out empty (chosen and rejected share none) and a response that does not
        end with an assistant message are problems here.
        """
        spec = self.spec
        chosen, rejected, prompt = texts["chosen"], texts["rejected"], texts.get("prompt")
        if isinstance(chosen, list) != isinstance(rejected, list):
            return texts
        if isinstance(prompt, list) and not isinstance(chosen, list):
            return texts
        extracted = extract_trl_prompt(texts)
        new_prompt = extracted["prompt"]
        kept = prompt is not None and new_prompt == prompt and extracted["chosen"] == chosen  # an explicit prompt
        shared = all(
            isinstance(text, type(new_prompt)) and text[: len(new_prompt)] == new_prompt for text in (chosen, rejected)
        )
        if not kept and (not shared or not (new_prompt.strip() if isinstance(new_prompt, str) else new_prompt)):
            if prompt is None:
                where = f"no {spec.prompt_column!r} column" if spec.prompt_column not in table.columns else "no prompt"
                message = f"shares no start with rejected to take as the prompt, and the row has {where}"
            else:
                message = (
                    "is a conversation beside a plain-string prompt, and shares no first messages with rejected "
                    "to take as the prompt (write the prompt as a conversation, or let chosen and rejected "
                    "repeat the user's turn)"
                )
            self.problem(table.file, line, spec.chosen_column, f"{message}: the accepted shapes are {ACCEPTED_SHAPES}")
            return {}
        for name in ("chosen", "rejected"):
            text, other = extracted[name], "rejected" if name == "chosen" else "chosen"
            if not (text.strip() if isinstance(text, str) else text):
                self.problem(
                    table.file,
                    line,
                    getattr(spec, f"{name}_column"),
                    f"is all prompt: it holds nothing after the start it shares with {other}; fix or drop the row",
                )
                return {}
            if isinstance(text, list) and text[-1]["role"] not in RESPONSE_ROLES:
                self.problem(
                    table.file,
                    line,
                    getattr(spec, f"{name}_column"),
                    f"ends on a {text[-1]['role']!r} message, so it has no answer to train on: end chosen and "
                    f"rejected with the assistant's answer (the accepted shapes are {ACCEPTED_SHAPES})",
                )
                return {}
        return {name: extracted[name] for name in TEXT_FIELDS}

    def check_pair(self, table: _Table, line: int, texts: dict[str, Text]) -> None:
        """Check the texts of a row that are valid on their own against each other."""
        spec, formats = self.spec, {name: isinstance(text, list) for name, text in texts.items()}
        if len(set(formats.values())) > 1:
            values = list(formats.values())
            odd = (
                next(name for name in texts if values.count(formats[name]) == 1) if len(texts) > 2 else list(texts)[-1]
            )
            other = next(name for name in texts if name != odd)
            hint = (
                " (a CSV cell is a conversation only when it holds a valid JSON list of objects)"
                if table.json_cells
                else ""
            )
            self.problem(
                table.file,
                line,
                getattr(spec, f"{odd}_column"),
                f"is {_format_name(texts[odd])} but {other} is {_format_name(texts[other])}{hint}: "
                f"the accepted shapes are {ACCEPTED_SHAPES}",
            )
        elif "chosen" in texts and "rejected" in texts and _stripped(texts["chosen"]) == _stripped(texts["rejected"]):
            self.problem(
                table.file,
                line,
                spec.rejected_column,
                "is the same as chosen (up to surrounding spaces): "
                "a pair needs two different answers; fix or drop the row",
            )

    def add_pair(self, pair: PreferencePair) -> None:
        first = self.first_pair.setdefault(pair.source, pair)
        if first.conversational != pair.conversational and pair.source not in self.mixed:
            self.mixed.add(pair.source)
            self.problem(
                pair.file,
                pair.line,
                self.spec.prompt_column,
                f"is {_format_name(pair.prompt)} but source {pair.source!r} began with {_format_name(first.prompt)} "
                f"at {first.file}:{first.line}: use one format (plain strings or conversations) per source",
            )
        seen = self.seen.setdefault(pair.source, {})
        key = _canonical(pair)
        if key in seen:
            earlier = seen[key]
            self.problem(
                pair.file,
                pair.line,
                None,
                f"repeats the pair at {earlier.file}:{earlier.line} in source "
                f"{pair.source!r}: remove one of the two (the same pair in two sources is allowed)",
            )
            return
        seen[key] = pair
        self.pairs.append(pair)

    def check_sources(self) -> None:
        spec = self.spec
        known = ", ".join(map(repr, sorted(self.known))) or "none"
        for name in spec.select or []:
            if name not in self.known and not self.incomplete:
                self.problem(
                    None,
                    None,
                    "select",
                    f"names the source {name!r}, which the data does not have "
                    f"(known sources: {known}): fix the name or remove it from select",
                )
        for name in self.known:
            count = self.rows.get(name, 0)
            if self.kept(name) and name not in self.unread and count < spec.min_pairs:
                files = list(self.files.get(name, {}))
                self.problem(
                    files[0] if len(files) == 1 else None,
                    None,
                    None,
                    f"source {name!r} has {count} pair(s), fewer than min_pairs = {spec.min_pairs}: add pairs, "
                    "merge it into another source, leave it out of select, or lower min_pairs",
                )
        if not self.problems and not self.pairs:
            self.problem(None, None, None, "no preference pairs were found: check files, sources and select")


__all__ = [
    "ACCEPTED_SHAPES",
    "DataProblem",
    "DataSpec",
    "PreferencePair",
    "SourceData",
    "Text",
    "heldout_size",
    "load_eval_records",
    "load_pairs",
    "load_sources",
    "read_jsonl_records",
    "split_heldout",
    "text_problem",
    "extract_trl_prompt",
    "write_split",
]

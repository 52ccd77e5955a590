"""Reading preference data from files, ``save_to_disk`` folders and hub ids into rows with their lines.

One reader per format (JSON Lines, JSON, CSV and TSV, Parquet, a saved dataset, a hub dataset); each
appends what it cannot read to a list of problems rather than stopping. What ``line`` means in
each format is in :mod:`dposhap.data`.
"""

from __future__ import annotations

import bisect
import csv
import gzip
import io
import itertools
import json
import re
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError, DataValidationError
from .records import DataProblem
from .texts import json_kind

_FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
}
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9._-]+")
_JSON_SPACE = re.compile(r"[ \t\n\r]*")


def _past_space(text: str, position: int = 0) -> int:
    """The first position at or after ``position`` that is not JSON white space."""
    match = _JSON_SPACE.match(text, position)
    return match.end() if match is not None else position


_JSON_DECODER = json.JSONDecoder()


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


def cell_text(cell: Any) -> Any:
    """A CSV cell: a valid JSON list of objects is a conversation; anything else stays plain text."""
    if isinstance(cell, str) and cell.lstrip().startswith("["):
        try:
            value = json.loads(cell)
        except json.JSONDecodeError:
            return cell
        if isinstance(value, list) and value and all(isinstance(message, dict) for message in value):
            return value
    return cell


#: A list of messages written as Python, not JSON (pandas' ``to_csv`` of a column of lists or arrays of dicts)
_PYTHON_MESSAGES = re.compile(r"\s*\[\s*\{\s*'(?:role|content|from|value)'\s*:")


def python_messages_cell(cell: Any) -> bool:
    """Whether a CSV cell (as :func:`cell_text` left it) holds messages written as Python rather than JSON."""
    return isinstance(cell, str) and _PYTHON_MESSAGES.match(cell) is not None


@dataclass
class Table:
    """The rows read from one input, each with its line (see :mod:`dposhap.data`)."""

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


def read_input(entry: str, base_dir: str | None, problems: list[DataProblem]) -> Table | None:
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


def _read_jsonl(raw: bytes, file: str, problems: list[DataProblem]) -> Table:
    rows: list[tuple[int, Mapping[str, Any]]] = []
    columns: dict[str, None] = {}
    text = _decode(raw)
    if (problem := _one_json_document(text, file)) is not None:
        problems.append(problem)
        return Table(file, rows, [])
    for number, line in enumerate(text.split("\n"), start=1):
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
                    f"holds a JSON {json_kind(value)}: write one object "
                    '{"prompt": ..., "chosen": ..., "rejected": ...} per line',
                )
            )
            continue
        rows.append((number, value))
        columns.update(dict.fromkeys(value))
    return Table(file, rows, list(columns))


def _first_line(text: str) -> tuple[int, str]:
    """The first line of ``text`` that is not blank, with its number (``(1, "")`` when there is none)."""
    return next(((i, line) for i, line in enumerate(text.split("\n"), start=1) if line.strip()), (1, ""))


def _one_json_document(text: str, file: str) -> DataProblem | None:
    """A JSON Lines file that is one JSON document instead (an array, a pretty-printed object), or None."""
    number, first = _first_line(text)
    try:
        if isinstance(json.loads(first), dict):
            return None
    except json.JSONDecodeError:
        pass
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        return None
    return DataProblem(
        file,
        number,
        None,
        f"holds one JSON {json_kind(document)}, not one object per line: name it .json (a list of pair "
        'objects, or {"data": [...]}), or write one object per line',
    )


def _read_json(raw: bytes, file: str, problems: list[DataProblem]) -> Table | None:
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
                file, 1, None, f'holds a JSON {json_kind(document)}: give a list of pair objects, or {{"data": [...]}}'
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
                DataProblem(file, line, None, f"holds a JSON {json_kind(item)} where a pair object was expected")
            )
            continue
        rows.append((line, item))
        columns.update(dict.fromkeys(item))
    return Table(file, rows, list(columns))


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


def _read_csv(raw: bytes, file: str, problems: list[DataProblem], delimiter: str = ",") -> Table:
    text = _decode(raw)
    table = Table(file, [], [], json_cells=True)
    if (problem := _separator_problem(text, file, delimiter)) is not None:
        problems.append(problem)
        return table
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    header: list[str] | None = None
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
            if not any(cell.strip() for cell in cells):  # a blank line, spaces only, or empty cells (",,")
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
                        f"quote cells that hold {'tabs' if delimiter == chr(9) else 'commas'}, quotes or line breaks",
                    )
                )
                continue
            table.rows.append((line, dict(zip(header, cells, strict=False))))
    finally:
        csv.field_size_limit(previous_limit)
    return table


_SEPARATORS = {",": "commas", "\t": "tabs", ";": "semicolons", "|": "'|'"}


def _separator_problem(text: str, file: str, delimiter: str) -> DataProblem | None:
    """A header line without the file's separator but with another one (Excel's ';', a TSV named .csv), or None."""
    number, header = _first_line(text)
    if delimiter in header:
        return None
    found = next((sep for sep in _SEPARATORS if sep != delimiter and sep in header), None)
    if found is None:
        return None
    if {found, delimiter} == {",", "\t"}:
        todo = f"name it {'.tsv' if found == chr(9) else '.csv'}"
    else:
        todo = f"save it separated by {_SEPARATORS[delimiter]}"
    return DataProblem(
        file, number, None, f"has a header separated by {_SEPARATORS[found]}, not {_SEPARATORS[delimiter]}: {todo}"
    )


def _read_parquet(raw: bytes, file: str, problems: list[DataProblem]) -> Table | None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        data = pq.read_table(pa.BufferReader(raw))
    except (pa.ArrowException, OSError) as exc:
        problems.append(
            DataProblem(file, None, None, f"is not a readable Parquet file ({_describe(exc)}): write it again")
        )
        return None
    return Table(file, [(index + 1, row) for index, row in enumerate(data.to_pylist())], list(data.column_names))


def _read_saved_dataset(path: Path, file: str, problems: list[DataProblem]) -> Table | None:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises assorted types for a folder that is not a saved dataset
        inside = _data_files_in(path)
        if inside:
            shown = ", ".join(map(repr, inside[:3])) + (f" and {len(inside) - 3} more" if len(inside) > 3 else "")
            todo = f": it holds the data files {shown} (a downloaded hub dataset?): list the ones you want instead"
        else:
            todo = f" ({_describe(exc)}): give a data file, or the folder save_to_disk wrote"
        problems.append(DataProblem(file, None, None, f"is a folder but not a dataset written by save_to_disk{todo}"))
        return None
    return _dataset_table(loaded, file, problems)


def _data_files_in(folder: Path, limit: int = 10_000) -> list[str]:
    """The files of a readable format under ``folder`` (the first ``limit`` entries looked at), relative, sorted."""
    found = []
    for entry in itertools.islice(folder.rglob("*"), limit):
        if _format_of(entry) is not None and entry.is_file():
            found.append(str(entry.relative_to(folder)))
    return sorted(found)


def _read_hub_dataset(entry: str, problems: list[DataProblem]) -> Table | None:
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
                "and give a local path (a .jsonl, .json, .csv, .tsv or .parquet file, or a folder "
                "written by save_to_disk)",
            )
        )
        return None
    return _dataset_table(loaded, entry, problems)


def _dataset_table(loaded: Any, file: str, problems: list[DataProblem]) -> Table | None:
    """The rows of a ``datasets`` Dataset, or of the train (or only) split of a DatasetDict."""
    if isinstance(loaded, Mapping):
        splits = list(loaded)
        split = "train" if "train" in splits else splits[0] if len(splits) == 1 else None
        if split is None:
            # save_to_disk writes each split of a DatasetDict as a saved Dataset in its own folder
            example = next((name for name in splits if name.startswith("train")), splits[0] if splits else None)
            todo = (
                f"give the folder of the split you want, e.g. {str(Path(file) / example)!r}"
                if example is not None and (Path(file) / example).is_dir()
                else "save the split you want on its own with save_to_disk and give that folder"
            )
            problems.append(
                DataProblem(
                    file,
                    None,
                    None,
                    f"has the splits {', '.join(splits) or '(none)'} and none is called 'train': {todo}",
                )
            )
            return None
        loaded = loaded[split]
    rows = loaded.to_list()
    return Table(file, [(index + 1, row) for index, row in enumerate(rows)], list(loaded.column_names))


_READERS: dict[str, Callable[[bytes, str, list[DataProblem]], Table | None]] = {
    "jsonl": _read_jsonl,
    "json": _read_json,
    "csv": _read_csv,
    "tsv": lambda raw, file, problems: _read_csv(raw, file, problems, delimiter="\t"),
    "parquet": _read_parquet,
}

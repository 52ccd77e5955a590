"""Validation of preference rows as TRL's DPO trainer reads them: every problem with its file, line and field.

:func:`load_pairs` reads every input of a :class:`~dposhap.data.DataSpec` and checks all of it
before anything is trained, raising one :class:`~dposhap.errors.DataValidationError` that lists
every problem.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import DataValidationError
from .readers import Table, cell_text, python_messages_cell, read_input
from .records import DataProblem, DataSpec, PreferencePair, canonical_bytes
from .texts import (
    RESPONSE_ROLES,
    TEXT_FIELDS,
    Text,
    copy_text,
    format_name,
    normalise_text,
    source_name_problem,
    stripped_text,
    text_problem,
)

#: The preference rows dposhap reads (TRL's DPO formats), for error messages.
ACCEPTED_SHAPES = (
    "prompt + chosen + rejected (plain strings, or conversations); chosen + rejected alone that start with "
    "the same prompt (a shared prefix, e.g. HH-RLHF's Human/Assistant strings, or the same first messages); "
    "a prompt string beside chosen and rejected conversations that repeat it (UltraFeedback)"
)
_MISSING = object()


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
    SettingError
        The spec names no data.
    """
    spec.check_given()
    collector = _Collector(spec)
    collector.collect()
    if collector.problems:
        raise DataValidationError(collector.problems)
    return collector.pairs


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

    row = {name: copy_text(example[name]) for name in TEXT_FIELDS if name in example}
    out = maybe_extract_prompt(row)
    return {name: out[name] for name in TEXT_FIELDS}


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
        self.first_pair: dict[tuple[str, str], PreferencePair] = {}  # the first pair of each format group
        self.mixed: set[tuple[str, str]] = set()
        self.seen: dict[str, dict[bytes, PreferencePair]] = {}

    def problem(self, file: str | None, line: int | None, field_name: str | None, message: str) -> None:
        self.problems.append(DataProblem(file, line, field_name, message))

    def kept(self, source: str) -> bool:
        return self.spec.select is None or source in self.spec.select

    def collect(self) -> None:
        for entry in self.spec.files:
            self.read(entry, self.spec.pool)
        for name, paths in self.spec.sources.items():
            if self.kept(name):
                for entry in [paths] if isinstance(paths, str) else paths:
                    self.read(entry, name)
        self.check_sources()

    def read(self, entry: str, source: str | None) -> None:
        before = len(self.problems)
        table = read_input(entry, self.spec.base_dir, self.problems)
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
            # no "prompt" column: TRL's implicit prompt; a prompt column the settings name must be there
            if column in absent and (name != "prompt" or column != "prompt"):
                hint = {
                    "source": " or name each source's files under sources",
                    "prompt": " (or leave prompt_column out where chosen and rejected start with the prompt)",
                }.get(name, "")
                self.problem(
                    table.file,
                    table.header_line,
                    column,
                    f"is not a column (columns found: {found}): rename the column, or set {name}_column{hint}",
                )
        for line, row in table.rows:
            self.add_row(table, line, row, source, absent)

    def add_row(self, table: Table, line: int, row: Mapping[str, Any], source: str | None, absent: set[str]) -> None:
        spec, file, before = self.spec, table.file, len(self.problems)
        if source is None and spec.source_column not in absent:
            name = row.get(spec.source_column, _MISSING)
            if name is _MISSING:
                self.missing_cell(file, line, spec.source_column, row)
            elif (problem := source_name_problem(name)) is not None:
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
                value = cell_text(value)
                if python_messages_cell(value):
                    self.problem(
                        file,
                        line,
                        column,
                        "holds messages written as Python (single quotes), as pandas' to_csv writes a column of "
                        "lists, not as JSON: write each conversation with json.dumps, or save the data as JSONL "
                        "or Parquet",
                    )
                    invalid = True
                    continue
            if (problem := text_problem(value)) is not None:
                self.problem(file, line, column, problem)
                invalid = True
            else:
                texts[name] = normalise_text(value)
        if not invalid and "chosen" in texts and "rejected" in texts:
            texts = self.extract_prompt(table, line, texts)
        self.check_pair(table, line, texts)
        if source is not None and len(texts) == len(TEXT_FIELDS) and len(self.problems) == before:
            pair = PreferencePair(texts["prompt"], texts["chosen"], texts["rejected"], source, file, line)
            self.add_pair(pair, self.format_group(table, row, source))

    def format_group(self, table: Table, row: Mapping[str, Any], source: str) -> str | None:
        """The source one format is asked of: the pair's own, or in a pool the row's source column (None: its file)."""
        if self.spec.pool is None:
            return source
        name = row.get(self.spec.source_column) if self.spec.source_column in table.columns else None
        return name if isinstance(name, str) and source_name_problem(name) is None else None

    def missing_cell(self, file: str, line: int, column: str, row: Mapping[str, Any]) -> None:
        found = ", ".join(map(repr, row)) or "none"
        self.problem(file, line, column, f"is missing from this row (it has {found}): give every row a {column!r}")

    def extract_prompt(self, table: Table, line: int, texts: dict[str, Text]) -> dict[str, Text]:
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

    def check_pair(self, table: Table, line: int, texts: dict[str, Text]) -> None:
        """Check the texts of a row that are valid on their own against each other."""
        spec, formats = self.spec, {name: isinstance(text, list) for name, text in texts.items()}
        # a prompt string beside one conversation is UltraFeedback's shape: with the other answer missing or
        # invalid (already reported), nothing is wrong between these two
        one_answer_beside_prompt_string = isinstance(texts.get("prompt"), str) and len(texts) == 2
        if len(set(formats.values())) > 1 and not one_answer_beside_prompt_string:
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
                f"is {format_name(texts[odd])} but {other} is {format_name(texts[other])}{hint}: "
                f"the accepted shapes are {ACCEPTED_SHAPES}",
            )
        elif (
            "chosen" in texts
            and "rejected" in texts
            and stripped_text(texts["chosen"]) == stripped_text(texts["rejected"])
        ):
            self.problem(
                table.file,
                line,
                spec.rejected_column,
                "is the same as chosen (up to surrounding spaces): "
                "a pair needs two different answers; fix or drop the row",
            )

    def add_pair(self, pair: PreferencePair, group: str | None) -> None:
        """Keep a valid pair: one format per ``group`` (a source; None: the pair's file), no pair twice in a source."""
        key = ("source", group) if group is not None else ("file", pair.file)
        first = self.first_pair.setdefault(key, pair)
        if first.conversational != pair.conversational and key not in self.mixed:
            self.mixed.add(key)
            began, per = (f"source {group!r}", "per source") if group is not None else ("this file", "per file")
            if group is None:
                per += f", or name each row's source in a {self.spec.source_column!r} column and use one per source"
            self.problem(
                pair.file,
                pair.line,
                self.spec.prompt_column,
                f"is {format_name(pair.prompt)} but {began} began with {format_name(first.prompt)} "
                f"at {first.file}:{first.line}: use one format (plain strings or conversations) {per}",
            )
        seen = self.seen.setdefault(pair.source, {})
        content = canonical_bytes(pair)
        if content in seen and not self.spec.repeats:
            earlier = seen[content]
            where = (
                ": remove one of the two"
                if self.spec.pool is not None
                else f" in source {pair.source!r}: remove one of the two (the same pair in two sources is allowed)"
            )
            self.problem(pair.file, pair.line, None, f"repeats the pair at {earlier.file}:{earlier.line}{where}")
            return
        seen[content] = pair
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
        pool = spec.pool
        if pool is not None and pool not in self.unread and not self.incomplete:
            count, files = self.rows.get(pool, 0), list(self.files.get(pool, {}))
            if 0 < count < spec.min_pairs:
                self.problem(
                    files[0] if len(files) == 1 else None,
                    None,
                    None,
                    f"the data have {count} pair(s), fewer than the {spec.min_pairs} needed: add pairs",
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

"""Loading, validation and splitting of multi-source preference data (dposhap.data)."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dposhap.data import (
    DataProblem,
    DataSpec,
    PreferencePair,
    SourceData,
    heldout_size,
    load_pairs,
    load_sources,
    read_jsonl_records,
    split_heldout,
    write_split,
)
from dposhap.errors import DataError, DataValidationError, InvalidArgumentError, SettingError

# --------------------------------------------------------------------------------------
# building data


def make_rows(source: str, n: int, *, conversational: bool = False, start: int = 0) -> list[dict[str, Any]]:
    """``n`` distinct valid rows of one source."""
    rows = []
    for i in range(start, start + n):
        prompt, chosen, rejected = f"Question {i} for {source}: ça va?", f"good answer {i}", f"bad answer {i}"
        if conversational:
            prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}]
            chosen = [{"role": "assistant", "content": chosen}]
            rejected = [{"role": "assistant", "content": rejected}]
        rows.append({"source": source, "prompt": prompt, "chosen": chosen, "rejected": rejected})
    return rows


def write_jsonl(path: Path, rows: list[Any]) -> str:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def write_csv(path: Path, rows: list[dict[str, Any]]) -> str:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(list(rows[0]))
        for row in rows:
            writer.writerow([value if isinstance(value, str) else json.dumps(value) for value in row.values()])
    return str(path)


def problems_of(spec: DataSpec) -> list[DataProblem]:
    with pytest.raises(DataValidationError) as info:
        load_pairs(spec)
    return info.value.problems


def only_problem(spec: DataSpec) -> DataProblem:
    problems = problems_of(spec)
    assert len(problems) == 1, "\n".join(map(str, problems))
    return problems[0]


def records(pairs: list[PreferencePair]) -> list[dict[str, Any]]:
    return [{**pair.to_record(), "source": pair.source} for pair in pairs]


ROWS = make_rows("alpha", 5) + make_rows("beta", 4, conversational=True)
EXPECTED = [dict(row) for row in ROWS]


# --------------------------------------------------------------------------------------
# formats


def _jsonl(tmp: Path) -> tuple[str, list[int]]:
    path = tmp / "pairs.jsonl"
    lines = [json.dumps(row) for row in ROWS]
    lines.insert(3, "   ")  # blank lines are skipped but counted
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path), [1, 2, 3, *range(5, 11)]


def _jsonl_gz(tmp: Path) -> tuple[str, list[int]]:
    path = tmp / "pairs.ndjson.gz"
    path.write_bytes(gzip.compress("".join(json.dumps(row) + "\n" for row in ROWS).encode()))
    return str(path), list(range(1, 10))


def _json_list(tmp: Path) -> tuple[str, list[int]]:
    path = tmp / "pairs.json"
    path.write_text("[\n" + ",\n".join(json.dumps(row) for row in ROWS) + "\n]\n", encoding="utf-8")
    return str(path), list(range(2, 11))


def _json_data(tmp: Path) -> tuple[str, list[int]]:
    path = tmp / "pairs.json"
    body = ",\n\n".join(json.dumps(row) for row in ROWS)
    path.write_text('{"version": "1", "notes": [1, {"a": "}"}],\n "data": [\n' + body + "\n]}", encoding="utf-8")
    return str(path), list(range(3, 20, 2))


def _json_indented(tmp: Path) -> tuple[str, list[int]]:
    path = tmp / "pairs.json"
    text = json.dumps({"train": ROWS}, indent=2)
    path.write_text(text, encoding="utf-8")
    # each object starts on a line holding only "{" in the list under "train"
    starts = [number for number, line in enumerate(text.splitlines(), start=1) if line == "    {"]
    return str(path), starts


def _csv(tmp: Path) -> tuple[str, list[int]]:
    rows = [dict(row) for row in ROWS]
    rows[1]["prompt"] = "line one\nline two, with a comma"  # one row over two physical lines
    EXPECTED_CSV[:] = [dict(row) for row in rows]
    return write_csv(tmp / "pairs.csv", rows), [2, 3, *range(5, 12)]


def _csv_gz(tmp: Path) -> tuple[str, list[int]]:
    plain = Path(write_csv(tmp / "plain.csv", ROWS))
    path = tmp / "pairs.csv.gz"
    path.write_bytes(gzip.compress(plain.read_bytes()))
    return str(path), list(range(2, 11))


def _parquet(tmp: Path) -> tuple[str, list[int]]:
    path = tmp / "pairs.parquet"
    # one schema for both formats: conversational sources in their own file
    pq.write_table(pa.Table.from_pylist(ROWS[:5]), tmp / "plain.parquet")
    pq.write_table(pa.Table.from_pylist(ROWS[5:]), path)
    return f"{tmp / 'plain.parquet'}|{path}", [1, 2, 3, 4, 5, 1, 2, 3, 4]


def _saved_dataset(tmp: Path) -> tuple[str, list[int]]:
    import datasets

    datasets.Dataset.from_list(ROWS[:5]).save_to_disk(str(tmp / "plain_ds"))
    splits = {"train": datasets.Dataset.from_list(ROWS[5:]), "test": datasets.Dataset.from_list(make_rows("beta", 2))}
    datasets.DatasetDict(splits).save_to_disk(str(tmp / "chat_ds"))
    return f"{tmp / 'plain_ds'}|{tmp / 'chat_ds'}", [1, 2, 3, 4, 5, 1, 2, 3, 4]


EXPECTED_CSV: list[dict[str, Any]] = []
WRITERS = {
    "jsonl": _jsonl,
    "ndjson.gz": _jsonl_gz,
    "json-list": _json_list,
    "json-data": _json_data,
    "json-indented": _json_indented,
    "csv": _csv,
    "csv.gz": _csv_gz,
    "parquet": _parquet,
    "save_to_disk": _saved_dataset,
}


@pytest.mark.parametrize("kind", list(WRITERS))
def test_every_format_round_trips_with_its_lines(tmp_path: Path, kind: str) -> None:
    files, lines = WRITERS[kind](tmp_path)
    pairs = load_pairs(DataSpec(files=files.split("|"), min_pairs=2))
    assert records(pairs) == (EXPECTED_CSV if kind == "csv" else EXPECTED)
    assert [pair.line for pair in pairs] == lines
    assert [pair.conversational for pair in pairs] == [False] * 5 + [True] * 4
    assert pairs[0].file == files.split("|")[0]


def test_one_file_per_source_needs_no_source_column(tmp_path: Path) -> None:
    plain = [{k: v for k, v in row.items() if k != "source"} for row in make_rows("x", 3)]
    chat = make_rows("ignored", 3, conversational=True)  # a source column there is ignored
    (tmp_path / "cfg").mkdir()
    write_jsonl(tmp_path / "plain.jsonl", plain)
    write_csv(tmp_path / "chat.csv", chat)
    write_jsonl(
        tmp_path / "more.jsonl", [{k: v for k, v in row.items() if k != "source"} for row in make_rows("x", 2, start=3)]
    )
    spec = DataSpec(
        sources={"helpful": ["../plain.jsonl", "../more.jsonl"], "harmless": "../chat.csv"},
        base_dir=str(tmp_path / "cfg"),
        min_pairs=3,
    )
    sources = load_sources(spec)
    assert list(sources) == ["harmless", "helpful"]  # sorted by name
    helpful = sources["helpful"]
    assert len(helpful.train) + len(helpful.heldout) == 5
    assert {pair.file for pair in helpful.train + helpful.heldout} == {
        str(tmp_path / "cfg" / "../plain.jsonl"),
        str(tmp_path / "cfg" / "../more.jsonl"),
    }
    assert all(pair.source == "harmless" and pair.conversational for pair in sources["harmless"].train)


def test_custom_column_names(tmp_path: Path) -> None:
    rows = [
        {"origin": r["source"], "q": r["prompt"], "good": r["chosen"], "bad": r["rejected"]} for r in make_rows("s", 3)
    ]
    spec = DataSpec(
        files=[write_jsonl(tmp_path / "d.jsonl", rows)],
        source_column="origin",
        prompt_column="q",
        chosen_column="good",
        rejected_column="bad",
        min_pairs=3,
    )
    assert records(load_pairs(spec)) == make_rows("s", 3)


def test_conversational_records_are_what_trl_reads(tmp_path: Path) -> None:
    rows = make_rows("c", 3, conversational=True)
    rows[0]["prompt"][1]["name"] = None  # keys set to null (Arrow fills them in) are dropped
    pairs = load_pairs(DataSpec(files=[write_jsonl(tmp_path / "c.jsonl", rows)], min_pairs=3))
    record = pairs[0].to_record()
    assert record["prompt"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Question 0 for c: ça va?"},
    ]
    assert record["chosen"] == [{"role": "assistant", "content": "good answer 0"}]
    record["prompt"].clear()
    assert len(pairs[0].prompt) == 2  # the record is a copy


def test_selection_keeps_only_named_sources_and_ignores_the_rest(tmp_path: Path) -> None:
    broken = make_rows("broken", 2)
    broken[0]["chosen"] = ""  # not checked: the source is not selected
    path = write_jsonl(tmp_path / "d.jsonl", make_rows("a", 3) + broken + make_rows("b", 3))
    spec = DataSpec(files=[path], select=["b"], sources={"other": str(tmp_path / "absent.jsonl")}, min_pairs=3)
    assert {pair.source for pair in load_pairs(spec)} == {"b"}


# --------------------------------------------------------------------------------------
# bad input: each problem with its file, line and field


def _set(row: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    return {**row, key: value}


CHAT = make_rows("s", 1, conversational=True)[0]
PLAIN = make_rows("s", 1, start=100)[0]
BAD_ROWS = {
    "int-prompt": (_set(PLAIN, "prompt", 3), "prompt", "is a number"),
    "null-chosen": (_set(PLAIN, "chosen", None), "chosen", "null"),
    "empty-prompt": (_set(PLAIN, "prompt", ""), "prompt", "empty or only whitespace"),
    "blank-rejected": (_set(PLAIN, "rejected", " \n\t"), "rejected", "empty or only whitespace"),
    "same-answers": (_set(PLAIN, "rejected", PLAIN["chosen"] + "  "), "rejected", "same as chosen"),
    "dict-not-list": (_set(CHAT, "chosen", CHAT["chosen"][0]), "chosen", "inside a list"),
    "empty-list": (_set(CHAT, "prompt", []), "prompt", "empty list of messages"),
    "message-not-object": (_set(CHAT, "prompt", ["hello"]), "prompt", "message 1 is a string"),
    "extra-key": (_set(CHAT, "chosen", [{"role": "assistant", "content": "x", "weight": 1}]), "chosen", "weight"),
    "no-content": (_set(CHAT, "rejected", [{"role": "assistant"}]), "rejected", "no string 'content'"),
    "bad-prompt-role": (_set(CHAT, "prompt", [{"role": "human", "content": "x"}]), "prompt", "role 'human'"),
    "user-in-chosen": (_set(CHAT, "chosen", [{"role": "user", "content": "x"}]), "chosen", "ends on a 'user' message"),
    "blank-message": (_set(CHAT, "chosen", [{"role": "assistant", "content": " "}]), "chosen", "message 1 is empty"),
    "same-conversation": (_set(CHAT, "rejected", CHAT["chosen"]), "rejected", "same as chosen"),
    "mixed-formats": (_set(CHAT, "chosen", "plain"), "chosen", "plain string but prompt is a conversation"),
    "empty-source": (_set(PLAIN, "source", ""), "source", "is empty"),
    "spaced-source": (_set(PLAIN, "source", " s"), "source", "spaces at its start"),
    "slash-source": (_set(PLAIN, "source", "a/b"), "source", "cannot name a folder"),
    "numeric-source": (_set(PLAIN, "source", 7), "source", "not a source name"),
    "no-chosen-here": ({k: v for k, v in PLAIN.items() if k != "chosen"}, "chosen", "missing from this row"),
}


@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_each_bad_row_is_located(tmp_path: Path, case: str) -> None:
    bad, field, phrase = BAD_ROWS[case]
    rows = make_rows("s", 3) + [bad] + make_rows("s", 2, start=3)
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    problem = only_problem(DataSpec(files=[path], min_pairs=2))
    assert (problem.file, problem.line, problem.field) == (path, 4, field)
    assert phrase in problem.message


def test_a_file_with_many_problems_reports_them_all(tmp_path: Path) -> None:
    rows = make_rows("s", 10)
    bad_lines = {}
    for bad, field, _ in [*BAD_ROWS.values(), *BAD_ROWS.values()]:
        rows.append(bad)
        bad_lines[len(rows)] = field
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(DataValidationError) as info:
        load_pairs(DataSpec(files=[path], min_pairs=2))
    error = info.value
    assert [(p.line, p.field) for p in error.problems] == list(bad_lines.items())
    assert (error.file, error.line, error.field) == (path, 11, "prompt")
    assert isinstance(error, DataError) and isinstance(error, ValueError)
    text = str(error)
    assert text.startswith(f"{len(bad_lines)} problems in the preference data")
    assert text.count("\n  - ") == 20 and f"and {len(bad_lines) - 20} more" in text
    assert f"{path}:11 field 'prompt': is a number" in text


def test_problems_in_several_files_and_sources_come_together(tmp_path: Path) -> None:
    a = make_rows("a", 3)
    a[1]["chosen"] = 5
    first = write_jsonl(tmp_path / "a.jsonl", a)
    second = write_csv(
        tmp_path / "b.csv", [_set(row, "prompt", "") if i == 2 else row for i, row in enumerate(make_rows("b", 3))]
    )
    problems = problems_of(DataSpec(files=[first, second], sources={"c": str(tmp_path / "none.jsonl")}, min_pairs=3))
    assert [(p.file, p.line, p.field) for p in problems] == [
        (first, 2, "chosen"),
        (second, 4, "prompt"),
        (str(tmp_path / "none.jsonl"), None, None),
    ]
    assert "does not exist" in problems[2].message


def test_missing_column_names_the_columns_found(tmp_path: Path) -> None:
    rows = [{"source": "s", "prompt": "p", "answer": f"a{i}", "rejected": "r"} for i in range(3)]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    problem = only_problem(DataSpec(files=[path], min_pairs=2))
    assert (problem.file, problem.line, problem.field) == (path, None, "chosen")
    assert "'source', 'prompt', 'answer', 'rejected'" in problem.message and "chosen_column" in problem.message


def test_a_named_prompt_column_must_be_there(tmp_path: Path) -> None:
    # HH-style rows: no prompt column. Left at its default, the prompt is what chosen and rejected share;
    # named by the user, an absent column is a mistake (a typo), not a reason to guess the prompt
    rows = [{"source": "s", "chosen": f"Q{i}? Yes.", "rejected": f"Q{i}? No."} for i in range(3)]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    assert [p.prompt for p in load_pairs(DataSpec(files=[path], min_pairs=2))] == ["Q0?", "Q1?", "Q2?"]
    problem = only_problem(DataSpec(files=[path], min_pairs=2, prompt_column="question"))
    assert (problem.file, problem.line, problem.field) == (path, None, "question")
    assert "is not a column" in problem.message and "leave prompt_column out" in problem.message


def test_missing_columns_in_tables(tmp_path: Path) -> None:
    rows = [{k: v for k, v in row.items() if k not in ("source", "rejected")} for row in make_rows("s", 3)]
    csv_path = write_csv(tmp_path / "d.csv", rows)
    parquet_path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet_path)
    problems = problems_of(DataSpec(files=[csv_path, str(parquet_path)], min_pairs=2))
    assert [(p.file, p.line, p.field) for p in problems] == [
        (csv_path, 1, "rejected"),
        (csv_path, 1, "source"),
        (str(parquet_path), None, "rejected"),
        (str(parquet_path), None, "source"),
    ]
    assert "sources" in problems[1].message  # the way out without a source column


def test_source_with_too_few_pairs(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", make_rows("big", 4) + make_rows("small", 2))
    problem = only_problem(DataSpec(files=[path], min_pairs=3))
    assert (problem.file, problem.line, problem.field) == (path, None, None)
    assert "'small' has 2 pair(s), fewer than min_pairs = 3" in problem.message


def test_duplicates_within_a_source_name_both_places(tmp_path: Path) -> None:
    rows = make_rows("a", 3) + make_rows("b", 3)
    first = write_jsonl(tmp_path / "one.jsonl", rows)
    second = write_jsonl(tmp_path / "two.jsonl", [rows[1], _set(rows[1], "source", "b")])
    problem = only_problem(DataSpec(files=[first, second], min_pairs=3))
    assert (problem.file, problem.line, problem.field) == (second, 1, None)
    assert f"repeats the pair at {first}:2 in source 'a'" in problem.message


def test_a_union_may_repeat_pairs_when_the_spec_allows_it(tmp_path: Path) -> None:
    rows = make_rows("a", 3)
    path = write_jsonl(tmp_path / "d.jsonl", rows + rows[:2])
    pairs = load_pairs(DataSpec(files=[path], min_pairs=3, repeats=True))
    assert records(pairs) == rows + rows[:2]


def test_the_same_pairs_in_two_sources_are_allowed(tmp_path: Path) -> None:
    rows = make_rows("a", 5)
    path = write_jsonl(tmp_path / "d.jsonl", rows + [_set(row, "source", "a_copy") for row in rows])
    sources = load_sources(DataSpec(files=[path], min_pairs=5))
    original, copy = sources["a"], sources["a_copy"]
    assert original.train_records() == copy.train_records() and original.heldout_records() == copy.heldout_records()
    assert original.data_hash == copy.data_hash


def test_one_format_per_source(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", make_rows("s", 2) + make_rows("s", 2, conversational=True, start=2))
    problem = only_problem(DataSpec(files=[path], min_pairs=2))
    assert (problem.file, problem.line, problem.field) == (path, 3, "prompt")
    assert f"began with a plain string at {path}:1" in problem.message


def test_invalid_utf8_is_reported_by_line_and_field(tmp_path: Path) -> None:
    good = make_rows("s", 3)
    lines = [json.dumps(row, ensure_ascii=False).encode() for row in good]
    lines.insert(1, json.dumps(_set(PLAIN, "chosen", "caf\u00e9")).encode().replace(b"\\u00e9", b"\xe9"))
    jsonl = tmp_path / "latin.jsonl"
    jsonl.write_bytes(b"\n".join(lines))
    csv_file = tmp_path / "latin.csv"
    csv_file.write_bytes(b"source,prompt,chosen,rejected\ns,p,a,b\ns,p,\xff\xfe,b\n")
    json_file = tmp_path / "latin.json"
    json_file.write_bytes(b'[\n{"source": "s", "prompt": "p\xe9", "chosen": "a", "rejected": "b"}\n]')
    problems = problems_of(DataSpec(files=[str(jsonl), str(csv_file), str(json_file)], min_pairs=2))
    assert [(p.file, p.line, p.field) for p in problems] == [
        (str(jsonl), 2, "chosen"),
        (str(csv_file), 3, "chosen"),
        (str(json_file), 2, "prompt"),
    ]
    assert all("not valid UTF-8" in p.message for p in problems)
    assert "byte 0xe9 at character 4" in problems[0].message and "byte 0xff" in problems[1].message


def test_broken_files(tmp_path: Path) -> None:
    cases = {
        "bad.jsonl": (
            b'{"source": "s"}\n{"prompt": oops}\n[1, 2]\n',
            [(2, "not valid JSON"), (3, "holds a JSON list")],
        ),
        "lines.json": (b'{"a": 1}\n{"a": 2}\n', [(2, "name it .jsonl")]),
        "keys.json": (b'{"rows": []}', [(1, "keys found: 'rows'")]),
        "items.json": (b'[\n  {"source": "s"},\n  "text"\n]', [(3, "holds a JSON string")]),
        "cells.csv": (b"source,prompt,chosen,rejected\ns,p,c\n", [(2, "has 3 cells but the header has 4")]),
        "quotes.csv": (b'source,prompt,chosen,rejected\ns,"p,c,r\n', [(2, "not valid CSV")]),
        "header.csv": (b"source,prompt,prompt,chosen,rejected\n", [(1, "names two columns")]),
        "empty.jsonl": (b"\n \n", [(None, "holds no rows")]),
        "data.txt": (b"hello", [(None, "unknown format")]),
        "broken.jsonl.gz": (b"not gzip", [(None, "cannot be read")]),
        "broken.parquet": (b"PAR1 not really", [(None, "not a readable Parquet file")]),
    }
    for name, (content, expected) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        problems = problems_of(DataSpec(files=[str(path)], min_pairs=2))
        assert [p.line for p in problems][: len(expected)] == [line for line, _ in expected], name
        for problem, (_, phrase) in zip(problems, expected, strict=False):
            assert problem.file == str(path) and phrase in problem.message, (name, str(problem))


def test_unknown_sources_in_select_list_the_known_ones(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", make_rows("b", 2) + make_rows("a", 2))
    problem = only_problem(DataSpec(files=[path], sources={"c": path}, select=["a", "helpfull"], min_pairs=2))
    assert (problem.file, problem.line, problem.field) == (None, None, "select")
    assert "'helpfull'" in problem.message and "known sources: 'a', 'b', 'c'" in problem.message


def test_saved_datasets_that_cannot_be_used(tmp_path: Path) -> None:
    import datasets

    splits = {
        "dev": datasets.Dataset.from_list(make_rows("s", 2)),
        "test": datasets.Dataset.from_list(make_rows("s", 2)),
    }
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "no_train"))
    (tmp_path / "plain_folder").mkdir()
    problems = problems_of(DataSpec(files=[str(tmp_path / "no_train"), str(tmp_path / "plain_folder")], min_pairs=2))
    assert [p.file for p in problems] == [str(tmp_path / "no_train"), str(tmp_path / "plain_folder")]
    assert "dev, test" in problems[0].message and "save_to_disk" in problems[1].message


def test_unreachable_hub_dataset_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import datasets

    asked = []

    def offline(name: str, *args: Any, **kwargs: Any) -> Any:
        asked.append(name)
        raise ConnectionError("Couldn't reach the Hugging Face Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.chdir(tmp_path)
    problem = only_problem(DataSpec(files=["some-org/prefs"], min_pairs=2))
    assert asked == ["some-org/prefs"]
    assert (problem.file, problem.line, problem.field) == ("some-org/prefs", None, None)
    assert "ConnectionError" in problem.message and "local path" in problem.message
    # a missing file with a data suffix is not taken for a hub id
    problem = only_problem(DataSpec(files=["data/prefs.jsonl"], min_pairs=2))
    assert asked == ["some-org/prefs"] and "does not exist" in problem.message


def test_hub_dataset_rows(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import datasets

    dataset = datasets.DatasetDict({"train": datasets.Dataset.from_list(make_rows("s", 3))})
    monkeypatch.setattr(datasets, "load_dataset", lambda name, *a, **k: dataset)
    monkeypatch.chdir(tmp_path)
    pairs = load_pairs(DataSpec(files=["org/name"], min_pairs=3))
    assert records(pairs) == make_rows("s", 3) and [p.file for p in pairs] == ["org/name"] * 3


@pytest.mark.parametrize(
    ("settings_", "phrase"),
    [
        ({"files": ["a"], "heldout_fraction": 1.0}, "strictly between 0 and 1"),
        ({"files": ["a"], "heldout_fraction": 0}, "strictly between 0 and 1"),
        ({"files": ["a"], "heldout_fraction": True}, "strictly between 0 and 1"),
        ({"files": ["a"], "min_pairs": 1}, "min_pairs must be an integer >= 2"),
        ({"files": ["a"], "min_pairs": 5, "heldout_min": 5}, "min_pairs must be an integer >= 6"),
        ({"files": ["a"], "heldout_min": 0}, "heldout_min must be an integer >= 1"),
        ({"files": ["a"], "seed": -1}, "seed"),
        ({"files": ["a"], "seed": 1.5}, "seed"),
        ({"files": ["a"], "select": []}, "select is empty"),
        ({"files": ["a"], "select": "a"}, "list of source names"),
        ({"files": ["a"], "select": ["a", "a"]}, "twice"),
        ({"files": ["a"], "select": [""]}, "is empty"),
        ({"sources": {"a/b": "x.jsonl"}}, "cannot name a folder"),
        ({"sources": {"a": []}}, "non-empty list of paths"),
        ({"files": [""]}, "non-empty paths"),
        ({"files": ["a"], "prompt_column": ""}, "prompt_column"),
        ({"files": ["a"], "chosen_column": "rejected"}, "different columns"),
    ],
)
def test_bad_spec(settings_: dict[str, Any], phrase: str) -> None:
    with pytest.raises(InvalidArgumentError, match=phrase):
        DataSpec(**settings_)


def test_a_spec_without_data_is_valid_until_it_is_read() -> None:
    # the [data] table of a world's config names no data; reading it is the error, naming the setting
    spec = DataSpec()
    assert not spec.given
    with pytest.raises(SettingError, match="no data given") as caught:
        load_pairs(spec)
    assert caught.value.setting == "files"


def test_spec_normalises_paths(tmp_path: Path) -> None:
    spec = DataSpec(files=tmp_path / "a.jsonl", sources={"s": [tmp_path / "b.jsonl"]}, base_dir=tmp_path, select=("s",))
    assert spec.files == [str(tmp_path / "a.jsonl")] and spec.sources == {"s": [str(tmp_path / "b.jsonl")]}
    assert spec.base_dir == str(tmp_path) and spec.select == ["s"]


# --------------------------------------------------------------------------------------
# the held-out split and the data hash


def pairs_of(source: str, n: int, start: int = 0) -> list[PreferencePair]:
    return [
        PreferencePair(r["prompt"], r["chosen"], r["rejected"], source, "f.jsonl", i + 1)
        for i, r in enumerate(make_rows(source, n, start=start))
    ]


@settings(max_examples=60)
@given(
    n=st.integers(2, 60),
    fraction=st.floats(0.01, 0.99),
    seed=st.integers(0, 2**64 - 1),
    min_heldout=st.integers(1, 3),
    order=st.randoms(use_true_random=False),
)
def test_split_is_a_seeded_partition_of_the_right_size(
    n: int, fraction: float, seed: int, min_heldout: int, order: Any
) -> None:
    pairs = pairs_of("s", n)
    if n < min_heldout + 1:
        with pytest.raises(DataError, match="cannot give"):
            split_heldout(pairs, fraction, seed, min_heldout)
        return
    train, heldout = split_heldout(pairs, fraction, seed, min_heldout)
    expected = min(max(min_heldout, int(fraction * n + 0.5)), n - 1)
    assert len(heldout) == heldout_size(n, fraction, min_heldout) == expected
    assert len(train) >= 1
    assert sorted(p.line for p in train + heldout) == list(range(1, n + 1))  # a partition
    assert [p.line for p in train] == sorted(p.line for p in train)  # reading order kept
    assert (train, heldout) == split_heldout(pairs, fraction, seed, min_heldout)  # deterministic
    shuffled = list(pairs)
    order.shuffle(shuffled)
    assert {p.line for p in split_heldout(shuffled, fraction, seed, min_heldout)[1]} == {p.line for p in heldout}


def test_split_changes_with_the_seed() -> None:
    pairs = pairs_of("s", 40)
    heldouts = {tuple(p.line for p in split_heldout(pairs, 0.25, seed)[1]) for seed in range(5)}
    assert len(heldouts) == 5
    assert all(len(h) == 10 for h in heldouts)


def test_split_arguments_are_checked() -> None:
    with pytest.raises(InvalidArgumentError, match="heldout_fraction"):
        split_heldout(pairs_of("s", 5), 1.5, 0)
    with pytest.raises(InvalidArgumentError, match="seed"):
        split_heldout(pairs_of("s", 5), 0.5, -3)


def test_split_and_hash_of_a_source_ignore_other_sources_and_paths(tmp_path: Path) -> None:
    a, b = make_rows("a", 12), make_rows("b", 9)
    first = load_sources(DataSpec(files=[write_jsonl(tmp_path / "one.jsonl", a + b)]))
    other = tmp_path / "elsewhere"
    other.mkdir()
    changed_b = [_set(row, "chosen", row["chosen"] + "!") for row in reversed(b + make_rows("b", 3, start=9))]
    interleaved = [row for pair in zip(changed_b, a + [None] * 3, strict=False) for row in pair if row is not None]
    second = load_sources(DataSpec(files=[write_jsonl(other / "renamed.jsonl", interleaved)]))
    assert first["a"].train_records() == second["a"].train_records()
    assert first["a"].heldout_records() == second["a"].heldout_records()
    assert first["a"].data_hash == second["a"].data_hash
    assert first["b"].data_hash != second["b"].data_hash
    assert len(first["a"].heldout) == 2 and len(first["b"].heldout) == 2  # round(0.2 * 12), round(0.2 * 9)


def test_data_hash_follows_content_and_split_settings(tmp_path: Path) -> None:
    rows = make_rows("s", 10)
    path = write_jsonl(tmp_path / "d.jsonl", rows)

    def data_hash(**settings_: Any) -> str:
        return load_sources(DataSpec(files=[str(tmp_path / "d.jsonl")], **settings_))["s"].data_hash

    base = data_hash()
    assert base == data_hash()
    # a fixed value: the hash must not drift between versions, runs or machines
    assert base == "efc4ad45f75e7d70697e3af769500f683981612f3b0d51a2a335a389b7363879"
    shutil.move(path, tmp_path / "moved.jsonl")
    assert load_sources(DataSpec(files=["moved.jsonl"], base_dir=str(tmp_path)))["s"].data_hash == base
    path = write_jsonl(tmp_path / "d.jsonl", rows[:-1] + [_set(rows[-1], "rejected", "worse")])
    assert data_hash() != base  # one pair changed
    path = write_jsonl(tmp_path / "d.jsonl", rows[1:] + rows[:1])
    assert data_hash() != base  # the same pairs in another order train differently
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    assert data_hash() == base
    assert base not in {data_hash(seed=1), data_hash(heldout_fraction=0.3), data_hash(heldout_min=2)}


# --------------------------------------------------------------------------------------
# writing and reading a split


def test_write_split_and_read_it_back(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", make_rows("chat", 6, conversational=True) + make_rows("plain", 6))
    sources = load_sources(DataSpec(files=[path], min_pairs=6, heldout_fraction=0.5))
    for name, source in sources.items():
        write_split(source, tmp_path / "run" / "data" / name)
        folder = tmp_path / "run" / "data" / name
        assert sorted(p.name for p in folder.iterdir()) == ["heldout.jsonl", "train.jsonl"]
        assert "ça va" in (folder / "train.jsonl").read_text(encoding="utf-8")
        assert read_jsonl_records(folder / "train.jsonl") == [{**r, "source": name} for r in source.train_records()]
        assert read_jsonl_records(folder / "heldout.jsonl") == [{**r, "source": name} for r in source.heldout_records()]
        assert len(source.heldout) == 3


def test_write_split_of_an_empty_list_and_reading_errors(tmp_path: Path) -> None:
    write_split(SourceData("s", pairs_of("s", 2), [], "0" * 64), tmp_path)
    assert read_jsonl_records(tmp_path / "heldout.jsonl") == []
    with pytest.raises(DataError, match="cannot be read") as info:
        read_jsonl_records(tmp_path / "nothing.jsonl")
    assert info.value.file == str(tmp_path / "nothing.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\n{"a": \n', encoding="utf-8")
    with pytest.raises(DataValidationError, match="not valid JSON") as info:
        read_jsonl_records(tmp_path / "bad.jsonl")
    assert info.value.line == 2


def test_problem_text_says_where() -> None:
    assert str(DataProblem("f.csv", 3, "chosen", "is empty")) == "f.csv:3 field 'chosen': is empty"
    assert str(DataProblem(None, None, None, "no data")) == "no data"
    with pytest.raises(ValueError):
        DataValidationError([])

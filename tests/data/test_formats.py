"""Preference data as people have it: every row shape TRL's DPO trainer accepts is read as TRL reads it
(its own ``maybe_extract_prompt``), trained on end to end, and a shape nobody can train on is one
located error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from trl.data_utils import maybe_extract_prompt

from dposhap.config import load_config
from dposhap.data import ACCEPTED_SHAPES, DataSpec, load_pairs, read_jsonl_records
from dposhap.errors import DataValidationError
from dposhap.train import train_sources

N = 10


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def system(text: str) -> dict[str, str]:
    return {"role": "system", "content": text}


def _ultrafeedback(i: int) -> dict[str, Any]:
    """UltraFeedback-binarized: a prompt string, conversations repeating the user turn, extra columns."""
    question = f"rain or sun {i} ?"
    return {
        "prompt": question,
        "prompt_id": f"id{i}",
        "messages": [user(question), assistant("x")],
        "chosen": [user(question), assistant(f"sun {i}")],
        "rejected": [user(question), assistant(f"rain {i}")],
        "score_chosen": 8.0,
        "score_rejected": 3.5,
    }


#: Every accepted shape: one row per index.
SHAPES = {
    "standard": lambda i: {"prompt": f"the sky {i} is", "chosen": f"blue {i}", "rejected": f"green {i}"},
    "conversational": lambda i: {
        "prompt": [user(f"sky {i} ?")],
        "chosen": [assistant(f"blue {i}")],
        "rejected": [assistant(f"green {i}")],
    },
    "implicit_standard": lambda i: {  # Anthropic HH-RLHF's raw strings
        "chosen": f"\n\nHuman: sky {i} ?\n\nAssistant: blue {i}",
        "rejected": f"\n\nHuman: sky {i} ?\n\nAssistant: green {i}",
    },
    "implicit_conversational": lambda i: {
        "chosen": [user(f"sky {i} ?"), assistant(f"blue {i}")],
        "rejected": [user(f"sky {i} ?"), assistant(f"green {i}")],
    },
    "system_multi_turn": lambda i: {
        "chosen": [system("be brief"), user(f"sky {i} ?"), assistant("blue"), user("sure ?"), assistant(f"yes {i}")],
        "rejected": [system("be brief"), user(f"sky {i} ?"), assistant("blue"), user("sure ?"), assistant(f"no {i}")],
    },
    "explicit_multi_turn": lambda i: {
        "prompt": [system("be brief"), user(f"sky {i} ?"), assistant("blue"), user("sure ?")],
        "chosen": [assistant(f"yes {i}")],
        "rejected": [assistant(f"no {i}")],
    },
    "prompt_string_with_conversations": _ultrafeedback,
}


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def trl_record(row: dict[str, Any]) -> dict[str, Any]:
    """What TRL's DPO trainer makes of a row: its prompt, chosen and rejected."""
    texts = {key: row[key] for key in ("prompt", "chosen", "rejected") if key in row}
    out = maybe_extract_prompt(texts)
    return {key: out[key] for key in ("prompt", "chosen", "rejected")}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_each_shape_is_read_as_trl_reads_it(tmp_path: Path, shape: str) -> None:
    rows = [SHAPES[shape](i) for i in range(N)]
    path = write_jsonl(tmp_path / f"{shape}.jsonl", rows)
    pairs = load_pairs(DataSpec(sources={shape: str(path)}))
    assert [pair.to_record() for pair in pairs] == [trl_record(row) for row in rows]
    assert [pair.line for pair in pairs] == list(range(1, N + 1))
    if "prompt" not in rows[0] or isinstance(rows[0]["prompt"], str) != isinstance(rows[0]["chosen"], str):
        assert pairs[0].prompt != rows[0].get("prompt")  # the prompt was taken from chosen and rejected


@pytest.mark.parametrize("shape", ["implicit_standard", "prompt_string_with_conversations"])
def test_shapes_in_csv_and_parquet(tmp_path: Path, shape: str) -> None:
    import csv

    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [SHAPES[shape](i) for i in range(N)]
    with open(tmp_path / "d.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(list(rows[0]))
        writer.writerows([v if isinstance(v, str) else json.dumps(v) for v in row.values()] for row in rows)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    expected = [trl_record(row) for row in rows]
    for name in ("d.csv", "d.parquet"):
        pairs = load_pairs(DataSpec(sources={"s": str(tmp_path / name)}))
        assert [pair.to_record() for pair in pairs] == expected, name


def test_the_extracted_splits_of_two_shapes() -> None:
    hh, ultra = trl_record(SHAPES["implicit_standard"](3)), trl_record(_ultrafeedback(3))
    assert hh == {"prompt": "\n\nHuman: sky 3 ?\n\nAssistant:", "chosen": " blue 3", "rejected": " green 3"}
    assert ultra == {
        "prompt": [user("rain or sun 3 ?")],
        "chosen": [assistant("sun 3")],
        "rejected": [assistant("rain 3")],
    }


BAD_SHAPES = {
    "no-shared-prompt": ({"chosen": "yes", "rejected": "no"}, "chosen", "no 'prompt' column"),
    "ends-on-user": (
        {"chosen": [user("q"), assistant("a"), user("thanks")], "rejected": [user("q"), assistant("b"), user("ok")]},
        "chosen",
        "ends on a 'user' message",
    ),
    "explicit-ends-on-user": (
        {"prompt": [user("q")], "chosen": [assistant("a")], "rejected": [assistant("b"), user("hm")]},
        "rejected",
        "ends on a 'user' message",
    ),
    "prompt-string-answers-only": (
        {"prompt": "q", "chosen": [assistant("a")], "rejected": [assistant("b")]},
        "chosen",
        "plain-string prompt",
    ),
    "answers-in-two-formats": (
        {"chosen": [user("q"), assistant("a")], "rejected": "q b"},
        "rejected",
        "a plain string but chosen is a conversation",
    ),
}


@pytest.mark.parametrize("case", list(BAD_SHAPES))
def test_a_shape_nobody_can_train_on_is_one_located_error(tmp_path: Path, case: str) -> None:
    bad, field, phrase = BAD_SHAPES[case]
    good = SHAPES["implicit_conversational"]
    path = write_jsonl(tmp_path / "d.jsonl", [good(0), good(1), bad, good(2)])
    with pytest.raises(DataValidationError) as info:
        load_pairs(DataSpec(sources={"s": str(path)}, min_pairs=2))
    (problem,) = info.value.problems
    assert (problem.file, problem.line, problem.field) == (str(path), 3, field)
    assert phrase in problem.message
    assert ACCEPTED_SHAPES in problem.message
    assert "\n" not in str(problem)


# --------------------------------------------------------------------------------------
# end to end: a tiny chat model trained one step on every shape


def test_every_shape_trains_and_the_stored_split_is_trls(tiny_chat_model: Path, tmp_path: Path) -> None:
    rows = {shape: [make(i) for i in range(N)] for shape, make in SHAPES.items()}
    for shape, shape_rows in rows.items():
        write_jsonl(tmp_path / f"{shape}.jsonl", shape_rows)
    sources = "\n".join(f'{shape} = "{shape}.jsonl"' for shape in SHAPES)
    (tmp_path / "run.toml").write_text(
        f'[model]\nbase = "{tiny_chat_model}"\ndevice = "cpu"\n[data.sources]\n{sources}\n'
        "[dpo]\nmax_steps = 1\nper_device_train_batch_size = 2\nmax_length = 64\n",
        encoding="utf-8",
    )
    manifest = train_sources(load_config(tmp_path / "run.toml"), tmp_path / "run", progress=False)
    assert sorted(manifest.sources) == sorted(SHAPES)
    for shape, shape_rows in rows.items():
        entry = manifest.sources[shape]
        assert entry.status == "trained" and entry.metrics["steps"] == 1
        stored = [
            {key: record[key] for key in ("prompt", "chosen", "rejected")}
            for split in ("train", "heldout")
            for record in read_jsonl_records(tmp_path / "run" / "data" / shape / f"{split}.jsonl")
        ]
        expected = [trl_record(row) for row in shape_rows]
        assert len(stored) == N
        assert sorted(map(json.dumps, stored)) == sorted(map(json.dumps, expected))
    audit = json.loads((tmp_path / "run" / "data-audit.json").read_text(encoding="utf-8"))
    assert sorted(audit["sources"]) == sorted(SHAPES)
    assert all(entry["pairs"] == N for entry in audit["sources"].values())


# --------------------------------------------------------------------------------------
# one pool of sources in both formats: the conversations become the plain strings TRL's chat template renders


def test_a_pool_of_both_formats_becomes_plain_strings_of_the_same_tokens() -> None:
    from dposhap.errors import InvalidArgumentError
    from dposhap.tokenization import encode, to_one_format
    from dposhap.worlds.toy.model import build_tokenizer

    tokenizer = build_tokenizer()  # puts <s> in front of every plain string it encodes
    plain, chat = SHAPES["standard"](0), SHAPES["conversational"](0)
    # one format: as it is
    assert to_one_format([plain, SHAPES["standard"](1)], tokenizer) == [plain, SHAPES["standard"](1)]
    assert to_one_format([chat], tokenizer) == [chat]
    with pytest.raises(InvalidArgumentError, match="no chat template.*plain-text"):
        to_one_format([plain, chat], tokenizer)
    # a template that renders the BOS itself: the prompt is not given it twice
    tokenizer.chat_template = (
        "<s>{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}"
    )
    out = to_one_format([plain, chat], tokenizer)
    assert out[0] == plain
    assert out[1] == {"prompt": "user: sky 0 ?\nassistant:", "chosen": " blue 0\n", "rejected": " green 0\n"}
    # TRL's plain-text tokenisation of them (special tokens added, EOS appended) is the conversation's, plus the EOS
    prompt_ids = tokenizer(text=out[1]["prompt"])["input_ids"]
    assert prompt_ids == encode(tokenizer, chat["prompt"], generation_prompt=True)
    full = tokenizer(text=out[1]["prompt"] + out[1]["chosen"] + tokenizer.eos_token)["input_ids"]
    assert full == encode(tokenizer, chat["prompt"] + chat["chosen"]) + [tokenizer.eos_token_id]


# --------------------------------------------------------------------------------------
# files as public datasets ship them


def test_a_tsv_file_is_read_as_csv_with_tabs(tmp_path: Path) -> None:
    import csv

    rows = [
        {"prompt": f"line one {i}\nline two, with a comma", "chosen": f'"yes"\t{i}', "rejected": f"no {i}"}
        for i in range(N)
    ]
    for name, delimiter in (("d.csv", ","), ("d.tsv", "\t")):
        with open(tmp_path / name, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, delimiter=delimiter)
            writer.writerow(list(rows[0]))
            writer.writerows(row.values() for row in rows)
    from_csv = load_pairs(DataSpec(sources={"s": str(tmp_path / "d.csv")}))
    from_tsv = load_pairs(DataSpec(sources={"s": str(tmp_path / "d.tsv")}))
    assert [pair.to_record() for pair in from_tsv] == rows
    assert [pair.line for pair in from_tsv] == [pair.line for pair in from_csv] == list(range(2, 2 * N + 1, 2))
    (tmp_path / "bad.tsv").write_text("prompt\tchosen\trejected\np\tc\n", encoding="utf-8")
    with pytest.raises(DataValidationError) as info:
        load_pairs(DataSpec(sources={"s": str(tmp_path / "bad.tsv")}, min_pairs=2))
    assert "quote cells that hold tabs" in str(info.value.problems[0])


def test_a_saved_dataset_dict_without_a_train_split_names_the_folder_to_give(tmp_path: Path) -> None:
    import datasets

    rows = [_ultrafeedback(i) for i in range(N)]
    splits = {"train_prefs": rows, "test_prefs": rows[:3], "train_sft": rows}  # UltraFeedback-binarized's names
    datasets.DatasetDict({name: datasets.Dataset.from_list(part) for name, part in splits.items()}).save_to_disk(
        str(tmp_path / "ultra")
    )
    with pytest.raises(DataValidationError) as info:
        load_pairs(DataSpec(sources={"s": str(tmp_path / "ultra")}))
    (problem,) = info.value.problems
    folder = str(tmp_path / "ultra" / "train_prefs")
    assert (problem.file, problem.line, problem.field) == (str(tmp_path / "ultra"), None, None)
    assert "train_prefs, test_prefs, train_sft" in problem.message and repr(folder) in problem.message
    pairs = load_pairs(DataSpec(sources={"s": folder}))  # the folder it names is read, as TRL reads it
    assert [pair.to_record() for pair in pairs] == [trl_record(row) for row in rows]


SHAREGPT = {
    "from-value-messages": (
        {
            "chosen": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
            "rejected": [user("q"), assistant("b")],
        },
        "chosen",
        'message 1 has keys besides role and content (from, value): keep only role and content (ShareGPT style: rename "from" to "role"',
    ),
    "from-value-answer-object": (
        {"prompt": [user("q")], "chosen": {"from": "gpt", "value": "a"}, "rejected": [assistant("b")]},
        "chosen",
        'is an object: a text is a string or a list of {"role", "content"} messages (a single message must still '
        'be inside a list; ShareGPT style: rename "from" to "role"',
    ),
    "human-gpt-roles": (
        {"prompt": [user("q")], "chosen": [{"role": "gpt", "content": "a"}], "rejected": [assistant("b")]},
        "chosen",
        "message 1 has role 'gpt': use one of system, developer, user, assistant, tool (write 'gpt' as 'assistant'",
    ),
}


@pytest.mark.parametrize("case", list(SHAREGPT))
def test_sharegpt_rows_are_one_located_error_that_says_how_to_rename(tmp_path: Path, case: str) -> None:
    bad, field, phrase = SHAREGPT[case]
    good = SHAPES["conversational"]
    path = write_jsonl(tmp_path / "d.jsonl", [good(0), good(1), bad, good(2)])
    with pytest.raises(DataValidationError) as info:
        load_pairs(DataSpec(sources={"s": str(path)}, min_pairs=2))
    (problem,) = info.value.problems
    assert (problem.file, problem.line, problem.field) == (str(path), 3, field)
    assert phrase in problem.message
    assert "\n" not in str(problem)


def test_conversations_pandas_wrote_to_csv_as_python_are_refused_not_read_as_text(tmp_path: Path) -> None:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [_ultrafeedback(i) for i in range(N)]
    rows[0]["chosen"][1]["content"] = "it's sunny"  # pandas quotes this string with double quotes
    pd.DataFrame(rows).to_csv(tmp_path / "lists.csv", index=False)  # cells like "[{'role': 'user', ..."
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    pd.read_parquet(tmp_path / "d.parquet").to_csv(tmp_path / "arrays.csv", index=False)  # "[{'content': ...}\n {..."
    for name in ("lists.csv", "arrays.csv"):
        path = tmp_path / name
        with pytest.raises(DataValidationError) as info:
            load_pairs(DataSpec(sources={"s": str(path)}))
        problems = info.value.problems
        assert [(p.file, p.line, p.field) for p in problems[:2]] == [
            (str(path), 2, "chosen"),
            (str(path), 2, "rejected"),
        ]
        assert len(problems) == 2 * N  # prompt is a plain string; the messages column is not read
        assert all("written as Python" in p.message and "json.dumps" in p.message for p in problems)
    # the same conversations written as JSON cells are read as TRL reads them
    table = pd.DataFrame(rows)
    for column in ("chosen", "rejected", "messages"):
        table[column] = table[column].map(json.dumps)
    table.to_csv(tmp_path / "json.csv", index=False)
    pairs = load_pairs(DataSpec(sources={"s": str(tmp_path / "json.csv")}))
    assert [pair.to_record() for pair in pairs] == [trl_record(row) for row in rows]


@pytest.mark.parametrize(
    ("name", "separator", "phrase"),
    [
        ("excel.csv", ";", "has a header separated by semicolons, not commas: save it separated by commas"),
        ("tabs.csv", "\t", "has a header separated by tabs, not commas: name it .tsv"),
        ("commas.tsv", ",", "has a header separated by commas, not tabs: name it .csv"),
    ],
)
def test_a_csv_or_tsv_with_another_separator_is_one_error_that_says_so(
    tmp_path: Path, name: str, separator: str, phrase: str
) -> None:
    import csv

    path = tmp_path / name
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter=separator)
        writer.writerow(["prompt", "chosen", "rejected"])
        writer.writerows([f"p {i}, more", f'c "{i}"', f"r {i}"] for i in range(N))
    with pytest.raises(DataValidationError) as info:
        load_pairs(DataSpec(sources={"s": str(path)}))
    (problem,) = info.value.problems  # not one per column, nor "check its quotes"
    assert (problem.file, problem.line, problem.field) == (str(path), 1, None)
    assert phrase in problem.message


@pytest.mark.parametrize("indent", [None, 2])
def test_a_json_array_named_jsonl_is_one_error_that_says_to_name_it_json(tmp_path: Path, indent: int | None) -> None:
    rows = [SHAPES["implicit_standard"](i) for i in range(N)]
    path = tmp_path / "d.jsonl"
    path.write_text("\n" + json.dumps(rows, indent=indent) + "\n", encoding="utf-8")
    with pytest.raises(DataValidationError) as info:
        load_pairs(DataSpec(sources={"s": str(path)}))
    (problem,) = info.value.problems  # not one per line of the pretty-printed array
    assert (problem.file, problem.line, problem.field) == (str(path), 2, None)
    assert "holds one JSON list, not one object per line: name it .json" in problem.message
    json_path = path.rename(tmp_path / "d.json")
    pairs = load_pairs(DataSpec(sources={"s": str(json_path)}))
    assert [pair.to_record() for pair in pairs] == [trl_record(row) for row in rows]


@pytest.mark.parametrize("name", ["d.csv", "d.tsv"])
def test_lines_of_spaces_or_empty_cells_in_a_csv_are_skipped_like_blank_lines(tmp_path: Path, name: str) -> None:
    import csv

    rows = [SHAPES["standard"](i) for i in range(N)]
    path = tmp_path / name
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t" if name.endswith(".tsv") else ",", lineterminator="\r\n")
        writer.writerow(list(rows[0]))
        writer.writerows(row.values() for row in rows[:5])
        handle.write("   \r\n")
        writer.writerows(row.values() for row in rows[5:])
        handle.write("\r\n \t\r\n\r\n" + ("\t\t\r\n" if name.endswith(".tsv") else ",,\r\n"))  # Excel's empty rows
    pairs = load_pairs(DataSpec(sources={"s": str(path)}))
    assert [pair.to_record() for pair in pairs] == rows
    assert [pair.line for pair in pairs] == [2, 3, 4, 5, 6, 8, 9, 10, 11, 12]


def test_an_ultrafeedback_row_with_one_answer_missing_or_invalid_is_one_problem(tmp_path: Path) -> None:
    rows = [_ultrafeedback(i) for i in range(N)]
    rows[2]["chosen"] = None
    del rows[4]["rejected"]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(DataValidationError) as info:
        load_pairs(DataSpec(sources={"s": str(path)}))
    found = [(p.line, p.field) for p in info.value.problems]
    assert found == [(3, "chosen"), (5, "rejected")]  # not also "rejected is a conversation but prompt is ..."
    # a column named wrong is one problem, not one more per row
    with pytest.raises(DataValidationError) as info:
        load_pairs(DataSpec(sources={"s": str(path)}, chosen_column="better"))
    assert [(p.line, p.field) for p in info.value.problems] == [(None, "better"), (5, "rejected")]
    # a prompt conversation beside a plain-string answer is still wrong when the other answer is missing
    rows[4]["prompt"], rows[4]["chosen"] = [user("q")], "a"
    write_jsonl(path, rows)
    with pytest.raises(DataValidationError) as info:
        load_pairs(DataSpec(sources={"s": str(path)}))
    assert [(p.line, p.field) for p in info.value.problems] == [(3, "chosen"), (5, "rejected"), (5, "chosen")]


def test_a_downloaded_hub_folder_of_data_files_names_the_files_to_list(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [_ultrafeedback(i) for i in range(N)]
    (tmp_path / "ultra" / "data").mkdir(parents=True)
    (tmp_path / "ultra" / "README.md").write_text("# card\n", encoding="utf-8")
    for split in ("train_prefs", "test_prefs"):
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / "ultra" / "data" / f"{split}-00000-of-00001.parquet")
    with pytest.raises(DataValidationError) as info:
        load_pairs(DataSpec(sources={"s": "ultra"}, base_dir=str(tmp_path)))
    (problem,) = info.value.problems
    assert problem.message == (
        "is a folder but not a dataset written by save_to_disk: it holds the data files "
        "'data/test_prefs-00000-of-00001.parquet', 'data/train_prefs-00000-of-00001.parquet' "
        "(a downloaded hub dataset?): list the ones you want instead"
    )
    pairs = load_pairs(DataSpec(sources={"s": "ultra/data/train_prefs-00000-of-00001.parquet"}, base_dir=str(tmp_path)))
    assert [pair.to_record() for pair in pairs] == [trl_record(row) for row in rows]


def test_a_message_whose_content_is_a_list_of_parts_says_to_write_it_as_one_string(tmp_path: Path) -> None:
    good = SHAPES["conversational"]
    parts = {"role": "assistant", "content": [{"type": "text", "text": "blue"}]}
    path = write_jsonl(tmp_path / "d.jsonl", [good(0), good(1), {**good(5), "chosen": [parts]}, good(2)])
    with pytest.raises(DataValidationError) as info:
        load_pairs(DataSpec(sources={"s": str(path)}, min_pairs=2))
    (problem,) = info.value.problems
    assert (problem.line, problem.field) == (3, "chosen")
    assert problem.message.startswith("message 1 has no string 'content'")
    assert 'a list of parts like {"type": "text", "text": ...}: write their text as one string' in problem.message

"""Bad input at the command line: settings, config files, arguments, paths, data. Nothing is written."""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

import pytest

from reliability_helpers import cli, one_line_error, snapshot

# (override, the field the error must name): each reached TRL / PEFT / transformers unchecked before
BAD_SETTINGS = [
    ("dpo.beta=nan", "dpo.beta"),
    ("dpo.beta=inf", "dpo.beta"),
    ("dpo.beta=-inf", "dpo.beta"),
    ("lora.alpha=nan", "lora.alpha"),
    ("dpo.num_train_epochs=nan", "dpo.num_train_epochs"),
    ("dpo.learning_rate=nan", "dpo.learning_rate"),
    ("dpo.weight_decay=inf", "dpo.weight_decay"),
    ("dpo.seed=-1", "dpo.seed"),
    ("dpo.per_device_train_batch_size=100000000000", "dpo.per_device_train_batch_size"),
    ("dpo.max_length=1", "dpo.max_length"),
    ("dpo.max_steps=0", "dpo.max_steps"),
    ("lora.r=0", "lora.r"),
    ("lora.dropout=nan", "lora.dropout"),
    ("data.heldout_fraction=nan", "data.heldout_fraction"),
    ("data.seed=-5", "data.seed"),
    ("toy.pairs_per_source=0", "toy.pairs_per_source"),
    ("lora.target_modules=['lm_head']", "lora.target_modules"),
]


@pytest.mark.parametrize(("override", "field"), BAD_SETTINGS, ids=[o for o, _ in BAD_SETTINGS])
def test_a_bad_setting_is_refused_at_load_time(tmp_path: Path, override: str, field: str) -> None:
    out = tmp_path / "run"
    one_line_error(cli("train", "--out", out, "--set", override, "--quiet"), 2, field)
    assert not out.exists()  # refused before anything was written


def test_a_scheduler_name_is_checked_against_transformers(tmp_path: Path) -> None:
    err = one_line_error(cli("train", "--out", tmp_path / "r", "--set", 'dpo.lr_scheduler_type="cosinus"'), 2)
    assert "cosine_with_restarts" in err  # the names come from transformers' SchedulerType


def test_a_bad_config_file_is_located(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[model]\nbase = "toy"\n\n[dpo]\nbeta = nan\n', encoding="utf-8")
    one_line_error(cli("train", "--config", config, "--out", tmp_path / "r"), 2, "bad.toml:5", "dpo.beta")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"[dpo\nbeta = 0.1\n", "not valid TOML"),
        (b"[dpo]\nbeta = 0.1\nbetta = 2\n", "unknown key"),
        (b"[dop]\nbeta = 0.1\n", "unknown table"),
        (b'[dpo]\nbeta = "x\xff"\n', "cannot read the config"),
        (b'[dpo]\nloss_type = "nonsense"\n', "dpo.loss_type"),
    ],
    ids=["toml", "unknown-key", "unknown-table", "not-utf8", "bad-literal"],
)
def test_a_broken_config_file_is_one_line(tmp_path: Path, content: bytes, needle: str) -> None:
    config = tmp_path / "c.toml"
    config.write_bytes(content)
    one_line_error(cli("train", "--config", config, "--out", tmp_path / "r"), 2, needle)
    assert not (tmp_path / "r").exists()


def test_a_missing_config_file(tmp_path: Path) -> None:
    one_line_error(cli("train", "--config", tmp_path / "nope.toml", "--out", tmp_path / "r"), 2, "not found")


@pytest.mark.parametrize("command", ["value", "report"])
def test_a_mistyped_run_path_is_not_created(tmp_path: Path, command: str) -> None:
    missing = tmp_path / "runz"
    args = [command, missing] + (["--utility", "accuracy"] if command == "value" else [])
    one_line_error(cli(*args), 2, "no such folder")
    assert not missing.exists()


def test_train_into_a_path_that_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("mine\n", encoding="utf-8")
    one_line_error(cli("train", "--out", target, "--set", "toy.pairs_per_source=16"), 2, "is a file")
    assert target.read_text(encoding="utf-8") == "mine\n"


@pytest.mark.parametrize("command", ["value", "report"])
def test_a_run_path_that_is_a_file(tmp_path: Path, command: str) -> None:
    target = tmp_path / "file"
    target.write_text("mine\n", encoding="utf-8")
    args = [command, target] + (["--utility", "accuracy"] if command == "value" else [])
    one_line_error(cli(*args), 2, "is a file")
    assert target.read_text(encoding="utf-8") == "mine\n"


@pytest.mark.parametrize(
    "flags",
    [
        ["--batch-size", "0"],
        ["--batch-size", "-3"],
        ["--budget", "0"],
        ["--tol", "nan"],
        ["--tol", "-1"],
        ["--seed", "-1"],
        ["--name", "a/b"],
        ["--name", ".hidden"],
    ],
    ids=lambda f: "=".join(f),
)
def test_bad_value_arguments_change_nothing(run: Path, flags: list[str]) -> None:
    before = snapshot(run)
    one_line_error(cli("value", run, "--utility", "accuracy", "--quiet", *flags), 2, flags[0])
    assert snapshot(run) == before


def test_train_batch_size_zero(tmp_path: Path) -> None:
    one_line_error(cli("train", "--out", tmp_path / "r", "--batch-size", "0"), 2, "--batch-size")
    assert not (tmp_path / "r").exists()


def test_a_run_in_use_is_refused_untouched(run: Path) -> None:
    before = snapshot(run)
    with open(run / ".lock", "a+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        handle.write("pid 1 (a test)")
        handle.flush()
        one_line_error(cli("value", run, "--utility", "accuracy", "--quiet"), 2, "in use")
    assert snapshot(run) == before


def _user_data(tmp_path: Path, names: list[str], n: int = 12) -> Path:
    path = tmp_path / "prefs.jsonl"
    rows = [
        {"source": name, "prompt": f"question {i} of {name}", "chosen": f"good {i}", "rejected": f"bad {i}"}
        for name in names
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_a_source_named_like_a_temporary_folder_is_refused(tmp_path: Path) -> None:
    data = _user_data(tmp_path, ["good", ".tmp-good-123"])
    config = tmp_path / "c.toml"
    config.write_text(f'[model]\nbase = "toy"\n[data]\nfiles = ["{data}"]\n', encoding="utf-8")
    one_line_error(cli("train", "--config", config, "--out", tmp_path / "r"), 2, ".tmp-good-123", "rename")


def test_bad_rows_in_the_data_are_listed_not_raised(tmp_path: Path) -> None:
    data = _user_data(tmp_path, ["a", "b"])
    with data.open("a", encoding="utf-8") as handle:
        handle.write('{"source": "a", "prompt": "p", "chosen": "same", "rejected": "same"}\nnot json\n')
    config = tmp_path / "c.toml"
    config.write_text(f'[model]\nbase = "toy"\n[data]\nfiles = ["{data}"]\n', encoding="utf-8")
    out = tmp_path / "r"
    one_line_error(cli("train", "--config", config, "--out", out), 2, "prefs.jsonl")


def test_data_that_is_not_utf8(tmp_path: Path) -> None:
    data = tmp_path / "prefs.jsonl"
    data.write_bytes(b'{"source": "a", "prompt": "caf\xe9", "chosen": "x", "rejected": "y"}\n')
    config = tmp_path / "c.toml"
    config.write_text(f'[model]\nbase = "toy"\n[data]\nfiles = ["{data}"]\n', encoding="utf-8")
    one_line_error(cli("train", "--config", config, "--out", tmp_path / "r"), 2, "prefs.jsonl")


def test_an_unknown_subcommand_or_flag(tmp_path: Path) -> None:
    one_line_error(cli("trian"), 2, "invalid choice")
    one_line_error(cli("value", tmp_path, "--utility", "accuracy", "--budjet", "3"), 2, "unrecognized")


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--out", "{tmp}/r", "--set", "dpo.beta=nan"],
        ["value", "{tmp}/missing", "--utility", "accuracy"],
        ["report", "{tmp}/missing"],
    ],
    ids=["bad-setting", "missing-run", "missing-report"],
)
def test_fast_failures_do_not_import_torch(tmp_path: Path, argv: list[str]) -> None:
    """A mistake is reported in the time Python starts, not after torch's import (seconds)."""
    import subprocess
    import sys

    args = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code = f"import sys, dposhap.cli as c\nrc = c.main({args!r})\nprint(rc, 'torch' in sys.modules)\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["2", "False"], (result.stdout, result.stderr[-2000:])

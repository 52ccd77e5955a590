"""The thread policy (dposhap.threads): its rule, its override, its one line, and the entry
points that ask it."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

from dposhap import threads
from dposhap.cli import build_parser
from dposhap.config import load_config
from dposhap.errors import DposhapError, InvalidArgumentError


def test_small_models_get_one_thread_and_big_ones_every_core() -> None:
    small = threads.choose(60_000, rows=512)
    assert small.threads == 1 and "0.1M parameters" in small.reason
    big = threads.choose(7_000_000_000, rows=32)
    assert big.threads == threads._cores() and "every core" in big.reason
    # one row at a time keeps a mid-size model on one thread; a batch does not
    assert threads.choose(500_000_000, rows=1).threads == 1
    assert threads.choose(500_000_000, rows=64).threads == threads._cores()


def test_the_user_overrides_the_rule_and_bad_counts_are_refused() -> None:
    chosen = threads.choose(60_000, requested=2)
    assert chosen.threads == 2 and "--threads" in chosen.reason
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(InvalidArgumentError, match="threads must be an integer >= 1"):
            threads.choose(60_000, requested=bad)  # type: ignore[arg-type]


def test_use_sets_and_restores_the_count_and_prints_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    before = torch.get_num_threads()
    choice = threads.ThreadChoice(1, "test")
    with threads.use(choice):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    assert capsys.readouterr().out == "torch threads: 1 (test)\n"
    with threads.use(choice, say=False):
        pass
    assert capsys.readouterr().out == ""


def test_parameters_are_counted_from_safetensors_headers(tmp_path: Path) -> None:
    header = json.dumps(
        {
            "__metadata__": {"format": "pt"},
            "a": {"dtype": "F32", "shape": [3, 5], "data_offsets": [0, 60]},
            "b": {"dtype": "F32", "shape": [7], "data_offsets": [60, 88]},
        }
    ).encode()
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(88))
    assert threads.model_parameters(tmp_path) == 22
    assert threads.model_parameters(tmp_path / "missing") is None
    assert threads.model_parameters("HuggingFaceTB/SmolLM2-135M") is None


def test_the_cli_and_the_config_take_a_thread_count(tmp_path: Path) -> None:
    parser = build_parser()
    for argv in (
        ["value", "run", "--utility", "accuracy", "--threads", "2"],
        ["train", "--out", "x", "--threads", "2"],
        ["demo", "--threads", "2"],
    ):
        assert parser.parse_args(argv).threads == 2
    assert load_config(None, ["model.threads=3"]).model.threads == 3
    assert load_config(None, []).training_hash() == load_config(None, ["model.threads=3"]).training_hash()
    with pytest.raises(DposhapError, match="threads"):
        load_config(None, ["model.threads=0"])

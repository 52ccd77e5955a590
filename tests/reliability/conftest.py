"""The reliability suite's fixtures: one tiny trained toy run per session, copied per test."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from reliability_helpers import TRAIN_ARGS, cli


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tiny toy run, trained once by the CLI and valued once on accuracy (the user's model cache untouched)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DPOSHAP_CACHE", str(tmp_path_factory.mktemp("model-cache")))
        out = tmp_path_factory.mktemp("trained") / "run"
        result = cli("train", "--out", out, *TRAIN_ARGS)
        assert result.returncode == 0, result.stderr[-3000:]
        result = cli("value", out, "--utility", "accuracy", "--quiet")
        assert result.returncode == 0, result.stderr[-3000:]
        yield out


@pytest.fixture
def run(trained_run: Path, tmp_path: Path) -> Iterator[Path]:
    """A private copy of the trained run."""
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    yield copy

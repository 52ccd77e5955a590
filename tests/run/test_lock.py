"""The run directory's lock: held while working, refused to a second holder, and a folder made for
work that wrote nothing not left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from dposhap.errors import RunLockedError
from dposhap.run import Run


def test_a_new_folder_left_empty_by_failed_work_is_removed(tmp_path: Path) -> None:
    run = Run(tmp_path / "runs" / "new")
    with pytest.raises(ValueError, match="bad data"), run.lock("dposhap train"):
        assert (run.root / ".lock").is_file()
        raise ValueError("bad data")
    assert not run.root.exists() and (tmp_path / "runs").is_dir()


def test_a_folder_with_work_in_it_or_made_before_stays(tmp_path: Path) -> None:
    wrote = Run(tmp_path / "wrote")
    with pytest.raises(ValueError), wrote.lock("dposhap train"):
        (wrote.root / "data-problems.txt").write_text("every problem\n")
        raise ValueError("bad data")
    assert (wrote.root / "data-problems.txt").is_file()
    existing = tmp_path / "existing"
    existing.mkdir()
    with Run(existing).lock("dposhap value"):
        pass
    assert existing.is_dir()


def test_a_second_holder_is_refused_and_takes_nothing_away(tmp_path: Path) -> None:
    run = Run(tmp_path / "new")
    with run.lock("dposhap train"):
        with pytest.raises(RunLockedError, match="in use by pid"), Run(run.root).lock("dposhap value"):
            pass
        assert (run.root / ".lock").read_text().endswith("(dposhap train)")

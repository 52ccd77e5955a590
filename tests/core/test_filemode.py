"""Files dposhap writes follow the umask, as a plain open() would: never owner-only temporary files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from dposhap.filemode import file_mode
from dposhap.run import atomic_write_json, atomic_write_npy, atomic_write_text, replace_dir


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_files_follow_the_umask(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        assert file_mode() == 0o666 & ~umask and file_mode(directory=True) == 0o777 & ~umask
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_write_json(tmp_path / "b.json", {"x": 1})
        atomic_write_npy(tmp_path / "c.npy", np.zeros(2))
        finished = tmp_path / "work"
        (finished / "sub").mkdir(parents=True)
        (finished / "sub" / "weights.bin").write_bytes(b"0")
        os.chmod(finished / "sub" / "weights.bin", 0o600)  # as a library's temporary file leaves it
        os.chmod(finished / "sub", 0o700)
        replace_dir(finished, tmp_path / "adapter")
    finally:
        os.umask(previous)
    for name in ("a.txt", "b.json", "c.npy", "adapter/sub/weights.bin"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    assert (tmp_path / "adapter" / "sub").stat().st_mode & 0o777 == 0o777 & ~umask

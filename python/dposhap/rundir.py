"""The run directory: where a run keeps its adapters, data split, manifest, cache and results.

::

    RUN/
      manifest.json           what was trained, on what, how, with which results
      adapters/<source>/      one PEFT LoRA adapter per source (safetensors) + dposhap.json
      data/<source>/          train.jsonl and heldout.jsonl of each source
      toy/                    the toy world, when the run uses it
      .lock                   held by the process working on the run

Everything is written atomically (a temporary name, then a rename), so an interrupted run
never leaves a half-written file or adapter behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import RunLockedError

__all__ = ["RunDir", "atomic_write_json", "atomic_write_text", "replace_dir"]


class RunDir:
    """Paths of one run directory, and its lock."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def adapters(self) -> Path:
        return self.root / "adapters"

    def adapter(self, source: str) -> Path:
        return self.adapters / source

    def data(self, source: str) -> Path:
        return self.root / "data" / source

    @property
    def toy(self) -> Path:
        return self.root / "toy"

    @property
    def cache(self) -> Path:
        return self.root / "cache.sqlite"

    def read_manifest(self) -> dict[str, Any] | None:
        """The manifest, or None when the run has none yet."""
        try:
            return json.loads(self.manifest.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    @contextlib.contextmanager
    def lock(self, what: str) -> Iterator[None]:
        """Hold the run's lock for the duration; refuse at once if another process holds it.

        Raises
        ------
        RunLockedError
            Another live process holds the lock (its pid and task are in the message).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / ".lock"
        handle = open(path, "a+", encoding="utf-8")
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise RunLockedError(
                    f"run directory {self.root} is in use by {holder}; wait for it to finish or use another run "
                    "directory"
                ) from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} ({what})")
            handle.flush()
            yield
        finally:
            handle.close()


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON through a temporary file and a rename."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def replace_dir(finished: Path, target: Path) -> None:
    """Move the folder ``finished`` to ``target``, replacing whatever was there.

    The old folder is first renamed aside, so ``target`` is at every moment either the old
    complete folder, absent, or the new complete folder.
    """
    if target.exists():
        aside = target.with_name(f".old-{target.name}-{os.getpid()}")
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(target, aside)
        os.replace(finished, target)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(finished, target)

"""Writing a run's files safely: atomic writes, folder replacement, the run lock.

Everything a run writes goes through a temporary name and a rename, so an interrupted run never
leaves a half-written file or adapter behind.

Fault injection, for the reliability tests: ``DPOSHAP_FAULT="ACTION:NAME[,ACTION:NAME...]"`` makes
the write of the run file (or adapter folder) named ``NAME`` fail once its temporary copy is written,
just before the rename: ``enospc`` raises ``OSError(ENOSPC)`` as a full disk does, ``kill`` sends
the process SIGKILL, ``interrupt`` raises ``KeyboardInterrupt`` as Ctrl-C does, ``kill-once`` sends
SIGKILL only if the file ``DPOSHAP_FAULT_ONCE`` names does not exist yet, and creates it first (a
worker that dies on its first attempt and not on its retry). Unset, it costs one dictionary lookup
per write.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RunError, RunLockedError
from ..filemode import file_mode, publish_tree

__all__ = ["atomic_write_json", "atomic_write_npy", "atomic_write_text", "fault_point", "hold_lock", "replace_dir"]


def fault_point(name: str) -> None:
    """Fail here if ``DPOSHAP_FAULT`` asks for it for the file ``name`` (see the module's docstring)."""
    spec = os.environ.get("DPOSHAP_FAULT")
    if not spec:
        return
    for item in spec.split(","):
        action, _, target = item.strip().partition(":")
        if target != name:
            continue
        if action == "enospc":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name)
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if action == "kill-once":
            try:
                os.close(os.open(os.environ["DPOSHAP_FAULT_ONCE"], os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                continue
            os.kill(os.getpid(), signal.SIGKILL)
        if action == "interrupt":
            raise KeyboardInterrupt


@contextlib.contextmanager
def hold_lock(folder: Path, what: str) -> Iterator[None]:
    """Hold ``folder/.lock`` for the duration; refuse at once if another process holds it.

    Raises
    ------
    RunLockedError
        Another live process holds the lock (its pid and task are in the message).
    """
    if folder.exists() and not folder.is_dir():
        raise RunError(f"{folder} is a file, not a folder: give a run directory (a new or an existing folder)")
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".lock"
    handle = open(path, "a+", encoding="utf-8")
    held = False
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = True
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunLockedError(
                f"run directory {folder} is in use by {holder}; wait for it to finish or use another run directory"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} ({what})")
        handle.flush()
        yield
    finally:
        if held and created and [p.name for p in folder.iterdir()] == [".lock"]:
            # a folder made for this work and left with nothing in it (the work failed before
            # writing anything): not left behind, so a failed first command leaves no empty run
            # (removed while still held, so no other process can have taken it over)
            path.unlink()
            with contextlib.suppress(OSError):
                folder.rmdir()
        handle.close()


def jsonl_text(records: Iterable[Any]) -> str:
    """Records as JSON lines (UTF-8 kept as is), each ending in a new line."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, file_mode())  # mkstemp's file is owner-only; the renamed file follows the umask
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        fault_point(path.name)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON through a temporary file and a rename."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def atomic_write_npy(path: str | Path, array: np.ndarray) -> None:
    """Save ``array`` as ``.npy`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, file_mode())
    try:
        with os.fdopen(fd, "wb") as handle:
            np.save(handle, array)
            handle.flush()
            os.fsync(handle.fileno())
        fault_point(path.name)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def replace_dir(finished: Path, target: Path) -> None:
    """Move the folder ``finished`` to ``target``, replacing whatever was there.

    The old folder is first renamed aside, so ``target`` is at every moment either the old
    complete folder, absent, or the new complete folder.
    """
    fault_point(target.name)
    publish_tree(finished)  # libraries write weights through owner-only temporary files
    if target.exists():
        aside = target.with_name(f".old-{target.name}-{os.getpid()}")
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(target, aside)
        os.replace(finished, target)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(finished, target)

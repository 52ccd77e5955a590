"""The permissions of the files dposhap writes: what the process's umask gives a new file.

Temporary files made by :func:`tempfile.mkstemp` (and by libraries that write through one) are
owner-only (``0600``); a file renamed into place from one would keep that, so a run directory
could not be read by a teammate or by workers running as another user. Every such file gets the
mode an ordinary ``open(..., "w")`` would have given it.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

__all__ = ["file_mode", "publish_tree"]

_lock = threading.Lock()


def file_mode(directory: bool = False) -> int:
    """``0o666`` (``0o777`` for a folder) less the process's umask."""
    with _lock:  # the umask can only be read by setting it
        umask = os.umask(0o022)
        os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def publish_tree(root: Path) -> None:
    """Give every file and folder under ``root`` (``root`` included) the umask's mode."""
    files, folders = file_mode(), file_mode(directory=True)
    if root.is_file():
        os.chmod(root, files)
        return
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            os.chmod(path, folders if path.is_dir() else files)

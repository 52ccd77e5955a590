"""The one way dposhap turns a configuration or a file into a cache key.

Every cache of a run (the SQLite utility store, the margins files) keys its entries with
:func:`config_hash` of a JSON-able description of what the entry depends on; file contents are
identified by :func:`file_sha256`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["canonical_json", "config_hash", "file_sha256"]


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"a {type(obj).__name__} is not JSON-serialisable")


def canonical_json(obj: Any) -> str:
    """``obj`` as JSON with sorted keys and no spaces; numpy values, paths, sets and dataclasses converted.

    Raises
    ------
    TypeError, ValueError
        Something in ``obj`` has no JSON form (a NaN among them).
    """
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_json_default
    )


def config_hash(obj: Any) -> str:
    """The sha256 (64 hex digits) of :func:`canonical_json` of ``obj``: equal in every process for equal inputs."""
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


def file_sha256(path: str | Path) -> str:
    """The sha256 (hex) of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

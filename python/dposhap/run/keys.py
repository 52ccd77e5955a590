"""The one way dposhap turns a configuration or a file into a cache key.

Every cache of a run (the SQLite utility store, the margins files) keys its entries with
:func:`config_hash` of a JSON-able description of what the entry depends on; file contents are
identified by :func:`file_sha256`; a utility configuration's key in the utility cache is
:func:`utility_key`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError

__all__ = ["canonical_json", "config_hash", "file_sha256", "utility_key"]


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


def utility_key(name: str, config: Mapping[str, Any], n_players: int, objectives: Sequence[str]) -> str:
    """The cache key of a utility configuration: every row of the utility cache is filed under it.

    The sha256 (hex) of :func:`canonical_json` of the name, the configuration (as its canonical
    JSON reads back), the number of players and the objectives: equal configurations give equal
    keys in every process, and keys of caches written by earlier versions stay valid.

    Parameters
    ----------
    name
        The utility's name, e.g. ``"accuracy"``.
    config
        Its settings, JSON-able as :func:`canonical_json` takes them.
    n_players
        Players (sources) of its coalitions, at least 1.
    objectives
        Names of its objectives: one or more, distinct, non-empty.

    Returns
    -------
    str
        64 hex digits.

    Raises
    ------
    InvalidArgumentError
        An argument is malformed; the message says which and how.
    """
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError(f"the utility name must be a non-empty string, got {name!r}")
    if not isinstance(config, Mapping):
        raise InvalidArgumentError(
            f"the configuration of utility {name!r} must be a mapping, got {type(config).__name__}"
        )
    if not isinstance(n_players, (int, np.integer)) or isinstance(n_players, bool) or n_players < 1:
        raise InvalidArgumentError(f"n_players must be a positive integer, got {n_players!r}")
    if isinstance(objectives, str):
        raise InvalidArgumentError(
            f"objectives must be a sequence of names, got the string {objectives!r}: use [{objectives!r}]"
        )
    objectives = list(objectives)
    if (
        not objectives
        or not all(isinstance(o, str) and o for o in objectives)
        or len(set(objectives)) != len(objectives)
    ):
        raise InvalidArgumentError(f"objectives must be one or more distinct non-empty names, got {objectives!r}")
    try:
        config_json = canonical_json(dict(config))
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(
            f"the configuration of utility {name!r} cannot be written as JSON ({exc}): use numbers (finite), "
            "strings, booleans, lists and dicts with string keys"
        ) from None
    return config_hash(
        {"name": name, "config": json.loads(config_json), "n_players": int(n_players), "objectives": objectives}
    )

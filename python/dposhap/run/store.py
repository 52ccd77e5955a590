"""The old import path of the utility cache: every name lives on in :mod:`.utility_store`.

Kept so that ``from dposhap.run.store import UtilityStore, cached`` works as before; the package
imports the new homes.
"""

from __future__ import annotations

from .utility_store import (
    SCHEMA_VERSION,
    CachedItemUtility,
    CachedUtility,
    Evaluation,
    UtilityInfo,
    UtilityStore,
    cached,
    pack_coalitions,
    unpack_coalition,
)

__all__ = [
    "SCHEMA_VERSION",
    "CachedItemUtility",
    "CachedUtility",
    "Evaluation",
    "UtilityInfo",
    "UtilityStore",
    "cached",
    "pack_coalitions",
    "unpack_coalition",
]

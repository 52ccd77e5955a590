"""The run directory and everything kept in it: manifest, adapters, models, caches.

:class:`Run` owns the layout and is the only reader of the manifest (:class:`Manifest`); its
:meth:`Run.load_models` is the one model loader of a trained run; :mod:`.keys` is the one way of
computing cache keys; :class:`UtilityStore` is the SQLite cache of evaluated coalitions.
"""

from __future__ import annotations

from ..core import pack_coalitions, unpack_coalition
from .cached_utility import CachedUtility, cached
from .files import atomic_write_json, atomic_write_npy, atomic_write_text, hold_lock, jsonl_text, replace_dir
from .keys import canonical_json, config_hash, file_sha256
from .manifest import MANIFEST_FORMAT, BaseModelInfo, Manifest, SourceEntry
from .run import Run, RunModels
from .utility_store import Evaluation, UtilityInfo, UtilityStore

__all__ = [
    "MANIFEST_FORMAT",
    "BaseModelInfo",
    "CachedUtility",
    "Evaluation",
    "Manifest",
    "Run",
    "RunModels",
    "SourceEntry",
    "UtilityInfo",
    "UtilityStore",
    "atomic_write_json",
    "atomic_write_npy",
    "atomic_write_text",
    "jsonl_text",
    "cached",
    "canonical_json",
    "config_hash",
    "file_sha256",
    "hold_lock",
    "pack_coalitions",
    "replace_dir",
    "unpack_coalition",
]

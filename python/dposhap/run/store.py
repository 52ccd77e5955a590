"""The old import path of the utility cache: every name lives on in its new home.

:class:`UtilityStore` and its records are in :mod:`.utility_store`, :func:`cached` and its
wrappers in :mod:`.cached_utility`, the coalition codec in :mod:`dposhap.core`. Kept so that
``from dposhap.run.store import UtilityStore, cached`` works as before; the package itself
imports the new homes.
"""

from __future__ import annotations

from ..core import pack_coalitions, unpack_coalition
from .cached_utility import CachedItemUtility, CachedUtility, cached
from .utility_store import SCHEMA_VERSION, Evaluation, UtilityInfo, UtilityStore

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

"""What every layer of dposhap shares, without torch: the bottom of the layers.

- :mod:`.games`: the :data:`Game` type every estimator evaluates and the native :class:`MarginGame`;
- :mod:`.items`: utilities that are means over items (:class:`ItemScores`, the
  :class:`ItemUtility` protocol, :class:`ItemGame`);
- :mod:`.coalitions`: the one coalition codec (:func:`pack_coalitions`), also the utility cache's
  on-disk key;
- :mod:`.outputs`: the one check of a utility's output (:func:`utility_values`).

Nothing here imports torch, transformers or a higher layer of dposhap (``make lint`` checks it).
"""

from __future__ import annotations

from .coalitions import describe_coalition, pack_coalitions, unpack_coalition
from .games import Game, MarginGame, MarginKind, NativeGame
from .items import ItemGame, ItemScores, ItemUtility
from .outputs import require_finite, utility_values

__all__ = [
    "Game",
    "ItemGame",
    "ItemScores",
    "ItemUtility",
    "MarginGame",
    "MarginKind",
    "NativeGame",
    "describe_coalition",
    "pack_coalitions",
    "require_finite",
    "unpack_coalition",
    "utility_values",
]

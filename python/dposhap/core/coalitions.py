"""The one coalition codec: a bool membership row as bytes, and back.

Every place that keys a coalition (the SQLite utility cache on disk, the in-memory memos of the
games and samplers) uses these bytes, so two keys of the same coalition are always equal. The format
is the utility cache's, and must stay bit-identical for an existing ``cache.sqlite`` to hit: player
``i`` is bit ``i % 8`` (least significant first) of byte ``i // 8``, ``ceil(n / 8)`` bytes.
"""

from __future__ import annotations

import numpy as np

__all__ = ["describe_coalition", "pack_coalitions", "unpack_coalition"]


def pack_coalitions(coalitions: np.ndarray) -> list[bytes]:
    """The key of each row of a bool array ``[b, n]``: ``b`` little-endian bitsets of ``ceil(n / 8)`` bytes.

    Parameters
    ----------
    coalitions
        Bool (or 0/1) membership rows ``[b, n]``.

    Returns
    -------
    list of bytes
        One key per row, equal for equal rows.
    """
    packed = np.packbits(np.asarray(coalitions, dtype=bool), axis=1, bitorder="little")
    return [row.tobytes() for row in packed]


def unpack_coalition(blob: bytes, n_players: int) -> np.ndarray:
    """The bool membership row ``[n_players]`` of a key written by :func:`pack_coalitions`."""
    bits = np.unpackbits(np.frombuffer(blob, dtype=np.uint8), bitorder="little", count=n_players)
    return bits.astype(bool)


def describe_coalition(coalition: np.ndarray) -> str:
    """A membership row as the set of its members' indices, for messages: ``{0, 3}``."""
    members = np.flatnonzero(coalition).tolist()
    return "{" + ", ".join(map(str, members)) + "}" if members else "{} (the empty coalition)"

"""Deprecated module name: games are in :mod:`dposhap.core` (the names below keep working)."""

from __future__ import annotations

from .core.games import Game, MarginGame, MarginKind

__all__ = ["Game", "MarginGame", "MarginKind"]

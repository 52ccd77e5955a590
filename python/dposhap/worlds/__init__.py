"""Built-in worlds behind one :class:`World` interface, found by name in a registry.

``dposhap.worlds.get_world("toy")`` is the toy world (:mod:`dposhap.worlds.toy`),
``get_world("english")`` the English world for instruct models (:mod:`dposhap.worlds.english`). A new world is
a new module that builds a :class:`World` and calls :func:`register_world`; nothing else in the
package changes.
"""

from __future__ import annotations

from . import english, toy
from .base import RewardFunction, World, WorldKind, get_world, register_world, world_names

__all__ = [
    "RewardFunction",
    "World",
    "WorldKind",
    "english",
    "get_world",
    "register_world",
    "toy",
    "world_names",
]

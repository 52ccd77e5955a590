"""Many sources from a world's few kinds: k copies of each, named ``kind-NN``, each its own random stream.

A world that plants properties in a handful of source kinds (``helpful``, ``noisy``...) can make
``copies = k`` of each (``[toy] copies``, ``[english] copies``): copy ``i`` of a kind draws its
pairs the way the kind does, from the stream :func:`copy_stream` names, so copy 1 holds the
kind's own pairs and copies of a kind are exchangeable. This module owns the rule for every
world: the names (:func:`copy_names`, :func:`parse_copy_name`), the streams, the setting and its
check (:func:`copies_setting`, :func:`check_copies_setting`), and picking sources from a built
world by copy name or by kind (:func:`select_copies`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError
from ..settings import Section, setting

__all__ = [
    "MAX_COPIES",
    "check_copies_setting",
    "copies_setting",
    "copy_names",
    "copy_stream",
    "declared_copy_names",
    "parse_copy_name",
    "select_copies",
]

MAX_COPIES = 999
"""Most copies of each kind (their names carry up to three digits)."""

_COPY_NAME = re.compile(r"^(?P<kind>[a-z]+)-(?P<copy>[0-9]+)$")


def copy_names(kinds: Sequence[str], copies: int) -> list[str]:
    """The source names of ``copies`` copies of each kind, kind by kind.

    With one copy the names are the kinds themselves; with more, ``kind-NN`` numbered from 1 and
    zero-padded to a common width (at least two digits): ``copy_names(["helpful"], 3)`` is
    ``["helpful-01", "helpful-02", "helpful-03"]``.
    """
    if copies == 1:
        return list(kinds)
    width = max(2, len(str(copies)))
    return [f"{kind}-{i:0{width}d}" for kind in kinds for i in range(1, copies + 1)]


def parse_copy_name(name: str, kinds: Sequence[str], world: str = "") -> tuple[str, int]:
    """The kind and copy number (from 1) of a source name; a bare kind is copy 1.

    Parameters
    ----------
    name
        A kind of ``kinds``, or ``kind-NN`` with ``NN`` >= 1.
    kinds
        The world's source kinds.
    world
        The world's name, for the error message (``"toy"``, ``"English"``).

    Raises
    ------
    ValueError
        ``name`` is neither a kind of ``kinds`` nor ``kind-NN``.
    """
    if name in kinds:
        return name, 1
    match = _COPY_NAME.match(name)
    if match is None or match["kind"] not in kinds or int(match["copy"]) < 1:
        where = f" of the {world} world" if world else ""
        raise ValueError(f"{name!r} is neither a source kind{where} ({', '.join(kinds)}) nor a copy of one (kind-NN)")
    return match["kind"], int(match["copy"])


def copy_stream(stream: str, copy: int) -> str:
    """The random stream of copy ``copy`` of a kind whose own stream is ``stream`` (copy 1: the kind's own)."""
    return stream if copy == 1 else f"{stream}#{copy}"


def declared_copy_names(settings: Any) -> list[str]:
    """The source names a world's settings declare: :func:`copy_names` of its ``sources`` and ``copies``.

    A world with copies registers this as its :attr:`~dposhap.worlds.WorldKind.source_names`, so
    that a run plans the names it builds (``helpful-01`` ...), not the kinds.
    """
    return copy_names(settings.sources, settings.copies)


def copies_setting() -> Any:
    """The ``copies`` field of a world's settings table (default 1), with its help text."""
    return setting(
        "copies of each kind, each from its own random stream, named kind-01, kind-02, ... "
        "(64 sources: 4 kinds x 16 copies); 1 keeps the kinds' own names",
        default=1,
    )


def check_copies_setting(section: Section, copies: object) -> None:
    """``copies``, the table's field of that name, is an integer from 1 to :data:`MAX_COPIES`.

    Raises
    ------
    ConfigError
        It is not, naming ``table.copies`` (:meth:`~dposhap.settings.Section.fail`).
    """
    if isinstance(copies, bool) or not isinstance(copies, int) or not 1 <= copies <= MAX_COPIES:
        section.fail("copies", f"must be an integer from 1 to {MAX_COPIES}, got {copies!r}")


def select_copies(
    data_files: Mapping[str, Path], names: Sequence[str], kinds: Sequence[str], *, table: str, copies: int
) -> dict[str, Path]:
    """The data files of the named sources of a world with several copies of each kind.

    Parameters
    ----------
    data_files
        The world's files by source name (``kind-NN``).
    names
        What to keep, in order: copy names, or kinds (all their copies, in order).
    kinds
        The world's source kinds.
    table
        The world's settings table (``"toy"``), for the error message.
    copies
        The world's copies per kind, for the error message.

    Raises
    ------
    InvalidArgumentError
        A name is neither a built copy nor a kind with copies in ``data_files``.
    """
    chosen: list[str] = []
    for name in names:
        matching = [n for n in data_files if n == name or parse_copy_name(n, kinds)[0] == name]
        if not matching:
            raise InvalidArgumentError(
                f"no {table} source {name!r} with {table}.copies = {copies}: name a kind of {table}.sources "
                f"(all its copies) or a copy ({', '.join(list(data_files)[:2])}, ...)"
            )
        chosen += [n for n in matching if n not in chosen]
    return {n: data_files[n] for n in chosen}

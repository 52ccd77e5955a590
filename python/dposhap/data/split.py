"""The held-out split of each source: deterministic, by content, and the data hash that names it."""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import DataError
from .records import DataSpec, PreferencePair, SourceData, canonical_bytes, check_fraction, check_int, check_seed
from .validate import load_pairs

_SPLIT_TAG = "dposhap-split-v1"
_HASH_TAG = "dposhap-data-v1"


def load_sources(spec: DataSpec) -> dict[str, SourceData]:
    """Load and check the data (:func:`load_pairs`), then split each source into train and held-out.

    Parameters
    ----------
    spec
        Where the data is, how to check it and how to split it.

    Returns
    -------
    dict of str to SourceData
        One entry per selected source, in sorted order of the names.

    Raises
    ------
    DataValidationError
        Listing every problem found in the data.
    """
    by_source: dict[str, list[PreferencePair]] = {}
    for pair in load_pairs(spec):
        by_source.setdefault(pair.source, []).append(pair)
    sources = {}
    for name in sorted(by_source):
        pairs = by_source[name]
        train, heldout = split_heldout(pairs, spec.heldout_fraction, spec.seed, spec.heldout_min)
        data_hash = _data_hash(pairs, spec.heldout_fraction, spec.heldout_min, spec.seed)
        sources[name] = SourceData(name, train, heldout, data_hash)
    return sources


def heldout_size(n_pairs: int, fraction: float, min_heldout: int = 1) -> int:
    """How many of ``n_pairs`` pairs :func:`split_heldout` holds out.

    ``round_half_up(fraction * n_pairs)``, at least ``min_heldout``, at most ``n_pairs - 1``.

    Raises
    ------
    DataError
        If ``n_pairs`` cannot give ``min_heldout`` held-out pairs and one training pair.
    """
    check_fraction(fraction)
    check_int("min_heldout", min_heldout, minimum=0)
    size = min(max(min_heldout, math.floor(fraction * n_pairs + 0.5)), n_pairs - 1)
    if size < min_heldout:
        raise DataError(
            f"{n_pairs} pair(s) cannot give {min_heldout} held-out pair(s) and one training pair: "
            "add pairs or lower heldout_min"
        )
    return size


def split_heldout(
    pairs: Sequence[PreferencePair], fraction: float, seed: int, min_heldout: int = 1
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Split one source's pairs into training and held-out pairs, deterministically.

    Each pair is ranked by the SHA-256 of the seed and its content (prompt, chosen, rejected); the
    :func:`heldout_size` lowest go to the held-out split. So the split depends only on the seed and
    on this source's pairs, not on their order, their files, the source's name or other sources:
    two sources with the same pairs split the same way.

    Parameters
    ----------
    pairs
        The pairs of one source.
    fraction
        The share to hold out, in (0, 1).
    seed
        Seed of the split, an integer in [0, 2**64).
    min_heldout
        The fewest pairs to hold out.

    Returns
    -------
    train, heldout
        Two lists that partition ``pairs``, each in the order of ``pairs``.

    Raises
    ------
    DataError
        If there are too few pairs for ``min_heldout`` held-out pairs and one training pair.
    """
    check_seed(seed)
    n_heldout = heldout_size(len(pairs), fraction, min_heldout)
    salt = f"{_SPLIT_TAG}\0{seed}\0".encode()
    keys = [hashlib.sha256(salt + canonical_bytes(pair)).digest() for pair in pairs]
    held = set(sorted(range(len(pairs)), key=lambda index: (keys[index], index))[:n_heldout])
    train = [pair for index, pair in enumerate(pairs) if index not in held]
    heldout = [pair for index, pair in enumerate(pairs) if index in held]
    return train, heldout


def write_split(source: SourceData, directory: str | Path) -> None:
    """Write a source's split as ``train.jsonl`` and ``heldout.jsonl`` in ``directory``.

    Each line is a record of :meth:`PreferencePair.to_record` plus ``"source"``, in UTF-8. Each
    file is written to a temporary name and then renamed, so a file is never half written.

    Parameters
    ----------
    source
        The source to write.
    directory
        The folder (created if needed), e.g. ``RUN/data/<source>``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for file_name, pairs in (("train.jsonl", source.train), ("heldout.jsonl", source.heldout)):
        lines = (json.dumps({**pair.to_record(), "source": source.name}, ensure_ascii=False) + "\n" for pair in pairs)
        target = directory / file_name
        temporary = target.with_name(f".{file_name}.tmp")
        with open(temporary, "w", encoding="utf-8", newline="\n") as handle:
            handle.writelines(lines)
        os.replace(temporary, target)


def _data_hash(pairs: Iterable[PreferencePair], fraction: float, min_heldout: int, seed: int) -> str:
    settings = {"format": _HASH_TAG, "heldout_fraction": float(fraction), "heldout_min": min_heldout, "seed": seed}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for pair in pairs:
        digest.update(b"\n" + canonical_bytes(pair))
    return digest.hexdigest()

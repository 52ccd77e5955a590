"""The utility cache of a run: ``RUN/cache.sqlite``, one row per evaluated coalition.

Every utility evaluation a valuation pays for is written here, keyed by the utility's
configuration and the coalition, so that an interrupted run resumes with nothing recomputed
and nothing lost, and reports can read back what was evaluated. :class:`UtilityStore` reads
and writes the rows; the file itself (schema, opening checks, migrations, the writer's lock,
durability) is :mod:`.sqlite`'s, which describes the tables and how each column is encoded.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core import ItemScores, describe_coalition, pack_coalitions, unpack_coalition, utility_values
from ..errors import CacheError, InvalidArgumentError, UtilityError
from .keys import canonical_json, utility_key
from .sqlite import SCHEMA_VERSION, CacheDatabase, utc_now

__all__ = ["SCHEMA_VERSION", "Evaluation", "UtilityInfo", "UtilityStore"]

#: Coalitions per ``IN (...)`` query, well below SQLite's limit on bound parameters.
_QUERY_CHUNK = 500
_U64 = 2**64
_I64 = 2**63


@dataclass(frozen=True)
class UtilityInfo:
    """A registered utility configuration.

    Attributes
    ----------
    key
        The configuration's hash (64 hex digits), as returned by :meth:`UtilityStore.utility_key`.
    name
        The utility's name.
    config
        Its configuration, as decoded from the stored canonical JSON.
    n_players
        Players of its coalitions.
    objectives
        Names of its objectives; a value has one entry per objective.
    created_at
        When it was first registered (ISO 8601, UTC).
    """

    key: str
    name: str
    config: dict[str, Any]
    n_players: int
    objectives: tuple[str, ...]
    created_at: str


@dataclass(frozen=True)
class Evaluation:
    """One evaluated coalition, as stored.

    Attributes
    ----------
    coalition
        Bool array ``[n_players]``.
    values
        Float64 array ``[k]``, one entry per objective.
    n_samples
        How many samples (prompts, pairs) the utility averaged over.
    seed
        The seed the utility ran with, or None.
    seconds
        Wall time spent on this coalition, or None when unknown.
    created_at
        When the row was written (ISO 8601, UTC).
    """

    coalition: np.ndarray
    values: np.ndarray
    n_samples: int
    seed: int | None
    seconds: float | None
    created_at: str


class UtilityStore:
    """``RUN/cache.sqlite``: one row per evaluated coalition and utility configuration.

    Parameters
    ----------
    path
        The database file; created (with its folder) when missing, unless ``readonly``.
    timeout_s
        How long an SQLite statement waits for a busy database before giving up.
    readonly
        Open for reading only: no lock is taken, so reports can read while a valuation writes.
    synchronous
        ``"normal"`` or ``"full"`` (SQLite's ``PRAGMA synchronous``); default the environment's
        ``DPOSHAP_SQLITE_SYNCHRONOUS``, else ``"normal"``.

    Raises
    ------
    RunLockedError
        Another writer (in this or another process) holds the cache; its pid is in the message.
    CacheError
        The file is not a readable dposhap cache (not SQLite, damaged, another program's
        database, or written by a newer dposhap), or ``readonly`` and it does not exist.

    Examples
    --------
    >>> with UtilityStore(run.cache) as store:                                 # doctest: +SKIP
    ...     key = store.utility_key("accuracy", {"split": "heldout"}, 4, ["accuracy"])
    ...     result = dposhap.shapley(cached(utility, store, key), 4)
    """

    def __init__(
        self, path: str | Path, *, timeout_s: float = 5.0, readonly: bool = False, synchronous: str | None = None
    ):
        self._file = CacheDatabase(path, timeout_s=timeout_s, readonly=readonly, synchronous=synchronous)
        self.path = self._file.path
        self.readonly = self._file.readonly
        self.synchronous = self._file.synchronous
        self._infos: dict[str, UtilityInfo] = {}

    @property
    def lock_path(self) -> Path:
        """The advisory lock file a writer holds: ``<cache>.lock``."""
        return self._file.lock_path

    @property
    def _db(self) -> sqlite3.Connection:
        return self._file.connection

    def close(self) -> None:
        """Close the database and release the writer's lock. Idempotent."""
        self._file.close()

    def __enter__(self) -> UtilityStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._file.closed else ("read-only" if self.readonly else "writer")
        return f"UtilityStore({str(self.path)!r}, {state})"

    # -- utility configurations ---------------------------------------------------------

    def utility_key(self, name: str, config: Mapping[str, Any], n_players: int, objectives: Sequence[str]) -> str:
        """Register a utility configuration and return its key.

        The key is :func:`~dposhap.run.keys.utility_key`'s: the sha256 (hex) of the canonical
        JSON (sorted keys, no spaces) of the name, the configuration, the number of players and
        the objectives, so the same configuration gives the same key in every process. Put in ``config`` everything that
        changes the utility's values (models, prompts, decoding settings, seeds): two
        configurations that share a key share their cached values.

        Parameters
        ----------
        name
            The utility's name, e.g. ``"accuracy"`` or ``"generation"``.
        config
            Its settings: JSON-serialisable (numbers, strings, lists, dicts; numpy scalars and
            arrays, paths, sets and dataclasses are converted).
        n_players
            Players (sources) of its coalitions.
        objectives
            Names of its objectives, one per entry of a value.

        Returns
        -------
        str
            64 hex digits.

        Raises
        ------
        InvalidArgumentError
            An argument is malformed, or the store is read-only and holds no such configuration.
        """
        if not isinstance(objectives, str):
            objectives = list(objectives)
        key = utility_key(name, config, n_players, objectives)
        if key in self._infos:
            return key
        if self.readonly:
            self._info(key)  # raises for a configuration this cache has never seen
            return key
        with self._file.translate("register a utility in"):
            self._db.execute(
                "INSERT OR IGNORE INTO utilities (key, name, config, n_players, objectives, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (key, name, canonical_json(dict(config)), int(n_players), json.dumps(objectives), utc_now()),
            )
        self._info(key)
        return key

    def _info(self, key: str) -> UtilityInfo:
        info = self._infos.get(key)
        if info is not None:
            return info
        if not isinstance(key, str):
            raise InvalidArgumentError(f"a utility key is a string of 64 hex digits, got {type(key).__name__}")
        with self._file.translate("read"):
            row = self._db.execute(
                "SELECT key, name, config, n_players, objectives, created_at FROM utilities WHERE key = ?", (key,)
            ).fetchone()
        if row is None:
            raise InvalidArgumentError(
                f"unknown utility key {key!r} in the cache {self.path}: get keys from UtilityStore.utility_key(...) "
                "(on a writer it registers the configuration) or list them with UtilityStore.utilities()"
            )
        info = UtilityInfo(row[0], row[1], json.loads(row[2]), int(row[3]), tuple(json.loads(row[4])), row[5])
        self._infos[key] = info
        return info

    def info(self, key: str) -> UtilityInfo:
        """The configuration registered under ``key``.

        Raises
        ------
        InvalidArgumentError
            No configuration has this key.
        """
        return self._info(key)

    def utilities(self) -> list[UtilityInfo]:
        """Every registered utility configuration, oldest first."""
        with self._file.translate("read"):
            keys = [row[0] for row in self._db.execute("SELECT key FROM utilities ORDER BY rowid")]
        return [self._info(k) for k in keys]

    # -- evaluations --------------------------------------------------------------------

    def _coalitions(self, info: UtilityInfo, coalitions: Any) -> np.ndarray:
        arr = np.asarray(coalitions)
        if arr.ndim != 2 or arr.shape[1] != info.n_players:
            raise InvalidArgumentError(
                f"coalitions of utility {info.name!r} must be an array [b, {info.n_players}] (one row per coalition, "
                f"one column per player), got shape {arr.shape}"
            )
        if arr.dtype != bool:
            if arr.size and not (np.issubdtype(arr.dtype, np.number) and np.isin(arr, (0, 1)).all()):
                raise InvalidArgumentError(
                    f"coalitions must be a bool array (or 0/1 numbers), got dtype {arr.dtype} with other values"
                )
            arr = arr.astype(bool)
        return np.ascontiguousarray(arr)

    def _existing(self, key: str, blobs: Sequence[bytes]) -> dict[bytes, bytes]:
        """The stored value blobs of those of ``blobs`` that are in the cache."""
        found: dict[bytes, bytes] = {}
        unique = list(dict.fromkeys(blobs))
        for start in range(0, len(unique), _QUERY_CHUNK):
            chunk = unique[start : start + _QUERY_CHUNK]
            marks = ",".join("?" * len(chunk))
            query = f'SELECT coalition, "values" FROM evaluations WHERE utility = ? AND coalition IN ({marks})'
            found.update((bytes(c), bytes(v)) for c, v in self._db.execute(query, (key, *chunk)))
        return found

    def lookup(self, key: str, coalitions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The cached values of a batch of coalitions.

        Parameters
        ----------
        key
            A key from :meth:`utility_key`.
        coalitions
            Bool array ``[b, n_players]``.

        Returns
        -------
        found
            Bool array ``[b]``: whether each coalition is in the cache.
        values
            Float64 array ``[b, k]`` (``k`` objectives), NaN in the rows not found.

        Raises
        ------
        InvalidArgumentError
            An unknown key or coalitions of the wrong shape.
        """
        info = self._info(key)
        arr = self._coalitions(info, coalitions)
        k = len(info.objectives)
        blobs = pack_coalitions(arr)
        with self._file.translate("read"):
            stored = self._existing(key, blobs)
        found = np.zeros(len(blobs), dtype=bool)
        values = np.full((len(blobs), k), np.nan)
        for row, blob in enumerate(blobs):
            value = stored.get(blob)
            if value is not None:
                found[row] = True
                values[row] = np.frombuffer(value, dtype="<f8")
        return found, values

    def record(
        self,
        key: str,
        coalitions: np.ndarray,
        values: np.ndarray,
        *,
        n_samples: int | np.ndarray = 1,
        seed: int | None = None,
        seconds: float | np.ndarray | None = None,
        items: ItemScores | None = None,
    ) -> None:
        """Write the values of a batch of coalitions, in one transaction.

        When this returns, the rows are in the file and survive the process being killed.
        Recording a coalition that is already cached with the same values does nothing;
        with different values it raises, and nothing of the batch is written.

        Parameters
        ----------
        key
            A key from :meth:`utility_key`.
        coalitions
            Bool array ``[b, n_players]``.
        values
            ``[b]`` (one objective) or ``[b, k]``, finite.
        n_samples
            Samples each value averages over (prompts, pairs): one number or one per row.
        seed
            The seed the utility ran with (unsigned 64-bit), or None.
        seconds
            Wall time spent on each coalition: one number for every row, one per row, or None.
        items
            The per-item scores the values are the means of (:class:`~dposhap.ItemScores`,
            ``[b, k, m]``), kept so that the values can be bootstrapped over the items.

        Raises
        ------
        InvalidArgumentError
            An unknown key, a read-only store, or arrays of the wrong shape.
        UtilityError
            A value is NaN or infinite, or differs from the one already cached for the same
            coalition (the utility is not deterministic under this configuration and seed).
        """
        if self.readonly:
            raise InvalidArgumentError(
                f"the utility cache {self.path} was opened read-only: open it without readonly=True to record"
            )
        info = self._info(key)
        arr = self._coalitions(info, coalitions)
        b, k = arr.shape[0], len(info.objectives)
        vals = self._values(info, arr, values)
        samples = self._per_row("n_samples", n_samples, b, integer=True)
        secs = None if seconds is None else self._per_row("seconds", seconds, b, integer=False)
        seed_sql = self._seed(seed)
        blobs = pack_coalitions(arr)
        item_rows = self._item_rows(info, key, blobs, items) if items is not None else {}
        now = utc_now()
        rows: dict[bytes, tuple[Any, ...]] = {}
        for r, blob in enumerate(blobs):
            value_blob = vals[r].astype("<f8").tobytes()
            previous = rows.get(blob)
            if previous is not None:
                if previous[3] != value_blob:
                    raise self._conflict(info, arr[r], np.frombuffer(previous[3], "<f8"), vals[r], "in the same batch")
                continue
            sec = None if secs is None else float(secs[r])
            rows[blob] = (key, blob, info.n_players, value_blob, k, int(samples[r]), seed_sql, sec, now)
        conn = self._db
        with self._file.translate("write"):
            conn.execute("BEGIN IMMEDIATE")
            try:
                stored = self._existing(key, list(rows))
                for blob, stored_values in stored.items():
                    if stored_values != rows[blob][3]:
                        old = np.frombuffer(stored_values, "<f8")
                        raise self._conflict(
                            info,
                            unpack_coalition(blob, info.n_players),
                            old,
                            np.frombuffer(rows[blob][3], "<f8"),
                            "in the cache",
                        )
                conn.executemany(
                    'INSERT INTO evaluations (utility, coalition, n_players, "values", n_objectives, n_samples, seed, '
                    "seconds, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [row for blob, row in rows.items() if blob not in stored],
                )
                if item_rows:
                    conn.executemany(
                        "INSERT OR IGNORE INTO items (utility, coalition, n_items, n_objectives, weighted, scores) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        list(item_rows.values()),
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def _item_rows(
        self, info: UtilityInfo, key: str, blobs: Sequence[bytes], items: ItemScores
    ) -> dict[bytes, tuple[Any, ...]]:
        k = len(info.objectives)
        if items.numer.ndim != 3 or items.numer.shape[:2] != (len(blobs), k):
            raise UtilityError(
                f"utility {info.name!r} has {k} objective(s): per-item scores for {len(blobs)} coalitions must have "
                f"shape ({len(blobs)}, {k}, n_items), got {items.numer.shape}"
            )
        m = items.n_items
        out: dict[bytes, tuple[Any, ...]] = {}
        for r, blob in enumerate(blobs):
            data = items.numer[r].astype("<f8").tobytes()
            if items.denom is not None:
                data += items.denom[r].astype("<f8").tobytes()
            out.setdefault(blob, (key, blob, m, k, int(items.denom is not None), data))
        return out

    def lookup_items(self, key: str, coalitions: np.ndarray) -> tuple[np.ndarray, ItemScores | None]:
        """The per-item scores recorded with a batch of coalitions.

        Returns
        -------
        found
            Bool ``[b]``: whether each coalition has per-item scores in the cache.
        items
            :class:`~dposhap.ItemScores` of all ``b`` rows (zeros where not found), or None when
            none was found.
        """
        info = self._info(key)
        arr = self._coalitions(info, coalitions)
        blobs = pack_coalitions(arr)
        stored: dict[bytes, tuple[int, int, int, bytes]] = {}
        unique = list(dict.fromkeys(blobs))
        with self._file.translate("read"):
            if not self._file.has_table("items"):
                return np.zeros(len(blobs), dtype=bool), None
            for start in range(0, len(unique), _QUERY_CHUNK):
                chunk = unique[start : start + _QUERY_CHUNK]
                marks = ",".join("?" * len(chunk))
                query = (
                    "SELECT coalition, n_items, n_objectives, weighted, scores FROM items "
                    f"WHERE utility = ? AND coalition IN ({marks})"
                )
                for c, m, k, w, data in self._db.execute(query, (key, *chunk)):
                    stored[bytes(c)] = (int(m), int(k), int(w), bytes(data))
        found = np.array([blob in stored for blob in blobs], dtype=bool)
        if not found.any():
            return found, None
        m, k, weighted, _ = next(iter(stored.values()))
        numer = np.zeros((len(blobs), k, m))
        denom = np.ones((len(blobs), m)) if weighted else None
        for r, blob in enumerate(blobs):
            row = stored.get(blob)
            if row is None:
                continue
            if row[:3] != (m, k, weighted):
                raise CacheError(
                    f"the per-item scores of utility {info.name!r} in {self.path} disagree in shape between rows "
                    f"({row[:2]} against {(m, k)} items x objectives): the cache is inconsistent; move it aside"
                )
            flat = np.frombuffer(row[3], dtype="<f8")
            numer[r] = flat[: k * m].reshape(k, m)
            if denom is not None:
                denom[r] = flat[k * m :]
        return found, ItemScores(numer, denom)

    def _values(self, info: UtilityInfo, coalitions: np.ndarray, values: Any) -> np.ndarray:
        return utility_values(
            values, coalitions.shape[0], f"utility {info.name!r}", objectives=info.objectives, coalitions=coalitions
        )

    @staticmethod
    def _per_row(what: str, value: Any, b: int, *, integer: bool) -> np.ndarray:
        arr = np.asarray(value)
        if arr.ndim == 0:
            arr = np.full(b, arr)
        if arr.shape != (b,):
            raise InvalidArgumentError(f"{what} must be one number or one per coalition ({b}), got shape {arr.shape}")
        if integer:
            if arr.size and not (np.issubdtype(arr.dtype, np.integer) and (arr >= 1).all()):
                raise InvalidArgumentError(f"{what} must be positive integers, got {value!r}")
            return arr.astype(np.int64)
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError):
            raise InvalidArgumentError(f"{what} must be numbers, got {value!r}") from None
        if arr.size and not (np.isfinite(arr).all() and (arr >= 0).all()):
            raise InvalidArgumentError(f"{what} must be finite and >= 0, got {value!r}")
        return arr

    @staticmethod
    def _seed(seed: int | None) -> int | None:
        if seed is None:
            return None
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or not 0 <= seed < _U64:
            raise InvalidArgumentError(f"seed must be None or an integer in [0, 2**64), got {seed!r}")
        seed = int(seed)
        return seed - _U64 if seed >= _I64 else seed

    def _conflict(
        self, info: UtilityInfo, coalition: np.ndarray, old: np.ndarray, new: np.ndarray, where: str
    ) -> UtilityError:
        return UtilityError(
            f"utility {info.name!r} gave coalition {describe_coalition(coalition)} the values {new.tolist()} but {where} it has "
            f"{old.tolist()}: the utility is not deterministic under this configuration and seed. Fix its seeding, "
            f"or put what differs between the runs in its config (a new key) — key {info.key[:12]}…, cache {self.path}"
        )

    def count(self, key: str) -> int:
        """Number of coalitions cached under ``key``."""
        self._info(key)
        with self._file.translate("read"):
            return int(self._db.execute("SELECT COUNT(*) FROM evaluations WHERE utility = ?", (key,)).fetchone()[0])

    def rows(self, key: str) -> Iterator[Evaluation]:
        """Every evaluation cached under ``key``, in the order they were recorded.

        Yields
        ------
        Evaluation
        """
        info = self._info(key)
        with self._file.translate("read"):
            cursor = self._db.execute(
                'SELECT coalition, "values", n_samples, seed, seconds, created_at FROM evaluations '
                "WHERE utility = ? ORDER BY rowid",
                (key,),
            )
        while True:
            with self._file.translate("read"):
                batch = cursor.fetchmany(1024)
            if not batch:
                return
            for coalition, values, n_samples, seed, seconds, created_at in batch:
                yield Evaluation(
                    coalition=unpack_coalition(coalition, info.n_players),
                    values=np.frombuffer(values, dtype="<f8").astype(np.float64),
                    n_samples=int(n_samples),
                    seed=None if seed is None else int(seed) % _U64,
                    seconds=None if seconds is None else float(seconds),
                    created_at=created_at,
                )

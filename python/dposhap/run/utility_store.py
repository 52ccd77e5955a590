"""The utility cache of a run: ``RUN/cache.sqlite``, one row per evaluated coalition.

Every utility evaluation a valuation pays for is written here, keyed by the utility's
configuration and the coalition, so that an interrupted run resumes with nothing recomputed
and nothing lost, and reports can read back what was evaluated.

Schema (version :data:`SCHEMA_VERSION`)::

    meta(key TEXT PRIMARY KEY, value TEXT)                  schema_version, created_at
    utilities(key TEXT PRIMARY KEY,                         sha256 of the canonical JSON
              name TEXT, config TEXT, n_players INTEGER,    of name, config, players and
              objectives TEXT, created_at TEXT)             objectives (JSON list)
    evaluations(utility TEXT, coalition BLOB,               packed little-endian bitset
                n_players INTEGER, "values" BLOB,           float64 little-endian, k of them
                n_objectives INTEGER, n_samples INTEGER,
                seed INTEGER, seconds REAL, created_at TEXT,
                PRIMARY KEY (utility, coalition))
    items(utility TEXT, coalition BLOB,                     per-item scores of a row of
          n_items INTEGER, n_objectives INTEGER,            evaluations (utilities that are
          weighted INTEGER, scores BLOB,                    means over prompts or pairs)
          PRIMARY KEY (utility, coalition))

``items.scores`` holds float64 little-endian numerators ``[k, m]`` followed, when ``weighted``,
by the items' weights ``[m]``: the row's value on objective ``j`` is the sum of numerators over
the sum of weights (the mean when unweighted). Version 1 files gain the table on first writable
open.

A coalition is stored as ``ceil(n / 8)`` bytes: player ``i`` is bit ``i % 8`` of byte
``i // 8``, so ``int.from_bytes(blob, "little")`` has bit ``i`` set exactly when player ``i``
is a member. Seeds are unsigned 64-bit numbers, stored in two's complement.

The database runs in WAL mode with ``synchronous=NORMAL`` (``FULL`` when asked: then a power cut
loses nothing either): a finished :meth:`UtilityStore.record` survives the process being killed;
a power cut can lose the last few batches but never corrupts the file. Every open runs SQLite's
``quick_check`` and reads the schema before writing anything, so a damaged or foreign file is
refused untouched; a full disk is reported as such and the file kept. One writer at a time: a writer holds an exclusive advisory lock on
``<cache>.lock`` for its lifetime; readers (``readonly=True``) take none.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..core import ItemScores, describe_coalition, pack_coalitions, unpack_coalition, utility_values
from ..errors import CacheError, InvalidArgumentError, RunLockedError, UtilityError
from .keys import canonical_json, config_hash

__all__ = ["SCHEMA_VERSION", "Evaluation", "UtilityInfo", "UtilityStore"]

#: Version of the on-disk schema this module writes; files with a newer one are refused.
SCHEMA_VERSION = 2
#: Coalitions per ``IN (...)`` query, well below SQLite's limit on bound parameters.
_QUERY_CHUNK = 500
_U64 = 2**64
_I64 = 2**63

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS utilities (
    key TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    config TEXT NOT NULL,
    n_players INTEGER NOT NULL,
    objectives TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS evaluations (
    utility TEXT NOT NULL REFERENCES utilities(key),
    coalition BLOB NOT NULL,
    n_players INTEGER NOT NULL,
    "values" BLOB NOT NULL,
    n_objectives INTEGER NOT NULL,
    n_samples INTEGER NOT NULL,
    seed INTEGER,
    seconds REAL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (utility, coalition)
);
CREATE TABLE IF NOT EXISTS items (
    utility TEXT NOT NULL REFERENCES utilities(key),
    coalition BLOB NOT NULL,
    n_items INTEGER NOT NULL,
    n_objectives INTEGER NOT NULL,
    weighted INTEGER NOT NULL,
    scores BLOB NOT NULL,
    PRIMARY KEY (utility, coalition)
);
"""


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


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


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
        if not (isinstance(timeout_s, (int, float)) and math.isfinite(timeout_s) and timeout_s >= 0):
            raise InvalidArgumentError(f"timeout_s must be a finite number of seconds >= 0, got {timeout_s!r}")
        synchronous = (synchronous or os.environ.get("DPOSHAP_SQLITE_SYNCHRONOUS") or "normal").lower()
        if synchronous not in ("normal", "full"):
            raise InvalidArgumentError(f"synchronous must be 'normal' or 'full', got {synchronous!r}")
        self.synchronous = synchronous
        self.path = Path(path)
        self.readonly = bool(readonly)
        self._lock_file: IO[str] | None = None
        self._conn: sqlite3.Connection | None = None
        self._infos: dict[str, UtilityInfo] = {}
        try:
            if self.readonly:
                if not self.path.is_file():
                    raise CacheError(
                        f"there is no utility cache at {self.path}: nothing has been evaluated in this run yet"
                    )
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._lock_file = self._acquire_lock()
            self._conn = self._connect(timeout_s)
        except BaseException:
            self.close()
            raise

    # -- opening -------------------------------------------------------------------------

    @property
    def lock_path(self) -> Path:
        """The advisory lock file a writer holds: ``<cache>.lock``."""
        return self.path.with_name(self.path.name + ".lock")

    def _acquire_lock(self) -> IO[str]:
        handle = open(self.lock_path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            if holder == f"pid {os.getpid()}":
                who = f"another UtilityStore of this process (pid {os.getpid()})"
            else:
                who = f"process {holder.removeprefix('pid ')}" if holder else "another process"
            raise RunLockedError(
                f"the utility cache {self.path} is being written by {who}: two valuations cannot write the same run "
                "at once; wait for it to finish, use another run directory, or open the cache with readonly=True"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        return handle

    def _connect(self, timeout_s: float) -> sqlite3.Connection:
        try:
            if self.readonly:
                uri = f"{self.path.resolve().as_uri()}?mode=ro"
                conn = sqlite3.connect(uri, uri=True, timeout=timeout_s, isolation_level=None)
            else:
                conn = sqlite3.connect(str(self.path), timeout=timeout_s, isolation_level=None)
        except sqlite3.Error as exc:
            raise CacheError(
                f"could not open the utility cache {self.path}: {exc}; check that the path is a file in a folder you "
                "can write to"
            ) from exc
        try:
            with self._translate("open"):
                conn.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
                # read before writing anything: a foreign or damaged file is refused untouched
                self._check_integrity(conn)
                self._check_foreign(conn)
                if not self.readonly:
                    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                    if str(mode).lower() != "wal":
                        raise CacheError(
                            f"could not put the utility cache {self.path} in WAL mode (SQLite kept {mode!r})"
                        )
                    conn.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")
                self._check_schema(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _check_integrity(self, conn: sqlite3.Connection) -> None:
        """SQLite's own check of the file's structure (``PRAGMA quick_check``), before anything is read or written."""
        problems = [str(row[0]) for row in conn.execute("PRAGMA quick_check(3)")]
        if problems != ["ok"]:
            raise self._damaged("check", sqlite3.DatabaseError("; ".join(problems)))

    def _check_foreign(self, conn: sqlite3.Connection) -> None:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and "meta" not in tables:
            raise CacheError(
                f"{self.path} is an SQLite database but not a dposhap utility cache (it has tables "
                f"{', '.join(sorted(tables))}): it was left untouched; move it aside or use another run directory"
            )

    def _check_schema(self, conn: sqlite3.Connection) -> None:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "meta" not in tables:
            if self.readonly:
                raise CacheError(f"the utility cache {self.path} is empty: nothing has been evaluated in this run yet")
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.executemany(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                    [("schema_version", str(SCHEMA_VERSION)), ("created_at", _now())],
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        try:
            version = int(row[0]) if row is not None else None
        except ValueError:
            version = None
        if version is None:
            raise CacheError(
                f"the utility cache {self.path} has no valid schema_version in its meta table: move it aside and run again"
            )
        if version > SCHEMA_VERSION:
            raise CacheError(
                f"the utility cache {self.path} was written by a newer dposhap (schema version {version}; this one "
                f"reads up to {SCHEMA_VERSION}): upgrade dposhap, or move the file aside to start a fresh cache"
            )
        if version < SCHEMA_VERSION and not self.readonly:
            self._migrate(conn, version)

    def _migrate(self, conn: sqlite3.Connection, version: int) -> None:
        """Bring a dposhap cache of an older schema up to :data:`SCHEMA_VERSION` (only adds tables)."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def _translate(self, doing: str) -> Iterator[None]:
        """Turn SQLite's errors into dposhap errors that name the file and say what to do."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            text = str(exc).lower()
            if "no transaction is active" in text and isinstance(exc.__context__, sqlite3.Error):
                # SQLite already rolled back on its own (as it does on a full disk): the cause is the first error
                text = f"{text}; {exc.__context__}".lower()
            full = getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
            if full or "disk is full" in text or "database or disk is full" in text:
                raise CacheError(
                    f"the disk is full: could not {doing} the utility cache {self.path} ({exc}); the file is kept "
                    "with every evaluation written so far: free some space and run the same command again to resume"
                ) from exc
            if "locked" in text or "busy" in text:
                raise RunLockedError(
                    f"the utility cache {self.path} stayed busy beyond the timeout while trying to {doing} it ({exc}): "
                    "another process is using it; wait for it or raise timeout_s"
                ) from exc
            raise self._damaged(doing, exc) from exc
        except sqlite3.DatabaseError as exc:
            raise self._damaged(doing, exc) from exc

    def _damaged(self, doing: str, exc: Exception) -> CacheError:
        return CacheError(
            f"could not {doing} the utility cache {self.path}: {exc}. The file is not a readable dposhap cache "
            f"(not SQLite, or damaged): move it aside (e.g. `mv {self.path} {self.path}.bad`) and run again; "
            "the utilities it held will be recomputed"
        )

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise CacheError(f"the utility store of {self.path} is closed")
        return self._conn

    def close(self) -> None:
        """Close the database and release the writer's lock. Idempotent."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def __enter__(self) -> UtilityStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else ("read-only" if self.readonly else "writer")
        return f"UtilityStore({str(self.path)!r}, {state})"

    # -- utility configurations ---------------------------------------------------------

    def utility_key(self, name: str, config: Mapping[str, Any], n_players: int, objectives: Sequence[str]) -> str:
        """Register a utility configuration and return its key.

        The key is the sha256 (hex) of the canonical JSON (sorted keys, no spaces) of the
        name, the configuration, the number of players and the objectives: the same
        configuration gives the same key in every process. Put in ``config`` everything that
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
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"the utility name must be a non-empty string, got {name!r}")
        if not isinstance(config, Mapping):
            raise InvalidArgumentError(
                f"the configuration of utility {name!r} must be a mapping, got {type(config).__name__}"
            )
        if not isinstance(n_players, (int, np.integer)) or isinstance(n_players, bool) or n_players < 1:
            raise InvalidArgumentError(f"n_players must be a positive integer, got {n_players!r}")
        if isinstance(objectives, str):
            raise InvalidArgumentError(
                f"objectives must be a sequence of names, got the string {objectives!r}: use [{objectives!r}]"
            )
        objectives = list(objectives)
        if (
            not objectives
            or not all(isinstance(o, str) and o for o in objectives)
            or len(set(objectives)) != len(objectives)
        ):
            raise InvalidArgumentError(f"objectives must be one or more distinct non-empty names, got {objectives!r}")
        try:
            config_json = canonical_json(dict(config))
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(
                f"the configuration of utility {name!r} cannot be written as JSON ({exc}): use numbers (finite), "
                "strings, booleans, lists and dicts with string keys"
            ) from None
        key = config_hash(
            {"name": name, "config": json.loads(config_json), "n_players": int(n_players), "objectives": objectives}
        )
        if key in self._infos:
            return key
        if self.readonly:
            self._info(key)  # raises for a configuration this cache has never seen
            return key
        with self._translate("register a utility in"):
            self._db.execute(
                "INSERT OR IGNORE INTO utilities (key, name, config, n_players, objectives, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (key, name, config_json, int(n_players), json.dumps(objectives), _now()),
            )
        self._info(key)
        return key

    def _info(self, key: str) -> UtilityInfo:
        info = self._infos.get(key)
        if info is not None:
            return info
        if not isinstance(key, str):
            raise InvalidArgumentError(f"a utility key is a string of 64 hex digits, got {type(key).__name__}")
        with self._translate("read"):
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
        with self._translate("read"):
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
        with self._translate("read"):
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
        now = _now()
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
        with self._translate("write"):
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
        with self._translate("read"):
            if not self._has_items_table():
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

    def _has_items_table(self) -> bool:
        row = self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'items'").fetchone()
        return row is not None

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
        with self._translate("read"):
            return int(self._db.execute("SELECT COUNT(*) FROM evaluations WHERE utility = ?", (key,)).fetchone()[0])

    def rows(self, key: str) -> Iterator[Evaluation]:
        """Every evaluation cached under ``key``, in the order they were recorded.

        Yields
        ------
        Evaluation
        """
        info = self._info(key)
        with self._translate("read"):
            cursor = self._db.execute(
                'SELECT coalition, "values", n_samples, seed, seconds, created_at FROM evaluations '
                "WHERE utility = ? ORDER BY rowid",
                (key,),
            )
        while True:
            with self._translate("read"):
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

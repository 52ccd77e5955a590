"""The SQLite file behind a run's utility cache: its schema, opening, checks and migrations.

:class:`CacheDatabase` opens ``RUN/cache.sqlite`` (creating it when missing), takes the writer's
lock, checks the file before anything is written, brings an older schema up to date and turns
SQLite's errors into dposhap errors; :class:`~dposhap.run.UtilityStore` keeps its rows in it.

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
loses nothing either): a finished :meth:`~dposhap.run.UtilityStore.record` survives the process
being killed; a power cut can lose the last few batches but never corrupts the file. Every open
runs SQLite's ``quick_check`` and reads the schema before writing anything, so a damaged or
foreign file is refused untouched; a full disk is reported as such and the file kept. One writer
at a time: a writer holds an exclusive advisory lock on ``<cache>.lock`` for its lifetime;
readers (``readonly=True``) take none.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from ..errors import CacheError, InvalidArgumentError, RunLockedError

__all__ = ["SCHEMA_VERSION", "CacheDatabase", "utc_now"]

#: Version of the on-disk schema this module writes; files with a newer one are refused.
SCHEMA_VERSION = 2

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


def utc_now() -> str:
    """The current time as the cache writes it: ISO 8601, UTC, milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class CacheDatabase:
    """The SQLite file of a utility cache, open and checked; see the module's description.

    Parameters
    ----------
    path
        The database file; created (with its folder) when missing, unless ``readonly``.
    timeout_s
        How long an SQLite statement waits for a busy database before giving up.
    readonly
        Open for reading only: no lock is taken.
    synchronous
        ``"normal"`` or ``"full"`` (SQLite's ``PRAGMA synchronous``); default the environment's
        ``DPOSHAP_SQLITE_SYNCHRONOUS``, else ``"normal"``.

    Raises
    ------
    InvalidArgumentError
        ``timeout_s`` or ``synchronous`` is malformed.
    RunLockedError
        Another writer holds the file.
    CacheError
        The file is not a readable dposhap cache, or ``readonly`` and it does not exist.
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
            with self.translate("open"):
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
                    [("schema_version", str(SCHEMA_VERSION)), ("created_at", utc_now())],
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
    def translate(self, doing: str) -> Iterator[None]:
        """Turn SQLite's errors inside the block into dposhap errors that name the file and say what to do.

        Parameters
        ----------
        doing
            What the block does to the cache, as the message says it: ``"read"``, ``"write"``, ...

        Raises
        ------
        CacheError
            The disk is full (the file is kept), or the file is damaged or not SQLite.
        RunLockedError
            The database stayed busy beyond the timeout.
        """
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
    def connection(self) -> sqlite3.Connection:
        """The open connection (autocommit: transactions are explicit ``BEGIN``/``COMMIT``).

        Raises
        ------
        CacheError
            The file has been closed.
        """
        if self._conn is None:
            raise CacheError(f"the utility store of {self.path} is closed")
        return self._conn

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._conn is None

    def has_table(self, name: str) -> bool:
        """Whether the file has a table called ``name`` (tables added by a newer schema may be missing)."""
        row = self.connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone()
        return row is not None

    def close(self) -> None:
        """Close the database and release the writer's lock. Idempotent."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

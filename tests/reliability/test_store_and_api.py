"""The SQLite cache under faults (a full disk, a foreign or damaged file) and the Python API's edges."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

import dposhap
from dposhap.errors import CacheError, InvalidArgumentError
from dposhap.run import UtilityStore


def _fill(store: UtilityStore, key: str, rows: range) -> None:
    for i in rows:
        coalition = np.array([[bool(i >> b & 1) for b in range(12)]])
        store.record(key, coalition, np.array([[float(i)]]), n_samples=1, seed=0)


def test_a_full_disk_is_said_and_the_cache_kept(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    with UtilityStore(path) as store:
        key = store.utility_key("u", {}, 12, ["v"])
        _fill(store, key, range(10))
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        store._db.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own SQLITE_FULL, as on a full disk
        with pytest.raises(CacheError, match="disk is full") as info:
            _fill(store, key, range(10, 4000))
        assert "move it aside" not in str(info.value)
    with UtilityStore(path, readonly=True) as store:  # every row written before the disk filled is there
        coalitions = np.array([[bool(i >> b & 1) for b in range(12)] for i in range(10)])
        found, values = store.lookup(key, coalitions)
        assert found.all() and values[:, 0].tolist() == list(range(10))


def test_a_foreign_sqlite_file_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE mine (x INTEGER)")
    conn.execute("INSERT INTO mine VALUES (1)")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(CacheError, match="not a dposhap utility cache"):
        UtilityStore(path)
    assert path.read_bytes() == before  # not switched to WAL mode, nothing written
    assert not path.with_name("cache.sqlite-wal").exists()


def test_a_file_that_is_not_sqlite_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    path.write_bytes(b"this is a text file, not a database\n" * 200)
    before = path.read_bytes()
    with pytest.raises(CacheError, match="move it aside"):
        UtilityStore(path)
    assert path.read_bytes() == before


def test_a_damaged_cache_fails_the_integrity_check(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    with UtilityStore(path) as store:
        key = store.utility_key("u", {}, 12, ["v"])
        _fill(store, key, range(2000))
    data = bytearray(path.read_bytes())
    assert len(data) > 4096 * 4
    for offset in range(4096, 4096 * 3):  # scribble over the second and third pages
        data[offset] = 0xA5
    path.write_bytes(bytes(data))
    before = path.read_bytes()
    with pytest.raises(CacheError, match="move it aside"):
        UtilityStore(path)
    assert path.read_bytes() == before


@pytest.mark.parametrize(("asked", "pragma"), [(None, 1), ("normal", 1), ("full", 2)])
def test_synchronous_is_a_setting(tmp_path: Path, asked: str | None, pragma: int) -> None:
    with UtilityStore(tmp_path / "c.sqlite", synchronous=asked) as store:
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == pragma


def test_synchronous_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DPOSHAP_SQLITE_SYNCHRONOUS", "full")
    with UtilityStore(tmp_path / "c.sqlite") as store:
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2
    monkeypatch.setenv("DPOSHAP_SQLITE_SYNCHRONOUS", "sometimes")
    with pytest.raises(InvalidArgumentError, match="synchronous"):
        UtilityStore(tmp_path / "d.sqlite")
    assert not (tmp_path / "d.sqlite").exists()


@pytest.mark.parametrize("n", [2**64, 2**30, 2**17])
def test_huge_numbers_of_players_are_refused_before_allocation(n: int) -> None:
    with pytest.raises(InvalidArgumentError, match="n_players"):
        dposhap.shapley(lambda c: c.sum(1).astype(float), n, method="permutation", budget=10)


def test_ctrl_c_inside_shapley_keeps_the_partial_result() -> None:
    calls = []

    def utility(coalitions: np.ndarray) -> np.ndarray:
        calls.append(len(coalitions))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return coalitions.sum(1).astype(float)

    with pytest.raises(KeyboardInterrupt) as info:
        dposhap.shapley(utility, 6, method="permutation", budget=4000, batch_size=8, progress=False)
    partial = info.value.partial  # type: ignore[attr-defined]
    assert partial.n_players == 6 and partial.n_evaluations >= sum(calls[:2])
    assert np.isfinite(partial.values).all()


def test_the_cache_identity_holds_the_players_order(trained_run: Path) -> None:
    """Cached margins rows and coalition bits are by position: two orders must never share a cache entry."""
    from dposhap.run import Run, config_hash

    run = Run.open(trained_run)
    one = run.cache_identity(["helpful", "harmless"])
    other = run.cache_identity(["harmless", "helpful"])
    assert one["adapters"] == other["adapters"]  # the same adapters...
    assert config_hash(one) != config_hash(other)  # ...in another order are another cache entry

"""The utility cache (``RUN/cache.sqlite``): round trips, resume, durability, locking, errors."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dposhap
import dposhap.core
import dposhap.run.cached_utility
import dposhap.run.sqlite
import dposhap.run.utility_store
from dposhap.errors import DposhapError, InvalidArgumentError, RunLockedError, UtilityError
from dposhap.run.keys import utility_key
from dposhap.run.store import UtilityStore, cached, pack_coalitions, unpack_coalition
from dposhap.testing import InteractionGame

REPO = Path(__file__).resolve().parents[2]


def run_python(code: str, *args: object) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh Python process (``sys.argv[1:]`` = ``args``)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def distinct_coalitions(n: int, b: int, seed: int) -> np.ndarray:
    """``b`` distinct random coalitions of ``n`` players (fewer when ``2**n < b``)."""
    rng = np.random.default_rng(seed)
    rows = rng.random((4 * b, n)) < rng.random((4 * b, 1))
    _, first = np.unique(np.packbits(rows, axis=1), axis=0, return_index=True)
    return rows[np.sort(first)[:b]]


class Counting:
    """A two-objective utility that counts every coalition it evaluates."""

    def __init__(self, n: int, fail_after: int | None = None):
        self.game = InteractionGame(n, seed=5)
        self.weights = np.linspace(-1.0, 2.0, n)
        self.fail_after = fail_after
        self.calls = 0
        self.rows = 0

    def __call__(self, coalitions: np.ndarray) -> np.ndarray:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("interrupted")
        self.calls += 1
        self.rows += len(coalitions)
        return np.stack([self.game(coalitions), np.tanh(coalitions @ self.weights)], axis=1)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "run" / "cache.sqlite"


@pytest.fixture
def store(path: Path):
    with UtilityStore(path) as s:
        yield s


# ---------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("n", [3, 20, 130])
def test_round_trip_any_number_of_players(store: UtilityStore, n: int) -> None:
    key = store.utility_key("u", {"n": n}, n, ["a", "b"])
    coalitions = distinct_coalitions(n, 300, seed=n)
    values = np.random.default_rng(n).normal(size=(len(coalitions), 2))
    store.record(key, coalitions, values, n_samples=7, seed=2**64 - 1, seconds=0.5)

    found, got = store.lookup(key, coalitions[::-1])
    assert found.all()
    np.testing.assert_array_equal(got, values[::-1])
    assert store.count(key) == len(coalitions)
    rows = list(store.rows(key))
    np.testing.assert_array_equal(np.stack([r.coalition for r in rows]), coalitions)
    np.testing.assert_array_equal(np.stack([r.values for r in rows]), values)
    assert {(r.n_samples, r.seed, r.seconds) for r in rows} == {(7, 2**64 - 1, 0.5)}


def test_coalition_is_a_little_endian_bitset(store: UtilityStore, path: Path) -> None:
    n = 130
    key = store.utility_key("u", {}, n, ["a"])
    coalition = np.zeros((1, n), dtype=bool)
    coalition[0, [0, 9, 129]] = True
    store.record(key, coalition, [1.0])
    with sqlite3.connect(path) as raw:
        (blob,) = raw.execute("SELECT coalition FROM evaluations").fetchone()
    assert len(blob) == 17
    assert int.from_bytes(blob, "little") == (1 << 0) | (1 << 9) | (1 << 129)


@settings(max_examples=60)
@given(st.integers(1, 140).flatmap(lambda n: st.lists(st.booleans(), min_size=n, max_size=n)))
def test_pack_unpack_round_trip(bits: list[bool]) -> None:
    row = np.array([bits])
    (blob,) = pack_coalitions(row)
    assert len(blob) == (len(bits) + 7) // 8
    np.testing.assert_array_equal(unpack_coalition(blob, len(bits)), row[0])


def test_lookup_mix_of_known_and_unknown(store: UtilityStore) -> None:
    key = store.utility_key("u", {}, 12, ["a"])
    coalitions = distinct_coalitions(12, 100, seed=1)
    known = coalitions[::2]
    store.record(key, known, np.arange(len(known), dtype=float))
    query = np.concatenate([coalitions, coalitions[:5]])  # repeats are answered too
    found, values = store.lookup(key, query)
    expected = np.zeros(len(coalitions), dtype=bool)
    expected[::2] = True
    np.testing.assert_array_equal(found, np.concatenate([expected, expected[:5]]))
    assert np.isnan(values[~found]).all()
    np.testing.assert_array_equal(values[: len(coalitions) : 2, 0], np.arange(len(known)))
    assert values.shape == (len(query), 1)
    found, values = store.lookup(key, np.zeros((0, 12), dtype=bool))
    assert found.shape == (0,) and values.shape == (0, 1)


def test_vectors_of_objectives(store: UtilityStore) -> None:
    key3 = store.utility_key("u", {}, 4, ["help", "harm", "len"])
    c = distinct_coalitions(4, 5, seed=0)
    with pytest.raises(UtilityError, match=r"\(5, 3\)"):
        store.record(key3, c, np.ones(5))
    store.record(key3, c, np.arange(15.0).reshape(5, 3))
    np.testing.assert_array_equal(store.lookup(key3, c)[1], np.arange(15.0).reshape(5, 3))
    key1 = store.utility_key("u", {}, 4, ["help"])
    store.record(key1, c[:2], np.ones(2))
    store.record(key1, c[2:], np.ones((3, 1)))
    assert store.count(key1) == 5 and store.count(key3) == 5


def test_utility_key_is_canonical_and_stable_across_processes(store: UtilityStore) -> None:
    config = {"model": "tiny", "temperature": np.float64(0.7), "prompts": (1, 2), "nested": {"b": 1, "a": [True, None]}}
    key = store.utility_key("gen", config, 4, ["help", "harm"])
    reordered = {"nested": {"a": [True, None], "b": 1}, "prompts": [1, 2], "temperature": 0.7, "model": "tiny"}
    assert store.utility_key("gen", reordered, 4, ["help", "harm"]) == key
    assert len(key) == 64 and int(key, 16) >= 0
    others = [
        store.utility_key("gen", {**reordered, "temperature": 0.8}, 4, ["help", "harm"]),
        store.utility_key("gen", reordered, 5, ["help", "harm"]),
        store.utility_key("gen", reordered, 4, ["harm", "help"]),
        store.utility_key("acc", reordered, 4, ["help", "harm"]),
    ]
    assert len({key, *others}) == 5
    info = store.info(key)
    assert (info.name, info.n_players, info.objectives) == ("gen", 4, ("help", "harm"))
    assert info.config == reordered
    assert [u.key for u in store.utilities()] == [key, *others]

    child = run_python(
        """
        import sys
        from dposhap.run.store import UtilityStore
        import tempfile, pathlib
        with UtilityStore(pathlib.Path(tempfile.mkdtemp()) / "c.sqlite") as s:
            print(s.utility_key("gen", {"model": "tiny", "temperature": 0.7, "prompts": [1, 2],
                                        "nested": {"a": [True, None], "b": 1}}, 4, ["help", "harm"]))
        """
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == key


def test_utility_keys_are_those_earlier_caches_were_written_with(store: UtilityStore) -> None:
    # the key of this configuration as dposhap has always computed it: a cache written before
    # still hits only while this holds
    config = {"model": "tiny", "temperature": 0.7, "prompts": [1, 2], "nested": {"a": [True, None], "b": 1}}
    expected = "bfb25186899166ee591a30130378531fdc1cba661e922dceeb8bec646e12ed80"
    assert utility_key("gen", config, 4, ["help", "harm"]) == expected
    assert store.utility_key("gen", config, 4, ("help", "harm")) == expected
    with pytest.raises(InvalidArgumentError, match="objectives must be a sequence of names"):
        utility_key("gen", config, 4, "help")


def test_the_old_import_path_names_the_same_objects() -> None:
    import dposhap.run.store as old

    new_homes = {
        "UtilityStore": dposhap.run.utility_store.UtilityStore,
        "UtilityInfo": dposhap.run.utility_store.UtilityInfo,
        "Evaluation": dposhap.run.utility_store.Evaluation,
        "SCHEMA_VERSION": dposhap.run.sqlite.SCHEMA_VERSION,
        "cached": dposhap.run.cached_utility.cached,
        "CachedUtility": dposhap.run.cached_utility.CachedUtility,
        "CachedItemUtility": dposhap.run.cached_utility.CachedItemUtility,
        "pack_coalitions": dposhap.core.pack_coalitions,
        "unpack_coalition": dposhap.core.unpack_coalition,
    }
    assert sorted(old.__all__) == sorted(new_homes)
    for name, obj in new_homes.items():
        assert getattr(old, name) is obj, name
        if name in dposhap.run.__all__:
            assert getattr(dposhap.run, name) is obj, name


# ---------------------------------------------------------------------------------------
# cached(): nothing is evaluated twice


CHILD_CACHED = """
    import sys
    import numpy as np
    from dposhap.run.store import UtilityStore, cached
    n = 10
    rows = []
    def utility(c):
        rows.extend(map(bytes, np.packbits(c, axis=1)))
        return c @ np.arange(1.0, n + 1)
    with UtilityStore(sys.argv[1]) as store:
        key = store.utility_key("weighted", {"w": "1..n"}, n, ["v"])
        masks = np.arange(int(sys.argv[2]))
        coalitions = ((masks[:, None] >> np.arange(n)) & 1).astype(bool)
        u = cached(utility, store, key)
        out = u(coalitions)
        assert np.array_equal(out, coalitions @ np.arange(1.0, n + 1))
        print(u.evaluated, u.hits, len(rows), len(set(rows)), store.count(key))
"""


def test_cached_evaluates_each_coalition_once_across_batches_and_processes(path: Path) -> None:
    n = 10
    calls: list[tuple[int, int]] = []
    seen: list[bytes] = []

    def utility(c: np.ndarray) -> np.ndarray:
        seen.extend(map(bytes, np.packbits(c, axis=1)))
        return c @ np.arange(1.0, n + 1)

    masks = np.arange(300)
    every = ((masks[:, None] >> np.arange(n)) & 1).astype(bool)
    with UtilityStore(path) as store:
        key = store.utility_key("weighted", {"w": "1..n"}, n, ["v"])
        u = cached(utility, store, key, seed=3, on_batch=lambda h, e: calls.append((h, e)))
        first = u(np.concatenate([every[:100], every[50:60]]))  # repeats within the batch
        second = u(every[80:200][::-1])  # overlaps the first batch
        third = u(every[:200])  # all cached
        for got, rows in (
            (first, np.concatenate([every[:100], every[50:60]])),
            (second, every[80:200][::-1]),
            (third, every[:200]),
        ):
            np.testing.assert_array_equal(got, rows @ np.arange(1.0, n + 1))
        assert first.shape == (110,)
        assert calls == [(10, 100), (20, 100), (200, 0)]
        assert (u.evaluated, u.hits, u.calls) == (200, 230, 3)
        assert len(seen) == len(set(seen)) == 200
        assert store.count(key) == 200
        assert {r.seed for r in store.rows(key)} == {3}
        assert all(r.seconds is not None and r.seconds >= 0 for r in store.rows(key))

    # a new process and a new store on the same file evaluate only what is new
    child = run_python(CHILD_CACHED, path, 300)
    assert child.returncode == 0, child.stderr
    assert child.stdout.split() == ["100", "200", "100", "100", "300"]
    child = run_python(CHILD_CACHED, path, 300)
    assert child.stdout.split() == ["0", "300", "0", "0", "300"]


@pytest.mark.parametrize("method", ["permutation", "regression"])
def test_interrupted_valuation_resumes_with_identical_values(path: Path, method: str) -> None:
    n, budget, batch, seed = 8, 160, 20, 7
    options = dict(method=method, budget=budget, seed=seed, batch_size=batch)
    reference = dposhap.shapley(Counting(n), n, **options)

    with UtilityStore(path) as store:
        key = store.utility_key("game", {"seed": 5}, n, ["interaction", "tanh"])
        interrupted = Counting(n, fail_after=3)
        with pytest.raises(KeyboardInterrupt):
            dposhap.shapley(cached(interrupted, store, key, seed=seed), n, **options)
        done_before = store.count(key)
        assert done_before == interrupted.rows > 0

    with UtilityStore(path) as store:  # a new store instance on the same file
        resumed = Counting(n)
        u = cached(resumed, store, key, seed=seed)
        result = dposhap.shapley(u, n, **options)
        assert store.count(key) == reference.n_evaluations

    np.testing.assert_array_equal(result.values, reference.values)
    np.testing.assert_array_equal(result.stderr, reference.stderr)
    assert result.values.shape == (n, 2)
    assert result.n_evaluations == reference.n_evaluations
    assert resumed.rows == u.evaluated == reference.n_evaluations - done_before
    assert u.hits == done_before


# ---------------------------------------------------------------------------------------
# Durability and concurrency


def test_recorded_rows_survive_the_process_being_killed(path: Path) -> None:
    child = run_python(
        """
        import os, signal, sys
        import numpy as np
        from dposhap.run.store import UtilityStore
        store = UtilityStore(sys.argv[1])
        key = store.utility_key("u", {}, 16, ["a", "b"])
        masks = np.arange(1, 51)
        c = ((masks[:, None] >> np.arange(16)) & 1).astype(bool)
        store.record(key, c, np.stack([masks / 3, -masks / 7], axis=1), seed=11)
        os.kill(os.getpid(), signal.SIGKILL)
        """,
        path,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    # the rows were never checkpointed into the database file: they live in the WAL
    assert Path(f"{path}-wal").stat().st_size > 0
    with UtilityStore(path) as store:  # the dead writer's lock is gone with it
        key = store.utility_key("u", {}, 16, ["a", "b"])
        assert store.count(key) == 50
        masks = np.arange(1, 51)
        found, values = store.lookup(key, ((masks[:, None] >> np.arange(16)) & 1).astype(bool))
        assert found.all()
        np.testing.assert_array_equal(values, np.stack([masks / 3, -masks / 7], axis=1))


CHILD_OPEN = """
    import sys
    from dposhap.run.store import UtilityStore
    from dposhap.errors import RunLockedError
    try:
        with UtilityStore(sys.argv[1], readonly=sys.argv[2] == "ro") as store:
            print("opened", sum(store.count(u.key) for u in store.utilities()))
    except RunLockedError as exc:
        print("RunLockedError:", exc)
"""


def test_a_second_writer_is_refused_and_readers_are_not(path: Path) -> None:
    with UtilityStore(path) as store:
        key = store.utility_key("u", {}, 3, ["a"])
        store.record(key, np.eye(3, dtype=bool), [1.0, 2.0, 3.0])
        writer = run_python(CHILD_OPEN, path, "rw")
        assert writer.stdout.startswith("RunLockedError:"), writer.stdout + writer.stderr
        assert f"process {os.getpid()}" in writer.stdout and str(path) in writer.stdout
        reader = run_python(CHILD_OPEN, path, "ro")
        assert reader.stdout.split() == ["opened", "3"], reader.stdout + reader.stderr
        with pytest.raises(RunLockedError, match="this process"):
            UtilityStore(path)
    assert run_python(CHILD_OPEN, path, "rw").stdout.split() == ["opened", "3"]


def test_wal_mode_and_readonly(path: Path) -> None:
    with pytest.raises(DposhapError, match="no utility cache"):
        UtilityStore(path, readonly=True)
    with UtilityStore(path) as store:
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        key = store.utility_key("u", {"x": 1}, 3, ["a"])
        store.record(key, np.eye(3, dtype=bool), [1.0, 2.0, 3.0])
        with sqlite3.connect(path) as raw:
            assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        with UtilityStore(path, readonly=True) as reader:
            assert reader.utility_key("u", {"x": 1}, 3, ["a"]) == key
            assert reader.count(key) == 3
            with pytest.raises(InvalidArgumentError, match="read-only"):
                reader.record(key, np.zeros((1, 3), dtype=bool), [0.0])
            with pytest.raises(InvalidArgumentError, match="unknown utility key"):
                reader.utility_key("u", {"x": 2}, 3, ["a"])
            with pytest.raises(InvalidArgumentError, match="readonly"):
                cached(lambda s: s.sum(axis=1), reader, key)
    with pytest.raises(DposhapError, match="closed"):
        store.count(key)


# ---------------------------------------------------------------------------------------
# Errors


def test_rerecording_same_values_is_a_no_op_and_different_values_raise(store: UtilityStore) -> None:
    key = store.utility_key("u", {}, 5, ["a", "b"])
    c, new = np.split(distinct_coalitions(5, 7, seed=2), [6])
    values = np.arange(12.0).reshape(6, 2)
    store.record(key, c, values, seconds=1.0)
    before = [(r.created_at, r.seconds) for r in store.rows(key)]
    store.record(key, c[::-1], values[::-1], seconds=2.0)
    assert [(r.created_at, r.seconds) for r in store.rows(key)] == before

    changed = values.copy()
    changed[3, 1] += 1e-9
    members = "{" + ", ".join(map(str, np.flatnonzero(c[3]))) + "}"
    with pytest.raises(UtilityError, match="not deterministic") as info:
        store.record(key, c, changed)
    assert members in str(info.value)
    # a batch with a conflict writes nothing, not even its new rows
    with pytest.raises(UtilityError):
        store.record(key, np.concatenate([new, c[3:4]]), np.array([[0.0, 0.0], changed[3]]))
    assert store.count(key) == 6
    # repeats inside one batch must agree too
    with pytest.raises(UtilityError, match="same batch"):
        store.record(key, np.stack([new[0], new[0]]), np.array([[0.0, 0.0], [0.0, 1.0]]))
    store.record(key, np.stack([new[0], new[0]]), np.zeros((2, 2)))
    assert store.count(key) == 7


def test_bad_inputs_raise_clear_errors(store: UtilityStore) -> None:
    key = store.utility_key("acc", {}, 4, ["a"])
    c = np.array([[1, 0, 0, 1], [0, 1, 1, 0]], dtype=bool)
    with pytest.raises(InvalidArgumentError, match=r"\[b, 4\]"):
        store.lookup(key, np.ones((2, 5), dtype=bool))
    with pytest.raises(InvalidArgumentError, match=r"\[b, 4\]"):
        store.record(key, np.ones(4, dtype=bool), [1.0])
    with pytest.raises(InvalidArgumentError, match="bool"):
        store.lookup(key, np.full((1, 4), 2))
    with pytest.raises(UtilityError, match=r"\(2,\)"):
        store.record(key, c, [1.0, 2.0, 3.0])
    with pytest.raises(UtilityError, match=r"\{1, 2\}"):
        store.record(key, c, [1.0, np.nan])
    with pytest.raises(UtilityError, match=r"\{0, 3\}"):
        store.record(key, c, [np.inf, 1.0])
    with pytest.raises(InvalidArgumentError, match="n_samples"):
        store.record(key, c, [1.0, 2.0], n_samples=0)
    with pytest.raises(InvalidArgumentError, match="seconds"):
        store.record(key, c, [1.0, 2.0], seconds=[1.0])
    with pytest.raises(InvalidArgumentError, match="seed"):
        store.record(key, c, [1.0, 2.0], seed=-1)
    with pytest.raises(InvalidArgumentError, match="unknown utility key"):
        store.lookup("0" * 64, c)
    with pytest.raises(InvalidArgumentError, match="unknown utility key"):
        store.count("nope")
    with pytest.raises(InvalidArgumentError, match="JSON"):
        store.utility_key("acc", {"f": object()}, 4, ["a"])
    with pytest.raises(InvalidArgumentError, match="JSON"):
        store.utility_key("acc", {"t": float("nan")}, 4, ["a"])
    with pytest.raises(InvalidArgumentError, match="objectives"):
        store.utility_key("acc", {}, 4, "a")
    with pytest.raises(InvalidArgumentError, match="objectives"):
        store.utility_key("acc", {}, 4, ["a", "a"])
    with pytest.raises(InvalidArgumentError, match="n_players"):
        store.utility_key("acc", {}, 0, ["a"])
    assert store.count(key) == 0
    u = cached(lambda s: np.ones((len(s), 2)), store, key)
    with pytest.raises(UtilityError, match="shape"):
        u(c)
    assert store.count(key) == 0 and u.evaluated == 0


def test_unreadable_files_give_a_clear_error(tmp_path: Path) -> None:
    garbage = tmp_path / "cache.sqlite"
    garbage.write_bytes(b"definitely not an SQLite database\n" * 200)
    for readonly in (False, True):
        with pytest.raises(DposhapError, match="move it aside") as info:
            UtilityStore(garbage, readonly=readonly)
        assert str(garbage) in str(info.value)
        assert not isinstance(info.value, sqlite3.Error)

    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as raw:
        raw.execute("CREATE TABLE t (x)")
    raw.close()
    with pytest.raises(DposhapError, match="not a dposhap utility cache"):
        UtilityStore(foreign)

    newer = tmp_path / "newer.sqlite"
    UtilityStore(newer).close()
    with sqlite3.connect(newer) as raw:
        raw.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    raw.close()
    with pytest.raises(DposhapError, match="newer dposhap"):
        UtilityStore(newer)
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(DposhapError, match="could not open"):
        UtilityStore(folder)
    # a refused open leaves the lock free for the next try
    newer.unlink()
    UtilityStore(newer).close()


def test_a_version_1_cache_gains_the_items_table(tmp_path: Path) -> None:
    import sqlite3

    from dposhap.run.store import SCHEMA_VERSION

    path = tmp_path / "cache.sqlite"
    with UtilityStore(path) as store:
        key = store.utility_key("u", {}, 2, ["a"])
        store.record(key, np.array([[True, False]]), np.array([0.5]))
    with sqlite3.connect(path) as conn:  # what dposhap 1 wrote: no items table, version 1
        conn.execute("DROP TABLE items")
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    with UtilityStore(path, readonly=True) as store:
        found, items = store.lookup_items(key, np.array([[True, False]]))
        assert not found.any() and items is None
        assert store.lookup(key, np.array([[True, False]]))[1][0, 0] == 0.5
    with UtilityStore(path) as store:
        from dposhap import ItemScores

        store.record(key, np.array([[True, True]]), np.array([0.25]), items=ItemScores(np.array([[[0.0, 0.5]]])))
        found, items = store.lookup_items(key, np.array([[True, True], [True, False]]))
        assert found.tolist() == [True, False] and items is not None
        np.testing.assert_allclose(items.values()[0], [0.25])
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)

"""Valuation through a pool of Ray actors (dposhap.evaluate.pool) on a local runtime started by the
tests: the same values, margins and cache rows as in process, whatever actor dies mid-run, and a
one-line error without Ray."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dposhap.config import ClusterConfig, load_config
from dposhap.errors import RunError
from dposhap.evaluate.pool import EvaluationPool, _chunks
from dposhap.run import Run
from dposhap.train import train_sources
from dposhap.valuation import value_run

pytest.importorskip("ray")

TINY = [
    "toy.pairs_per_source=32",
    "toy.sources=['helpful','harmless','noisy']",
    "dpo.max_steps=2",
    "dpo.max_length=64",
    "model.device=cpu",
]
TWO_ACTORS = ClusterConfig(address="local", workers=2)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> Path:
    out = tmp_path_factory.mktemp("cluster-value") / "run"
    train_sources(load_config(None, TINY), out, progress=False)
    return out


def _copy(run: Path, tmp_path: Path, name: str) -> Path:
    copy = tmp_path / name
    shutil.copytree(run, copy)
    return copy


def _rows(run: Path, utility: str) -> list[tuple[Any, ...]]:
    """Every cached row of ``utility``: coalition, values, seed, per-item scores (not timings)."""
    store = Run(run).store(readonly=True)
    try:
        (info,) = [i for i in store.utilities() if i.name == utility]
        rows = list(store.rows(info.key))
        coalitions = np.array([r.coalition for r in rows], dtype=bool)
        _, items = store.lookup_items(info.key, coalitions)
        assert items is not None
        return [
            (r.coalition.tobytes(), r.values.tobytes(), r.seed, items.numer[i].tobytes()) for i, r in enumerate(rows)
        ]
    finally:
        store.close()


def test_chunks_cover_the_batch_in_order() -> None:
    for n in range(1, 12):
        for parts in range(1, 6):
            chunks = _chunks(n, parts)
            assert [i for a, b in chunks for i in range(a, b)] == list(range(n))
            sizes = [b - a for a, b in chunks]
            assert len(chunks) == min(n, parts) and max(sizes) - min(sizes) <= 1


def test_margins_sharded_across_two_actors_equal_in_process(
    trained: Path, tmp_path: Path, ray_runtime: Any, one_thread: None
) -> None:
    here, there = _copy(trained, tmp_path, "here"), _copy(trained, tmp_path, "there")
    local, _ = value_run(here, "accuracy", device="cpu", threads=1, progress=False, n_boot=20)
    # the address alone: the pool fills the runtime's 2 CPUs with 2 actors
    pooled, _ = value_run(there, "accuracy", device="cpu", threads=1, progress=False, n_boot=20, cluster="local")
    assert np.array_equal(local.values, pooled.values)
    assert np.array_equal(local.eval_stderr, pooled.eval_stderr)
    (a,), (b,) = sorted((here / "margins").glob("*.npy")), sorted((there / "margins").glob("*.npy"))
    assert a.name == b.name and np.array_equal(np.load(a), np.load(b))  # bit for bit, shard by shard


def test_generation_through_two_actors_gives_the_same_values_and_cache_rows(
    trained: Path, tmp_path: Path, ray_runtime: Any, one_thread: None
) -> None:
    here, there = _copy(trained, tmp_path, "here"), _copy(trained, tmp_path, "there")
    kwargs: dict[str, Any] = dict(device="cpu", threads=1, progress=False, n_boot=20, batch_size=3)
    local, _ = value_run(here, "generation", **kwargs)
    pooled, _ = value_run(there, "generation", cluster=TWO_ACTORS, **kwargs)
    assert np.array_equal(local.values, pooled.values)
    assert np.array_equal(local.eval_stderr, pooled.eval_stderr)
    assert _rows(here, "generation") == _rows(there, "generation")  # same rows, same order, nothing twice


def test_an_actor_killed_mid_run_is_replaced_and_the_values_stand(
    trained: Path, tmp_path: Path, ray_runtime: Any, monkeypatch: pytest.MonkeyPatch, one_thread: None
) -> None:
    here, there = _copy(trained, tmp_path, "here"), _copy(trained, tmp_path, "there")
    kwargs: dict[str, Any] = dict(device="cpu", threads=1, progress=False, n_boot=0, batch_size=2)
    local, _ = value_run(here, "likelihood", **kwargs)

    submit = EvaluationPool.submit
    pools: list[EvaluationPool] = []

    def kill_on_second_batch(self: EvaluationPool, coalitions: np.ndarray) -> int:
        pools.append(self)
        if len(pools) == 2:
            # the first batch's chunks are running (asked ahead, the second one waits for actors): actor 0
            # dies in the middle of its chunk, which is evaluated again by its replacement
            ray_runtime.kill(self.actors[0])
        return submit(self, coalitions)

    monkeypatch.setattr(EvaluationPool, "submit", kill_on_second_batch)
    pooled, _ = value_run(there, "likelihood", cluster=TWO_ACTORS, **kwargs)
    assert len(pools) >= 3 and pools[0].replaced >= 1
    assert np.array_equal(local.values, pooled.values)
    assert pooled.n_evaluations == local.n_evaluations
    store = Run(there).store(readonly=True)
    try:
        (info,) = store.utilities()
        assert store.count(info.key) == local.n_evaluations  # nothing recorded twice
    finally:
        store.close()


def test_ray_missing_is_one_line_naming_the_extra(trained: Path, tmp_path: Path) -> None:
    run = _copy(trained, tmp_path, "run")
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "from dposhap.cli import main\n"
        f"sys.exit(main(['value', {str(run)!r}, '--utility', 'accuracy', '--ray', 'local', '--quiet']))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.count("\n") == 1 and "dposhap[ray]" in result.stderr, result.stderr
    assert not (run / "values.json").exists()  # nothing was valued


def test_a_run_directory_other_nodes_cannot_see_is_named(tmp_path: Path, ray_runtime: Any) -> None:
    from dposhap.cluster import connect

    pool = EvaluationPool(connect(TWO_ACTORS, device="cpu"), str(tmp_path / "nowhere"), progress=False)
    try:
        with pytest.raises(RunError, match="not visible on the Ray node"):
            pool.utility("generation", None, 0)
    finally:
        pool.close()

"""Training through Ray (one task per source) on a local runtime: the same adapters and manifest as in
process, resumable, a dead worker's task retried, and a one-line error without Ray."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dposhap.config import RunConfig, load_config
from dposhap.errors import ConfigError
from dposhap.run import Run
from dposhap.train import train_sources

ray = pytest.importorskip("ray", reason="Ray is the optional extra dposhap[ray] (the dev extra installs it)")

# the reliability suite's tiny toy run (tests/reliability/reliability_helpers.py TRAIN_ARGS)
TINY = [
    "toy.pairs_per_source=32",
    "dpo.max_steps=2",
    "dpo.max_length=64",
    "model.device=cpu",
    "model.threads=1",
]
SOURCES = ["harmless", "helpful", "noisy"]
# the source whose worker the fault hook kills on its first attempt (no other test trains it on Ray)
DIES_ONCE = "duplicate"  # tests/conftest.py RAY_DIES_ONCE: the runtime is armed for it


@pytest.fixture(scope="module")
def died_marker(ray_runtime: object, ray_fault_marker: Path) -> Path:
    """The session's Ray runtime (tests/conftest.py), whose workers kill themselves once while saving
    DIES_ONCE's adapter; the marker file exists once that happened."""
    return ray_fault_marker


def _config(sources: list[str], *extra: str, ray_address: str | None = "local") -> RunConfig:
    cluster = [f"cluster.address='{ray_address}'"] if ray_address else []
    return load_config(None, [*TINY, f"toy.sources={sources!r}", *cluster, *extra])


@pytest.fixture(scope="module")
def in_process(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("in-process")
    train_sources(_config(SOURCES, ray_address=None), out, progress=False)
    return out


@pytest.fixture(scope="module")
def on_ray(died_marker: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("on-ray")
    train_sources(_config(SOURCES), out, progress=False)
    return out


def _entries(run: Path) -> dict[str, dict]:
    """The manifest's source entries without what differs between two trainings (timings, dates)."""
    sources = json.loads((run / "manifest.json").read_text())["sources"]
    return {name: {k: v for k, v in e.items() if k not in ("timings", "trained_at")} for name, e in sources.items()}


def test_ray_gives_the_in_process_adapters_and_entries(in_process: Path, on_ray: Path) -> None:
    for name in SOURCES:
        local = (in_process / "adapters" / name / "adapter_model.safetensors").read_bytes()
        remote = (on_ray / "adapters" / name / "adapter_model.safetensors").read_bytes()
        assert local == remote, name
    assert _entries(on_ray) == _entries(in_process)
    assert list(_entries(on_ray)) == SOURCES
    assert {e["status"] for e in _entries(on_ray).values()} == {"trained"}
    manifest = json.loads((on_ray / "manifest.json").read_text())
    assert manifest["machine"]["ray"].startswith("Ray (local): 2 workers, 1 CPU each")
    assert not [p.name for p in (on_ray / "adapters").iterdir() if p.name.startswith(".")]


def test_a_second_ray_training_reuses_every_adapter(on_ray: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in (on_ray / "adapters").rglob("*") if p.is_file()}
    manifest = train_sources(_config(SOURCES), on_ray, progress=False)
    assert {e.status for e in manifest.sources.values()} == {"reused"}
    assert {p: p.stat().st_mtime_ns for p in (on_ray / "adapters").rglob("*") if p.is_file()} == before


def test_a_task_whose_worker_dies_is_retried(died_marker: Path, tmp_path: Path) -> None:
    assert not died_marker.exists()
    manifest = train_sources(_config([DIES_ONCE]), tmp_path, progress=False)
    assert died_marker.exists()  # the first attempt's worker was killed while saving the adapter
    entry = manifest.sources[DIES_ONCE]
    assert entry.status == "trained" and Run(tmp_path).adapter_intact(DIES_ONCE, entry)
    assert Run(tmp_path).read_manifest().sources[DIES_ONCE].adapter_sha256 == entry.adapter_sha256
    assert sorted(p.name for p in (tmp_path / "adapters").iterdir()) == [DIES_ONCE]  # no leftovers


def test_a_task_error_is_the_in_process_error(died_marker: Path, tmp_path: Path) -> None:
    bad = "lora.target_modules=['no_such_layer']"
    with pytest.raises(ConfigError) as local:
        train_sources(_config(["helpful"], bad, ray_address=None), tmp_path / "local", progress=False)
    with pytest.raises(ConfigError) as remote:
        train_sources(_config(["helpful"], bad), tmp_path / "ray", progress=False)
    assert str(remote.value) == str(local.value) and "no_such_layer" in str(local.value)


def test_ray_not_installed_is_a_one_line_error_naming_the_extra(tmp_path: Path) -> None:
    # ray made unimportable in a fresh process
    code = "import sys; sys.modules['ray'] = None; from dposhap.cli import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run(
        [sys.executable, "-c", code, "train", "--out", str(tmp_path / "run"), "--ray", "local", "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert "dposhap[ray]" in result.stderr
    assert not (tmp_path / "run" / "adapters").exists()

"""Damaged run files: manifest, values, adapters. Each is named with the command that repairs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reliability_helpers import SOURCES, TRAIN_ARGS, cli, one_line_error, snapshot

MANIFEST_DAMAGE = {
    "not-json": lambda m: "{ this is not json",
    "a-list": lambda m: "[]",
    "empty-object": lambda m: "{}",
    "sources-a-list": lambda m: json.dumps({**m, "sources": ["helpful"]}),
    "entry-not-object": lambda m: json.dumps({**m, "sources": {"helpful": 3}}),
    "n-train-a-string": lambda m: json.dumps(
        {**m, "sources": {k: {**v, "n_train": "many"} for k, v in m["sources"].items()}}
    ),
    "adapter-outside-run": lambda m: json.dumps(
        {**m, "sources": {k: {**v, "adapter": "../../elsewhere"} for k, v in m["sources"].items()}}
    ),
    "config-dpo-a-string": lambda m: json.dumps({**m, "config": {**m["config"], "dpo": "fast"}}),
    "beta-a-string": lambda m: json.dumps({**m, "config": {**m["config"], "dpo": {"beta": "0.1"}}}),
    "base-model-missing": lambda m: json.dumps({k: v for k, v in m.items() if k != "base_model"}),
    "newer-format": lambda m: json.dumps({**m, "format": 99}),
    "planned-not-names": lambda m: json.dumps({**m, "planned_sources": [1, 2]}),
    "not-utf8": lambda m: b"\xff\xfe\x00garbage",
}


@pytest.mark.parametrize("damage", list(MANIFEST_DAMAGE))
def test_a_damaged_manifest_is_one_line_and_left_alone(run: Path, damage: str) -> None:
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    text = MANIFEST_DAMAGE[damage](manifest)
    if isinstance(text, bytes):
        (run / "manifest.json").write_bytes(text)
    else:
        (run / "manifest.json").write_text(text, encoding="utf-8")
    before = snapshot(run)
    one_line_error(cli("value", run, "--utility", "accuracy", "--quiet"), 2, "manifest")
    assert snapshot(run) == before


@pytest.mark.parametrize("damage", ["not-json", "a-list", "sources-a-list", "newer-format", "not-utf8"])
def test_train_on_a_damaged_manifest_is_one_line_and_left_alone(run: Path, damage: str) -> None:
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    text = MANIFEST_DAMAGE[damage](manifest)
    if isinstance(text, bytes):
        (run / "manifest.json").write_bytes(text)
    else:
        (run / "manifest.json").write_text(text, encoding="utf-8")
    before = snapshot(run)
    one_line_error(cli("train", "--out", run, *TRAIN_ARGS), 2, "manifest")
    assert snapshot(run) == before


VALUES_DAMAGE = {
    "not-json": "[[[",
    "a-list": "[]",
    "utilities-a-number": '{"format": 1, "utilities": 5}',
    "entry-a-string": '{"format": 1, "utilities": {"accuracy": "high"}}',
    "value-a-string": None,  # built from the real file below
    "newer-format": '{"format": 7, "utilities": {}}',
}


@pytest.mark.parametrize("damage", list(VALUES_DAMAGE))
def test_a_damaged_values_file_is_one_line_and_left_alone(run: Path, damage: str) -> None:
    text = VALUES_DAMAGE[damage]
    if text is None:
        doc = json.loads((run / "values.json").read_text(encoding="utf-8"))
        doc["utilities"]["accuracy"]["values"]["accuracy"]["helpful"] = "0.3"
        text = json.dumps(doc)
    (run / "values.json").write_text(text, encoding="utf-8")
    before = snapshot(run)
    one_line_error(cli("report", run), 2, "values.json")
    assert snapshot(run) == before


def _weights(run: Path, source: str) -> Path:
    return run / "adapters" / source / "adapter_model.safetensors"


ADAPTER_DAMAGE = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
    "bit-flip": lambda p: p.write_bytes(
        p.read_bytes()[:-100] + bytes([p.read_bytes()[-100] ^ 0x01]) + p.read_bytes()[-99:]
    ),
    "emptied": lambda p: p.write_bytes(b""),
    "weights-removed": lambda p: p.unlink(),
    "config-removed": lambda p: (p.parent / "adapter_config.json").unlink(),
}


@pytest.mark.parametrize("damage", list(ADAPTER_DAMAGE))
def test_a_damaged_adapter_is_named_with_its_repair(run: Path, damage: str) -> None:
    ADAPTER_DAMAGE[damage](_weights(run, "helpful"))
    before = snapshot(run)
    one_line_error(
        cli("value", run, "--utility", "accuracy", "--quiet"), 2, "'helpful'", f"--out {run} --sources helpful"
    )
    assert snapshot(run) == before


def test_a_missing_adapter_folder(run: Path) -> None:
    import shutil

    shutil.rmtree(run / "adapters" / "noisy")
    one_line_error(cli("value", run, "--utility", "accuracy", "--quiet"), 2, "noisy", "dposhap train")


def test_a_partial_run_is_refused_with_how_to_finish(run: Path) -> None:
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    del manifest["sources"]["noisy"]  # as after a train killed before its last source
    (run / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    before = snapshot(run)
    one_line_error(
        cli("value", run, "--utility", "accuracy", "--quiet"), 2, "partial run", "2 of 3", f"train --out {run}"
    )
    assert snapshot(run) == before


def test_a_partial_run_is_valued_with_partial_and_a_warning(run: Path) -> None:
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    del manifest["sources"]["noisy"]
    (run / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    result = cli("value", run, "--utility", "accuracy", "--quiet", "--partial", "--name", "acc2")
    one_line_error(result, 0, "warning", "partial run")
    doc = json.loads((run / "values.json").read_text(encoding="utf-8"))
    assert sorted(doc["utilities"]["acc2"]["sources"]) == ["harmless", "helpful"]
    assert "accuracy" in doc["utilities"]  # the earlier valuation is kept


@pytest.mark.slow
def test_training_a_subset_keeps_the_other_sources(run: Path) -> None:
    result = cli("train", "--out", run, "--sources", "helpful", *_train_args())
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    assert sorted(manifest["sources"]) == SOURCES
    assert sorted(manifest["planned_sources"]) == SOURCES
    assert manifest["sources"]["helpful"]["status"] == "reused"
    assert {manifest["sources"][s]["status"] for s in ("harmless", "noisy")} == {"kept"}
    assert sorted(manifest["world"]["sources"]) == SOURCES
    result = cli("value", run, "--utility", "accuracy", "--quiet", "--name", "after")
    assert result.returncode == 0, result.stderr[-2000:]
    doc = json.loads((run / "values.json").read_text(encoding="utf-8"))
    assert doc["utilities"]["after"]["values"] == doc["utilities"]["accuracy"]["values"]


@pytest.mark.slow
def test_training_a_subset_of_a_new_run_leaves_it_partial(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = cli("train", "--out", out, *_train_args(), "--sources", "helpful")
    assert result.returncode == 0, result.stderr[-2000:]
    one_line_error(cli("value", out, "--utility", "accuracy", "--quiet"), 2, "partial run", "1 of 3")


@pytest.mark.slow
def test_a_train_rerun_retrains_only_the_damaged_adapter(run: Path) -> None:
    good = {s: _weights(run, s).read_bytes() for s in SOURCES if s != "noisy"}
    ADAPTER_DAMAGE["truncated"](_weights(run, "noisy"))
    result = cli("train", "--out", run, *_train_args())
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["sources"]["noisy"]["status"] == "trained"
    assert {manifest["sources"][s]["status"] for s in good} == {"reused"}
    assert all(_weights(run, s).read_bytes() == data for s, data in good.items())
    assert not [p for p in (run / "adapters").iterdir() if p.name.startswith(".")]
    result = cli("value", run, "--utility", "accuracy", "--quiet")
    assert result.returncode == 0, result.stderr[-2000:]


def test_a_moved_run_is_valued(run: Path, tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere" / "moved-run"
    moved.parent.mkdir()
    run.rename(moved)
    result = cli("value", moved, "--utility", "accuracy", "--quiet", "--name", "moved")
    assert result.returncode == 0, result.stderr[-2000:]
    doc = json.loads((moved / "values.json").read_text(encoding="utf-8"))
    assert doc["utilities"]["moved"]["values"] == doc["utilities"]["accuracy"]["values"]


def _train_args() -> list[str]:
    from reliability_helpers import TRAIN_ARGS

    return TRAIN_ARGS


@pytest.mark.slow
def test_a_moved_run_is_valued_on_generation_too(run: Path, tmp_path: Path) -> None:
    moved = tmp_path / "moved-run"
    run.rename(moved)
    result = cli("value", moved, "--utility", "generation", "--n-prompts", "1", "--max-new-tokens", "1", "--quiet")
    assert result.returncode == 0, result.stderr[-2000:]
    doc = json.loads((moved / "values.json").read_text(encoding="utf-8"))
    assert sorted(doc["utilities"]["generation"]["sources"]) == SOURCES

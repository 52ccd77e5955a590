"""Many sources: the toy world's copies of each kind, a 12-source run valued end to end with the
planted answer recovered, and a report (table and figures) that stays readable at 64 sources."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import dposhap.worlds.toy.model as toy_model
from dposhap.config import load_config
from dposhap.errors import ConfigError, InvalidArgumentError
from dposhap.recipes import DEMO_CONFIG
from dposhap.report import TABLE_ENDS, format_table, load_values, make_figures, record_values
from dposhap.run import Run
from dposhap.shapley import ShapleyResult, attach_bootstrap
from dposhap.train import train_sources
from dposhap.valuation import value_run
from dposhap.worlds.toy import DEFAULT_SOURCES, build_toy_world
from dposhap.worlds.toy.language import TOPICS
from dposhap.worlds.toy.sources import copy_names, make_pairs, parse_copy_name
from dposhap.worlds.toy.world import STAMP_FILE

COPIES = 3
PAIRS = 48


@pytest.fixture(scope="module")
def quick_pretraining() -> Iterator[None]:
    """A few pretraining steps: the sources' pairs, not the reference model, carry what is tested."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(toy_model, "PRETRAIN_STEPS", 5)
        yield


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, quick_pretraining: None, one_thread: None) -> Path:
    """12 sources (3 copies of the 4 default kinds), trained once for the module."""
    out = tmp_path_factory.mktemp("many") / "run"
    cfg = load_config(None, [*DEMO_CONFIG, "model.device=cpu", f"toy.copies={COPIES}", f"toy.pairs_per_source={PAIRS}"])
    train_sources(cfg, out, progress=False)
    return out


def test_copy_names_are_numbered_kind_by_kind_and_parse_back() -> None:
    assert copy_names(["helpful", "noisy"], 1) == ["helpful", "noisy"]
    assert copy_names(["helpful", "noisy"], 2) == ["helpful-01", "helpful-02", "noisy-01", "noisy-02"]
    assert copy_names(["helpful"], 100)[-1] == "helpful-100"
    assert parse_copy_name("adversarial-07") == ("adversarial", 7)
    assert parse_copy_name("noisy") == ("noisy", 1)
    for bad in ("helpful-", "helpful-00", "vendor-01", "helpful_01"):
        with pytest.raises(ValueError, match="neither"):
            parse_copy_name(bad)


def test_copies_draw_their_own_pairs_and_copy_one_is_the_kind() -> None:
    prompts = [f"Q: {t} the A:" for t in list(TOPICS)[:3]]
    one = make_pairs("helpful", 0, prompts, 40)
    assert make_pairs("helpful", 0, prompts, 40, copy=1) == one
    second = make_pairs("helpful", 0, prompts, 40, copy=2)
    assert second != one and len(set(second) & set(one)) < 10
    # a duplicate copies the helpful copy of the same number
    assert make_pairs("duplicate", 0, prompts, 40, copy=2) == second


def test_world_with_copies_writes_one_named_file_per_copy(run_dir: Path) -> None:
    manifest = Run.open(run_dir).manifest
    names = copy_names(DEFAULT_SOURCES, COPIES)
    assert sorted(manifest.sources) == sorted(names)
    assert manifest.planned_sources == names and Run.open(run_dir).check_complete(strict=True) == []
    assert manifest.world is not None and manifest.world["copies"] == COPIES
    stamp = json.loads((run_dir / "world" / STAMP_FILE).read_text())
    assert stamp["parameters"]["copies"] == COPIES
    seen: dict[str, set] = {}
    for name in names:
        rows = [json.loads(line) for line in (run_dir / "world" / "data" / f"{name}.jsonl").read_text().splitlines()]
        assert len(rows) == PAIRS and {r["source"] for r in rows} == {name}
        seen[name] = {(r["prompt"], r["chosen"], r["rejected"]) for r in rows}
    assert seen["helpful-01"] != seen["helpful-02"] != seen["helpful-03"]


def test_one_copy_keeps_the_old_world_parameters(tmp_path: Path, quick_pretraining: None) -> None:
    world = build_toy_world(tmp_path / "w", sources=["helpful"], pairs_per_source=8)
    stamp = json.loads((world.root / STAMP_FILE).read_text())
    assert "copies" not in stamp["parameters"] and "copies" not in world.record(tmp_path)
    assert list(world.data_files) == ["helpful"] and world.copies == 1
    # a manifest written before copies existed opens (its record has no copies)
    again = build_toy_world(tmp_path / "w", sources=["helpful"], pairs_per_source=8)
    assert again == world


@pytest.mark.parametrize(
    ("override", "field"),
    [("toy.copies=0", "toy.copies"), ("toy.copies=1000", "toy.copies"), ("toy.copies=true", "toy.copies")],
)
def test_bad_copies_is_a_located_config_error(override: str, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert field in str(info.value) and "\n" not in str(info.value)


def test_selecting_sources_takes_copy_names_or_kinds(tmp_path: Path, quick_pretraining: None) -> None:
    cfg = load_config(None, ["toy.copies=2", "toy.pairs_per_source=8", "toy.sources=['helpful','noisy']"])
    world = cfg.build_world(tmp_path / "w", ["noisy-02", "helpful"])
    assert list(world.data_files) == ["noisy-02", "helpful-01", "helpful-02"]
    with pytest.raises(InvalidArgumentError, match="no toy source 'noisy-03'"):
        cfg.build_world(tmp_path / "w", ["noisy-03"])


def test_accuracy_over_twelve_sources_finds_the_planted_order(run_dir: Path) -> None:
    # past 10 sources auto samples (regression) and needs a stopping rule
    result, entry = value_run(run_dir, "accuracy", tol=0.005, n_boot=50, device="cpu", progress=False)
    assert entry["method"] == "regression" and entry["stop"] == "tol"
    values = entry["values"]["accuracy"]
    kinds = {kind: [v for s, v in values.items() if parse_copy_name(s)[0] == kind] for kind in DEFAULT_SOURCES}
    # The reference model is barely pretrained here, so it cannot tell on-topic words from
    # off-topic ones (what helpful, noisy and adversarial pairs differ by): the planted property
    # DPO learns from the pairs alone is harmless's (neutral over harmful words, the same in every
    # topic). Every harmless copy must come first, the helpful copies above the flipped ones on
    # average; bench/e2e/bench_many_sources.py checks the full order on a pretrained world.
    others = [v for kind in ("helpful", "noisy", "adversarial") for v in kinds[kind]]
    assert min(kinds["harmless"]) > max(others)
    assert np.mean(kinds["helpful"]) > np.mean(kinds["adversarial"])
    # copies of a kind are exchangeable: their spread is small next to the gap between kinds
    spread = max(kinds["harmless"]) - min(kinds["harmless"])
    assert spread < 0.5 * (np.mean(kinds["harmless"]) - np.mean(kinds["adversarial"]))
    assert entry["interactions"] is not None and entry["interactions"]["exact"]
    lines = format_table(load_values(Run.open(run_dir))).splitlines()
    assert not any(line.startswith("...") for line in lines)  # 12 rows: all shown


def _many_source_entry(run: Run, n: int = 64) -> dict:
    """values.json with a 64-source entry recorded the real way (record_values), from known values."""
    names = copy_names(DEFAULT_SOURCES, n // 4)
    rng = np.random.default_rng(0)
    # 8 levels, 8 sources each: the ranking has 8 groups
    values = np.repeat(np.linspace(0.3, -0.3, 8), n // 8)[:, None] * np.array([1.0, 0.5]) + rng.normal(0, 1e-4, (n, 2))
    result = ShapleyResult(
        values=values,
        stderr=np.full((n, 2), 0.004),
        n_evaluations=4000,
        method="regression",
        names=names,
        stop="tol",
        history=[(2000, values * 0.9), (4000, values)],
    )
    replicates = values[None] + rng.normal(0, 0.005, (50, n, 2))
    attach_bootstrap(result, _Boot(replicates))  # type: ignore[arg-type]
    return record_values(run, "accuracy", result, ["helpful", "harmless"], config={}, new_evaluations=4000, seconds=1.0)


class _Boot:
    """The two fields of a bootstrap that attach_bootstrap reads."""

    def __init__(self, replicates: np.ndarray) -> None:
        self.replicates = replicates
        self.n_items = 256


def test_table_of_64_sources_shows_the_ends_and_says_what_is_left_out(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    run = Run(tmp_path / "run")
    entry = _many_source_entry(run)
    table = format_table(load_values(run))
    lines = table.splitlines()
    names = entry["sources"]
    ranked = sorted(names, key=lambda s: -entry["values"]["helpful"][s])
    rows = [line.split()[0] for line in lines if line.split() and line.split()[0] in names]
    assert rows == ranked[:TABLE_ENDS] + ranked[-TABLE_ENDS:]
    (elided,) = [line for line in lines if line.startswith("...")]
    assert f"{64 - 2 * TABLE_ENDS} sources" in elided and "values.csv" in elided
    (ranking, _) = [line for line in lines if line.startswith("ranking on")]
    assert ranking.startswith("ranking on helpful: 64 sources in 8 groups") and len(ranking) < 300
    top, bottom = ranking.split("; top: ")[1].split("; bottom: ")
    assert top.endswith(" and 4 more") and set(top.removesuffix(" and 4 more").split(", ")) < set(names[:8])
    assert bottom.endswith(" and 4 more") and set(bottom.removesuffix(" and 4 more").split(", ")) < set(names[-8:])


def test_figures_of_64_sources_are_sorted_horizontal_bars_that_grow_with_n(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "run").mkdir()
    run = Run(tmp_path / "run")
    _many_source_entry(run)
    paths = {p.name: p for p in make_figures(run)}
    assert set(paths) == {"values_accuracy.png", "scatter_accuracy.png", "convergence_accuracy.png"}
    width, height = Image.open(paths["values_accuracy.png"]).size
    assert height > width / 2 and height > 64 * 0.15 * 110  # about 0.16 inch per bar at 110 dpi


def test_without_a_stopping_rule_margins_are_exact_and_generation_asks_for_one(run_dir: Path) -> None:
    # 12 sources, no budget nor tol: the native accuracy game is enumerated (4096 coalitions)
    _, entry = value_run(run_dir, "accuracy", n_boot=0, device="cpu", progress=False, label="acc-default")
    assert entry["method"] == "exact" and entry["n_evaluations"] == 2**12
    # generation costs model passes per coalition: the user chooses the spend, told in CLI terms
    with pytest.raises(InvalidArgumentError, match="--budget N .* --tol T"):
        value_run(run_dir, "generation", device="cpu", progress=False)

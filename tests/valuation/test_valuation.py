"""Valuation end to end on the toy world: planted structure, cache and resume, CRN, outputs, CLI."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dposhap.config import load_config
from dposhap.errors import DposhapError, InvalidArgumentError
from dposhap.evaluate import BuildContext, GenerationSettings, GenerationUtility
from dposhap.evaluate.generation import generation_utility
from dposhap.recipes import DEMO_CONFIG
from dposhap.run import Run, UtilityStore
from dposhap.train import train_sources
from dposhap.valuation import value_run

GEN = GenerationSettings(rewards=["toy"], n_prompts=12, max_new_tokens=8)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("valuation") / "run"
    cfg = load_config(
        None, [*DEMO_CONFIG, "model.device=cpu", "toy.sources=['helpful','harmless','adversarial','duplicate']"]
    )
    train_sources(cfg, out, progress=False)
    return out


@pytest.fixture(scope="module")
def generation_values(run_dir: Path) -> tuple:
    return value_run(run_dir, "generation", method="exact", settings=GEN, device="cpu", progress=False)


def test_generation_values_recover_the_planted_structure(generation_values: tuple) -> None:
    result, entry = generation_values
    assert entry["objectives"] == ["helpful", "harmless"] and entry["method"] == "exact"
    assert entry["n_evaluations"] == 16
    helpful, harmless = entry["values"]["helpful"], entry["values"]["harmless"]
    # each clean source is the most valuable on its own objective (its duplicate ties with it)
    assert max(helpful, key=helpful.get) in ("helpful", "duplicate")
    assert helpful["helpful"] > helpful["harmless"] and helpful["helpful"] > helpful["adversarial"]
    assert max(harmless, key=harmless.get) == "harmless"
    # the adversarial source hurts the objective it attacks
    assert helpful["adversarial"] < 0
    # duplicate sources: identical adapters, identical composed models, equal values
    assert helpful["duplicate"] == pytest.approx(helpful["helpful"], abs=1e-9)
    assert harmless["duplicate"] == pytest.approx(harmless["helpful"], abs=1e-9)
    # efficiency: the values sum to v(N) - v({})
    assert np.isfinite(result.values).all()


def test_accuracy_values_on_the_toy_world(run_dir: Path) -> None:
    result, entry = value_run(run_dir, "accuracy", method="exact", device="cpu", progress=False)
    values = entry["values"]["accuracy"]
    assert values["helpful"] > 0 and values["harmless"] > 0 and values["adversarial"] < 0
    assert values["duplicate"] == pytest.approx(values["helpful"], abs=1e-12)
    assert entry["config"]["heldout"] == ["toy:helpful", "toy:harmless"]


def test_cached_coalitions_are_never_reevaluated(run_dir: Path, generation_values: tuple) -> None:
    first = generation_values[1]
    result, entry = value_run(run_dir, "generation", method="exact", settings=GEN, device="cpu", progress=False)
    assert entry["new_evaluations"] == 0
    assert entry["values"] == first["values"]


def test_interrupted_valuation_resumes_with_identical_values(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = GenerationSettings(rewards=["toy"], n_prompts=6, max_new_tokens=6, temperature=0.9)
    reference, _ = value_run(
        run_dir,
        "generation",
        method="permutation",
        budget=12,
        seed=3,
        batch_size=4,
        settings=settings,
        device="cpu",
        progress=False,
        label="generation-perm",
    )
    # a fresh cache key (other seed of the decoding noise), interrupted after two batches
    calls = {"n": 0}
    original = GenerationUtility.item_scores  # what the cache calls: values and per-prompt scores

    def flaky(self, coalitions):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, coalitions)

    monkeypatch.setattr(GenerationUtility, "item_scores", flaky)
    with pytest.raises(KeyboardInterrupt):
        value_run(
            run_dir,
            "generation",
            method="permutation",
            budget=12,
            seed=4,
            batch_size=4,
            settings=settings,
            device="cpu",
            progress=False,
            label="generation-perm",
        )
    monkeypatch.undo()
    resumed, entry = value_run(
        run_dir,
        "generation",
        method="permutation",
        budget=12,
        seed=4,
        batch_size=4,
        settings=settings,
        device="cpu",
        progress=False,
        label="generation-perm",
    )
    assert 0 < entry["new_evaluations"] < entry["n_evaluations"]  # the two finished batches were kept
    # the same valuation run in one go (on a fresh cache) gives the identical values
    fresh = run_dir.parent / "fresh"
    if not fresh.exists():
        shutil.copytree(run_dir, fresh, ignore=shutil.ignore_patterns("cache.sqlite*", "values.*"))
    uninterrupted, _ = value_run(
        fresh,
        "generation",
        method="permutation",
        budget=12,
        seed=4,
        batch_size=4,
        settings=settings,
        device="cpu",
        progress=False,
        label="generation-perm",
    )
    np.testing.assert_array_equal(resumed.values, uninterrupted.values)
    np.testing.assert_array_equal(resumed.stderr, uninterrupted.stderr)
    np.testing.assert_array_equal(resumed.eval_stderr, uninterrupted.eval_stderr)
    assert not np.array_equal(reference.values, resumed.values)  # seed 3 vs 4: the check can fail


def test_common_random_numbers_reduce_the_variance_of_marginal_contributions(run_dir: Path) -> None:
    """v(S + i) - v(S) over seeds: same noise for both coalitions (CRN) vs independent noise."""
    from dposhap.evaluate.decoding import DecodeConfig

    gen = generation_utility(
        Run.open(run_dir),
        GenerationSettings(rewards=["toy"], n_prompts=8, max_new_tokens=8),
        BuildContext(device="cpu", seed=0),
    )
    without = np.array([[False, True, False, False]])  # {harmless}
    with_i = np.array([[False, True, False, True]])  # {harmless, helpful}
    crn, independent = [], []
    for seed in range(6):
        gen.decode_config = DecodeConfig(max_new_tokens=8, seed=seed)
        a, b = gen(with_i)[0, 0], gen(without)[0, 0]
        crn.append(a - b)
        gen.decode_config = DecodeConfig(max_new_tokens=8, seed=seed + 1000)
        independent.append(a - gen(without)[0, 0])
    assert np.var(crn) < np.var(independent)


def test_values_files_and_figures(run_dir: Path, generation_values: tuple) -> None:
    from dposhap.report import make_figures

    doc = json.loads((run_dir / "values.json").read_text())
    assert "generation" in doc["utilities"]
    rows = list(csv.DictReader(open(run_dir / "values.csv", encoding="utf-8")))
    gen_rows = [r for r in rows if r["utility"] == "generation"]
    assert len(gen_rows) == 2 * 4 and {r["objective"] for r in gen_rows} == {"helpful", "harmless"}
    assert all(r["method"] and r["seed"] and float(r["seconds"]) >= 0 for r in gen_rows)
    paths = make_figures(Run.open(run_dir))
    names = {p.name for p in paths}
    assert {"values_generation.png", "scatter_generation.png"} <= names
    assert "convergence_generation.png" not in names  # exact enumeration: one point, nothing to converge
    if "generation-perm" in doc["utilities"]:
        assert "convergence_generation-perm.png" in names
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_value_without_a_trained_run_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DposhapError, match="run dposhap train"):
        value_run(tmp_path, "accuracy", progress=False)


def test_cli_value_and_report(run_dir: Path, generation_values: tuple, tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "dposhap.cli", *args], capture_output=True, text=True, timeout=600)

    result = cli("report", str(run_dir))
    assert result.returncode == 0, result.stderr
    assert "generation: shapley values, exact" in result.stdout and "figure:" in result.stdout
    result = cli("value", str(tmp_path), "--utility", "accuracy")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "dposhap train" in result.stderr
    result = cli("value", str(run_dir), "--utility", "nonsense")
    assert result.returncode == 2 and "invalid choice" in result.stderr
    result = cli("value", str(run_dir), "--utility", "generation", "--temperature", "0", "--quiet")
    assert result.returncode == 2 and "temperature" in result.stderr and "Traceback" not in result.stderr


def test_demo_recovers_the_planted_structure(tmp_path: Path) -> None:
    from dposhap.recipes import run_demo

    doc = run_demo(tmp_path / "demo", progress=False)
    generation = doc["utilities"]["generation"]
    helpful, harmless = generation["values"]["helpful"], generation["values"]["harmless"]
    assert generation["method"] == "exact" and generation["sources"] == ["adversarial", "harmless", "helpful", "noisy"]
    assert max(helpful, key=helpful.get) == "helpful" and max(harmless, key=harmless.get) == "harmless"
    assert helpful["adversarial"] < 0
    assert 0 < helpful["noisy"] < helpful["helpful"]
    accuracy = doc["utilities"]["accuracy"]["values"]["accuracy"]
    assert accuracy["adversarial"] < 0 < accuracy["noisy"] < min(accuracy["helpful"], accuracy["harmless"])
    for name in (
        "values.json",
        "values.csv",
        "figures/values_generation.png",
        "figures/scatter_generation.png",
        "figures/values_accuracy.png",
        "manifest.json",
        "cache.sqlite",
    ):
        assert (tmp_path / "demo" / name).is_file(), name


def test_likelihood_utility_through_the_cache(run_dir: Path) -> None:
    result, entry = value_run(run_dir, "likelihood", method="exact", device="cpu", progress=False)
    assert entry["objectives"] == ["likelihood"] and entry["n_evaluations"] == 16
    values = entry["values"]["likelihood"]
    assert values["duplicate"] == pytest.approx(values["helpful"], abs=1e-9)
    # efficiency: the values add up to v(N) - v({}), both read back from the cache
    with UtilityStore(run_dir / "cache.sqlite", readonly=True) as store:
        rows = {tuple(r.coalition.tolist()): float(r.values[0]) for r in store.rows(store.utilities()[-1].key)}
    assert sum(values.values()) == pytest.approx(rows[(True,) * 4] - rows[(False,) * 4], abs=1e-9)
    _, again = value_run(run_dir, "likelihood", method="exact", device="cpu", progress=False)
    assert again["new_evaluations"] == 0


def test_generation_with_the_sequence_level_correction(run_dir: Path) -> None:
    settings = GenerationSettings(rewards=["toy"], n_prompts=6, max_new_tokens=6, correction=True)
    result, entry = value_run(
        run_dir,
        "generation",
        method="exact",
        settings=settings,
        device="cpu",
        progress=False,
        label="generation-corrected",
    )
    assert np.isfinite(result.values).all()
    assert entry["config"]["correction"] is True
    # a different utility configuration: its own cache rows, not the uncorrected ones
    assert entry["new_evaluations"] == 16


def test_python_reward_functions_go_through_value_run_and_its_cache(run_dir: Path) -> None:
    def shortness(prompt: str, completion: str) -> float:
        return -float(len(completion.split()))

    settings = GenerationSettings(rewards=[{"shortness": shortness}, "toy"], n_prompts=6, max_new_tokens=6)
    _, entry = value_run(
        run_dir,
        "generation",
        settings=settings,
        method="exact",
        device="cpu",
        progress=False,
        label="generation-python",
    )
    assert entry["objectives"] == ["shortness", "helpful", "harmless"] and entry["new_evaluations"] == 16
    assert entry["config"]["rewards"] == ["functions:shortness", "toy"]
    _, again = value_run(
        run_dir,
        "generation",
        settings=settings,
        method="exact",
        device="cpu",
        progress=False,
        label="generation-python",
    )
    assert again["new_evaluations"] == 0 and again["values"] == entry["values"]
    with pytest.raises(InvalidArgumentError, match="needs a name"):
        value_run(run_dir, "generation", settings=GenerationSettings(rewards=[shortness]), progress=False)


def test_values_carry_evaluation_errors_comparisons_and_ends(run_dir: Path, generation_values: tuple) -> None:
    result, entry = generation_values
    assert entry["n_boot"] == 200 and entry["n_items"] == 12 and entry["eval_note"] is None
    for obj in ("helpful", "harmless"):
        est, ev, total = entry["stderr"][obj], entry["eval_stderr"][obj], entry["total_stderr"][obj]
        # an exact run: no estimator error, but the prompts are a sample: evaluation error > 0
        assert all(v == 0 for v in est.values())
        assert all(ev[s] > 0 and total[s] == pytest.approx(ev[s]) for s in entry["sources"])
        # efficiency, checkable from values.json alone
        assert sum(entry["values"][obj].values()) == pytest.approx(
            entry["v_all"][obj] - entry["v_empty"][obj], abs=1e-9
        )
        # identical adapters: their difference is exactly zero in every replicate, never significant
        pair = next(c for c in entry["comparisons"][obj] if {c["first"], c["second"]} == {"helpful", "duplicate"})
        assert pair["difference"] == pytest.approx(0, abs=1e-12) and not pair["significant"] and pair["share"] == 0.5
        assert any({"helpful", "duplicate"} <= set(group) for group in entry["ranking"][obj])
        assert "evaluation" in entry["advice"][obj]
    assert entry["history"] == []  # exact: no convergence to draw
    # the per-prompt scores are in the cache, one row per coalition
    with UtilityStore(run_dir / "cache.sqlite", readonly=True) as store:
        key = next(u.key for u in store.utilities() if u.name == "generation" and u.config.get("prompts") == 12)
        coalitions = np.array([r.coalition for r in store.rows(key)])
        found, items = store.lookup_items(key, coalitions)
        cached_values = np.array([r.values for r in store.rows(key)])
    assert found.all() and items is not None and items.numer.shape == (16, 2, 12)
    np.testing.assert_allclose(items.values(), cached_values, atol=1e-12)
    rows = list(csv.DictReader(open(run_dir / "values.csv", encoding="utf-8")))
    assert all(float(r["eval_stderr"]) > 0 for r in rows if r["utility"] == "generation")


def test_native_and_likelihood_bootstraps_and_opting_out(run_dir: Path) -> None:
    _, entry = value_run(run_dir, "accuracy", method="exact", device="cpu", progress=False, label="acc-boot")
    assert entry["n_items"] == entry["config"]["pairs"] and entry["n_boot"] == 200
    assert all(v > 0 for v in entry["eval_stderr"]["accuracy"].values())
    _, entry = value_run(run_dir, "likelihood", method="exact", device="cpu", progress=False, label="lik-boot")
    assert entry["n_items"] == entry["config"]["pairs"]  # one item per preferred response
    assert all(v > 0 for v in entry["eval_stderr"]["likelihood"].values())
    _, entry = value_run(run_dir, "accuracy", method="exact", device="cpu", progress=False, n_boot=0, label="acc-0")
    assert entry["eval_stderr"] is None and entry["n_boot"] == 0
    assert entry["total_stderr"] == entry["stderr"]
    assert entry["new_evaluations"] == 0  # the margins came from the run's cache: no model ran
    with pytest.raises(InvalidArgumentError, match="n_boot"):
        value_run(run_dir, "accuracy", n_boot=1, progress=False)


def test_a_cache_without_item_scores_keeps_its_values_and_says_why(run_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    settings = GenerationSettings(rewards=["toy"], n_prompts=12, max_new_tokens=8)
    import sqlite3

    with sqlite3.connect(copy / "cache.sqlite") as conn:
        conn.execute("DELETE FROM items")
    result, entry = value_run(copy, "generation", method="exact", settings=settings, device="cpu", progress=False)
    assert entry["new_evaluations"] == 0 and entry["eval_stderr"] is None
    assert "per-item scores" in entry["eval_note"] and "--n-boot 0" in entry["eval_note"]
    assert all(v == 0 for v in entry["stderr"]["helpful"].values())


def test_interactions_show_the_duplicate_as_redundant(run_dir: Path, generation_values: tuple) -> None:
    from dposhap.report import make_figures

    _, entry = generation_values
    inter = entry["interactions"]
    assert inter is not None and inter["exact"] and inter["names"] == entry["sources"]
    matrix = np.array(inter["matrix"])  # [k, n, n]
    assert matrix.shape == (2, 4, 4) and np.allclose(matrix, matrix.transpose(0, 2, 1))
    # identical adapters: each is worth less once the other is in (on generation only partly: a
    # duplicated adapter doubles its weight in the composition; the adversarial source, which
    # cancels the helpful one, is more redundant with it still)
    src = entry["sources"]
    assert matrix[0, src.index("helpful"), src.index("duplicate")] < 0
    redundant = inter["top"]["helpful"]["most_redundant"]
    assert any({a, b} == {"helpful", "duplicate"} for a, b, _ in redundant)
    _, acc = value_run(run_dir, "accuracy", method="exact", device="cpu", progress=False, label="acc-inter")
    # on held-out margins (additive in the sources) the duplicate is the most redundant pair
    top = acc["interactions"]["top"]["accuracy"]["most_redundant"][0]
    assert {top[0], top[1]} == {"helpful", "duplicate"} and top[2] < 0
    names = {p.name for p in make_figures(Run.open(run_dir))}
    assert {"interactions_generation_helpful.png", "interactions_acc-inter.png"} <= names

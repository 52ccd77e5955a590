"""The layers contract (import-linter, in pyproject.toml) holds, and a wrong-way import breaks it,
also one inside a function."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import dposhap

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = Path(dposhap.__file__).parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports with the repository's contracts on the package's Python files copied under ``tree``."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("layers")
    shutil.copytree(PACKAGE, root / "dposhap", ignore=shutil.ignore_patterns("*.so", "csrc", "__pycache__"))
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    assert contracts["contracts"], "pyproject.toml has no import-linter contracts"
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def test_contracts_are_kept(tree: Path) -> None:
    done = _lint(tree)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_a_function_local_wrong_way_import_breaks_the_layers(tree: Path) -> None:
    store = tree / "dposhap" / "run" / "store.py"
    original = store.read_text()
    try:
        store.write_text(original + "\n\ndef _sneaky() -> None:\n    from ..report import format_table  # noqa: F401\n")
        done = _lint(tree)
    finally:
        store.write_text(original)
    assert done.returncode != 0
    assert "dposhap.run is not allowed to import dposhap.report" in done.stdout


def test_torch_in_the_bottom_layer_breaks_its_contract(tree: Path) -> None:
    outputs = tree / "dposhap" / "core" / "outputs.py"
    original = outputs.read_text()
    try:
        outputs.write_text(original + "\n\ndef _heavy() -> None:\n    import torch  # noqa: F401\n")
        done = _lint(tree)
    finally:
        outputs.write_text(original)
    assert done.returncode != 0
    assert "dposhap.core is not allowed to import torch" in done.stdout


@pytest.mark.parametrize(
    ("old", "name", "new"),
    [
        ("dposhap.shapley", "ShapleyResult", "dposhap.estimate"),
        ("dposhap.shapley", "attach_bootstrap", "dposhap.estimate"),
        ("dposhap.shapley", "bootstrap", "dposhap.estimate"),
        ("dposhap.shapley", "ShapleyEstimator", "dposhap.estimate"),
        ("dposhap.shapley", "methods", "dposhap.estimate"),
        ("dposhap.shapley", "DEFAULT_BATCH", "dposhap.estimate.asktell"),
        ("dposhap.shapley", "MAX_AUTO_CONTROL_PLAYERS", "dposhap.estimate.control"),
        ("dposhap.shapley", "MAX_NATIVE_EXACT_PLAYERS", "dposhap.estimate.control"),
        ("dposhap.shapley", "Utility", "dposhap.estimate.driver"),
        ("dposhap.shapley", "MarginGame", "dposhap.core"),
        ("dposhap.uncertainty", "ItemScores", "dposhap.core"),
        ("dposhap.uncertainty", "compare_pairs", "dposhap.estimate"),
        ("dposhap.interactions", "interactions_exact", "dposhap.estimate"),
        ("dposhap.interactions", "plot_interactions", "dposhap.report"),
        ("dposhap.games", "MarginGame", "dposhap.core"),
        ("dposhap.evaluate.tokenize", "response_sequences", "dposhap.tokenization"),
        ("dposhap.report", "record_values", "dposhap.valuation"),
    ],
)
def test_old_names_are_the_moved_objects(old: str, name: str, new: str) -> None:
    import importlib

    assert getattr(importlib.import_module(old), name) is getattr(importlib.import_module(new), name)


def test_the_shapley_function_keeps_its_name_after_the_old_module_loads() -> None:
    import importlib

    importlib.import_module("dposhap.shapley")
    assert callable(dposhap.shapley)
    assert dposhap.shapley is importlib.import_module("dposhap.estimate").shapley


def test_the_bootstrap_function_keeps_its_name_beside_the_bootstrap_module() -> None:
    import importlib

    estimate = importlib.import_module("dposhap.estimate")
    module = importlib.import_module("dposhap.estimate.bootstrap")
    assert estimate.bootstrap is importlib.import_module("dposhap.estimate.replay").bootstrap
    assert estimate.bootstrap is not module and callable(estimate.bootstrap)
    assert module.bootstrap_weights is estimate.bootstrap_weights


def test_the_old_module_exports_every_name_it_lists() -> None:
    import importlib

    old = importlib.import_module("dposhap.shapley")
    missing = [name for name in old.__all__ if not hasattr(old, name)]
    assert not missing
    assert set(old.__all__) >= {"shapley", "banzhaf", "ShapleyResult", "DEFAULT_BATCH", "Semivalue", "Utility"}

"""A trusted evaluation set ([eval] / --eval): stored with the run, used by the margin games and generation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dposhap.config import load_config
from dposhap.errors import DataValidationError, InvalidArgumentError
from dposhap.evaluate import GenerationSettings, MarginSettings
from dposhap.evaluate.evalsets import default_pair_sets, evaluation_prompts
from dposhap.report import format_table, load_values
from dposhap.run import Run
from dposhap.train import train_sources
from dposhap.valuation import value_run
from dposhap.worlds.toy import build_toy_world, toy_eval_records

pytestmark = pytest.mark.usefixtures("one_thread")


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def user_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A user's run on a model folder of their own: a clean source and the same pairs with flipped labels.

    Returns (run directory with [eval], the trusted file, the config file).
    """
    root = tmp_path_factory.mktemp("user")
    world = build_toy_world(root / "toy", seed=0, sources=["helpful"], pairs_per_source=96)
    rows = [json.loads(line) for line in world.data_files["helpful"].read_text().splitlines()]
    clean = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in rows]
    flipped = [{"prompt": r["prompt"], "chosen": r["rejected"], "rejected": r["chosen"]} for r in rows]
    _write_jsonl(root / "clean.jsonl", clean)
    _write_jsonl(root / "flipped.jsonl", flipped)
    trusted = _write_jsonl(root / "trusted.jsonl", toy_eval_records(0, "helpful", 64))
    config = root / "run.toml"
    config.write_text(
        f"[model]\nbase = {json.dumps(str(world.model_dir))}\ndevice = 'cpu'\n"
        "[data.sources]\nclean = 'clean.jsonl'\nflipped = 'flipped.jsonl'\n"
        "[eval]\nfiles = ['trusted.jsonl']\n"
        "[dpo]\nlearning_rate = 5e-3\nmax_steps = 6\nmax_length = 64\nper_device_train_batch_size = 16\n",
        encoding="utf-8",
    )
    out = root / "run"
    train_sources(config, out, progress=False)
    return out, trusted, config


def test_the_trusted_set_is_stored_with_the_run(user_run: tuple[Path, Path, Path]) -> None:
    out, trusted, _ = user_run
    run = Run.open(out)
    assert run.manifest.eval is not None and run.manifest.eval["n_pairs"] == 64
    stored = [json.loads(line) for line in run.eval_path.read_text().splitlines()]
    assert stored == [json.loads(line) for line in trusted.read_text().splitlines()]
    for entry in run.manifest.sources.values():  # each source is also measured on the trusted set
        assert entry.metrics["trusted_reward_accuracy"] is not None
    clean, flipped = run.manifest.sources["clean"].metrics, run.manifest.sources["flipped"].metrics
    # on their own labels both look good; on the trusted set the flipped source is found out
    assert clean["heldout_reward_accuracy"] > 0.6 and flipped["heldout_reward_accuracy"] > 0.6
    assert clean["trusted_reward_accuracy"] > 0.6 > flipped["trusted_reward_accuracy"]


def test_margin_games_default_to_the_trusted_set(user_run: tuple[Path, Path, Path]) -> None:
    out, _, _ = user_run
    assert default_pair_sets(Run.open(out)) == ["eval"]
    _, entry = value_run(out, "accuracy", method="exact", device="cpu", progress=False)
    assert entry["config"]["heldout"] == ["eval"] and entry["config"]["pairs"] == 64
    values = entry["values"]["accuracy"]
    assert values["clean"] > 0 > values["flipped"]  # the yardstick does not move with a source's labels
    # the union of the sources' own held-out splits cannot tell the two apart: what [eval] is for
    _, own = value_run(
        out,
        "accuracy",
        settings=MarginSettings(heldout=["all"]),
        method="exact",
        device="cpu",
        progress=False,
        label="accuracy-own",
    )
    assert own["config"]["heldout"] == ["clean", "flipped"]
    assert abs(own["values"]["accuracy"]["clean"] - own["values"]["accuracy"]["flipped"]) < 0.1
    table = format_table(load_values(Run.open(out)))
    assert "measured on 64 pairs of the trusted evaluation set" in table
    assert "held-out splits are labelled by the sources themselves" in table


def test_generation_prompts_come_from_the_trusted_set(user_run: tuple[Path, Path, Path]) -> None:
    out, trusted, _ = user_run
    prompts = evaluation_prompts(Run.open(out), None, 100)
    expected = list(dict.fromkeys(json.loads(line)["prompt"] for line in trusted.read_text().splitlines()))
    assert prompts == expected
    assert GenerationSettings(eval_file=str(trusted)).eval_file == str(trusted)


def test_eval_given_at_valuation_time(user_run: tuple[Path, Path, Path], tmp_path: Path) -> None:
    out, trusted, _ = user_run
    other = _write_jsonl(tmp_path / "other.jsonl", toy_eval_records(1, "helpful", 20))
    _, entry = value_run(
        out,
        "accuracy",
        settings=MarginSettings(eval_file=str(other)),
        method="exact",
        device="cpu",
        progress=False,
        label="accuracy-other",
    )
    assert entry["config"]["heldout"] == ["eval"] and entry["config"]["pairs"] == 20
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dposhap.cli",
            "value",
            str(out),
            "--utility",
            "loglik",
            "--eval",
            str(other),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "measured on 20 pairs of the trusted evaluation set" in result.stdout


def test_a_bad_trusted_file_is_refused_before_training(tmp_path: Path, user_run: tuple[Path, Path, Path]) -> None:
    _, _, config = user_run
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "a", "rejected": "a"}\n{"prompt": "q"}\n', encoding="utf-8")
    cfg = load_config(config, [f"eval.files=[{json.dumps(str(bad))}]"])
    with pytest.raises(DataValidationError) as err:
        train_sources(cfg, tmp_path / "run", progress=False)
    assert err.value.file == str(bad) and err.value.line == 1
    assert not (tmp_path / "run" / "adapters").exists()


def test_the_set_eval_needs_a_trusted_set(tmp_path: Path, user_run: tuple[Path, Path, Path]) -> None:
    out, _, _ = user_run
    copy = tmp_path / "no-eval"
    import shutil

    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("eval.jsonl", "cache.sqlite*", "values.*", "margins"))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["eval"] = None
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert default_pair_sets(Run.open(copy)) == "all"
    with pytest.raises(InvalidArgumentError, match="--eval FILE"):
        value_run(copy, "accuracy", settings=MarginSettings(heldout=["eval"]), progress=False)

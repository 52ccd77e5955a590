"""Verification of a selection: retrain the chosen union and all sources, and measure both."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..config import config_from_dict
from ..errors import InvalidArgumentError
from ..evaluate import BuildContext, get_utility
from ..models import load_tokenizer, quiet_libraries, resolve_device
from ..run import Run
from ..tokenization import mixed_formats, to_one_format
from ..train import train_sources
from .goal import GoalRanking, Objectives, chosen_against_all, goal_errors

#: Share of the union held out by the verification runs (as small as the splitter allows).
VERIFY_HELDOUT = 0.05


def _union_records(run: Run, players: Sequence[str], weights: np.ndarray, seed: int) -> list[dict[str, Any]]:
    """The training pairs of the sources with weight > 0, source ``i`` sampled at rate ``w_i``
    (``floor(w_i)`` copies of every pair plus a seeded share ``w_i - floor(w_i)``)."""
    rng = np.random.default_rng([seed, 0x5E1EC7])
    records: list[dict[str, Any]] = []
    for name, w in zip(players, weights, strict=True):
        if w <= 0:
            continue
        text = (run.data_dir(name) / "train.jsonl").read_text(encoding="utf-8")
        rows = [line for line in text.splitlines() if line.strip()]
        whole, part = int(math.floor(w)), float(w - math.floor(w))
        taken = rows * whole
        if part > 0:
            pick = rng.choice(len(rows), size=int(round(part * len(rows))), replace=False)
            taken += [rows[k] for k in sorted(pick)]
        for line in taken:
            record = json.loads(line)
            records.append({k: record[k] for k in ("prompt", "chosen", "rejected")})
    return records


def _write_union(records: list[dict[str, Any]], path: Path) -> int:
    """Write ``records`` to ``path`` (left as it is when it holds them already: the adapter is reused); their number."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(json.dumps(record) for record in records) + "\n"
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    return len(records)


def _union_files(run: Run, weights: dict[str, np.ndarray], folder: Path, seed: int) -> dict[str, int]:
    """Write each union (name -> weights) to ``folder/<name>.jsonl``; the number of pairs of each.

    A union that pools sources of both formats (plain strings and conversations) is made one
    format as TRL makes it (:func:`~dposhap.tokenization.to_one_format`, the base model's chat
    template); a union in one format is written as the sources hold it.
    """
    unions = {name: _union_records(run, run.sources, w, seed) for name, w in weights.items()}
    if any(mixed_formats(records) for records in unions.values()):
        with quiet_libraries(loading_reports=False):
            tokenizer = load_tokenizer(run.base_model_ref())
        unions = {name: to_one_format(records, tokenizer) for name, records in unions.items()}
    return {name: _write_union(records, folder / f"{name}.jsonl") for name, records in unions.items()}


def verify_selection(
    run: Run,
    utility: str,
    settings: Any,
    scored: GoalRanking,
    names: Sequence[str],
    chosen_weights: np.ndarray,
    seed: int,
    n_boot: int,
    device: str,
    progress: bool,
) -> dict[str, Any]:
    """Train ``chosen`` and ``all`` into ``RUN/select/`` and measure both with the same utility."""
    players = run.sources
    folder = run.root.resolve() / "select"
    sizes = _union_files(run, {"chosen": chosen_weights, "all": np.ones(len(players))}, folder / "data", seed)
    files = {name: folder / "data" / f"{name}.jsonl" for name in sizes}
    if sizes["chosen"] == 0:
        raise InvalidArgumentError("nothing to verify: the chosen coalition is empty (the base model is best)")
    recorded = json.loads(json.dumps(run.manifest.config))
    recorded["model"] = {**recorded.get("model", {}), "base": str(run.base_model_ref().location)}
    recorded["data"] = {
        **recorded.get("data", {}),
        "files": [],
        "sources": {k: str(v) for k, v in files.items()},
        "select": None,
        "heldout_fraction": VERIFY_HELDOUT,
    }
    recorded["eval"] = {"files": []}
    recorded["cluster"] = {**recorded.get("cluster", {}), "address": None}
    if device != "auto":
        recorded["model"]["device"] = device
    cfg = config_from_dict(recorded, base_dir=run.root)
    # a weight above 1 repeats pairs on purpose; a small chosen union is still a union to train
    cfg.data = replace(cfg.data, repeats=True, min_pairs=2)
    manifest = train_sources(cfg, folder, progress=progress)
    trained = Run.open(folder)
    with quiet_libraries(loading_reports=progress):
        models = trained.load_models(sources=["chosen", "all"], device=resolve_device(device))
    context = BuildContext(device=resolve_device(device), seed=seed, progress=progress, models=models)
    built = get_utility(utility).build(run, settings, context)
    measured = Objectives(built, built)
    rows = np.array([[True, False], [False, True]])
    errs = goal_errors(measured, rows, scored, n_boot, seed)
    values = measured.values(rows)
    return {
        **chosen_against_all(errs, names, values[0], values[1]),
        "pairs": sizes,
        "adapters": str(folder),
        "steps": {k: manifest.sources[k].metrics.get("steps") for k in ("chosen", "all")},
    }

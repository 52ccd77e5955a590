"""Choosing sources and weights (dposhap select): the searches against brute force, the weight
optimiser against games with a known optimum, --verify end to end on the toy world, bad input."""

from __future__ import annotations

import itertools
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from dposhap.cli import main
from dposhap.config import load_config
from dposhap.errors import IncompleteRunError, InvalidArgumentError
from dposhap.evaluate import MarginSettings, MarginUtilities, UtilityKind
from dposhap.evaluate.base import _REGISTRY as utility_registry
from dposhap.evaluate.margins import margin_utilities
from dposhap.recipes import DEMO_CONFIG
from dposhap.selection import (
    Goal,
    GoalRanking,
    Objectives,
    decide_change,
    margin_weights_reference,
    optimise_margin_weights,
    parse_goal,
    search_subsets,
    select_run,
)
from dposhap.train import train_sources

TOY = [*DEMO_CONFIG, "model.device=cpu", "toy.pairs_per_source=128"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("select") / "run"
    train_sources(load_config(None, TOY), out, progress=False)
    return out


def _brute_force(table: np.ndarray, n: int, scored: GoalRanking) -> np.ndarray:
    """The best coalition by looping over every one in Python, feasibility first."""
    best, best_key = None, None
    for bits in itertools.product([False, True], repeat=n):
        row = np.array(bits[::-1])
        index = int(sum(1 << i for i in range(n) if row[i]))
        values = table[index]
        key = (-round(float(scored.violation(values[None])[0]), 12), float(scored.score(values[None])[0]))
        if best_key is None or key > best_key:
            best, best_key = row, key
    assert best is not None
    return best


@pytest.mark.parametrize("seed", range(5))
def test_exhaustive_search_equals_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 6
    table = rng.normal(size=(2**n, 3))  # three objectives of every coalition (bit i = source i)
    goal = Goal({"a": 0.7, "b": 0.3}, ())
    levels = np.array([float(np.quantile(table[:, 2], 0.6))])  # c >= its 60th percentile: binding
    scored = GoalRanking(parse_goal("0.7*a+0.3*b", ["c>=0"], ["a", "b", "c"]), ["a", "b", "c"], levels)
    assert scored.coef.tolist() == [0.7, 0.3, 0.0] and goal.describe() == "0.7*a+0.3*b"

    def values(c: np.ndarray) -> np.ndarray:
        return table[(c.astype(np.int64) << np.arange(n)).sum(1)]

    found = search_subsets(values, n, scored.order, scored.better, method="exhaustive", batch_size=7)
    expected = _brute_force(table, n, scored)
    assert found.best.tolist() == expected.tolist()
    assert found.evaluated == 2**n and len(found.ranked) == 2**n
    assert scored.violation(values(found.best[None]))[0] == 0.0  # the constraint holds at the choice


def test_greedy_finds_the_optimum_of_an_additive_game_with_many_sources() -> None:
    rng = np.random.default_rng(3)
    n = 40
    worth = rng.normal(size=n)  # additive: the optimum keeps exactly the positive sources
    calls = []

    def values(c: np.ndarray) -> np.ndarray:
        calls.append(len(c))
        return (c.astype(float) @ worth)[:, None]

    scored = GoalRanking(parse_goal(None, [], ["v"]), ["v"], np.zeros(0))
    found = search_subsets(values, n, scored.order, scored.better)
    assert found.method == "greedy"
    assert found.best.tolist() == (worth > 0).tolist()
    assert sum(calls) == found.evaluated < 3 * n * n  # no coalition asked for twice


def test_loglik_weights_reach_the_known_optimum() -> None:
    # each pair moves with one source: source 0 is right on 3 of 4 pairs, source 1 on 7 of 8 (margins
    # +-1), so mean log sigmoid is maximised at w0 = ln 3 and w1 = ln 7; source 2 is always wrong (w = 0)
    # and source 3 always right (w = w_max)
    margins = np.zeros((4, 16))
    margins[0, :4] = [1, 1, 1, -1]
    margins[1, 4:12] = [1] * 7 + [-1]
    margins[2, 12:14] = -1
    margins[3, 14:16] = 1
    for optimise in (optimise_margin_weights, margin_weights_reference):
        w = optimise(margins, "loglik", np.ones(1), [np.ones(16, dtype=bool)], w_max=3.0)
        assert w == pytest.approx([math.log(3), math.log(7), 0.0, 3.0], abs=1e-4)


def test_accuracy_weights_reach_an_optimum_no_subset_reaches() -> None:
    # A alone and B alone get half the pairs right, A + B ties on the first two; only 1 < wA / wB < 3 gets all four
    margins = np.array([[1.0, 1.0, -1.0, -1.0], [-1.0, -1.0, 3.0, 3.0]])
    subsets = [np.mean(np.where(s > 0, 1, np.where(s == 0, 0.5, 0))) for s in (margins[0], margins[1], margins.sum(0))]
    assert max(subsets) < 1.0
    for optimise in (optimise_margin_weights, margin_weights_reference):
        w = optimise(margins, "accuracy", np.ones(1), [np.ones(4, dtype=bool)], w_max=2.0, start=np.ones(2))
        assert np.all(w @ margins > 0)
        assert 1 < w[0] / w[1] < 3


@pytest.mark.parametrize("kind", ["loglik", "accuracy"])
@pytest.mark.parametrize("seed", range(3))
def test_native_weights_match_the_numpy_reference(kind: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, pairs = 7, 60
    margins = rng.normal(0.2, 1.0, size=(n, pairs))
    first = np.arange(pairs) < 30  # two evaluation sets, the second constrained at its all-sources level
    masks = [np.ones(pairs, dtype=bool), first, ~first]
    coef = np.array([0.0, 1.0, 0.0])
    terms = (lambda s: np.where(s > 0, 1.0, np.where(s == 0, 0.5, 0.0))) if kind == "accuracy" else None
    level = float(
        np.mean(terms(margins.sum(0))[~first])
        if terms is not None
        else np.mean(-np.log1p(np.exp(-margins.sum(0)))[~first])
    )
    options = dict(w_max=2.0, start=np.ones(n), constrained=[2], levels=[level])
    native = optimise_margin_weights(margins, kind, coef, masks, **options)
    reference = margin_weights_reference(margins, kind, coef, masks, **options)
    assert native.shape == (n,) and np.all((native >= 0) & (native <= 2.0))
    if kind == "loglik":
        assert native == pytest.approx(reference, abs=1e-6)
    else:  # the same path of coordinate moves
        assert native.tolist() == pytest.approx(reference.tolist(), abs=1e-12)


def test_constraint_at_the_all_sources_level_and_weights_on_the_toy_world(run_dir: Path) -> None:
    selection = select_run(
        run_dir,
        "loglik",
        objective="helpful",
        constraints=["harmless>=all"],
        weights=True,
        progress=False,
        device="cpu",
        n_boot=50,
    )
    doc = json.loads((run_dir / "selection.json").read_text())
    assert doc["goal"]["maximize"] == "toy:helpful"
    (constraint,) = doc["goal"]["subject_to"]
    assert constraint["level"] == "all"
    assert constraint["resolved"] == pytest.approx(doc["predicted"]["objectives"]["all"]["toy:harmless"])
    assert doc["predicted"]["objectives"]["chosen"]["toy:harmless"] >= constraint["resolved"] - 1e-12
    assert "adversarial" not in selection.chosen and "adversarial" in doc["rule"]["dropped"]
    shown = [sorted(r["sources"]) for r in doc["runners_up"]]  # the next best, not the two shown on their own
    assert shown and sorted(doc["chosen"]) not in shown and sorted(doc["sources"]) not in shown
    weights = doc["weights"]
    assert weights["weights"]["adversarial"] == 0.0
    assert all(0.0 <= w <= 2.0 for w in weights["weights"].values())
    assert weights["predicted"] >= weights["subset_predicted"] - 1e-3  # the weights start from the chosen subset
    assert weights["objectives"]["toy:harmless"] >= constraint["resolved"] - 1e-3  # the penalty holds it
    assert Path(doc["figure"]).is_file()


def test_verify_end_to_end_on_the_toy_world(
    run_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(run_dir.parent)  # a relative run directory, as users type it
    args = ["select", run_dir.name, "--utility", "accuracy", "--verify", "--quiet", "--device", "cpu"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "measured gain" in printed and "predicted gain" in printed
    doc = json.loads((run_dir / "selection.json").read_text())
    assert "adversarial" not in doc["chosen"]
    assert {"helpful", "harmless"} <= set(doc["chosen"])
    measured = doc["measured"]
    assert measured["chosen"] > measured["all"]
    assert measured["gain"] > 2 * measured["gain_stderr"]  # significantly, on the trusted pairs
    assert doc["predicted"]["gain"] > 0
    assert (run_dir / "select" / "adapters" / "chosen").is_dir() and (run_dir / "select" / "adapters" / "all").is_dir()
    # one format (the toy world's plain strings): the union is the sources' training pairs as they are, byte for byte
    union = [
        json.dumps({key: record[key] for key in ("prompt", "chosen", "rejected")})
        for name in sorted(doc["sources"])
        for line in (run_dir / "data" / name / "train.jsonl").read_text(encoding="utf-8").splitlines()
        for record in [json.loads(line)]
    ]
    assert (run_dir / "select" / "data" / "all.jsonl").read_text(encoding="utf-8") == "\n".join(union) + "\n"
    # resumable: a second run reuses both adapters and measures the same
    assert main(args) == 0
    capsys.readouterr()
    again = json.loads((run_dir / "selection.json").read_text())
    manifest = json.loads((run_dir / "select" / "manifest.json").read_text())
    assert {entry["status"] for entry in manifest["sources"].values()} == {"reused"}
    assert again["measured"]["gain"] == measured["gain"]


def test_verify_trains_a_weighted_union_whose_weights_repeat_pairs(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --weights reaches w_max = 2: the chosen union holds those sources' pairs twice, on purpose
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("select"))
    args = ["select", str(copy), "--utility", "loglik", "--weights", "--verify", "--quiet", "--device", "cpu"]
    assert main(args) == 0, capsys.readouterr().err
    doc = json.loads((copy / "selection.json").read_text())
    weights = doc["weights"]["weights"]
    twice = [name for name, w in weights.items() if w == 2.0]
    assert twice, weights
    lines = (copy / "select" / "data" / "chosen.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) > len(set(lines))  # repeated pairs, trained as they are
    assert doc["measured"]["pairs"]["chosen"] == len(lines)
    assert math.isfinite(doc["measured"]["gain"])


def test_verify_pools_sources_of_both_formats_as_trl_templates_them(
    tiny_chat_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # one vendor sends plain strings, another conversations: each source trains in its own format, and the
    # unions --verify trains hold the conversations as the plain strings the base model's chat template renders
    from transformers import AutoTokenizer

    plain = [{"prompt": f"Q: rain {i} A:", "chosen": f" snow {i}", "rejected": f" wind {i}"} for i in range(10)]
    chat = [
        {
            "prompt": [{"role": "user", "content": f"Q: bake {i} A:"}],
            "chosen": [{"role": "assistant", "content": f"fry {i}"}],
            "rejected": [{"role": "assistant", "content": f"boil {i}"}],
        }
        for i in range(10)
    ]
    for name, rows in (("plain", plain), ("chat", chat)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (tmp_path / "run.toml").write_text(
        f'[model]\nbase = "{tiny_chat_model}"\ndevice = "cpu"\n'
        '[data.sources]\nplain = "plain.jsonl"\nchat = "chat.jsonl"\n'
        "[dpo]\nmax_steps = 1\nper_device_train_batch_size = 2\nmax_length = 64\n",
        encoding="utf-8",
    )
    run = tmp_path / "run"
    train_sources(load_config(tmp_path / "run.toml"), run, progress=False)
    args = ["select", str(run), "--utility", "accuracy", "--verify", "--quiet", "--device", "cpu"]
    assert main(args) == 0, capsys.readouterr().err
    doc = json.loads((run / "selection.json").read_text())
    assert set(doc["measured"]["pairs"]) == {"chosen", "all"} and doc["measured"]["steps"]["all"] == 1
    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model)
    expected = []
    for name in ("chat", "plain"):  # the run's sources in order, each its training pairs
        for line in (run / "data" / name / "train.jsonl").read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if name == "chat":
                prompt = tokenizer.apply_chat_template(record["prompt"], tokenize=False, add_generation_prompt=True)
                record = {
                    "prompt": prompt,
                    **{
                        key: tokenizer.apply_chat_template(record["prompt"] + record[key], tokenize=False)[
                            len(prompt) :
                        ]
                        for key in ("chosen", "rejected")
                    },
                }
            expected.append({key: record[key] for key in ("prompt", "chosen", "rejected")})
    union = [json.loads(line) for line in (run / "select" / "data" / "all.jsonl").read_text().splitlines()]
    assert union == expected
    templated = [r for r in union if "bake" in r["prompt"]]
    assert len(templated) == doc["measured"]["pairs"]["all"] - len([r for r in union if "rain" in r["prompt"]]) > 0
    assert all(r["prompt"].startswith("user: Q: bake") and r["prompt"].endswith("A:\nassistant:") for r in templated)
    assert all(r["chosen"].startswith(" fry") and r["chosen"].endswith("\n") for r in templated)
    # the adapter is trained on these very rows: the run's stored split of the union
    stored = [json.loads(line) for line in (run / "select" / "data" / "all" / "train.jsonl").read_text().splitlines()]
    assert stored and all({key: r[key] for key in ("prompt", "chosen", "rejected")} in union for r in stored)
    manifest = json.loads((run / "select" / "manifest.json").read_text())
    assert {entry["status"] for entry in manifest["sources"].values()} == {"trained"}


def test_a_flat_game_keeps_all_sources_and_says_it_cannot_tell(
    run_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # every pair comes with its mirror (the margins negated), so every coalition gets accuracy exactly 1/2:
    # every source is worth 0 and no coalition beats all sources, yet each pair's own score varies
    rng = np.random.default_rng(7)
    half = rng.normal(size=(4, 40))
    margins = np.concatenate([half, -half], axis=1)

    def build(run, settings, context):
        assert len(run.sources) == 4
        return MarginUtilities.from_margins(margins, run.sources, ("accuracy",))

    kind = UtilityKind("flat_test", "a margin game where every coalition ties", MarginSettings, build)
    monkeypatch.setitem(utility_registry._items, kind.name, kind)  # for this test only
    selection = select_run(run_dir, "flat_test", progress=False, device="cpu", n_boot=50)
    doc = selection.to_json()
    assert sorted(selection.chosen) == sorted(doc["sources"]) and doc["dropped"] == []
    assert doc["predicted"]["gain"] == 0.0
    assert doc["decision"]["changed"] is False and "within noise" in doc["decision"]["reason"]
    assert doc["search"]["best"] != doc["sources"]  # the search's first pick (a tie) was not taken
    assert all(abs(v) < 1e-12 for v in doc["rule"]["values"].values()) and doc["rule"]["dropped"] == []
    assert main(["select", str(run_dir), "--utility", "flat_test", "--quiet", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "all sources kept" in printed and "dropped: (none)" in printed


def test_a_significant_gain_changes_the_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    # the same decision rule on a game with a clear winner: source 0 right on every pair, source 1 wrong
    rng = np.random.default_rng(3)
    margins = np.stack([rng.uniform(0.5, 1.0, 60), -rng.uniform(1.0, 2.0, 60)])
    built = MarginUtilities.from_margins(margins, ["good", "bad"], ("accuracy",))
    objectives = Objectives(built, built)
    scored = GoalRanking(parse_goal(None, [], objectives.names), objectives.names, np.zeros(0))
    best, everyone = np.array([True, False]), np.array([True, True])
    decision = decide_change(objectives, scored, best, everyone, n_boot=50, seed=0)
    assert decision["changed"] is True and decision["gain_low"] > 0
    kept = decide_change(objectives, scored, everyone, everyone, n_boot=50, seed=0)
    assert kept["changed"] is False


def _error(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_bad_input_is_one_line_and_exit_2(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    base = ["select", str(run_dir), "--quiet", "--device", "cpu", "--utility"]
    err = _error([*base, "accuracy", "--objective", "kindness"], capsys)
    assert "unknown objective 'kindness'" in err and "toy:helpful" in err
    err = _error([*base, "accuracy", "--subject-to", "kindness>=0.5"], capsys)
    assert "--subject-to" in err and "unknown objective 'kindness'" in err
    err = _error([*base, "accuracy", "--subject-to", "harmless>0.5"], capsys)
    assert "OBJECTIVE>=LEVEL" in err

    def build(run, settings, context):  # a utility with no way to take weights
        built = margin_utilities(run, kinds=("accuracy",), device=context.device)
        return _Unweighted(built)

    kind = UtilityKind("unweighted_test", "a margin game that takes no weights", MarginSettings, build)
    monkeypatch.setitem(utility_registry._items, kind.name, kind)  # for this test only
    err = _error([*base, "unweighted_test", "--weights"], capsys)
    assert "--weights" in err and "unweighted_test" in err

    partial = tmp_path / "partial"
    train_sources(load_config(None, TOY), partial, sources=["helpful", "harmless"], progress=False)
    err = _error(["select", str(partial), "--utility", "accuracy", "--quiet", "--device", "cpu"], capsys)
    assert "partial run" in err and "noisy" in err
    with pytest.raises(IncompleteRunError):
        select_run(partial, "accuracy", progress=False, device="cpu")
    with pytest.raises(InvalidArgumentError, match="w_max"):
        select_run(run_dir, "accuracy", weights=True, w_max=-1.0, progress=False)


class _Unweighted:
    """A margin utility without ``takes_weights``."""

    def __init__(self, inner):
        self.inner = inner
        self.players, self.objectives = inner.players, inner.objectives
        self.cache_config, self.batch_size = None, None
        self.pair_sets = inner.pair_sets
        self.n_items = inner.n_items

    def native_game(self):
        return self.inner.native_game()

    def describe(self):
        return self.inner.describe()

    def item_scores(self, coalitions):
        return self.inner.item_scores(coalitions)

    def __call__(self, coalitions):
        return self.inner(coalitions)

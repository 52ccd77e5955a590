"""Fidelity and cost of composition against retraining, in the toy world (n = 4 sources).

Two ways to get the model of every coalition S of the 4 default toy sources:

``composed``
    dposhap's way: train one DPO adapter per source (n runs), build each coalition at decoding
    time by logits arithmetic (generation utilities) or by summing margins (accuracy).
``retrained``
    The ground truth the method approximates: DPO-train one adapter on the union of the
    coalition's pairs (2^n - 1 runs, same settings; the empty coalition is the base model).

For both, every coalition's utilities are evaluated the same way: the two generation objectives
(composed decoding with the toy rewards, same prompts, same common random numbers) and
preference accuracy on the toy world's clean evaluation pairs. Reported: Pearson and Spearman
correlations of the 16 coalition utilities and of the 4 resulting exact Shapley values per
objective, and the wall time of each way. Results: ``results/fidelity.md`` and ``.csv``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # bench/_harness.py

from _harness import MarkdownTable, environment, write_csv, write_markdown  # noqa: E402
from dposhap import shapley  # noqa: E402
from dposhap.config import load_config  # noqa: E402
from dposhap.evaluate import CallableRewards, margins_matrix  # noqa: E402
from dposhap.evaluate.decoding import ComposedDecoder, DecodeConfig  # noqa: E402
from dposhap.recipes import DEMO_CONFIG  # noqa: E402
from dposhap.run import Run  # noqa: E402
from dposhap.train import train_sources  # noqa: E402
from dposhap.worlds.toy import OBJECTIVES, REWARDS, build_toy_world, toy_eval_records  # noqa: E402

SOURCES = ["adversarial", "harmless", "helpful", "noisy"]  # the manifest's (sorted) order


def _coalitions(n: int) -> np.ndarray:
    return np.array(list(itertools.product([False, True], repeat=n)))[:, ::-1].copy()


def _generation(
    run: Path, sources: list[str], coalitions: np.ndarray, prompts: list[str], seed: int, max_new_tokens: int
) -> np.ndarray:
    """Mean toy rewards of each coalition's samples: ``[len(coalitions), objectives]``."""
    loaded = Run.open(run).load_models(sources=sources, device="cpu")
    decoder = ComposedDecoder(loaded.model, loaded.tokenizer, loaded.sources, device="cpu")
    result = decoder.generate(prompts, coalitions, DecodeConfig(max_new_tokens=max_new_tokens, seed=seed))
    scorer = CallableRewards(REWARDS)
    return np.array([np.asarray(scorer(prompts, texts)).mean(0) for texts in result.completions])


def _accuracy(run: Path, sources: list[str], coalitions: np.ndarray, records: list[dict], beta: float) -> np.ndarray:
    """Preference accuracy (ties 1/2) of each coalition's summed margins: ``[len(coalitions)]``."""
    loaded = Run.open(run).load_models(sources=sources, device="cpu")
    margins = margins_matrix(loaded.model, loaded.tokenizer, loaded.sources, records, beta, device="cpu", max_length=64)
    total = coalitions.astype(float) @ margins
    return ((total > 0) + 0.5 * (total == 0)).mean(1)


def _exact_values(table: np.ndarray, n: int) -> np.ndarray:
    """Exact Shapley values of a utility given as a table over all 2^n coalitions (bit i = player i)."""

    def lookup(coalitions: np.ndarray) -> np.ndarray:
        index = (coalitions.astype(np.int64) << np.arange(n)).sum(1)
        return table[index]

    return np.asarray(shapley(lookup, n, method="exact").values)


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (as Spearman's coefficient needs)."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=float)
    for value in np.unique(x):
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def _corr(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Pearson and Spearman correlation."""
    return float(np.corrcoef(a, b)[0, 1]), float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    n = len(SOURCES)
    coalitions = _coalitions(n)  # row r: bit i of r = player i

    with tempfile.TemporaryDirectory(prefix="dposhap-fidelity-") as tmp:
        work = Path(tmp)
        composed_run = work / "composed"
        cfg = load_config(None, [*DEMO_CONFIG, "model.device=cpu", f"toy.sources={json.dumps(SOURCES)}"])
        toy_settings = cfg.worlds["toy"]
        world = build_toy_world(
            composed_run / "world",
            seed=toy_settings.seed,
            sources=toy_settings.sources,
            pairs_per_source=toy_settings.pairs_per_source,
        )
        started = time.perf_counter()
        manifest = train_sources(cfg, composed_run, progress=False).to_dict()
        composed_train_s = time.perf_counter() - started
        assert list(manifest["sources"]) == SOURCES
        prompts = world.eval_prompts()[: args.prompts]
        records = [r for objective in OBJECTIVES for r in toy_eval_records(toy_settings.seed, objective)]
        beta = cfg.dpo.beta

        started = time.perf_counter()
        composed_gen = _generation(composed_run, SOURCES, coalitions, prompts, args.seed, args.max_new_tokens)
        composed_acc = _accuracy(composed_run, SOURCES, coalitions, records, beta)
        composed_eval_s = time.perf_counter() - started

        # one adapter per non-empty coalition, trained on the union of its members' pairs
        union_dir = work / "unions"
        union_dir.mkdir()
        names = []
        for row in coalitions[1:]:
            name = "u_" + "+".join(s for s, member in zip(SOURCES, row, strict=True) if member)
            seen, lines = set(), []
            for source, member in zip(SOURCES, row, strict=True):
                if member:
                    for line in world.data_files[source].read_text(encoding="utf-8").splitlines():
                        record = json.loads(line)
                        key = (record["prompt"], record["chosen"], record["rejected"])
                        if key not in seen:
                            seen.add(key)
                            lines.append(json.dumps({k: record[k] for k in ("prompt", "chosen", "rejected")}))
            (union_dir / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
            names.append(name)
        config = work / "retrain.toml"
        config.write_text(
            f"[model]\nbase = {json.dumps(str(world.model_dir))}\ndevice = 'cpu'\n[data.sources]\n"
            + "".join(f"{json.dumps(name)} = {json.dumps(str(union_dir / (name + '.jsonl')))}\n" for name in names)
            + "[dpo]\n"
            + "".join(f"{o.split('=')[0].split('.')[1]} = {o.split('=')[1]}\n" for o in DEMO_CONFIG),
            encoding="utf-8",
        )
        retrain_run = work / "retrained"
        started = time.perf_counter()
        retrained = train_sources(config, retrain_run, progress=False)
        retrain_train_s = time.perf_counter() - started
        order = list(retrained["sources"])
        started = time.perf_counter()
        singles = np.zeros((len(order) + 1, len(order)), dtype=bool)
        singles[1:] = np.eye(len(order), dtype=bool)
        gen_by_name = _generation(retrain_run, order, singles, prompts, args.seed, args.max_new_tokens)
        acc_by_name = _accuracy(retrain_run, order, singles, records, beta)
        retrain_eval_s = time.perf_counter() - started
        position = {name: i + 1 for i, name in enumerate(order)}
        index = [0] + [position[name] for name in names]
        retrained_gen, retrained_acc = gen_by_name[index], acc_by_name[index]

    rows, table = (
        [],
        MarkdownTable(
            caption="Composed vs retrained coalition models (toy world, n = 4, all 16 coalitions)",
            columns=[
                "utility",
                "Pearson (16 coalitions)",
                "Spearman (16 coalitions)",
                "Pearson (4 values)",
                "Spearman (4 values)",
                "values composed",
                "values retrained",
            ],
        ),
    )
    utilities = {f"generation:{o}": (composed_gen[:, j], retrained_gen[:, j]) for j, o in enumerate(OBJECTIVES)}
    utilities["accuracy"] = (composed_acc, retrained_acc)
    for name, (a, b) in utilities.items():
        pa, sa = _corr(a, b)
        va, vb = _exact_values(a, n), _exact_values(b, n)
        pv, sv = _corr(va, vb)
        rows.append(
            {
                "utility": name,
                "pearson_coalitions": pa,
                "spearman_coalitions": sa,
                "pearson_values": pv,
                "spearman_values": sv,
                **{f"composed_{s}": float(v) for s, v in zip(SOURCES, va, strict=True)},
                **{f"retrained_{s}": float(v) for s, v in zip(SOURCES, vb, strict=True)},
            }
        )
        table.rows.append(
            [
                name,
                f"{pa:.3f}",
                f"{sa:.3f}",
                f"{pv:.3f}",
                f"{sv:.3f}",
                ", ".join(f"{s} {v:+.3f}" for s, v in zip(SOURCES, va, strict=True)),
                ", ".join(f"{s} {v:+.3f}" for s, v in zip(SOURCES, vb, strict=True)),
            ]
        )
    cost = MarkdownTable(caption="Cost", columns=["way", "training runs", "train s", "evaluation s", "total s"])
    cost.rows.append(
        [
            "composed",
            n,
            f"{composed_train_s:.1f}",
            f"{composed_eval_s:.1f}",
            f"{composed_train_s + composed_eval_s:.1f}",
        ]
    )
    cost.rows.append(
        [
            "retrained",
            2**n - 1,
            f"{retrain_train_s:.1f}",
            f"{retrain_eval_s:.1f}",
            f"{retrain_train_s + retrain_eval_s:.1f}",
        ]
    )
    notes = [
        f"{args.prompts} prompts, {args.max_new_tokens} new tokens, seed {args.seed}; accuracy on the toy "
        f"world's clean evaluation pairs ({len(records)}). Training as in examples/toy.toml; a union is trained "
        "for the same epochs, so larger unions take more steps."
    ]
    write_csv(args.out / "fidelity.csv", rows)
    write_markdown(
        args.out / "fidelity.md",
        "Fidelity and cost: composition vs retraining",
        environment(("torch", "transformers", "trl", "peft")),
        [table, cost],
        preamble=notes,
    )
    print((args.out / "fidelity.md").read_text())


if __name__ == "__main__":
    main()

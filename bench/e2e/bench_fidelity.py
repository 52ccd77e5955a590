"""Fidelity and cost of composition against retraining (n = 4 sources), in the toy or the English world.

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

``--world english`` does the same for the setup of ``dposhap reproduce``: SmolLM2-135M-Instruct
(the English world's default model), the English world's sources helpful, harmless, noisy and
adversarial, the training settings of :func:`dposhap.recipes.reproduce_recipe` at a size given
here (LoRA r 8, alpha 16, DPO beta 0.1); the two objectives scored by the LLM judge
(SmolLM2-135M-Instruct, its built-in rubrics helpful and harmless; one judge for both ways) on the
world's evaluation prompts rendered by the chat template, the world's rubric rewards of the same
completions as a supplement, and preference accuracy on the world's trusted pairs of both
objectives. Each union adapter is decoded as a single-source coalition of the same composed
decoder, with the same prompts and the same seed. Results: ``results/english/fidelity.md`` and
``.csv``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import itertools
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # bench/_harness.py

from _harness import MarkdownTable, environment, write_csv, write_markdown  # noqa: E402
from dposhap import shapley  # noqa: E402
from dposhap.config import load_config  # noqa: E402
from dposhap.evaluate import CallableRewards, margins_matrix  # noqa: E402
from dposhap.evaluate.decoding import ComposedDecoder, DecodeConfig  # noqa: E402
from dposhap.evaluate.generation import reward_scorer  # noqa: E402
from dposhap.evaluate.likelihood import ComposedLikelihood  # noqa: E402
from dposhap.models import quiet_libraries  # noqa: E402
from dposhap.recipes import (  # noqa: E402
    CPU_SIZES,
    DEMO_CONFIG,
    ReproduceSize,
    reproduce_recipe,
    reward_model_spec,
    train_recipe_reward_models,
)
from dposhap.run import Run  # noqa: E402
from dposhap.train import train_sources  # noqa: E402
from dposhap.worlds.english import ENGLISH_EVAL_PAIRS, english_eval_prompts, max_eval_prompts  # noqa: E402
from dposhap.worlds.toy import OBJECTIVES, REWARDS, build_toy_world, toy_eval_records  # noqa: E402

SOURCES = ["adversarial", "harmless", "helpful", "noisy"]  # the manifest's (sorted) order


def _coalitions(n: int) -> np.ndarray:
    return np.array(list(itertools.product([False, True], repeat=n)))[:, ::-1].copy()


def _decode(
    run: Path, sources: list[str], coalitions: np.ndarray, prompts: list, config: DecodeConfig
) -> list[list[str]]:
    """Every coalition's completions of ``prompts`` by the composed decoder: ``[len(coalitions)][len(prompts)]``.

    Conversations are rendered by the tokenizer's chat template (with the generation prompt), as
    the generation utility does; plain strings are decoded as they are.
    """
    loaded = Run.open(run).load_models(sources=sources, device="cpu")
    texts = [
        p if isinstance(p, str) else loaded.tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]
    decoder = ComposedDecoder(loaded.model, loaded.tokenizer, loaded.sources, device="cpu")
    return decoder.generate(texts, coalitions, config).completions


def _scores(scorer, prompts: list, completions: list[list[str]]) -> np.ndarray:
    """Every coalition's completions scored: ``[len(completions), len(prompts), objectives]``."""
    return np.array([np.asarray(scorer(prompts, texts)) for texts in completions])


def _mean_scores(scorer, prompts: list, completions: list[list[str]]) -> np.ndarray:
    """Mean score of each coalition's completions: ``[len(completions), objectives]``."""
    return _scores(scorer, prompts, completions).mean(1)


def _generation(
    run: Path, sources: list[str], coalitions: np.ndarray, prompts: list[str], seed: int, max_new_tokens: int
) -> np.ndarray:
    """Mean toy rewards of each coalition's samples: ``[len(coalitions), objectives]``."""
    completions = _decode(run, sources, coalitions, prompts, DecodeConfig(max_new_tokens=max_new_tokens, seed=seed))
    return _mean_scores(CallableRewards(REWARDS), prompts, completions)


def _pair_scores(
    run: Path, sources: list[str], coalitions: np.ndarray, records: list[dict], beta: float, max_length: int
) -> np.ndarray:
    """Whether each coalition's summed margin ranks each pair right (ties 1/2): ``[len(coalitions), len(records)]``."""
    loaded = Run.open(run).load_models(sources=sources, device="cpu")
    margins = margins_matrix(
        loaded.model, loaded.tokenizer, loaded.sources, records, beta, device="cpu", max_length=max_length
    )
    total = coalitions.astype(float) @ margins
    return (total > 0) + 0.5 * (total == 0)


def _accuracy(
    run: Path, sources: list[str], coalitions: np.ndarray, records: list[dict], beta: float, max_length: int = 64
) -> np.ndarray:
    """Preference accuracy (ties 1/2) of each coalition's summed margins: ``[len(coalitions)]``."""
    return _pair_scores(run, sources, coalitions, records, beta, max_length).mean(1)


def _union_name(sources: list[str], row: np.ndarray) -> str:
    return "u_" + "+".join(s for s, member in zip(sources, row, strict=True) if member)


def _write_unions(data_files: dict, sources: list[str], coalitions: np.ndarray, union_dir: Path) -> list[str]:
    """One JSONL file per non-empty coalition: its members' pairs, duplicates dropped; returns the names."""
    union_dir.mkdir()
    names = []
    for row in coalitions[1:]:
        name = _union_name(sources, row)
        seen, lines = set(), []
        for source, member in zip(sources, row, strict=True):
            if member:
                for line in Path(data_files[source]).read_text(encoding="utf-8").splitlines():
                    record = {k: json.loads(line)[k] for k in ("prompt", "chosen", "rejected")}
                    key = json.dumps(record, sort_keys=True)  # texts or conversations
                    if key not in seen:
                        seen.add(key)
                        lines.append(json.dumps(record))
        (union_dir / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        names.append(name)
    return names


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
    """Pearson and Spearman correlation (NaN when either side is constant)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.corrcoef(a, b)[0, 1]), float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])


def _toy(args: argparse.Namespace) -> None:
    """The toy world: 4 default sources, toy rewards, the toy world's clean evaluation pairs."""
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
        names = _write_unions(world.data_files, SOURCES, coalitions, union_dir)
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
        order = list(retrained.sources)
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


class _Stages:
    """Prints each stage as it starts and its time when done; keeps the times."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._started = time.perf_counter()

    @contextlib.contextmanager
    def __call__(self, key: str, text: str) -> Iterator[None]:
        print(f"[{time.perf_counter() - self._started:7.1f} s] {text}", flush=True)
        started = time.perf_counter()
        yield
        self.seconds[key] = time.perf_counter() - started
        print(f"           done in {self.seconds[key]:.1f} s", flush=True)


def _train_unions(config, run: Path, names: list[str], sizes: dict[str, int]) -> dict:
    """Train one adapter per union into ``run``, one at a time, printing each; returns the manifest's entries."""
    started, done, total = time.perf_counter(), 0, sum(sizes.values())
    entries = {}
    for k, name in enumerate(names, start=1):
        t0 = time.perf_counter()
        # the run resumes: the adapters already trained are reused, only ``name`` is trained
        entries = dict(train_sources(config, run, sources=names[:k], progress=False).sources)
        done += sizes[name]
        elapsed = time.perf_counter() - started
        entry = entries[name]
        print(
            f"           [{k:2d}/{len(names)}] {name}: {sizes[name]} pairs ({entry.n_train} trained on), "
            f"{entry.metrics.get('steps')} steps, {time.perf_counter() - t0:.1f} s; {elapsed:.0f} s so far, "
            f"~{elapsed / done * (total - done):.0f} s to go",
            flush=True,
        )
    return entries


def _likelihood_items(
    run: Path, players: list[str], rows: np.ndarray, records: list[dict], max_length: int, max_block: int = 4
):
    """Per response: the summed log-likelihood of its tokens and its token count, under each row's model.

    The per-position logits are held for the reference and at most ``max_block`` adapters
    (``[N, max_block + 1, V]`` float32); with more players every row must hold at most one (a retrained
    union alone, or the base model), and each adapter is scored with its own block.
    """
    loaded = Run.open(run).load_models(sources=players, device="cpu")

    def block(names: list[str], sub: np.ndarray):
        likelihood = ComposedLikelihood.from_model(
            loaded.model, loaded.tokenizer, names, records, device="cpu", max_length=max_length
        )
        items = likelihood.item_scores(sub)
        return items.numer[:, 0, :], items.denom

    if len(players) <= max_block:
        return block(players, rows)
    if (rows.sum(1) > 1).any():
        raise ValueError("rows of several adapters need every adapter in one block")
    numer = denom = None
    for k, name in enumerate(players):
        mine = np.flatnonzero(rows[:, k] | (~rows.any(1) if k == 0 else False))
        if not len(mine):
            continue
        part_numer, part_denom = block([name], rows[mine][:, [k]])
        if numer is None or denom is None:
            numer, denom = np.zeros((len(rows), part_numer.shape[1])), np.zeros((len(rows), part_numer.shape[1]))
        numer[mine], denom[mine] = part_numer, part_denom
    assert numer is not None and denom is not None
    return numer, denom


def _english(args: argparse.Namespace) -> None:
    """The reproduce setup: SmolLM2-135M-Instruct, the English world's 4 sources, its two reward models."""
    size = ReproduceSize(
        pairs_per_source=args.pairs,
        epochs=args.epochs,
        n_prompts=args.prompts,
        max_new_tokens=args.max_new_tokens,
        learning_rate=args.learning_rate,
        reward_pairs=args.reward_pairs,
    )
    recipe = reproduce_recipe(size)
    assert recipe.reward_models is not None
    coalitions = _coalitions(4)  # row r: bit i of r = player i
    stage = _Stages()
    with _work_dir(args.work, "dposhap-fidelity-english-") as work:
        composed_run = work / "composed"
        cfg = load_config(None, [*recipe.overrides, "model.device=cpu"])
        with stage("composed_train", f"composed: training the 4 source adapters ({args.pairs} pairs each)"):
            manifest = train_sources(cfg, composed_run, progress=False)
        sources = list(manifest.sources)  # the players, in the manifest's (sorted) order
        composed_steps = sum(int(e.metrics.get("steps") or 0) for e in manifest.sources.values())
        run = Run.open(composed_run)
        world = run.world()
        assert world is not None and len(sources) == 4
        with stage("reward_models", "training the two reward models on the world's reward-model sets"):
            reward_models = train_recipe_reward_models(
                run, recipe.reward_models, device="cpu", threads=None, progress=False
            )
        specs = [reward_model_spec(composed_run, o) for o in recipe.reward_models.objectives] + ["rubric=english"]
        scorer = reward_scorer(run, specs, device="cpu")
        prompts = english_eval_prompts(world.seed, size.n_prompts)
        records = [r for objective in world.objectives for r in world.eval_pairs(objective, args.eval_pairs)]
        decode_config = DecodeConfig(max_new_tokens=size.max_new_tokens, seed=args.seed, correction=True)
        beta = cfg.dpo.beta
        # the first decoding loads the C++ compose kernel (rebuilt when another checkout built it last): not timed
        with stage("warmup", "warm-up: one token of one prompt (loads the compose kernel)"):
            _decode(composed_run, sources, coalitions[:2], prompts[:1], DecodeConfig(max_new_tokens=1, seed=args.seed))

        def evaluate(way: str, run_dir: Path, players: list[str], rows: np.ndarray) -> tuple[dict, dict]:
            """Per utility, each row's numerators and weights per prompt or pair (``[rows, items]``)."""
            loaded = Run.open(run_dir).load_models(sources=players, device="cpu")
            texts = [
                loaded.tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts
            ]
            decoder = ComposedDecoder(loaded.model, loaded.tokenizer, loaded.sources, device="cpu")
            with stage(f"{way}_decode", f"{way}: decoding {len(rows)} coalitions x {len(prompts)} prompts"):
                result = decoder.generate(texts, rows, decode_config)
            with stage(f"{way}_score", f"{way}: scoring {len(rows) * len(prompts)} completions ({len(specs)} rewards)"):
                scored = _scores(scorer, prompts, result.completions)  # [rows, prompts, objectives]
            out: dict[str, np.ndarray] = {}
            weights: dict[str, np.ndarray] = {}
            for j, objective in enumerate(scorer.objectives):
                key = f"rm:{objective}" if not objective.startswith("rubric_") else f"rubric:{objective[7:]}"
                out[key] = scored[:, :, j]
                if way == "composed":  # the sequence-level correction: self-normalised importance weights
                    w = np.exp(result.log_weights - result.log_weights.max(1, keepdims=True))
                    out[f"{key} (corrected)"] = w * scored[:, :, j]
                    weights[f"{key} (corrected)"] = w
            with stage(f"{way}_accuracy", f"{way}: margins of {len(players)} adapters on {len(records)} pairs"):
                out["accuracy"] = _pair_scores(run_dir, players, rows, records, beta, max_length=size.max_length)
            with stage(f"{way}_likelihood", f"{way}: likelihood of {len(records)} preferred responses"):
                out["likelihood"], weights["likelihood"] = _likelihood_items(
                    run_dir, players, rows, records, size.max_length
                )
            return out, weights

        composed, composed_weights = evaluate("composed", composed_run, sources, coalitions)

        union_dir = work / "unions"
        names = _write_unions(world.data_files, sources, coalitions, union_dir)
        sizes = {name: len((union_dir / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()) for name in names}
        table = (
            "{"
            + ", ".join(f"{json.dumps(name)} = {json.dumps(str(union_dir / (name + '.jsonl')))}" for name in names)
            + "}"
        )
        union_config = load_config(
            None,
            [
                *(o for o in recipe.overrides if not o.startswith(("model.base=", "english."))),
                f"model.base={json.dumps(str(world.model_dir))}",  # the world's model, resolved
                "model.device=cpu",
                f"data.sources={table}",
            ],
        )
        retrain_run = work / "retrained"
        with stage("retrained_train", f"retrained: training 15 union adapters ({sum(sizes.values())} pairs in all)"):
            entries = _train_unions(union_config, retrain_run, names, sizes)
        retrained_steps = sum(int(e.metrics.get("steps") or 0) for e in entries.values())
        order = list(entries)
        singles = np.zeros((len(order) + 1, len(order)), dtype=bool)
        singles[1:] = np.eye(len(order), dtype=bool)  # row 0: the base model; row 1 + i: {union i} alone
        by_name, weights_by_name = evaluate("retrained", retrain_run, order, singles)
        index = [0] + [order.index(name) + 1 for name in names]
        retrained = {key: values[index] for key, values in by_name.items()}
        retrained_weights = {key: values[index] for key, values in weights_by_name.items()}
    # a corrected composed utility stands against the same retrained one
    for key in list(composed):
        if key.endswith(" (corrected)"):
            retrained[key] = retrained[key.removesuffix(" (corrected)")]

    _english_report(
        args,
        size,
        sources,
        coalitions,
        (composed, composed_weights),
        (retrained, retrained_weights),
        stage.seconds,
        (composed_steps, retrained_steps),
        len(records),
        reward_models,
    )


@contextlib.contextmanager
def _work_dir(given: Path | None, prefix: str) -> Iterator[Path]:
    """``given`` (kept: a rerun reuses its finished adapters and reward models), or a temporary folder."""
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


def _utility(numerators: np.ndarray, weights: np.ndarray | None, items: np.ndarray | None = None) -> np.ndarray:
    """Each row's utility from its items (``items``: a bootstrap resample of their indices)."""
    if items is not None:
        numerators = numerators[:, items]
        weights = None if weights is None else weights[:, items]
    if weights is None:
        return numerators.mean(1)
    return numerators.sum(1) / weights.sum(1)


def _shapley_matrix(n: int) -> np.ndarray:
    """``[n, 2^n]``: exact Shapley values are this matrix times the utility table (bit i = player i)."""
    return np.stack([_exact_values(np.eye(2**n)[k], n) for k in range(2**n)], axis=1)


def _discordant(a: np.ndarray, b: np.ndarray, wa: np.ndarray | None, wb: np.ndarray | None, z: float = 1.96):
    """Coalition pairs the retrained model orders significantly (paired over items) and composition the other way.

    Returns (discordant, significant, pairs): counts over the 120 pairs of 16 coalitions.
    """
    va, vb = _utility(a, wa), _utility(b, wb)
    if wb is not None:  # a ratio utility: each item linearised around its coalition's value (delta method)
        b = (b - vb[:, None] * wb) / wb.mean(1, keepdims=True)
    significant = discordant = pairs = 0
    for i, j in itertools.combinations(range(len(a)), 2):
        pairs += 1
        diff = b[i] - b[j]
        se = diff.std(ddof=1) / np.sqrt(diff.size)
        mean = vb[i] - vb[j]
        if se > 0 and abs(mean) > z * se:
            significant += 1
            if (va[i] - va[j]) * mean < 0:
                discordant += 1
    return discordant, significant, pairs


def _english_report(
    args: argparse.Namespace,
    size: ReproduceSize,
    sources: list[str],
    coalitions: np.ndarray,
    composed_items: tuple[dict[str, np.ndarray], dict[str, np.ndarray]],
    retrained_items: tuple[dict[str, np.ndarray], dict[str, np.ndarray]],
    seconds: dict[str, float],
    steps: tuple[int, int],
    n_records: int,
    reward_models: dict[str, dict],
) -> None:
    """Write ``fidelity.md`` and ``fidelity.csv`` of the English world.

    ``composed_items`` and ``retrained_items`` hold, per utility, each coalition's numerator of each
    prompt or pair (``[16, items]``) and, for ratio utilities (likelihood per token, the corrected
    generation utilities), the item weights; a utility is their mean (or ratio). Intervals are
    percentile intervals over ``args.n_boot`` bootstrap resamples of the items, the same resample
    for both ways.
    """
    n = len(sources)
    (composed, composed_w), (retrained, retrained_w) = composed_items, retrained_items
    to_values = _shapley_matrix(n)
    rng = np.random.default_rng(args.seed)
    fidelity = MarkdownTable(
        caption="Composed vs retrained coalition models (English world, SmolLM2-135M-Instruct, n = 4, all 16 coalitions)",
        columns=[
            "utility",
            "Spearman (16 coalitions) [90%]",
            "Pearson (16 coalitions) [90%]",
            "Spearman (4 values) [90%]",
            "Pearson (4 values) [90%]",
            "spread retrained / composed",
            "std error retrained / composed",
            "separable",
            "discordant / significant pairs",
            "values composed",
            "values retrained",
        ],
        notes=[
            "rm: the reward models trained on the world's reward-model sets (one for both ways); rubric: the world's "
            "ground-truth rubric rewards of the same completions (in {-1, 0, 1}); (corrected): composed samples "
            "weighed by the sequence-level importance weight (self-normalised over the prompts), against the same "
            "retrained utility; accuracy: preference accuracy on the trusted pairs; likelihood: log-likelihood per "
            "token of their preferred responses. [90%]: bootstrap percentile interval over the prompts or pairs. "
            "spread: max - min of the 16 coalition utilities. std error: of one coalition's utility, mean over the 16 "
            "(bootstrap). separable: the retrained spread exceeds 4 std errors. discordant / significant pairs: of the "
            "120 pairs of coalitions, those whose retrained utilities differ significantly (paired over the items, "
            "95%), and among them those composition orders the other way."
        ],
    )
    rows = []
    utilities = MarkdownTable(
        caption="The 16 coalition utilities, retrained / composed (bootstrap std error of each)",
        columns=["coalition", *composed],
    )
    per_coalition: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
    for name in composed:
        a, b = composed[name], retrained[name]
        wa, wb = composed_w.get(name), retrained_w.get(name)
        ua, ub = _utility(a, wa), _utility(b, wb)
        boot = {key: [] for key in ("s16", "p16", "s4", "p4")}
        ua_boot, ub_boot = [], []
        m = a.shape[1]
        for _ in range(args.n_boot):
            items = rng.integers(m, size=m)
            xa, xb = _utility(a, wa, items), _utility(b, wb, items)
            ua_boot.append(xa)
            ub_boot.append(xb)
            p16, s16 = _corr(xa, xb)
            p4, s4 = _corr(to_values @ xa, to_values @ xb)
            for key, value in (("s16", s16), ("p16", p16), ("s4", s4), ("p4", p4)):
                boot[key].append(value)
        se_a, se_b = np.std(ua_boot, axis=0, ddof=1), np.std(ub_boot, axis=0, ddof=1)
        per_coalition[name] = (ua, ub, se_a, se_b)
        pa, sa = _corr(ua, ub)
        va, vb = to_values @ ua, to_values @ ub
        pv, sv = _corr(va, vb)

        def interval(key: str, point: float, boot: dict[str, list[float]] = boot) -> str:
            values = np.asarray(boot[key], dtype=float)
            values = values[np.isfinite(values)]
            if not np.isfinite(point) or not values.size:
                return "n/a"
            lo, hi = np.quantile(values, [0.05, 0.95])
            return f"{point:.2f} [{lo:.2f}, {hi:.2f}]"

        spread_a, spread_b = float(np.ptp(ua)), float(np.ptp(ub))
        separable = spread_b > 4 * float(se_b.mean())
        discordant, significant, pairs = _discordant(a, b, wa, wb)
        rows.append(
            {
                "utility": name,
                "spearman_coalitions": sa,
                "pearson_coalitions": pa,
                "spearman_values": sv,
                "pearson_values": pv,
                **{f"{k}_q05": float(np.nanquantile(v, 0.05)) for k, v in boot.items()},
                **{f"{k}_q95": float(np.nanquantile(v, 0.95)) for k, v in boot.items()},
                "spread_composed": spread_a,
                "spread_retrained": spread_b,
                "stderr_composed": float(se_a.mean()),
                "stderr_retrained": float(se_b.mean()),
                "separable": separable,
                "discordant_pairs": discordant,
                "significant_pairs": significant,
                **{f"composed_{s}": float(v) for s, v in zip(sources, va, strict=True)},
                **{f"retrained_{s}": float(v) for s, v in zip(sources, vb, strict=True)},
            }
        )
        fidelity.rows.append(
            [
                name,
                interval("s16", sa),
                interval("p16", pa),
                interval("s4", sv),
                interval("p4", pv),
                f"{spread_b:.3f} / {spread_a:.3f}",
                f"{float(se_b.mean()):.3f} / {float(se_a.mean()):.3f}",
                "yes" if separable else "no",
                f"{discordant} / {significant}",
                ", ".join(f"{s} {v:+.3f}" for s, v in zip(sources, va, strict=True)),
                ", ".join(f"{s} {v:+.3f}" for s, v in zip(sources, vb, strict=True)),
            ]
        )
    for r, row in enumerate(coalitions):
        members = "+".join(s for s, member in zip(sources, row, strict=True) if member) or "(base model)"
        utilities.rows.append(
            [
                members,
                *(
                    f"{ub[r]:+.3f} / {ua[r]:+.3f} (±{se_b[r]:.3f} / ±{se_a[r]:.3f})"
                    for ua, ub, se_a, se_b in per_coalition.values()
                ),
            ]
        )
    cost = MarkdownTable(
        caption="Cost (s)",
        columns=["way", "training runs", "steps", "train", "decode", "score", "accuracy", "likelihood", "total"],
        notes=[
            f"Not in the totals: training the two reward models, {seconds['reward_models']:.1f} s, once for both ways "
            f"(held-out pairwise accuracy "
            + ", ".join(f"{o} {r['heldout_accuracy']:.3f}" for o, r in reward_models.items())
            + f"); the warm-up decoding that loads the compose kernel, {seconds['warmup']:.1f} s."
        ],
    )
    for way, runs, way_steps in (("composed", n, steps[0]), ("retrained", 2**n - 1, steps[1])):
        parts = [seconds[f"{way}_{k}"] for k in ("train", "decode", "score", "accuracy", "likelihood")]
        cost.rows.append([way, runs, way_steps, *(f"{x:.1f}" for x in parts), f"{sum(parts):.1f}"])
    notes = [
        f"Settings: `reproduce_recipe(ReproduceSize(pairs_per_source={size.pairs_per_source}, epochs={size.epochs}, "
        f"n_prompts={size.n_prompts}, max_new_tokens={size.max_new_tokens}, learning_rate={size.learning_rate}, "
        f"reward_pairs={size.reward_pairs}))` (max_length {size.max_length}, batch {size.batch_size}; LoRA r 8, "
        "alpha 16, DPO beta 0.1), SmolLM2-135M-Instruct on the CPU in float32. Generation: the world's first "
        f"{size.n_prompts} evaluation prompts (half harmful) through the chat template, {size.max_new_tokens} new "
        f"tokens, temperature 1, seed {args.seed} (common random numbers, the same for both ways). Accuracy and "
        f"likelihood on the world's trusted evaluation pairs, {args.eval_pairs} per objective ({n_records}). A union "
        "is trained on the union of its members' pairs (held-out split as for a source), for the same epochs, so "
        "larger unions take more steps; each union adapter is decoded as the single-source coalition {it} of the "
        f"same composed decoder. Intervals: {args.n_boot} bootstrap resamples."
    ]
    write_csv(args.out / "fidelity.csv", rows)
    write_markdown(
        args.out / "fidelity.md",
        "Fidelity and cost on the real model: composition vs retraining",
        environment(("torch", "transformers", "trl", "peft")),
        [fidelity, cost, utilities],
        preamble=notes,
    )
    plot_values(args.out / "fidelity.csv", args.out / "fidelity_values.png")
    print((args.out / "fidelity.md").read_text())


def plot_values(csv_path: Path, png_path: Path) -> None:
    """Each source's value composed (y) against retrained (x), one panel per utility (uncorrected).

    Reads the ``fidelity.csv`` of an English run (``composed_<source>``, ``retrained_<source>``,
    ``spearman_coalitions`` per utility row); a point on the diagonal is a source composition
    values as retraining does.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with csv_path.open(encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if not r["utility"].endswith("(corrected)")]
    sources = [k.removeprefix("composed_") for k in rows[0] if k.startswith("composed_")]
    cols = 3
    fig, axes = plt.subplots((len(rows) + cols - 1) // cols, cols, figsize=(4 * cols, 3.8 * ((len(rows) + 2) // cols)))
    for ax, row in zip(np.ravel(axes), rows, strict=False):
        x = np.array([float(row[f"retrained_{s}"]) for s in sources])
        y = np.array([float(row[f"composed_{s}"]) for s in sources])
        lo, hi = min(x.min(), y.min()), max(x.max(), y.max())
        pad = 0.1 * (hi - lo or 1.0)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.7", lw=1)
        ax.axhline(0, color="0.85", lw=0.8)
        ax.axvline(0, color="0.85", lw=0.8)
        ax.scatter(x, y, color="C0")
        for name, a, b in zip(sources, x, y, strict=True):
            ax.annotate(name, (a, b), textcoords="offset points", xytext=(4, 4), fontsize=8)
        separable = "" if row.get("separable") == "True" else ", not separable"
        ax.set_title(
            f"{row['utility']}: Spearman {float(row['spearman_coalitions']):.2f} (16 coalitions){separable}",
            fontsize=9,
        )
        ax.set_xlabel("Shapley value, retrained unions")
        ax.set_ylabel("Shapley value, composed")
    for ax in np.ravel(axes)[len(rows) :]:
        ax.axis("off")
    fig.suptitle("Composition against retraining: each source's value (SmolLM2-135M-Instruct, English world)")
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)


#: The English world's defaults, sized for a CPU run of hours (measured times: bench/RESULTS.md).
ENGLISH_DEFAULTS = {
    "pairs": 32,
    "prompts": 128,
    "max_new_tokens": 16,
    "eval_pairs": 64,
    "epochs": CPU_SIZES.epochs,
    "learning_rate": CPU_SIZES.learning_rate,
    "reward_pairs": CPU_SIZES.reward_pairs,
}
TOY_DEFAULTS = {"prompts": 32, "max_new_tokens": 16}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--world", choices=("toy", "english"), default="toy")
    parser.add_argument("--prompts", type=int, help="evaluation prompts (default: toy 32, english 128)")
    parser.add_argument("--max-new-tokens", type=int, help="tokens generated per prompt (default: 16)")
    parser.add_argument("--pairs", type=int, help="english: training pairs per source (default 32)")
    parser.add_argument("--learning-rate", type=float, help="english: DPO learning rate (default: the CPU preset's)")
    parser.add_argument("--reward-pairs", type=int, help="english: reward-model pairs per objective")
    parser.add_argument("--n-boot", type=int, default=1000, help="english: bootstrap resamples of the items")
    parser.add_argument("--epochs", type=float, help=f"english: epochs per adapter (default {CPU_SIZES.epochs})")
    parser.add_argument(
        "--eval-pairs",
        type=int,
        help=f"english: trusted pairs per objective (default 64; at most {ENGLISH_EVAL_PAIRS})",
    )
    parser.add_argument(
        "--work",
        type=Path,
        help="english: keep the runs here (a rerun reuses finished adapters); default a temp folder",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="results folder (default: results/, english: results/english/)")
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="CSV",
        help="english: only redraw fidelity_values.png beside an existing fidelity.csv",
    )
    args = parser.parse_args()
    if args.plot is not None:
        plot_values(args.plot, args.plot.with_name("fidelity_values.png"))
        return
    if args.world == "toy":
        given = [
            f"--{k.replace('_', '-')}"
            for k in ("pairs", "epochs", "eval_pairs", "learning_rate", "reward_pairs")
            if getattr(args, k) is not None
        ]
        if given:
            parser.error(f"{', '.join(given)} only apply to --world english")
        defaults: dict = {**TOY_DEFAULTS, "out": HERE / "results"}
    else:
        defaults = {**ENGLISH_DEFAULTS, "out": HERE / "results" / "english"}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.world == "english" and args.prompts > max_eval_prompts(0):
        parser.error(f"--prompts: the English world has {max_eval_prompts(0)} evaluation prompts")
    if args.world == "english":
        with quiet_libraries():  # the libraries' deprecation notices, hidden as the CLI hides them
            _english(args)
    else:
        _toy(args)


if __name__ == "__main__":
    main()

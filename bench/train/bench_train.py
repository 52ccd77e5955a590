"""Benchmark of per-source DPO training (``dposhap train``): wall time and peak memory per source.

Setups
------
``toy``
    The built-in toy world from ``examples/toy.toml`` (4 sources) in a fresh run directory:
    the toy world's build (tokenizer, pretraining, pairs), then one TRL DPO + LoRA run per
    source. Target: the whole thing in <= 2 minutes on a 2-core CPU machine.
``realistic``
    A randomly initialised model of realistic shape (Qwen2 0.5B: 24 layers, d = 896, vocabulary
    151,936), saved to a local folder and loaded by path like any user model, trained for a few
    steps on synthetic long pairs with the same code path. On a GPU by default (skipped without
    one); ``--realistic-cpu`` runs a shorter version on the CPU.

Results: ``results/train.md`` and ``.csv`` with the machine, versions and date.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))  # bench/_harness.py

import torch  # noqa: E402

from _harness import MarkdownTable, environment, write_csv, write_markdown  # noqa: E402
from dposhap.config import load_config  # noqa: E402
from dposhap.train import train_sources  # noqa: E402
from dposhap.worlds import toy  # noqa: E402

PACKAGES = ("torch", "transformers", "trl", "peft", "datasets")


def bench_toy(work: Path) -> tuple[list[dict], dict]:
    """Train the 4-source toy world from scratch; per-source rows and the totals."""
    cfg = load_config(ROOT / "examples" / "toy.toml", ["model.device=cpu"])
    run = work / "toy-run"
    started = time.perf_counter()
    settings = cfg.worlds["toy"]
    world = toy.build_toy_world(
        run / "world", seed=settings.seed, sources=settings.sources, pairs_per_source=settings.pairs_per_source
    )
    build_s = time.perf_counter() - started
    manifest = train_sources(cfg, run, progress=False).to_dict()
    total_s = time.perf_counter() - started
    rows = []
    for name, entry in manifest["sources"].items():
        rows.append(
            {
                "setup": "toy",
                "source": name,
                "device": "cpu",
                "pairs": entry["n_train"],
                "steps": entry["metrics"]["steps"],
                "train_s": entry["timings"]["train_s"],
                "eval_s": entry["timings"]["eval_s"],
                "peak_memory_mb": entry["timings"]["peak_memory_mb"],
                "memory": entry["timings"]["memory"],
                "heldout_acc": entry["metrics"]["heldout_reward_accuracy"],
            }
        )
    totals = {"build_s": build_s, "total_s": total_s, "sources": list(world.sources)}
    return rows, totals


def _realistic_model(folder: Path, vocab: int) -> None:
    """A randomly initialised Qwen2-0.5B-shaped model and a word-level tokenizer, saved locally."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    words = ["<pad>", "<eos>"] + [f"t{i}" for i in range(vocab - 2)]
    tk = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>")
    config = Qwen2Config(
        vocab_size=vocab,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=1,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def bench_realistic(
    work: Path, device: str, steps: int, prompt_len: int, completion_len: int, batch: int
) -> list[dict]:
    """A few DPO steps of two sources on the 0.5B-shaped model; per-source rows."""
    vocab = 151936
    model_dir = work / "qwen2-0.5b-random"
    _realistic_model(model_dir, vocab)
    rng = random.Random(0)
    data = work / "realistic-data"
    data.mkdir()

    def text(n: int) -> str:
        return " ".join(f"t{rng.randrange(vocab - 2)}" for _ in range(n))

    for source in ("a", "b"):
        with open(data / f"{source}.jsonl", "w", encoding="utf-8") as handle:
            for _ in range(max(16, 2 * batch * steps)):
                row = {
                    "prompt": text(prompt_len),
                    "chosen": " " + text(completion_len),
                    "rejected": " " + text(completion_len),
                }
                handle.write(json.dumps(row) + "\n")
    config = work / "realistic.toml"
    config.write_text(
        f"[model]\nbase = {json.dumps(str(model_dir))}\ndevice = {json.dumps(device)}\n"
        "[data.sources]\na = 'realistic-data/a.jsonl'\nb = 'realistic-data/b.jsonl'\n"
        f"[dpo]\nmax_steps = {steps}\nper_device_train_batch_size = {batch}\n"
        f"max_length = {prompt_len + completion_len + 8}\n",
        encoding="utf-8",
    )
    manifest = train_sources(config, work / "realistic-run", progress=False).to_dict()
    rows = []
    for name, entry in manifest["sources"].items():
        rows.append(
            {
                "setup": f"qwen2-0.5b-shape ({prompt_len}+{completion_len} tokens, batch {batch})",
                "source": name,
                "device": device,
                "pairs": entry["n_train"],
                "steps": entry["metrics"]["steps"],
                "train_s": entry["timings"]["train_s"],
                "eval_s": entry["timings"]["eval_s"],
                "peak_memory_mb": entry["timings"]["peak_memory_mb"],
                "memory": entry["timings"]["memory"],
                "heldout_acc": entry["metrics"]["heldout_reward_accuracy"],
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-toy", action="store_true")
    parser.add_argument("--realistic-cpu", action="store_true", help="also run a short realistic-shape run on the CPU")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()

    rows: list[dict] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="dposhap-bench-train-") as tmp:
        work = Path(tmp)
        if not args.skip_toy:
            toy_rows, totals = bench_toy(work)
            rows += toy_rows
            notes.append(
                f"Toy world ({', '.join(totals['sources'])}): build {totals['build_s']:.1f} s, "
                f"build + training of every source {totals['total_s']:.1f} s "
                f"(target <= 120 s on a 2-core CPU)."
            )
        if torch.cuda.is_available():
            rows += bench_realistic(work / "gpu", "cuda", steps=10, prompt_len=256, completion_len=256, batch=4)
        else:
            notes.append("No GPU in this run: the realistic-shape rows on a GPU are missing.")
        if args.realistic_cpu:
            rows += bench_realistic(work / "cpu", "cpu", steps=2, prompt_len=64, completion_len=64, batch=2)
        shutil.rmtree(work, ignore_errors=True)

    table = MarkdownTable(
        caption="Per-source DPO + LoRA training",
        columns=[
            "setup",
            "source",
            "device",
            "pairs",
            "steps",
            "train s",
            "eval s",
            "s/step",
            "peak MB",
            "memory",
            "held-out acc",
        ],
    )
    for r in rows:
        table.rows.append(
            [
                r["setup"],
                r["source"],
                r["device"],
                r["pairs"],
                r["steps"],
                f"{r['train_s']:.1f}",
                f"{r['eval_s']:.1f}",
                f"{r['train_s'] / max(r['steps'], 1):.2f}",
                f"{r['peak_memory_mb']:.0f}",
                r["memory"],
                "-" if r["heldout_acc"] is None else f"{r['heldout_acc']:.3f}",
            ]
        )
    table.notes = [
        "peak MB: resident set size of the process (CPU, sampled every 20 ms) or the CUDA allocator's "
        "peak (GPU), during that source's training and evaluation."
    ]
    write_csv(args.out / "train.csv", rows)
    write_markdown(args.out / "train.md", "Training benchmark", environment(PACKAGES), [table], preamble=notes)
    print((args.out / "train.md").read_text())


if __name__ == "__main__":
    main()

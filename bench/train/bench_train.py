"""Benchmark of per-source DPO training (``dposhap train``): wall time and peak memory per source.

Setups
------
``toy``
    The built-in toy world from ``examples/toy.toml`` (4 sources) in a fresh run directory:
    the toy world's build (tokenizer, pretraining, pairs), then one TRL DPO + LoRA run per
    source. Target: the whole thing in <= 2 minutes on a CPU (the machine is recorded in bench/RESULTS.md).
``realistic``
    A randomly initialised model of realistic shape (Qwen2 0.5B: 24 layers, d = 896, vocabulary
    151,936), saved to a local folder and loaded by path like any user model, trained for a few
    steps on synthetic long pairs with the same code path. On a GPU by default (skipped without
    one); ``--realistic-cpu`` runs a shorter version on the CPU.
``smollm2`` (``--smollm2``)
    The real SmolLM2-135M-Instruct (``model.base = "smollm2-135m-instruct"``, the GGUF file of the
    ``smollm2`` extra, converted once into the model cache) trained for a few steps at batch 4 on
    chat-format pairs truncated to 256 tokens: seconds per step (the training steps alone; the
    tokenising and reference log-probs pass is "setup s") and peak memory, once per CPU thread
    count in ``--threads`` (the conversion, if the cache lacks it, is timed apart).

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


_WORDS = (
    "the a model answer question river city garden number kind short long clear polite data source value "
    "learn train good bad help explain small large simple careful reason fact list step time day people "
    "water light paper music story friend house road tree window table chair book letter word idea plan"
).split()


def _chat_pairs(path: Path, n: int, rng: random.Random, prompt_words: int, response_words: int) -> None:
    """``n`` chat-format pairs of random English words, long enough to be truncated at 256 tokens."""

    def words(count: int) -> str:
        return " ".join(rng.choice(_WORDS) for _ in range(count)).capitalize() + "."

    with open(path, "w", encoding="utf-8") as handle:
        for _ in range(n):
            row = {
                "prompt": [{"role": "user", "content": words(prompt_words)}],
                "chosen": [{"role": "assistant", "content": words(response_words)}],
                "rejected": [{"role": "assistant", "content": words(response_words)}],
            }
            handle.write(json.dumps(row) + "\n")


def bench_smollm2(work: Path, device: str, steps: int, batch: int, max_length: int, threads: int) -> tuple[dict, float]:
    """A few DPO steps of one source on SmolLM2-135M-Instruct with ``threads`` CPU threads; its row and the conversion time."""
    from dposhap.models import resolve_model

    started = time.perf_counter()
    ref = resolve_model("smollm2-135m-instruct")  # converts into the model cache the first time
    convert_s = time.perf_counter() - started
    folder = work / f"smollm2-{device}-{threads}"
    folder.mkdir(parents=True)
    n_pairs = int(steps * batch / 0.8) + 2  # 20% held out
    _chat_pairs(folder / "pairs.jsonl", n_pairs, random.Random(0), prompt_words=120, response_words=120)
    config = folder / "smollm2.toml"
    config.write_text(
        f"[model]\nbase = 'smollm2-135m-instruct'\ndevice = {json.dumps(device)}\n"
        "[data.sources]\nchat = 'pairs.jsonl'\n"
        f"[dpo]\nmax_steps = {steps}\nper_device_train_batch_size = {batch}\nmax_length = {max_length}\n",
        encoding="utf-8",
    )
    # the thread count asked for, not the one the thread policy picks (one thread for this model)
    config.write_text(config.read_text(encoding="utf-8").replace("[model]\n", f"[model]\nthreads = {threads}\n"))
    manifest = train_sources(config, folder / "run", progress=False)
    entry = manifest.sources["chat"]
    row = {
        "setup": f"smollm2-135m-instruct (batch {batch}, {max_length} tokens, {threads} thread{'s' * (threads > 1)})",
        "source": "chat",
        "device": device,
        "pairs": entry.n_train,
        "steps": entry.metrics["steps"],
        "setup_s": entry.timings["setup_s"],
        "train_s": entry.timings["train_s"],
        "s_per_step": entry.timings["s_per_step"],
        "eval_s": entry.timings["eval_s"],
        "peak_memory_mb": entry.timings["peak_memory_mb"],
        "memory": entry.timings["memory"],
        "heldout_acc": entry.metrics["heldout_reward_accuracy"],
        "threads": threads,
        "origin_sha256": (manifest.base_model.origin_sha256 or "")[:16],
    }
    assert ref.origin_sha256 == manifest.base_model.origin_sha256
    return row, convert_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-toy", action="store_true")
    parser.add_argument("--realistic-cpu", action="store_true", help="also run a short realistic-shape run on the CPU")
    parser.add_argument("--smollm2", action="store_true", help="also train SmolLM2-135M-Instruct for a few steps")
    parser.add_argument("--smollm2-steps", type=int, default=3, help="DPO steps of the SmolLM2 rows")
    parser.add_argument("--threads", default="1,2", help="CPU thread counts of the SmolLM2 rows (comma-separated)")
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
        if args.smollm2:
            devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
            for device in devices:
                for threads in [int(t) for t in args.threads.split(",")] if device == "cpu" else [1]:
                    row, convert_s = bench_smollm2(
                        work / "smollm2", device, steps=args.smollm2_steps, batch=4, max_length=256, threads=threads
                    )
                    rows.append(row)
                    if convert_s > 1.0:
                        notes.append(
                            f"SmolLM2-135M-Instruct GGUF -> plain model folder (once, then cached): {convert_s:.1f} s."
                        )
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
                f"{r.get('s_per_step', r['train_s'] / max(r['steps'], 1)):.2f}",
                f"{r['peak_memory_mb']:.0f}",
                r["memory"],
                "-" if r["heldout_acc"] is None else f"{r['heldout_acc']:.3f}",
            ]
        )
    table.notes = [
        "peak MB: resident set size of the process (CPU, sampled every 20 ms) or the CUDA allocator's "
        "peak (GPU), during that source's training and evaluation.",
        "s/step: the training steps alone where the run records it (SmolLM2 rows: reference log-probs are "
        "computed once before the first step, in setup s), else train s / steps.",
    ]
    write_csv(args.out / "train.csv", rows)
    write_markdown(args.out / "train.md", "Training benchmark", environment(PACKAGES), [table], preamble=notes)
    print((args.out / "train.md").read_text())


if __name__ == "__main__":
    main()

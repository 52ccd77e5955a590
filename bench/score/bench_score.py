"""Teacher-forced scoring: the plain way against dposhap's (issue 22).

Setup (one function): a causal LM with two LoRA adapters and ``pairs`` preference pairs of
random tokens (a shared prompt, a chosen and a rejected response); the work of
``margins_matrix`` with two sources: summed response log-probabilities of every chosen and
rejected response under the reference (adapters off) and each adapter. Providers:

- ``plain``: one forward per policy and batch, the whole vocabulary's logits at every position,
  float32 ``log_softmax``, gather, sum (``response_logprobs(path="plain")``, the reference);
- ``head``: the LM head only at response positions, fused with the log-normaliser and chunked
  over the vocabulary (``dposhap.compose.head``, ``auto`` backend), every sequence run whole;
- ``head+cache``: the same, each pair's prompt run once and its KV cache reused for both
  responses (``response_logprobs(shared_prompts=2)``, what ``margins_matrix`` runs).

Each provider runs in its own process, which builds (or loads) the model first: time is the
median of ``--repeats`` runs after a warm-up, peak memory is the process's peak resident set
during the runs above its resident set after the warm-up (the model, the libraries' pages, the
kernel; the warm-up's freed heap handed back with ``malloc_trim``, the peak reset through
``/proc/self/clear_refs``); on CUDA, ``torch.cuda.max_memory_allocated`` above the loaded model. The results agree: the largest difference of any log-probability
from the plain path's is reported.

A second table says whether one multi-adapter pass (the reference and every adapter as blocks of
rows of one batch, as the decoder runs them) would pay here: the head+cache path's time per pair
with the base model alone at ``batch`` pairs and at ``3 x batch`` pairs per forward.

Also printed: the projected peak memory of the logits for a 7B model, a 128,256-token
vocabulary and a batch of 16 pairs of 1,024-token sequences (formula in :func:`projection`).

Models: ``--model tiny`` (default) is a randomly initialised Llama-shaped model with SmolLM2's
vocabulary (49,152 tokens) and a small decoder; ``--model smollm2`` is SmolLM2-135M-Instruct
(the ``smollm2`` extra's GGUF file) with random LoRA adapters; ``--model head7b --device cuda``
is a randomly initialised model with a 7B model's width, LM head and vocabulary (Llama 3:
4,096, 128,256 tokens) but two layers, in bfloat16, to measure on a GPU what the projection
states (peak: ``torch.cuda.max_memory_allocated`` above the loaded model). Results:
``results/<model>/score.md`` and ``.csv``.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # bench/_harness.py

from _harness import MarkdownTable, environment, write_csv, write_markdown  # noqa: E402

PROVIDERS = ("plain", "head", "head+cache")
SOURCES = ("north", "south")


class _PadOnly:
    """The tokenizer as response_logprobs reads it: the padding id only."""

    pad_token_id = 0
    eos_token_id = 0


def _rss_kib(field: str) -> int:
    with open("/proc/self/status", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def setup(
    model_name: str, pairs: int, prompt: int, response: int, device: str = "cpu", seed: int = 0
) -> tuple[Any, list, int]:
    """The model (with two LoRA adapters) and the sequences: ``(ids, n_prompt)``, chosen then rejected."""
    import numpy as np
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    if model_name == "head7b":  # a 7B model's width, head and vocabulary (Llama 3), two layers, bf16
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(
            vocab_size=128256,
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=2,
            num_attention_heads=32,
            num_key_value_heads=8,
            max_position_embeddings=4096,
        )
        with torch.device(device):
            base = LlamaForCausalLM(config).to(torch.bfloat16)
    elif model_name == "tiny":
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(
            vocab_size=49152,
            hidden_size=192,
            intermediate_size=512,
            num_hidden_layers=6,
            num_attention_heads=3,
            num_key_value_heads=1,
            max_position_embeddings=2048,
            tie_word_embeddings=True,
        )
        base = LlamaForCausalLM(config)
    else:
        from dposhap.models import load_base_model, resolve_model

        base = load_base_model(resolve_model("smollm2-135m-instruct"), dtype=torch.float32, device="cpu")
    base.to(device).eval()
    lora = LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], init_lora_weights=False
    )
    model = get_peft_model(base, lora, adapter_name=SOURCES[0])
    model.add_adapter(SOURCES[1], lora)
    model.to(device).eval()
    rng = np.random.default_rng(seed)
    vocab = base.config.vocab_size
    prompts = [list(rng.integers(3, vocab, size=int(rng.integers(prompt // 2, prompt + 1)))) for _ in range(pairs)]
    sequences = []
    for _field in ("chosen", "rejected"):
        for p in prompts:
            r = list(rng.integers(3, vocab, size=int(rng.integers(response // 2, response + 1))))
            sequences.append(([int(t) for t in p + r], len(p)))
    return model, sequences, vocab


def score_all(model: Any, sequences: list, provider: str, batch: int) -> Any:
    """Summed response log-probabilities under the reference and each adapter: float64 ``[3, 2 * pairs]``."""
    import numpy as np

    from dposhap.evaluate.teacher import policy, response_logprobs

    path = "plain" if provider == "plain" else "head"
    shared = 2 if provider == "head+cache" else 1
    out = []
    for adapter in (None, *SOURCES):
        with policy(model, adapter):
            out.append(
                response_logprobs(
                    model,
                    _PadOnly(),  # type: ignore[arg-type]
                    sequences,
                    batch_size=2 * batch,
                    device=None,
                    shared_prompts=shared,
                    path=path,  # type: ignore[arg-type]
                )
            )
    return np.stack(out)


def child(args: argparse.Namespace) -> None:
    """One provider in this process: build, reset the peak, time, measure, print JSON."""
    import torch

    from dposhap.evaluate.teacher import response_logprobs

    torch.set_num_threads(args.threads)
    model, sequences, _ = setup(args.model, args.pairs, args.prompt, args.response, args.device)
    cuda = args.device == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    if args.provider == "rows":  # one multi-adapter pass: the base model at batch and 3 x batch pairs
        out: dict[str, Any] = {}
        for factor in (1, 3):
            times = []
            with model.disable_adapter():
                for _ in range(args.repeats + 1):
                    sync()
                    t0 = time.perf_counter()
                    response_logprobs(
                        model,
                        _PadOnly(),  # type: ignore[arg-type]
                        sequences,
                        batch_size=2 * args.batch * factor,
                        device=None,
                        shared_prompts=2,
                    )
                    sync()
                    times.append(time.perf_counter() - t0)
            out[str(factor)] = statistics.median(times[1:]) / args.pairs
        print("RESULT " + json.dumps(out))
        return
    warm = [s for i, s in enumerate(sequences) if i % args.pairs < args.batch]  # a batch of pairs
    score_all(model, warm, args.provider, args.batch)  # warm-up: builds or loads the kernel, pages in the libraries
    gc.collect()
    try:  # hand the warm-up's freed heap back, so that the peak below is the runs' own
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    rss_loaded = _rss_kib("VmRSS")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        gpu_loaded = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    try:
        with open("/proc/self/clear_refs", "w", encoding="utf-8") as fh:
            fh.write("5")  # reset the peak resident set to the current one
        reset = True
    except OSError:
        reset = False
    times, values = [], None
    for _ in range(args.repeats):
        sync()
        t0 = time.perf_counter()
        values = score_all(model, sequences, args.provider, args.batch)
        sync()
        times.append(time.perf_counter() - t0)
    peak = _rss_kib("VmHWM")
    if cuda:  # the device's peak above the loaded model, not the host's
        peak, rss_loaded = torch.cuda.max_memory_allocated() // 1024, gpu_loaded // 1024
    out_path = Path(args.values)
    import numpy as np

    np.save(out_path, values)
    print(
        "RESULT "
        + json.dumps(
            {
                "seconds": statistics.median(times),
                "peak_mb": (peak - rss_loaded) / 1024,
                "peak_reset": reset,
                "loaded_mb": rss_loaded / 1024,
            }
        )
    )


def run_child(args: argparse.Namespace, provider: str, values: Path) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--provider",
        provider,
        "--values",
        str(values),
        *(
            f"--{k}={getattr(args, k)}"
            for k in ("model", "pairs", "prompt", "response", "batch", "repeats", "threads", "device")
        ),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"{provider} failed:\n{proc.stderr[-3000:]}")


def projection(
    params_b: float = 7.0, vocab: int = 128256, hidden: int = 4096, pairs: int = 16, length: int = 1024
) -> dict[str, float]:
    """Projected peak memory (GB) of the logits alone for one batch of ``pairs`` pairs of
    ``length``-token sequences, half prompt and half response, bf16 model.

    Plain: bf16 logits at every position, their float32 copy and the float32 ``log_softmax``:
    ``2 * pairs * length * vocab * (2 + 4 + 4)`` bytes. dposhap: the selected hidden states of
    the response positions (``T = 2 * pairs * length / 2``, bf16) and one ``[T, chunk]`` bf16
    block of logits, ``chunk = max(256, 2^22 / T)``, plus 12 bytes of float32 state per row:
    ``T * (2 * hidden + 2 * chunk + 12)``. The decoder's own activations and KV cache are the
    same in both (smaller in dposhap's, which runs each prompt once) and left out.
    """
    tokens = 2 * pairs * length
    plain = tokens * vocab * 10
    scored = tokens // 2
    chunk = max(256, (1 << 22) // scored)
    ours = scored * (2 * hidden + 2 * chunk + 12)
    return {"plain_gb": plain / 1e9, "ours_gb": ours / 1e9, "params_b": params_b}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=("tiny", "smollm2", "head7b"), default="tiny")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--pairs", type=int, default=24)
    parser.add_argument("--prompt", type=int, default=96, help="longest prompt (tokens); prompts are 1/2 to 1 of it")
    parser.add_argument("--response", type=int, default=64, help="longest response (tokens)")
    parser.add_argument("--batch", type=int, default=8, help="pairs per forward pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-rows", action="store_true", help="skip the multi-adapter-pass table")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--provider", default="plain", help=argparse.SUPPRESS)
    parser.add_argument("--values", default="", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    import numpy as np

    out_dir = args.out or HERE / "results" / args.model
    out_dir.mkdir(parents=True, exist_ok=True)
    results, values, failures = {}, {}, {}
    for provider in PROVIDERS:
        path = out_dir / f"values-{provider.replace('+', '-')}.npy"
        try:
            results[provider] = run_child(args, provider, path)
        except RuntimeError as err:  # out of memory, say: the others still run
            failures[provider] = str(err).strip().splitlines()[-1][:160]
            print(provider, "FAILED", failures[provider], flush=True)
            continue
        values[provider] = np.load(path)
        path.unlink()
        print(provider, results[provider], flush=True)
    base = results.get("plain", {"seconds": float("nan"), "peak_mb": 0.0})
    rows, csv_rows = [], []
    for provider in PROVIDERS:
        if provider in failures:
            rows.append([provider, "failed: " + failures[provider], "-", "-", "-", "-"])
            continue
        r = results[provider]
        diff = float(np.abs(values[provider] - values["plain"]).max()) if "plain" in values else float("nan")
        rows.append(
            [
                provider,
                f"{r['seconds']:.2f}",
                f"{base['seconds'] / r['seconds']:.2f}x",
                f"{r['peak_mb']:.0f}",
                f"{r['peak_mb'] / base['peak_mb']:.2f}" if base["peak_mb"] > 0 else "-",
                f"{diff:.1e}",
            ]
        )
        csv_rows.append({"provider": provider, **r, "max_abs_diff": diff})
    tables = [
        MarkdownTable(
            f"{args.pairs} pairs x (reference + {len(SOURCES)} adapters), {args.batch} pairs per forward, "
            f"model {args.model}",
            ["provider", "median s", "speed-up", "peak MB above model", "peak / plain", "max |diff| vs plain"],
            rows,
        )
    ]
    if not args.no_rows:
        per_pair = run_child(args, "rows", out_dir / "unused.npy")
        tables.append(
            MarkdownTable(
                "Would one multi-adapter pass pay? head+cache, base model, seconds per pair",
                ["pairs per forward", "s / pair"],
                [[str(args.batch), f"{per_pair['1']:.4f}"], [str(3 * args.batch), f"{per_pair['3']:.4f}"]],
            )
        )
        csv_rows.append({"provider": "rows", **per_pair})
    p = projection()
    tables.append(
        MarkdownTable(
            "Projected logits memory: 7B, vocabulary 128,256, 16 pairs of 1,024-token sequences, bf16",
            ["path", "GB"],
            [["plain", f"{p['plain_gb']:.1f}"], ["dposhap (head, chunked)", f"{p['ours_gb']:.2f}"]],
            notes=[str(projection.__doc__).strip().replace("\n    ", " ")],
        )
    )
    import torch

    env = environment(["torch", "transformers", "peft"])
    env["torch threads"] = str(args.threads)
    env["device"] = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    env["setting"] = (
        f"{args.pairs} pairs, prompts {args.prompt // 2}-{args.prompt} tokens, responses "
        f"{args.response // 2}-{args.response} tokens, {'bfloat16' if args.model == 'head7b' else 'float32'}, "
        f"torch {torch.__version__}"
    )
    write_csv(out_dir / "score.csv", csv_rows)
    write_markdown(out_dir / "score.md", "Teacher-forced scoring: plain vs dposhap", env, tables)
    print((out_dir / "score.md").read_text())


if __name__ == "__main__":
    main()

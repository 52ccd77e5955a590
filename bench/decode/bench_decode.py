"""Benchmark of batched composed decoding: tokens per second against the naive way.

Setup (one function, :func:`setup`): ``n = 4`` sources, each a LoRA adapter (r = 8, every
linear layer but the LM head) with random ``lora_B`` on one shared base; ``K = 16`` coalitions
(every subset of the 4 sources, the empty one included); ``B = 32`` prompts; temperature 1.
Shapes:

``toy``
    The toy world's pretrained tiny Llama (2 layers, d = 64, vocabulary 68) and its held-out
    prompts; completions end with an EOS after 4 to 8 words. CPU.
``cpu-512``
    A randomly initialised Llama (4 layers, d = 512, vocabulary 32,000), so that the model's
    forward dominates; prompts of 8 to 24 random words. CPU.
``smollm2``
    The real SmolLM2-135M-Instruct (30 layers, d = 576, vocabulary 49,152; the GGUF file of the
    ``smollm2`` extra, converted once) on B = 16 of the English world's evaluation prompts through
    its chat template, 32 new tokens. CPU. Its final norm is left as trained; only the adapters'
    ``lora_B`` are scaled.
``qwen2-0.5b``
    A randomly initialised model of realistic shape (Qwen2 0.5B: 24 layers, d = 896, vocabulary
    151,936, bf16); prompts of 16 to 48 random words. CUDA only.

The random models' final norm is scaled so that the reference's logits have a standard
deviation of about 4 (a next-token entropy like a trained model's rather than a uniform
distribution), and the adapters' ``lora_B`` so that each adapter shifts the logits by a
standard deviation of about 1: strong adapters, which make coalitions disagree more (and share
fewer rows) than DPO adapters usually do. Both are measured and reported.

Providers:

- ``ours``: :class:`dposhap.evaluate.decoding.ComposedDecoder` with its defaults (prefill once per (model,
  prompt), one PEFT mixed-adapter forward per step over the live (model, prefix) rows, rows
  shared between coalitions while their samples coincide, hidden-state fast path, compose kernel
  sampling with common random numbers);
- ``ours-no-sharing``: the same with ``share_prefixes=False`` (only the prefill is shared);
- ``ours-peft-lora``: the same with ``mixed_lora="peft"``: PEFT's own mixed-adapter batch
  inference (``adapter_names``) instead of the engine's LoRA over contiguous row blocks;
- ``naive``: one generate-style loop per coalition: each model it needs (the base model and each
  member's adapter merged into its own copy of the base) prefills the B prompts and steps with
  its own KV cache, the logits are combined in Python (``l_ref + sum w (l_i - l_ref)``), top-k /
  softmax / ``torch.multinomial``; finished sequences stay in the batch (padded) until all end.

Tokens per second count the sampled tokens of live sequences (the EOS included) in each
provider's own run. Median wall time over interleaved repeats; ratios are from the same run.
Results: ``results/decode.md`` and ``.csv``. ``--quick`` runs the toy shape with fewer repeats
into ``results/quick/``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from itertools import product
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # bench/_harness.py

import torch  # noqa: E402
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from transformers import DynamicCache  # noqa: E402

from _harness import MarkdownTable, Provider, environment, write_csv, write_markdown  # noqa: E402
from dposhap.evaluate.decoding import ComposedDecoder, DecodeConfig, cache_keyword  # noqa: E402

PACKAGES = ("torch", "transformers", "peft", "numpy")
N_SOURCES, N_PROMPTS = 4, 32
SMOLLM2_PROMPTS = 16  # issue 10's setting on the real model: K = 16 coalitions x B = 16 prompts
SOURCES = [f"source{i}" for i in range(N_SOURCES)]
LOGIT_STD, ADAPTER_SHIFT_STD = 4.0, 1.0
SHAPES = {
    # name: (device, max_new_tokens, prompt words, repeats)
    "toy": ("cpu", 16, None, 9),
    "cpu-512": ("cpu", 8, (8, 24), 2),
    "smollm2": ("cpu", 32, None, 2),
    "qwen2-0.5b": ("cuda", 32, (16, 48), 3),
}


WHERE_THE_TIME_GOES = (
    "Where the time goes. Ours does one forward per step where the naive way does one per coalition and model, "
    "prefills each (model, prompt) once instead of once per coalition, applies the LM head once per sequence "
    "(hidden-state path) instead of once per model row, and merges the rows of coalitions whose samples coincide. "
    "When a forward costs little compute (toy), the count of forwards dominates and ours wins by the most. When "
    "the model's arithmetic dominates (cpu-512 on the CPU), every member of a coalition still needs its own row at "
    "every step, so the saving is bounded by the prefill, the LM head and the merged rows; on top of that the "
    "compose kernel draws the Gumbel noise of every (sequence, token) afresh, although the K coalitions of a "
    "prompt share it (common random numbers): a profile of ours on cpu-512 puts a third or more of its time in "
    "the kernel (512 rows x 32,000 tokens per step on one thread), about as much as in the model's linear layers."
)


@dataclass
class Setup:
    """Everything a provider needs, built once per shape."""

    name: str
    device: str
    model: PeftModel  # the base with one adapter per source
    merged: list[torch.nn.Module]  # the naive way's models: the base, then each source merged into its own copy
    tokenizer: object
    prompts: list[str]
    coalitions: np.ndarray  # [K, n] bool
    config: DecodeConfig
    logit_std: float
    adapter_shift_std: float


def _word_tokenizer(vocab: int):
    """A word-level tokenizer over ``vocab`` words ``t3``.. with ``<s>``, ``</s>``, ``<pad>``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = ["<s>", "</s>", "<pad>"] + [f"t{i}" for i in range(3, vocab)]
    backend = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def _random_model(shape: str, vocab: int, device: str):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    if shape == "cpu-512":
        config = LlamaConfig(
            vocab_size=vocab,
            hidden_size=512,
            intermediate_size=1376,
            num_hidden_layers=4,
            num_attention_heads=8,
            num_key_value_heads=8,
            max_position_embeddings=256,
            tie_word_embeddings=False,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=2,
        )
        return LlamaForCausalLM(config).to(device).eval()
    config = Qwen2Config(
        vocab_size=vocab,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
    )
    return Qwen2ForCausalLM(config).to(device=device, dtype=torch.bfloat16).eval()


def _last_logits(model: PeftModel, tokenizer, prompts: list[str], adapter: str) -> torch.Tensor:
    batch = tokenizer(prompts, return_tensors="pt", padding=True).to(model.device)
    with torch.inference_mode():
        out = model(**batch, adapter_names=[adapter] * len(prompts), logits_to_keep=1)
    return out.logits[:, -1].float()


def _shift_std(model: PeftModel, tokenizer, prompts: list[str]) -> float:
    """Mean over the adapters of the standard deviation of ``l_i - l_ref`` at the prompts' last token."""
    ref = _last_logits(model, tokenizer, prompts, "__base__")
    return float(np.mean([(_last_logits(model, tokenizer, prompts, s) - ref).std().item() for s in SOURCES]))


def setup(shape: str, work: Path) -> Setup:
    """Build the shape's model with its 4 adapters, the naive way's merged copies, prompts and coalitions."""
    device, max_new_tokens, prompt_words, _ = SHAPES[shape]
    rng = np.random.default_rng(0)
    torch.manual_seed(0)  # the random models and the adapters' lora_A
    if shape == "toy":
        from dposhap.models import load_base_model, load_tokenizer, resolve_model
        from dposhap.worlds import toy

        world = toy.build_toy_world(work / "toy", seed=0, sources=["helpful"], n_eval_prompts=N_PROMPTS)
        ref = resolve_model(str(world.model_dir))
        tokenizer = load_tokenizer(ref)
        base = load_base_model(ref, dtype=torch.float32, device=device)
        prompts = world.eval_prompts()
    elif shape == "smollm2":
        from dposhap.models import load_base_model, load_tokenizer, resolve_model
        from dposhap.worlds.english import build_english_world

        ref = resolve_model("smollm2-135m-instruct")
        tokenizer = load_tokenizer(ref)
        tokenizer.padding_side = "left"
        base = load_base_model(ref, dtype=torch.float32, device=device)
        world = build_english_world(work / "english", model=ref.location)
        prompts = [
            tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
            for p in world.eval_prompts()[:SMOLLM2_PROMPTS]
        ]
    else:
        vocab = 32000 if shape == "cpu-512" else 151936
        tokenizer = _word_tokenizer(vocab)
        tokenizer.padding_side = "left"
        base = _random_model(shape, vocab, device)
        prompts = [
            " ".join(f"t{w}" for w in rng.integers(3, vocab, size=rng.integers(*prompt_words, endpoint=True)))
            for _ in range(N_PROMPTS)
        ]
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear")
    model = get_peft_model(base, lora, adapter_name=SOURCES[0])
    for name in SOURCES[1:]:
        model.add_adapter(name, lora)
    model.eval()
    generator = torch.Generator().manual_seed(0)
    lora_b = [p for name, p in model.named_parameters() if "lora_B" in name]
    for p in lora_b:
        p.data = (torch.randn(p.shape, generator=generator) * 0.3).to(p)
    if shape not in ("toy", "smollm2"):  # a random model: give it a trained model's next-token entropy
        norm = model.get_base_model().model.norm.weight
        norm.data *= LOGIT_STD / _last_logits(model, tokenizer, prompts, "__base__").std().item()
    if shape != "toy":
        for _ in range(4):  # the shift is not linear in lora_B: a few rounds
            scale = ADAPTER_SHIFT_STD / _shift_std(model, tokenizer, prompts)
            for p in lora_b:
                p.data *= scale
    merged = [copy.deepcopy(model).unload()] + [
        copy.deepcopy(model).merge_and_unload(adapter_names=[s]) for s in SOURCES
    ]
    coalitions = np.array(list(product([False, True], repeat=N_SOURCES)))
    return Setup(
        shape,
        device,
        model,
        [m.eval() for m in merged],
        tokenizer,
        prompts,
        coalitions,
        DecodeConfig(max_new_tokens=max_new_tokens),
        _last_logits(model, tokenizer, prompts, "__base__").std().item(),
        _shift_std(model, tokenizer, prompts),
    )


# --------------------------------------------------------------------------------------
# providers: each returns (tokens sampled, forward rows)


def run_ours(s: Setup, decoder: ComposedDecoder, config: DecodeConfig) -> tuple[int, int]:
    result = decoder.generate(s.prompts, s.coalitions, config)
    return result.new_tokens, result.forward_rows


def run_naive(s: Setup, generator: torch.Generator) -> tuple[int, int]:
    """One loop per coalition over separately loaded models, logits combined in Python."""
    tok = s.tokenizer
    batch = tok(s.prompts, return_tensors="pt", padding=True).to(s.device)
    eos = torch.tensor([tok.eos_token_id], device=s.device)
    temperature, top_k, max_new = s.config.temperature, s.config.top_k, s.config.max_new_tokens
    tokens = rows = 0
    with torch.inference_mode():
        for coalition in s.coalitions:
            used = [0] + [i + 1 for i in np.flatnonzero(coalition)]
            mask = batch["attention_mask"]
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            caches = {m: DynamicCache() for m in used}
            logits = {
                m: s.merged[m](
                    input_ids=batch["input_ids"],
                    attention_mask=mask,
                    position_ids=positions,
                    **{cache_keyword(s.merged[m]): caches[m]},
                    use_cache=True,
                    logits_to_keep=1,
                )
                .logits[:, -1]
                .float()
                for m in used
            }
            rows += len(used) * len(s.prompts)
            done = torch.zeros(len(s.prompts), dtype=torch.bool, device=s.device)
            last = positions[:, -1]
            for step in range(max_new):
                combined = logits[0] + sum(logits[m] - logits[0] for m in used[1:])
                combined = combined / temperature
                if top_k is not None:
                    kth = combined.topk(top_k, dim=-1).values[:, -1:]
                    combined = combined.masked_fill(combined < kth, -float("inf"))
                probs = torch.softmax(combined, dim=-1)
                sampled = torch.multinomial(probs, 1, generator=generator).squeeze(1)
                sampled = sampled.masked_fill(done, tok.pad_token_id)
                tokens += int((~done).sum())
                done = done | torch.isin(sampled, eos)
                if bool(done.all()) or step + 1 == max_new:
                    break
                mask = torch.cat([mask, (~done).long()[:, None]], dim=1)
                last = last + 1
                for m in used:
                    logits[m] = (
                        s.merged[m](
                            input_ids=sampled[:, None],
                            attention_mask=mask,
                            position_ids=last[:, None],
                            **{cache_keyword(s.merged[m]): caches[m]},
                            use_cache=True,
                        )
                        .logits[:, -1]
                        .float()
                    )
                rows += len(used) * len(s.prompts)
    return tokens, rows


def providers(s: Setup) -> list[Provider]:
    decoder = ComposedDecoder(s.model, s.tokenizer, SOURCES)
    generator = torch.Generator(device=s.device).manual_seed(0)
    return [
        Provider(
            "ours",
            "dposhap",
            "ComposedDecoder defaults: shared prefill and prefixes, hidden fast path",
            lambda: run_ours(s, decoder, s.config),
        ),
        Provider(
            "ours-no-sharing",
            "dposhap",
            "ComposedDecoder, share_prefixes=False (prefill shared only)",
            lambda: run_ours(s, decoder, replace(s.config, share_prefixes=False)),
        ),
        Provider(
            "ours-peft-lora",
            "dposhap",
            'ComposedDecoder, mixed_lora="peft" (PEFT\'s adapter_names)',
            lambda: run_ours(s, decoder, replace(s.config, mixed_lora="peft")),
        ),
        Provider(
            "naive",
            "torch",
            "a loop per coalition, merged model copies, Python logit arithmetic, multinomial",
            lambda: run_naive(s, generator),
        ),
    ]


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure(s: Setup, repeats: int) -> dict[str, dict[str, float]]:
    """Median seconds, tokens and rows per provider; the providers take turns, after one warm-up each."""
    provs = providers(s)
    times: dict[str, list[float]] = {p.name: [] for p in provs}
    work: dict[str, list[tuple[int, int]]] = {p.name: [] for p in provs}
    for i in range(1 + repeats):
        for p in provs:
            _sync(s.device)
            t0 = time.perf_counter()
            out = p.run()
            _sync(s.device)
            if i > 0:
                times[p.name].append(time.perf_counter() - t0)
                work[p.name].append(out)
            print(f"  {s.name} {p.name} run {i}: {time.perf_counter() - t0:.2f} s, {out}", flush=True)
    return {
        p.name: {
            "median_s": statistics.median(times[p.name]),
            "tokens": statistics.median(t for t, _ in work[p.name]),
            "forward_rows": statistics.median(r for _, r in work[p.name]),
        }
        for p in provs
    }


LATENCY_BATCHES = (1, 4, 16)


def latency(shapes: list[str], repeats: int, out_dir: Path) -> None:
    """Latency of one call of the decoder (the generation utility's decoding) per batch of
    coalitions: K = 1, 4, 16 coalitions x B prompts, median and p95 over ``repeats`` calls."""
    table = MarkdownTable(
        f"Latency per batch of coalitions (B = {N_PROMPTS} prompts each), median and p95 over {repeats} calls",
        ["shape", "coalitions", "median s", "p95 s", "tokens"],
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for shape in shapes:
            s = setup(shape, Path(tmp))
            decoder = ComposedDecoder(s.model, s.tokenizer, SOURCES)
            for k in LATENCY_BATCHES:
                coalitions = s.coalitions[-k:]  # the largest coalitions: the most rows
                decoder.generate(s.prompts, coalitions, s.config)  # warm-up
                times, tokens = [], 0
                for _ in range(repeats):
                    _sync(s.device)
                    t0 = time.perf_counter()
                    tokens = decoder.generate(s.prompts, coalitions, s.config).new_tokens
                    _sync(s.device)
                    times.append(time.perf_counter() - t0)
                p95 = float(np.percentile(times, 95))
                rows.append(dict(shape=shape, coalitions=k, median_s=statistics.median(times), p95_s=p95))
                table.rows.append([shape, k, f"{statistics.median(times):.3f}", f"{p95:.3f}", tokens])
                print(table.rows[-1], flush=True)
            del s
    env = environment(PACKAGES)
    env["torch threads"] = str(torch.get_num_threads())
    write_csv(out_dir / "latency.csv", rows)
    write_markdown(out_dir / "latency.md", "Composed decoding latency", env, [table])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="toy shape only, 2 repeats, into results/quick/")
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), help="default: every shape the machine runs")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own)")
    parser.add_argument(
        "--latency", type=int, metavar="REPEATS", help="latency per batch of 1, 4, 16 coalitions instead (median, p95)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.latency:
        latency(args.shapes or ["toy"], args.latency, HERE / "results")
        return
    shapes = (
        ["toy"]
        if args.quick
        else args.shapes or [n for n, spec in SHAPES.items() if spec[0] == "cpu" or torch.cuda.is_available()]
    )
    # a subset of shapes writes its own folder, so the full table in results/ stays whole
    out_dir = HERE / "results" / ("quick" if args.quick else "-".join(args.shapes) if args.shapes else "")
    rows = []
    table = MarkdownTable(
        f"K = {2**N_SOURCES} coalitions x B = {N_PROMPTS} prompts ({SMOLLM2_PROMPTS} for smollm2), n = {N_SOURCES}: "
        "median over interleaved repeats",
        [
            "shape",
            "device",
            "max new",
            "provider",
            "median s",
            "tokens",
            "tokens/s",
            "forward rows",
            "speed-up vs naive",
        ],
    )
    notes = []
    with tempfile.TemporaryDirectory() as tmp:
        for shape in shapes:
            started = time.perf_counter()
            s = setup(shape, Path(tmp))
            print(
                f"{shape}: set up in {time.perf_counter() - started:.1f} s; logit std {s.logit_std:.2f}, "
                f"adapter shift std {s.adapter_shift_std:.2f}",
                flush=True,
            )
            repeats = 2 if args.quick else SHAPES[shape][3]
            results = measure(s, repeats)
            naive_rate = results["naive"]["tokens"] / results["naive"]["median_s"]
            for name, r in results.items():
                rate = r["tokens"] / r["median_s"]
                rows.append(
                    dict(
                        shape=shape,
                        device=s.device,
                        K=len(s.coalitions),
                        B=len(s.prompts),
                        n=N_SOURCES,
                        max_new_tokens=s.config.max_new_tokens,
                        provider=name,
                        median_s=r["median_s"],
                        tokens=r["tokens"],
                        tokens_per_s=rate,
                        forward_rows=r["forward_rows"],
                        speedup_vs_naive=rate / naive_rate,
                        repeats=repeats,
                        logit_std=s.logit_std,
                        adapter_shift_std=s.adapter_shift_std,
                    )
                )
                table.rows.append(
                    [
                        shape,
                        s.device,
                        s.config.max_new_tokens,
                        name,
                        f"{r['median_s']:.2f}",
                        f"{r['tokens']:.0f}",
                        f"{rate:.0f}",
                        f"{r['forward_rows']:.0f}",
                        f"{rate / naive_rate:.2f}x",
                    ]
                )
            ours_rate = results["ours"]["tokens"] / results["ours"]["median_s"]
            saved = 1 - results["ours"]["forward_rows"] / results["ours-no-sharing"]["forward_rows"]
            notes.append(
                f"- {shape}: ours {ours_rate / naive_rate:.2f}x naive (target 5x "
                f"{'met' if ours_rate >= 5 * naive_rate else 'missed'}); shared prefixes saved "
                f"{saved:.0%} of the forward rows; reference logits std {s.logit_std:.2f}, adapter logit "
                f"shift std {s.adapter_shift_std:.2f}; {repeats} timed repeats."
            )
            del s
    env = environment(PACKAGES)
    env["torch threads"] = str(torch.get_num_threads())
    env["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    preamble = [
        "Tokens per second of batched composed decoding (`dposhap.evaluate.decoding.ComposedDecoder`) against the naive way "
        "(one loop per coalition over separately loaded, merged models, logit arithmetic in Python). Target (issue "
        "5): ours >= 5x naive at K = 16, B = 32, n = 4.",
        "",
        *notes,
        "",
        WHERE_THE_TIME_GOES,
    ]
    write_csv(out_dir / "decode.csv", rows)
    write_markdown(out_dir / "decode.md", "Composed decoding", env, [table], preamble)


if __name__ == "__main__":
    main()

"""The compose kernels on a GPU: the dense form (CUDA and Triton kernels) against torch eager and
``torch.compile`` with effective bandwidth as a share of the measured copy bandwidth, and the
shared-source form (Triton) against its floors.

Dense form: compulsory bytes = ``ref`` and ``sources`` read once plus the float32 output written
once; effective bandwidth = compulsory bytes / median time (``triton.testing.do_bench``, >= 100
runs), as % of the device's copy bandwidth (``dst.copy_(src)`` of 1 GiB, read + write bytes).
Targets (issue 14): >= 80% of copy bandwidth above 50 MB, >= 3x eager, >= 1.5x torch.compile.

Shared-source form (fixed text scored under K coalitions): logits ``[N, A, V]``, coefficients
``[K, A]``. Its floors: the memory floor (the logits read once at copy bandwidth) and the exp
floor (K N V exponentials at the rate ``torch.exp`` reaches on a float32 tensor of that size);
reported as time / max(floors).

``--cpu-dry-run`` runs every step on the CPU with tiny shapes (C++ kernel for CUDA, Triton in
its interpreter, perf_counter timing) to prove the script, not to measure. Writes
``compose_gpu.md`` and ``.csv`` into ``--out``.
"""

# ruff: noqa: B023  (every lambda is timed at once, inside its loop iteration)
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # bench/_harness.py

import torch  # noqa: E402

from _harness import MarkdownTable, environment, write_csv, write_markdown  # noqa: E402
from dposhap.compose import backends, reference  # noqa: E402

DENSE_GRID = [(64, 4, 32000), (256, 4, 32000), (64, 16, 32000), (64, 4, 151936), (8, 4, 128256)]
SHARED_GRID = [(16, 5, 512, 32000), (64, 5, 512, 32000), (16, 17, 256, 151936)]  # K, A, N, V
DRY_DENSE_GRID = [(4, 3, 257)]
DRY_SHARED_GRID = [(4, 3, 8, 130)]


def timer(dry: bool) -> Callable[[Callable[[], object]], float]:
    """Median seconds of a call: do_bench on a GPU, a few perf_counter runs on the CPU."""
    if dry:

        def cpu(fn: Callable[[], object]) -> float:
            fn()
            runs = []
            for _ in range(3):
                t0 = time.perf_counter()
                fn()
                runs.append(time.perf_counter() - t0)
            return statistics.median(runs)

        return cpu
    from triton.testing import do_bench

    def gpu(fn: Callable[[], object]) -> float:
        return float(do_bench(fn, warmup=25, rep=200, return_mode="median")) / 1e3

    return gpu


def copy_bandwidth(device: str, dry: bool, measure: Callable[[Callable[[], object]], float]) -> float:
    """Bytes per second of ``dst.copy_(src)`` (read + write)."""
    n = (1 << 16) if dry else (1 << 28)  # 1 GiB of float32 on the GPU
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / measure(lambda: dst.copy_(src))


def dense_eager(ref: torch.Tensor, sources: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The best plain-torch dense composition (as on the CPU bench)."""
    c = torch.bmm(w[:, None, :].to(sources.dtype), sources).squeeze(1).float()
    return torch.log_softmax(c.addcmul_(ref.float(), 1.0 - w.sum(dim=1, keepdim=True)), dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-dry-run", action="store_true", help="tiny shapes on the CPU: proves the script")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    dry = args.cpu_dry_run
    if dry:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    elif not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --cpu-dry-run on a CPU")
    device = "cpu" if dry else "cuda"
    measure = timer(dry)
    bandwidth = copy_bandwidth(device, dry, measure)
    print(f"copy bandwidth {bandwidth / 1e9:.1f} GB/s", flush=True)
    compiled = torch.compile(dense_eager, dynamic=False)
    kernels = {"cuda": "cpp" if dry else "cuda", "triton": "triton"}

    rows: list[dict] = []
    dense = MarkdownTable(
        f"Dense form log_probs, float32 logits; copy bandwidth {bandwidth / 1e9:.0f} GB/s",
        ["R", "n", "V", "MB", "provider", "median us", "GB/s", "% of copy", "vs eager", "vs compile", "max err"],
    )
    for r, n, v in DRY_DENSE_GRID if dry else DENSE_GRID:
        g = torch.Generator(device="cpu").manual_seed(0)
        ref = (torch.randn(r, v, generator=g) * 3).to(device)
        sources = (torch.randn(r, n, v, generator=g) * 3).to(device)
        w = torch.ones(r, n, device=device)
        nbytes = (ref.numel() + sources.numel()) * 4 + r * v * 4
        exact = reference.log_probs(ref.cpu(), sources.cpu(), w.cpu(), compute_dtype=torch.float64)
        times = {
            "eager": measure(lambda: dense_eager(ref, sources, w)),
            "compile": measure(lambda: compiled(ref, sources, w)),
        }
        errors = {
            "eager": float((dense_eager(ref, sources, w).cpu().double() - exact).abs().max()),
            "compile": float((compiled(ref, sources, w).cpu().double() - exact).abs().max()),
        }
        for name, backend in kernels.items():
            out = backends.log_probs(ref, sources, w, backend=backend)
            errors[name] = float((out.cpu().double() - exact).abs().max())
            times[name] = measure(lambda backend=backend: backends.log_probs(ref, sources, w, backend=backend))
        for name, seconds in times.items():
            rate = nbytes / seconds
            row = dict(form="dense", R=r, n=n, V=v, provider=name, median_s=seconds, gbps=rate / 1e9)
            rows.append(row | dict(pct_copy=100 * rate / bandwidth))
            dense.rows.append(
                [
                    r,
                    n,
                    v,
                    f"{nbytes / 1e6:.0f}",
                    name,
                    f"{seconds * 1e6:.1f}",
                    f"{rate / 1e9:.0f}",
                    f"{100 * rate / bandwidth:.0f}%",
                    f"{times['eager'] / seconds:.2f}x",
                    f"{times['compile'] / seconds:.2f}x",
                    f"{errors.get(name, 0.0):.1e}",
                ]
            )
            print(dense.rows[-1], flush=True)

    shared = MarkdownTable(
        "Shared-source form (shared_scores), float32: time against its floors",
        ["K", "A", "N", "V", "provider", "median us", "memory floor us", "exp floor us", "time / floor", "max err"],
    )
    for k, a, n_pos, v in DRY_SHARED_GRID if dry else SHARED_GRID:
        g = torch.Generator(device="cpu").manual_seed(1)
        logits = (torch.randn(n_pos, a, v, generator=g) * 3).to(device)
        coef = reference.coalition_coefficients(torch.rand(k, a - 1, generator=g) < 0.5).to(device)
        targets = torch.randint(0, v, (n_pos,), generator=g).to(device)
        exact = reference.shared_scores(logits.cpu(), coef.cpu(), targets.cpu(), compute_dtype=torch.float64)
        memory_floor = logits.numel() * 4 / bandwidth
        probe = torch.randn(min(k * n_pos * v, 1 << 28), device=device)
        exp_floor = measure(lambda: torch.exp(probe)) * (k * n_pos * v) / probe.numel()
        floor = max(memory_floor, exp_floor)
        for name in ("triton", "torch"):
            out = backends.shared_scores(logits, coef, targets, backend=name)
            err = float((out[1].cpu().double() - exact[1]).abs().max())
            seconds = measure(lambda name=name: backends.shared_scores(logits, coef, targets, backend=name))
            rows.append(dict(form="shared", K=k, A=a, N=n_pos, V=v, provider=name, median_s=seconds, floor_s=floor))
            shared.rows.append(
                [
                    k,
                    a,
                    n_pos,
                    v,
                    name,
                    f"{seconds * 1e6:.1f}",
                    f"{memory_floor * 1e6:.1f}",
                    f"{exp_floor * 1e6:.1f}",
                    f"{seconds / floor:.2f}",
                    f"{err:.1e}",
                ]
            )
            print(shared.rows[-1], flush=True)

    env = environment(["torch", "triton"])
    env["device"] = torch.cuda.get_device_name() if not dry else "CPU (dry run: timings mean nothing)"
    preamble = [
        "Targets (issue 14): dense >= 80% of copy bandwidth above 50 MB, >= 3x eager, >= 1.5x torch.compile.",
        "`cuda` is the C++ kernel in a CPU dry run." if dry else "",
    ]
    write_csv(args.out / "compose_gpu.csv", rows)
    write_markdown(args.out / "compose_gpu.md", "Compose kernels on the GPU", env, [dense, shared], preamble)


if __name__ == "__main__":
    main()

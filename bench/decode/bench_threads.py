"""The thread policy measured (dposhap.threads): composed decoding at 1 and 2 torch threads on
the toy model and the d = 512 model (the shapes of bench_decode.py, K = 16 x B = 32, n = 4),
the thread counts taking turns; also what the policy picks for each model. Writes
``results/threads.md``."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402
from bench_decode import PACKAGES, SOURCES, setup  # noqa: E402

from _harness import MarkdownTable, environment, write_markdown  # noqa: E402
from dposhap import threads  # noqa: E402
from dposhap.evaluate.decoding import ComposedDecoder  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["toy", "cpu-512"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    table = MarkdownTable(
        "Composed decoding, K = 16 x B = 32, n = 4: median s per call at 1 and 2 torch threads",
        ["shape", "parameters", "1 thread s", "2 threads s", "2 / 1", "policy picks"],
    )
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes:
            s = setup(shape, Path(tmp))
            decoder = ComposedDecoder(s.model, s.tokenizer, SOURCES)
            params = sum(p.numel() for p in s.model.get_base_model().parameters())
            times: dict[int, list[float]] = {1: [], 2: []}
            for i in range(1 + args.repeats):
                for count in (1, 2):
                    torch.set_num_threads(count)
                    t0 = time.perf_counter()
                    decoder.generate(s.prompts, s.coalitions, s.config)
                    if i:
                        times[count].append(time.perf_counter() - t0)
            one, two = statistics.median(times[1]), statistics.median(times[2])
            choice = threads.choose(params, rows=len(s.coalitions) * len(s.prompts))
            table.rows.append(
                [shape, f"{params / 1e6:.1f}M", f"{one:.2f}", f"{two:.2f}", f"{two / one:.2f}", choice.threads]
            )
            print(table.rows[-1], flush=True)
            del s, decoder
    env = environment(PACKAGES)
    write_markdown(HERE / "results" / "threads.md", "Threads", env, [table])


if __name__ == "__main__":
    main()

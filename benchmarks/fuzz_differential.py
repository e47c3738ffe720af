#!/usr/bin/env python3
"""Randomized differential testing of fused_lstm.LSTM against torch.nn.LSTM, off CI.

Draws `--count` configs (seeds `--seed` .. `--seed + count - 1`, the same drawing code as
tests/test_differential.py: layers, bias, batch_first, bidirectional, proj_size, T, B, I, H,
batched/unbatched/packed input with random lengths, hx or not, dtype, train/eval, frozen
parameters, non-contiguous views) and compares outputs, final states and every gradient with
nn.LSTM's on `--device`. Prints the number of configs tried and the mismatches found (each with
its seed and config, so `--seed SEED --count 1` reruns it); exits 1 when there is any.

    python3 benchmarks/fuzz_differential.py --count 5000
    python3 benchmarks/fuzz_differential.py --count 2000 --device cuda \
        --dtypes float64,float32,bfloat16,float16
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import time
import warnings

if __package__ in (None, ""):
    # Run by path (python3 benchmarks/<script>.py), not with -m: Python put benchmarks/ on
    # sys.path, not the repo root that holds the `benchmarks` and `tests` packages. Append the
    # root (after site-packages: an installed fused_lstm keeps precedence).
    sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch

from tests.differential import DTYPE_NAMES, draw_config, run_config


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000, help="configs to try (default 5000)")
    parser.add_argument("--seed", type=int, default=100_000,
                        help="first config seed (default 100000; CI runs seeds 0..511)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--dtypes", default="float64:7,float32:2,bfloat16:1",
                        help="dtypes to draw from, NAME[:WEIGHT],... (default: CI's mix "
                             "float64:7,float32:2,bfloat16:1; float16 is also accepted)")
    parser.add_argument("--show", type=int, default=20, help="mismatching configs to print")
    return parser.parse_args(argv)


def parse_dtypes(text):
    pairs = []
    for item in text.split(","):
        name, _, weight = item.partition(":")
        pairs.append((DTYPE_NAMES[name.strip()], float(weight or 1)))
    return tuple(pairs)


def main(argv=None) -> int:
    args = parse_args(argv)
    dtypes = parse_dtypes(args.dtypes)
    if args.device.startswith("cuda"):
        # Full fp32 on both sides, so the fp32 tolerance means what it says.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    warnings.filterwarnings("ignore", message="LSTM with projections is not supported")
    start = time.perf_counter()
    tried = collections.Counter()
    failures = []
    for seed in range(args.seed, args.seed + args.count):
        cfg = draw_config(seed, dtypes)
        tried[str(cfg.dtype).removeprefix("torch.")] += 1
        try:
            problems = run_config(cfg, device=args.device)
        except Exception as e:  # an exception on a valid config is a mismatch too
            problems = [f"raised {type(e).__name__}: {e}"]
        if problems:
            failures.append((cfg, problems))
        done = seed - args.seed + 1
        if done % 500 == 0:
            print(f"  {done}/{args.count} configs, {len(failures)} mismatching, "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
    for cfg, problems in failures[:args.show]:
        print(f"MISMATCH {cfg}\n    " + "\n    ".join(problems[:5]))
    per_dtype = ", ".join(f"{k} {v}" for k, v in sorted(tried.items()))
    print(f"fuzz_differential: device {args.device}, "
          f"seeds {args.seed}..{args.seed + args.count - 1}: "
          f"tried {sum(tried.values())} configs ({per_dtype}), {len(failures)} mismatches, "
          f"{time.perf_counter() - start:.1f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

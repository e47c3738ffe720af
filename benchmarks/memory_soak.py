#!/usr/bin/env python3
"""Memory soak off CI: `--iters` forward + backward iterations (padded and packed input) of a
fused_lstm.LSTM; prints the resident memory (and CUDA allocated memory) every `--every`
iterations and the drift from the end of the warm-up to the last iteration.

    python3 benchmarks/memory_soak.py --iters 5000
    python3 benchmarks/memory_soak.py --iters 5000 --device cuda
"""
from __future__ import annotations

import argparse
import os
import sys
import time

if __package__ in (None, ""):
    # Run by path (python3 benchmarks/<script>.py), not with -m: Python put benchmarks/ on
    # sys.path, not the repo root that holds the `benchmarks` and `tests` packages. Append the
    # root (after site-packages: an installed fused_lstm keeps precedence).
    sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.soak import make_step, soak

MIB = 2**20


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--impl", default="fused", choices=["fused", "nn"],
                        help="nn: torch.nn.LSTM in the same loop, as a baseline")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    samples = soak(make_step(args.device, impl=args.impl), args.iters, warmup=args.warmup,
                   every=args.every, device=args.device)
    for i, rss, cuda in samples:
        print(f"  iteration {i:6d}: RSS {rss / MIB:8.2f} MiB" +
              (f", CUDA allocated {cuda / MIB:8.3f} MiB" if args.device.startswith("cuda") else ""))
    (_, rss0, cuda0), (_, rss1, cuda1) = samples[0], samples[-1]
    peak = max(rss for _, rss, _ in samples)
    print(f"memory_soak: {args.impl}, device {args.device}, {args.iters} iterations after "
          f"{args.warmup} warm-up: "
          f"RSS drift {(rss1 - rss0) / MIB:+.2f} MiB (peak {peak / MIB:.1f} MiB), "
          f"CUDA allocated drift {(cuda1 - cuda0) / MIB:+.3f} MiB, "
          f"{time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Microseconds per single step, fused vs torch.nn: `LSTMCell` steps and one-step (T=1) `LSTM`
calls that carry (h, c), as a decoding loop makes them, with and without grad.

Per call overhead (the Python module, the autograd Function, the op's fixed costs) is what these
measure; see Note [Single steps on CPU] in csrc/cpu/lstm_cpu.cpp. Both implementations are timed
in the same process, alternately (--rounds rounds), 100 calls per sample; each case's time is
the least over the rounds of the median of its samples (other load on a shared host only ever
adds time). "cell/T=1" is fused LSTMCell over fused LSTM T=1 (> 1: the T=1 call is cheaper).

    python3 benchmarks/cell_probe.py                        # B=1 H=128, B=1 H=256, B=8 H=512
    python3 benchmarks/cell_probe.py --config 1,128 --samples 5
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

import fused_lstm


def per_call_us(fn, calls: int, samples: int) -> float:
    """Median over `samples` of the mean time of `calls` calls, in microseconds."""
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times) * 1e6


def probe(batch: int, hidden: int, grad: bool, calls: int, samples: int, rounds: int) -> dict:
    torch.manual_seed(0)
    nn_cell = torch.nn.LSTMCell(hidden, hidden)
    fused_cell = fused_lstm.LSTMCell.from_torch(nn_cell)
    nn_lstm = torch.nn.LSTM(hidden, hidden)
    fused_layer = fused_lstm.LSTM.from_torch(nn_lstm)
    x, h, c = (torch.randn(batch, hidden) for _ in range(3))
    x3, h3, c3 = x[None], h[None], c[None]
    cases = {
        "nn.LSTMCell": lambda: nn_cell(x, (h, c)),
        "fused.LSTMCell": lambda: fused_cell(x, (h, c)),
        "nn.LSTM T=1": lambda: nn_lstm(x3, (h3, c3)),
        "fused.LSTM T=1": lambda: fused_layer(x3, (h3, c3)),
    }
    with torch.enable_grad() if grad else torch.no_grad():
        for fn in cases.values():  # warm-up: first calls choose kernels, allocate, JIT
            per_call_us(fn, calls, 2)
        times = {name: [] for name in cases}
        for _ in range(rounds):  # alternate, so that load changes hit both alike
            for name, fn in cases.items():
                times[name].append(per_call_us(fn, calls, samples))
    us = {name: min(values) for name, values in times.items()}
    return {"B": batch, "H": hidden, "grad": grad, "us": us,
            "cell_ratio": us["nn.LSTMCell"] / us["fused.LSTMCell"],
            "step_ratio": us["nn.LSTM T=1"] / us["fused.LSTM T=1"],
            "fused_cell_over_step": us["fused.LSTMCell"] / us["fused.LSTM T=1"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action="append", metavar="B,H",
                        help="batch and hidden size (repeatable; default: 1,128 1,256 8,512)")
    parser.add_argument("--calls", type=int, default=100, help="calls per sample (default 100)")
    parser.add_argument("--samples", type=int, default=21, help="samples per case (default 21)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating rounds over the cases (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    specs = args.config or ["1,128", "1,256", "8,512"]
    configs = [tuple(int(v) for v in spec.split(",")) for spec in specs]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; us per call, nn / fused")
    for batch, hidden in configs:
        for grad in (False, True):
            r = probe(batch, hidden, grad, args.calls, args.samples, args.rounds)
            us = r["us"]
            print(f"B={batch} H={hidden} {'grad   ' if grad else 'no grad'}: "
                  f"LSTMCell {us['nn.LSTMCell']:.1f} / {us['fused.LSTMCell']:.1f} "
                  f"({r['cell_ratio']:.2f}x); LSTM T=1 {us['nn.LSTM T=1']:.1f} / "
                  f"{us['fused.LSTM T=1']:.1f} ({r['step_ratio']:.2f}x); fused cell/T=1 "
                  f"{r['fused_cell_over_step']:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

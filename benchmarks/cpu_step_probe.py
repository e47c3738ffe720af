#!/usr/bin/env python3
"""Microseconds per time step of the CPU recurrence, fused vs torch.nn.LSTM (oneDNN), for issue 7.

A call's time is a fixed part (weight preparation, input GEMM set-up, Python) plus T times a
per-step part; the slope between two sequence lengths,
    us/step = (time(T_long) - time(T_short)) / (T_long - T_short),
removes the fixed part. CPU timings on a shared 2-core host move by 10-20% between runs (see the
load average the script prints); compare the two columns of one run, not runs with each other.

    python3 benchmarks/cpu_step_probe.py                      # the default configs, inference
    python3 benchmarks/cpu_step_probe.py --config 16,512 --dtype bfloat16 --json probe.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys

if __package__ in (None, ""):
    # Run by path (python3 benchmarks/<script>.py), not with -m: Python put benchmarks/ on
    # sys.path, not the repo root that holds the `benchmarks` and `tests` packages. Append the
    # root (after site-packages: an installed fused_lstm keeps precedence).
    sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch

from benchmarks.environment import cpu_model, git_commit, safe_build_info
from benchmarks.suites import Config
from benchmarks.workloads import time_nn_and_fused

DEFAULT_CONFIGS = [(1, 128), (1, 512), (4, 256), (16, 256), (16, 512), (64, 512)]  # (B, I=H)


def probe(batch: int, hidden: int, dtype: str, t_short: int, t_long: int, seconds: float) -> dict:
    times = {steps: time_nn_and_fused(Config(T=steps, B=batch, I=hidden, H=hidden, dtype=dtype),
                                         torch.device("cpu"), "inference", (), seconds)
             for steps in (t_short, t_long)}
    row = {"B": batch, "H": hidden, "dtype": dtype, "T_short": t_short, "T_long": t_long}
    for name in ("nn", "fused"):
        per_step_ms = (times[t_long][name] - times[t_short][name]) / (t_long - t_short)
        row[f"{name}_us_per_step"] = per_step_ms * 1e3
        row[f"{name}_fixed_ms"] = times[t_short][name] - t_short * per_step_ms
    # (Tiny configs can give a slope of ~0 or below: timing noise larger than the work.)
    fused_step = row["fused_us_per_step"]
    row["nn_over_fused"] = row["nn_us_per_step"] / fused_step if fused_step > 0 else float("nan")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action="append", metavar="B,H",
                        help="batch and hidden size (I = H); repeatable")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--steps", default="50,150", metavar="SHORT,LONG")
    parser.add_argument("--seconds", type=float, default=0.5, help="timing budget per call")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    configs = ([tuple(int(v) for v in c.split(",")) for c in args.config] if args.config
               else DEFAULT_CONFIGS)
    t_short, t_long = (int(v) for v in args.steps.split(","))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load:.1f}, "
          f"{args.dtype}, inference, slope between T={t_short} and T={t_long}")
    print("| B | H | nn.LSTM us/step | fused us/step | nn/fused | fused fixed ms |")
    print("|---:|---:|---:|---:|---:|---:|")
    rows = []
    for batch, hidden in configs:
        row = probe(batch, hidden, args.dtype, t_short, t_long, args.seconds)
        rows.append(row)
        print(f"| {batch} | {hidden} | {row['nn_us_per_step']:.0f} | "
              f"{row['fused_us_per_step']:.0f} "
              f"| {row['nn_over_fused']:.2f}x | {row['fused_fixed_ms']:.2f} |")
    if args.json:
        meta = {"torch_version": torch.__version__, "threads": torch.get_num_threads(),
                "load_average_1min": load, "cpu_model": cpu_model(),
                "git_commit": git_commit(), "fused_lstm_build_info": safe_build_info()}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2, default=str)


if __name__ == "__main__":
    main()

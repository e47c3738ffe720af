#!/usr/bin/env python3
"""Microseconds per time step of the CUDA recurrence, against cuDNN, for issue 5's analysis.

A call's time is a fixed part (input GEMM, launches, copies, weight-gradient GEMMs) plus T times a
per-step part; timing each config at two sequence lengths and taking the slope,
    us/step = (time(T_long) - time(T_short)) / (T_long - T_short),
removes the fixed part, so the number compares with a step's floor (the grid barrier, measured by
benchmarks/grid_barrier_probe.cu). Same weights, same inputs, same process for both sides.

    python3 benchmarks/gpu_step_probe.py --json probe.json      (needs a GPU; gpu_check.sh runs it)
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

from benchmarks.environment import git_commit, safe_build_info
from benchmarks.suites import Config
from benchmarks.workloads import time_nn_and_fused

# (label, B, I=H, dtype, mode, T_short, T_long, FUSED_LSTM_CUDA_ALGO for `fused`)
PROBES = [
    ("B=1 H=128 fp32", 1, 128, "float32", "inference", 50, 450, None),
    ("B=1 H=256 fp32", 1, 256, "float32", "inference", 50, 450, None),
    ("B=4 H=512 fp32", 4, 512, "float32", "inference", 50, 450, None),
    ("B=1 H=256 bf16", 1, 256, "bfloat16", "inference", 50, 450, None),
    ("B=64 H=512 bf16", 64, 512, "bfloat16", "inference", 20, 220, None),
    ("B=64 H=512 fp32", 64, 512, "float32", "inference", 20, 220, None),
    ("B=16 H=768 bf16", 16, 768, "bfloat16", "inference", 20, 220, None),
    ("B=64 H=512 bf16", 64, 512, "bfloat16", "fwdbwd", 20, 120, None),
    ("B=64 H=512 bf16", 64, 512, "bfloat16", "fwdbwd", 20, 120, "generic"),
    ("B=64 H=512 fp16", 64, 512, "float16", "fwdbwd", 20, 120, None),
    ("B=64 H=512 fp32", 64, 512, "float32", "fwdbwd", 20, 120, None),
    ("B=16 H=768 bf16", 16, 768, "bfloat16", "fwdbwd", 20, 120, None),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--seconds", type=float, default=0.2, help="timing budget per call")
    parser.add_argument("--barrier", help="output of grid_barrier_probe (JSON lines) to include")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_step_probe: no GPU", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    rows = []
    for label, B, H, dtype, mode, t_short, t_long, algo in PROBES:
        times = {}
        for T in (t_short, t_long):
            cfg = Config(T=T, B=B, I=H, H=H, dtype=dtype, tf32=False)
            fused_env = (("FUSED_LSTM_CUDA_ALGO", algo),) if algo else ()
            times[T] = time_nn_and_fused(cfg, torch.device("cuda"), mode, fused_env, args.seconds)
        per_step = {name: (times[t_long][name] - times[t_short][name]) * 1e3 / (t_long - t_short)
                    for name in ("nn", "fused")}
        row = {"config": label, "mode": mode, "algo": algo or "auto", "T": [t_short, t_long],
               "ms": {str(T): v for T, v in times.items()},
               "us_per_step": per_step,
               "nn_over_fused_per_step": per_step["nn"] / per_step["fused"]}
        rows.append(row)
        print(f"{label:18s} {mode:9s} algo={row['algo']:8s} us/step: nn {per_step['nn']:7.2f}  "
              f"fused {per_step['fused']:7.2f}  ratio {row['nn_over_fused_per_step']:.2f}x  "
              f"(ms at T={t_long}: nn {times[t_long]['nn']:.3f} "
              f"fused {times[t_long]['fused']:.3f})",
              flush=True)
    if args.json:
        meta = {"device_name": torch.cuda.get_device_name(), "torch_version": torch.__version__,
                "cuda_version": torch.version.cuda, "cudnn_version": torch.backends.cudnn.version(),
                "git_commit": git_commit(), "fused_lstm_build_info": safe_build_info(),
                "tf32": False, "rows": rows}
        if args.barrier and os.path.exists(args.barrier):
            with open(args.barrier) as f:
                meta["grid_barrier"] = [json.loads(line) for line in f if line.startswith("{")]
        with open(args.json, "w") as f:
            json.dump(meta, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

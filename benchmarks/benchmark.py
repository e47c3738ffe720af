#!/usr/bin/env python3
"""Benchmark fused_lstm.LSTM against torch.nn.LSTM, side by side in one process.

    python3 benchmarks/benchmark.py                      # best device present, its default suite
    python3 benchmarks/benchmark.py --device cpu --json benchmarks/results/cpu.json

Both modules hold the same weights (the fused one loads nn.LSTM's state_dict) and get the same
inputs. Each (config, dtype, mode) row is timed with torch.utils.benchmark.Timer using all of
torch's intra-op threads (Timer uses ONE thread unless num_threads is given), after a warm-up;
the Timer synchronises the GPU around each timed block. The table reports medians and the ratio
nn.LSTM / fused (> 1: fused is faster), plus the largest output difference between the two.

Modes:
  inference  forward under torch.no_grad()
  forward    forward with autograd recording (inputs, h0, c0 and weights require grad)
  fwdbwd     forward + backward of out.sum() + h_n.sum() + c_n.sum(), gradients for the input,
             h0, c0 and every parameter (torch.autograd.grad, so no .grad accumulation)

A row whose fused run raises (e.g. a feature not supported yet) shows the error and the run
goes on.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
import warnings
from typing import Callable

import torch
import torch.nn as nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence
from torch.utils import benchmark as tbench

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

try:
    import fused_lstm
except ImportError:
    # Not installed: fall back to an in-place build in the repo (pip install -e / build_ext -i).
    sys.path.append(REPO_ROOT)
    import fused_lstm  # noqa: E402

MODES = ("inference", "forward", "fwdbwd")
VERBOSE = False
DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


@dataclasses.dataclass
class Config:
    T: int
    B: int
    I: int
    H: int
    layers: int = 1
    bidirectional: bool = False
    proj_size: int = 0
    dtype: str = "float32"
    tf32: bool | None = None  # None: leave torch's setting; True/False: set it for this config
    packed: tuple[int, int] | None = None  # lengths uniform in [lo, hi) when set
    modes: tuple[str, ...] = MODES

    @property
    def name(self) -> str:
        s = f"T={self.T} B={self.B} I={self.I} H={self.H}"
        if self.layers != 1:
            s += f" L={self.layers}"
        if self.bidirectional:
            s += " bidir"
        if self.proj_size:
            s += f" P={self.proj_size}"
        if self.packed:
            s += f" packed len[{self.packed[0]},{self.packed[1]})"
        return s

    @property
    def dtype_label(self) -> str:
        if self.tf32 is None:
            return self.dtype
        return f"{self.dtype} tf32={'on' if self.tf32 else 'off'}"


def quick_suite() -> list[Config]:
    return [
        Config(T=100, B=64, I=512, H=512),
        Config(T=100, B=1, I=128, H=128),
        Config(T=50, B=16, I=256, H=256),
    ]


def gpu_suite() -> list[Config]:
    return [
        Config(T=100, B=64, I=512, H=512, dtype="float32", tf32=False),
        Config(T=100, B=64, I=512, H=512, dtype="float32", tf32=True),
        Config(T=100, B=64, I=512, H=512, dtype="float16"),
        Config(T=100, B=64, I=512, H=512, dtype="bfloat16"),
        Config(T=100, B=1, I=128, H=128, dtype="float32", tf32=False),
        Config(T=50, B=16, I=256, H=256, dtype="float32", tf32=False),
        Config(T=1024, B=16, I=768, H=768, dtype="bfloat16"),
        Config(T=1000, B=1, I=256, H=256, dtype="float32", tf32=False,
               modes=("inference", "forward")),
        Config(T=100, B=64, I=512, H=512, dtype="float32", tf32=False, packed=(30, 100)),
    ]


SUITES = {"quick": quick_suite, "gpu": gpu_suite}


# ----------------------------------------------------------------------------- environment

def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def safe_build_info() -> dict:
    try:
        return dict(fused_lstm.build_info())
    except Exception as e:  # report, don't die: the benchmark of nn.LSTM still means something
        return {"cuda_built": False, "why": f"build_info() failed: {type(e).__name__}: {e}"}


@contextlib.contextmanager
def tf32_setting(enabled: bool | None):
    """Sets cuBLAS and cuDNN TF32 for the duration (no-op when enabled is None)."""
    if enabled is None:
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # newer torch warns that these flags are the old API
        old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


# ----------------------------------------------------------------------------- timing

@dataclasses.dataclass
class Timing:
    median_ms: float
    iqr_ms: float
    samples: int


def warm_up(fn: Callable[[], object], budget_s: float) -> float:
    """Runs fn a few times (first calls allocate, pick kernels, fill caches); returns the
    estimated seconds per call."""
    fn()
    sync()
    t0 = time.perf_counter()
    n = 0
    while n < 2 or (time.perf_counter() - t0 < budget_s and n < 50):
        fn()
        n += 1
    sync()
    return (time.perf_counter() - t0) / n


def sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def time_interleaved(fns: dict[str, Callable[[], object]], label: str, threads: int,
                     min_run_time: float, rounds: int = 3,
                     min_samples: int = 2) -> tuple[dict[str, Timing], dict[str, str]]:
    """Times each fn with torch.utils.benchmark.Timer (blocked_autorange), in `rounds` rounds
    that alternate between the fns, so that both sides of a ratio see the same machine (other
    load, clocks, thermals). Returns ({name: Timing}, {name: error}) ; a fn that raises is
    dropped with its error and the others go on."""
    errors: dict[str, str] = {}
    per_call: dict[str, float] = {}
    for name, fn in fns.items():
        try:
            per_call[name] = warm_up(fn, 0.05 * min_run_time)
        except Exception as e:
            errors[name] = f"{type(e).__name__}: {e}"
            if VERBOSE:
                traceback.print_exc()
    timers = {name: tbench.Timer(stmt="fn()", globals={"fn": fns[name]}, num_threads=threads,
                                 label=label, description=name) for name in per_call}
    times: dict[str, list[float]] = {name: [] for name in per_call}
    for _ in range(rounds):
        for name, timer in timers.items():
            if name in errors:
                continue
            # Enough run time for min_samples blocks per round, so the median means something.
            t = max(min_run_time / rounds, min_samples * per_call[name] * 1.05)
            try:
                times[name] += list(timer.blocked_autorange(min_run_time=t).times)
            except Exception as e:
                errors[name] = f"{type(e).__name__}: {e}"
                if VERBOSE:
                    traceback.print_exc()
    out = {}
    for name, ts in times.items():
        if name in errors or not ts:
            continue
        q = statistics.quantiles(ts, n=4) if len(ts) >= 2 else [ts[0]] * 3
        out[name] = Timing(median_ms=statistics.median(ts) * 1e3, iqr_ms=(q[2] - q[0]) * 1e3,
                           samples=len(ts))
    return out, errors


# ----------------------------------------------------------------------------- workloads

def make_inputs(cfg: Config, device: torch.device, dtype: torch.dtype, gen: torch.Generator):
    """Returns (x, h0, c0): x a [T, B, I] tensor or a PackedSequence; all leaves."""
    D = 2 if cfg.bidirectional else 1
    P = cfg.proj_size or cfg.H
    x = torch.randn(cfg.T, cfg.B, cfg.I, generator=gen).to(device=device, dtype=dtype)
    h0 = (0.1 * torch.randn(cfg.layers * D, cfg.B, P, generator=gen)).to(device=device, dtype=dtype)
    c0 = (0.1 * torch.randn(cfg.layers * D, cfg.B, cfg.H, generator=gen)).to(device=device,
                                                                           dtype=dtype)
    if cfg.packed:
        lo, hi = cfg.packed
        lengths = torch.randint(lo, hi, (cfg.B,), generator=gen)
        lengths[0] = min(cfg.T, hi - 1)  # the padded tensor is exactly as long as the longest
        lengths = lengths.clamp(max=cfg.T)
        p = pack_padded_sequence(x, lengths, enforce_sorted=False)
        # A leaf data tensor, so backward does not go through the packing every time.
        x = PackedSequence(p.data.detach().contiguous(), p.batch_sizes, p.sorted_indices,
                           p.unsorted_indices)
    return x, h0, c0


def with_grad(x, h0, c0, requires_grad: bool):
    def leaf(t):
        return t.detach().requires_grad_(requires_grad)
    if isinstance(x, PackedSequence):
        x = PackedSequence(leaf(x.data), x.batch_sizes, x.sorted_indices, x.unsorted_indices)
    else:
        x = leaf(x)
    return x, leaf(h0), leaf(c0)


def out_data(out):
    return out.data if isinstance(out, PackedSequence) else out


def make_step(model: nn.Module, mode: str, x, h0, c0) -> Callable[[], object]:
    if mode == "inference":
        x, h0, c0 = with_grad(x, h0, c0, False)

        def step():
            with torch.no_grad():
                return model(x, (h0, c0))
        return step
    x, h0, c0 = with_grad(x, h0, c0, True)
    if mode == "forward":
        def step():
            return model(x, (h0, c0))
        return step
    assert mode == "fwdbwd"
    leaves = [out_data(x), h0, c0] + [p for p in model.parameters() if p.requires_grad]

    def step():
        out, (hn, cn) = model(x, (h0, c0))
        loss = out_data(out).sum() + hn.sum() + cn.sum()
        return torch.autograd.grad(loss, leaves)
    return step


def max_abs_diff(a: nn.Module, b: nn.Module, x, h0, c0) -> float:
    x, h0, c0 = with_grad(x, h0, c0, False)
    with torch.no_grad():
        oa, (ha, ca) = a(x, (h0, c0))
        ob, (hb, cb) = b(x, (h0, c0))
        return max((out_data(oa).float() - out_data(ob).float()).abs().max().item(),
                   (ha.float() - hb.float()).abs().max().item(),
                   (ca.float() - cb.float()).abs().max().item())


# ----------------------------------------------------------------------------- table

COLUMNS = ["config", "dtype", "mode", "nn.LSTM median (ms)", "fused median (ms)",
           "ratio nn/fused", "max abs diff"]


def fmt_ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if v < 10 else f"{v:.2f}" if v < 1000 else f"{v:.0f}"


def cell(s: str, width: int = 80) -> str:
    s = " ".join(str(s).split()).replace("|", "/")
    return s if len(s) <= width else s[: width - 3] + "..."


def print_row(values: list[str]) -> None:
    print("| " + " | ".join(values) + " |", flush=True)


def run_config(cfg: Config, device: torch.device, args, rows: list[dict]) -> None:
    dtype = DTYPES[cfg.dtype]
    gen = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    base = {"config": cfg.name, "T": cfg.T, "B": cfg.B, "I": cfg.I, "H": cfg.H,
            "layers": cfg.layers, "bidirectional": cfg.bidirectional,
            "proj_size": cfg.proj_size, "packed": list(cfg.packed) if cfg.packed else None,
            "dtype": cfg.dtype, "tf32": cfg.tf32}

    ref = fused = None
    ref_err = fused_err = None
    diff = None
    try:
        torch.manual_seed(0)
        ref = nn.LSTM(cfg.I, cfg.H, num_layers=cfg.layers, bidirectional=cfg.bidirectional,
                      proj_size=cfg.proj_size)
        ref = ref.to(device=device, dtype=dtype)
        x, h0, c0 = make_inputs(cfg, device, dtype, gen)
    except Exception as e:
        ref, ref_err = None, f"{type(e).__name__}: {e}"
    if ref is not None:
        try:
            fused = fused_lstm.LSTM(cfg.I, cfg.H, num_layers=cfg.layers,
                                    bidirectional=cfg.bidirectional, proj_size=cfg.proj_size)
            fused = fused.to(device=device, dtype=dtype)
            fused.load_state_dict(ref.state_dict())
        except Exception as e:
            fused, fused_err = None, f"{type(e).__name__}: {e}"
            if args.verbose:
                traceback.print_exc()

    with tf32_setting(cfg.tf32):
        if ref is not None and fused is not None:
            try:
                diff = max_abs_diff(ref, fused, x, h0, c0)
            except Exception as e:
                fused_err = f"{type(e).__name__}: {e}"
                if args.verbose:
                    traceback.print_exc()

        for mode in cfg.modes:
            row = dict(base, mode=mode, nn_median_ms=None, fused_median_ms=None, ratio=None,
                       max_abs_diff=diff, error=None)
            label = f"{cfg.name} {cfg.dtype_label} {mode}"
            errors = []
            fns = {}
            for who, model, err in (("nn", ref, ref_err), ("fused", fused, fused_err)):
                if err is not None or model is None:
                    errors.append(f"{who}: {err or 'not built'}")
                    continue
                try:
                    fns[who] = make_step(model, mode, x, h0, c0)
                except Exception as e:
                    errors.append(f"{who}: {type(e).__name__}: {e}")
            results, errs = time_interleaved(fns, label, threads, args.repeat_seconds)
            sync()
            errors += [f"{who}: {e}" for who, e in errs.items()]
            for who, t in results.items():
                row[f"{who}_median_ms"] = t.median_ms
                row[f"{who}_iqr_ms"] = t.iqr_ms
                row[f"{who}_samples"] = t.samples
            if "nn" in results and "fused" in results:
                row["ratio"] = results["nn"].median_ms / results["fused"].median_ms
            if errors:
                row["error"] = "; ".join(errors)
                print(f"[{label}] {row['error']}", file=sys.stderr, flush=True)
            rows.append(row)
            fused_cell = fmt_ms(row["fused_median_ms"])
            if "fused" not in results and row["error"]:
                fused_cell = "ERROR: " + cell(row["error"])
            nn_cell = fmt_ms(row["nn_median_ms"])
            if "nn" not in results and row["error"]:
                nn_cell = "ERROR"
            print_row([cfg.name, cfg.dtype_label, mode, nn_cell, fused_cell,
                       f"{row['ratio']:.2f}x" if row["ratio"] else "-",
                       f"{diff:.1e}" if diff is not None else "-"])

    del ref, fused
    if device.type == "cuda":
        torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> int:
    info = safe_build_info()
    cuda_ok = torch.cuda.is_available() and bool(info.get("cuda_built"))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default=None,
                   help="default: cuda when a GPU is present and fused_lstm was built with CUDA")
    p.add_argument("--suite", choices=sorted(SUITES), default=None,
                   help="default: gpu on cuda, quick on cpu")
    p.add_argument("--json", metavar="PATH", default=None, help="also write the results as JSON")
    p.add_argument("--repeat-seconds", type=float, default=1.0,
                   help="minimum measured time per row and implementation (default 1.0)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's default)")
    p.add_argument("--modes", default=",".join(MODES),
                   help=f"comma-separated subset of {','.join(MODES)}")
    p.add_argument("-v", "--verbose", action="store_true", help="print tracebacks of errors")
    args = p.parse_args(argv)
    global VERBOSE
    VERBOSE = args.verbose

    device = torch.device(args.device or ("cuda" if cuda_ok else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no GPU is visible to torch")
    suite_name = args.suite or ("gpu" if device.type == "cuda" else "quick")
    if args.threads:
        torch.set_num_threads(args.threads)
    modes = tuple(m for m in args.modes.split(",") if m)
    bad = [m for m in modes if m not in MODES]
    if bad:
        p.error(f"unknown mode(s) {bad}; choose from {MODES}")

    configs = SUITES[suite_name]()
    for c in configs:
        c.modes = tuple(m for m in c.modes if m in modes)
    if device.type == "cpu":
        configs = [c for c in configs if c.dtype != "float16"]  # no fast fp16 LSTM on CPU

    env = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
        else cpu_model(),
        "cpu_model": cpu_model(),
        "cpu_capability": getattr(torch.backends.cpu, "get_cpu_capability", lambda: None)(),
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "python_version": platform.python_version(),
        "git_commit": git_commit(),
        "fused_lstm_build_info": info,
        "suite": suite_name,
        "repeat_seconds": args.repeat_seconds,
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    print(f"device: {env['device']} ({env['device_name']})")
    print(f"cpu: {env['cpu_model']} (capability {env['cpu_capability']}), "
          f"torch threads: {env['threads']}")
    print(f"torch {env['torch_version']}, CUDA {env['cuda_version']}"
          + (f", cuDNN {env['cudnn_version']}" if env["cudnn_version"] else "")
          + f", python {env['python_version']}, commit {env['git_commit'][:12]}")
    print(f"fused_lstm build: cuda_built={info.get('cuda_built')} ({info.get('why', '')})")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    env["load_average_1min"] = load
    if load is not None and load > 0.5 * (os.cpu_count() or 1):
        print(f"WARNING: load average {load:.1f} on {os.cpu_count()} cores: other work is "
              "running, CPU timings will be noisy and ratios unreliable")
    print(f"suite: {suite_name}; ratio = nn.LSTM median / fused median (> 1: fused is faster)")
    print()
    print_row(COLUMNS)
    print_row(["---"] * 3 + ["---:"] * 4)

    rows: list[dict] = []
    t0 = time.perf_counter()
    for cfg in configs:
        if not cfg.modes:
            continue
        run_config(cfg, device, args, rows)
    elapsed = time.perf_counter() - t0
    print(f"\n{len(rows)} rows in {elapsed:.0f} s")

    if args.json:
        path = os.path.abspath(args.json)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump(dict(env, elapsed_s=elapsed, rows=rows), f, indent=2)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

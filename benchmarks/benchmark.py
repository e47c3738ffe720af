#!/usr/bin/env python3
"""Benchmark fused_lstm.LSTM against torch.nn.LSTM and the plain-PyTorch reference loop, side by
side in one process.

    python3 benchmarks/benchmark.py                    # best device present, its default suite
    python3 benchmarks/benchmark.py --suite standard --out-dir benchmarks/results/cpu-standard-DATE
    python3 benchmarks/benchmark.py --device cpu --json benchmarks/results/cpu.json
    python3 benchmarks/benchmark.py --config 100,64,512,512 --layers 2 --bidirectional

Implementations (--impls), all holding the same weights and fed the same inputs:
  nn                torch.nn.LSTM (cuDNN on GPU, oneDNN on CPU)
  fused             fused_lstm.LSTM with its automatic choice of kernels (on CUDA: whatever
                    FUSED_LSTM_CUDA_ALGO says when it is set in the environment, else auto)
  fused_persistent  CUDA only: fused_lstm.LSTM with FUSED_LSTM_CUDA_ALGO=persistent
  fused_step        CUDA only: fused_lstm.LSTM with FUSED_LSTM_CUDA_ALGO=step
  fused_generic     CUDA only: fused_lstm.LSTM with FUSED_LSTM_CUDA_ALGO=generic (the backward's
                    per-step cuBLAS loop; shows what the persistent backward kernel gains)
  reference         fused_lstm.lstm_layer_reference (the tests' oracle, a plain PyTorch step
                    loop with autograd through it), run layer by layer and direction by direction
                    over nn.LSTM's own parameters, so it covers every config nn.LSTM does
                    (layers, bidirectional, proj_size, PackedSequence)
The C++ code reads FUSED_LSTM_CUDA_ALGO on every call, so the fused_* variants share one module
and the variable is set only while that variant runs.

Suites (--suite): quick (default on CPU), standard, packed, sweep, gpu (default on CUDA; the
suite benchmarks/gpu_check.sh runs, kept small for its time box). See SUITES below for the exact
configs of each, and `--list` to print them for a device.

Modes:
  inference  forward under torch.no_grad()
  forward    forward with autograd recording (inputs, h0, c0 and weights require grad)
  fwdbwd     forward + backward of out.sum() + h_n.sum() + c_n.sum(), gradients for the input,
             h0, c0 and every parameter (torch.autograd.grad, so no .grad accumulation)

Measurement: each (config, dtype, mode) row is timed with torch.utils.benchmark.Timer using all
of torch's intra-op threads (Timer uses ONE thread unless num_threads is given), after a warm-up,
in three rounds that alternate between the implementations (so every ratio compares like with
like under the same machine state); the Timer synchronises the GPU around each timed block.
Reported per implementation: median and interquartile range (IQR) of the per-call times,
tokens per second (tokens / median; tokens = T*B, or the real token count for packed input) and
memory:
  CUDA  peak memory of one call: torch.cuda.max_memory_allocated() minus the allocation before
        it (outputs, autograd graph, workspaces, gradients: whatever the mode keeps or makes)
  CPU   the bytes saved for backward by one forward with autograd recording: unique storages
        handed to autograd (torch.autograd.graph.saved_tensors_hooks), not counting the input,
        h0, c0 and the parameters, which exist anyway. Shown on the forward and fwdbwd rows.
The ratio nn.LSTM / X (> 1: X is faster) is given for every other implementation X, and the
largest output difference of each against nn.LSTM.

Output: a markdown table on stdout; --json PATH writes every row with the environment (device,
CPU model and threads, torch/CUDA/cuDNN versions, commit, fused_lstm.build_info()); --out-dir DIR
writes DIR/<device>-<suite>-<timestamp>.json and the PNG plots of benchmarks/plot.py next to it.
A row whose run raises (e.g. a feature not supported yet) shows the error and the run goes on.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import textwrap
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
ALGO_ENV = "FUSED_LSTM_CUDA_ALGO"


# ----------------------------------------------------------------------------- implementations

@dataclasses.dataclass(frozen=True)
class Impl:
    name: str  # key in the JSON
    label: str  # table header
    model: str  # which module runs it: "nn", "fused" or "reference"
    env: tuple[tuple[str, str], ...] = ()  # environment set while it runs
    cuda_only: bool = False


IMPLS = {
    "nn": Impl("nn", "nn.LSTM", "nn"),
    "fused": Impl("fused", "fused", "fused"),
    "fused_persistent": Impl("fused_persistent", "fused[persistent]", "fused",
                             ((ALGO_ENV, "persistent"),), cuda_only=True),
    "fused_step": Impl("fused_step", "fused[step]", "fused", ((ALGO_ENV, "step"),),
                       cuda_only=True),
    "fused_generic": Impl("fused_generic", "fused[generic]", "fused", ((ALGO_ENV, "generic"),),
                          cuda_only=True),
    "reference": Impl("reference", "reference", "reference"),
}


def default_impls(device: torch.device, suite: str) -> list[str]:
    if device.type != "cuda":
        return ["nn", "fused", "reference"]
    if suite == "gpu" or os.environ.get(ALGO_ENV):
        # gpu: the suite of benchmarks/gpu_check.sh, kept as it was for its time box (the script
        # runs it a second time with FUSED_LSTM_CUDA_ALGO=step). An algorithm chosen in the
        # environment is respected: `fused` then runs it, and no variant overrides it.
        return ["nn", "fused"]
    return ["nn", "fused", "fused_persistent", "fused_step", "reference"]


class ReferenceLSTM(nn.Module):
    """nn.LSTM's forward (layers, directions, proj_size, PackedSequence) built from
    fused_lstm.lstm_layer_reference, over the given nn.LSTM's own parameters (shared, not
    copied). Dropout is not applied (the benchmarks use none)."""

    def __init__(self, lstm: nn.LSTM):
        super().__init__()
        self.lstm = lstm

    def forward(self, input, hx):
        lstm = self.lstm
        directions = 2 if lstm.bidirectional else 1
        h0, c0 = hx
        batch_sizes = sorted_indices = unsorted_indices = None
        if isinstance(input, PackedSequence):
            data, batch_sizes, sorted_indices, unsorted_indices = input
            if sorted_indices is not None:
                h0, c0 = h0.index_select(1, sorted_indices), c0.index_select(1, sorted_indices)
        else:
            data = input
        h_n, c_n = [], []
        layer_input = data
        for layer in range(lstm.num_layers):
            outputs = []
            for direction in range(directions):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")

                def weight(name):
                    return getattr(lstm, name + suffix, None)

                index = layer * directions + direction
                out, h, c = fused_lstm.lstm_layer_reference(
                    layer_input, h0[index], c0[index], weight("weight_ih"), weight("weight_hh"),
                    weight("bias_ih"), weight("bias_hh"),
                    weight("weight_hr") if lstm.proj_size else None,
                    batch_sizes=batch_sizes, reverse=direction == 1)
                outputs.append(out)
                h_n.append(h)
                c_n.append(c)
            layer_input = outputs[0] if directions == 1 else torch.cat(outputs, -1)
        h_n, c_n = torch.stack(h_n), torch.stack(c_n)
        if batch_sizes is None:
            return layer_input, (h_n, c_n)
        if unsorted_indices is not None:
            h_n, c_n = h_n.index_select(1, unsorted_indices), c_n.index_select(1, unsorted_indices)
        output = PackedSequence(layer_input, batch_sizes, sorted_indices, unsorted_indices)
        return output, (h_n, c_n)


# ----------------------------------------------------------------------------- configs and suites

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
    group: str = ""  # what part of the suite it belongs to (plots and tables group by it)

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


def _fp32(cuda: bool, tf32: bool = False) -> dict:
    """float32; on CUDA with TF32 set explicitly (nn.LSTM's cuDNN and all cuBLAS GEMMs)."""
    return {"dtype": "float32", "tf32": tf32 if cuda else None}


def quick_suite(cuda: bool) -> list[Config]:
    return [
        Config(T=100, B=64, I=512, H=512, group="quick"),
        Config(T=100, B=1, I=128, H=128, group="quick"),
        Config(T=50, B=16, I=256, H=256, group="quick"),
        Config(T=50, B=16, I=256, H=256, dtype="bfloat16", group="quick"),
    ]


def gpu_suite(cuda: bool) -> list[Config]:
    # Kept as it was: benchmarks/gpu_check.sh runs it twice inside 100 s + 80 s time boxes.
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


# The long-sequence config of the standard suite; on CPU T is cut (its nn.LSTM fwdbwd alone
# would take ~2 s a call at T=1024 on 2 cores, x3 implementations x ~10 calls x 3 modes).
LONG_T_CPU = 256


def standard_suite(cuda: bool) -> list[Config]:
    """PyTorch's fastrnns LSTM config (T=100 B=64 I=H=512: 1 layer, 3 layers, bidirectional),
    small-batch latency (B in {1,4,16} x H in {128,256,512}, T=100, I=H), a long sequence
    (B=16 I=H=768, T=1024 and 128; on CPU T=256 and 64) and, on GPU only, a large one
    (T=256 B=256 I=H=1024)."""
    out: list[Config] = []
    fast = dict(T=100, B=64, I=512, H=512, group="fastrnns")
    if cuda:
        out += [Config(**fast, **_fp32(cuda, False)), Config(**fast, **_fp32(cuda, True)),
                Config(**fast, dtype="float16"), Config(**fast, dtype="bfloat16")]
        for extra in ({"layers": 3}, {"bidirectional": True}):
            out += [Config(**fast, **extra, **_fp32(cuda, False)),
                    Config(**fast, **extra, dtype="bfloat16")]
    else:
        out += [Config(**fast), Config(**fast, dtype="bfloat16"), Config(**fast, layers=3),
                Config(**fast, bidirectional=True)]
    for B in (1, 4, 16):
        for H in (128, 256, 512):
            out.append(Config(T=100, B=B, I=H, H=H, group="small-batch", **_fp32(cuda, False)))
    if not cuda:
        out.append(Config(T=100, B=16, I=256, H=256, dtype="bfloat16", group="small-batch"))
    # The long config at a second, shorter T too, so that the time-per-step-vs-T plot has a line.
    if cuda:
        long = dict(B=16, I=768, H=768, group="long")
        out += [Config(T=1024, **long, dtype="bfloat16"),
                Config(T=1024, **long, **_fp32(cuda, False)),
                Config(T=128, **long, dtype="bfloat16")]
        large = dict(T=256, B=256, I=1024, H=1024, group="large")
        out += [Config(**large, dtype="bfloat16"), Config(**large, **_fp32(cuda, True)),
                Config(**large, **_fp32(cuda, False))]
    else:
        out += [Config(T=LONG_T_CPU, B=16, I=768, H=768, group="long"),
                Config(T=64, B=16, I=768, H=768, group="long")]
    return out


def packed_suite(cuda: bool) -> list[Config]:
    """PackedSequence input, B=64, lengths uniform in [30, 100) (T = the longest = 99); nn.LSTM
    gets the same PackedSequence."""
    p = dict(T=99, B=64, packed=(30, 100), group="packed")
    if cuda:
        return [Config(**p, I=512, H=512, **_fp32(cuda, False)),
                Config(**p, I=512, H=512, **_fp32(cuda, True)),
                Config(**p, I=512, H=512, dtype="bfloat16"),
                Config(**p, I=512, H=512, dtype="float16"),
                Config(**p, I=512, H=512, layers=2, bidirectional=True, dtype="bfloat16"),
                Config(**p, I=1024, H=1024, dtype="bfloat16")]
    return [Config(**p, I=512, H=512), Config(**p, I=256, H=256),
            Config(**p, I=512, H=512, dtype="bfloat16"),
            Config(**p, I=256, H=256, layers=2, bidirectional=True)]


def sweep_suite(cuda: bool) -> list[Config]:
    """B x H at T=100, I=H (speedup vs H plots), and T in {10..1000} at B=16 I=H=256 (time per
    step vs T plots)."""
    Bs = (1, 4, 16, 64, 256) if cuda else (1, 4, 16, 64)
    Hs = (128, 256, 512, 1024)
    dtypes = [{"dtype": "bfloat16"}, _fp32(cuda, False)] if cuda else [_fp32(cuda)]
    out = [Config(T=100, B=B, I=H, H=H, group="sweep-BH", **d)
           for d in dtypes for B in Bs for H in Hs]
    out += [Config(T=T, B=16, I=256, H=256, group="sweep-T", **d)
            for d in dtypes for T in (10, 30, 100, 300, 1000)]
    return out


def tiny_suite(cuda: bool) -> list[Config]:
    """Seconds-long smoke test (tests/test_benchmark_cli.py): two H and two T at one B, and a
    packed bidirectional 2-layer config."""
    return [Config(T=4, B=2, I=8, H=8, group="tiny"), Config(T=4, B=2, I=16, H=16, group="tiny"),
            Config(T=8, B=2, I=8, H=8, group="tiny"),
            Config(T=6, B=3, I=8, H=8, layers=2, bidirectional=True, packed=(2, 7),
                   group="tiny")]


SUITES = {"quick": quick_suite, "standard": standard_suite, "packed": packed_suite,
          "sweep": sweep_suite, "gpu": gpu_suite, "tiny": tiny_suite}
PUBLIC_SUITES = ["quick", "standard", "packed", "sweep", "gpu"]  # tiny: for the tests
SUITE_HELP = {
    "quick": "default on CPU, ~1 min on 2 cores: T=100 B=64 H=512, T=100 B=1 H=128, "
             "T=50 B=16 H=256 (float32 and bfloat16)",
    "standard": "fastrnns T=100 B=64 I=H=512 (1 layer, 3 layers, bidir); B in {1,4,16} x "
                "H in {128,256,512} at T=100; B=16 H=768 at T=1024,128 (CPU: 256,64); GPU "
                "only: T=256 B=256 H=1024. ~6 min on a 2-core CPU",
    "packed": "PackedSequence, B=64, lengths uniform in [30,100), H 256..1024, 1 and 2 "
              "bidirectional layers",
    "sweep": "B x H grid at T=100 (speedup-vs-H plots) and T in 10..1000 at B=16 H=256 "
             "(time-per-step-vs-T plots); long",
    "gpu": "default on CUDA: the suite of benchmarks/gpu_check.sh (nn and fused only, sized "
           "for its time box)",
}


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
    """HEAD (with -dirty when tracked files changed); in a copy of the tree without git metadata
    (e.g. on a device machine) $FUSED_LSTM_GIT_COMMIT when set, else "unknown"."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                   cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
            return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return os.environ.get("FUSED_LSTM_GIT_COMMIT") or "unknown"


def safe_build_info() -> dict:
    try:
        return dict(fused_lstm.build_info())
    except Exception as e:  # report, don't die: the benchmark of nn.LSTM still means something
        return {"cuda_built": False, "why": f"build_info() failed: {type(e).__name__}: {e}"}


def extension_file() -> dict:
    """Where the loaded compiled module is and when it was built (in-place rebuilds change it
    without a commit)."""
    try:
        path = fused_lstm._C.__file__
        mtime = datetime.datetime.fromtimestamp(os.path.getmtime(path), datetime.timezone.utc)
        return {"path": path, "mtime": mtime.isoformat(timespec="seconds")}
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"}


def device_slug(env: dict) -> str:
    """`cpu` or e.g. `cuda-h100` for file names."""
    if env["device"] == "cpu":
        return "cpu"
    m = re.search(r"\b([A-Z]{1,2}\d{2,4}[A-Za-z]?)\b", env["device_name"] or "")
    return "cuda-" + (m.group(1).lower() if m else "gpu")


def environment(device: torch.device, info: dict) -> dict:
    """What a result file records about where it ran: device, CPU and threads, versions, the
    commit, fused_lstm's build and compiled module, and the 1-minute load average (other work on
    a shared CPU makes timings noisy)."""
    cuda = device.type == "cuda"
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else cpu_model(),
        "cpu_model": cpu_model(),
        "cpu_capability": getattr(torch.backends.cpu, "get_cpu_capability", lambda: None)(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if cuda else None,
        "mkldnn_available": torch.backends.mkldnn.is_available(),
        "python_version": platform.python_version(),
        "git_commit": git_commit(),
        "fused_lstm_build_info": info,
        "fused_lstm_extension": extension_file(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def describe_environment(env: dict) -> list[str]:
    """The lines a run prints about environment(): device, CPU, versions, build, and a warning
    when the load average says other work shares the CPU."""
    info = env["fused_lstm_build_info"]
    lines = [f"device: {env['device']} ({env['device_name']})",
             f"cpu: {env['cpu_model']} (capability {env['cpu_capability']}), "
             f"torch threads: {env['threads']} of {env['cpu_count']} CPUs",
             f"torch {env['torch_version']}, CUDA {env['cuda_version']}"
             + (f", cuDNN {env['cudnn_version']}" if env["cudnn_version"] else "")
             + f", python {env['python_version']}, commit {env['git_commit'][:12]}",
             f"fused_lstm build: cuda_built={info.get('cuda_built')} ({info.get('why', '')}), "
             f"cpu kernels: {info.get('cpu_instruction_set')}"]
    load = env["load_average_1min"]
    if load is not None and load > 0.5 * (env["cpu_count"] or 1):
        lines.append(f"WARNING: load average {load:.1f} on {env['cpu_count']} cores: other work "
                     "is running, CPU timings will be noisy and ratios unreliable")
    return lines


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


@contextlib.contextmanager
def env_vars(values: tuple[tuple[str, str], ...]):
    """Sets environment variables for the duration (the C++ code reads them per call)."""
    old = {k: os.environ.get(k) for k, _ in values}
    os.environ.update(dict(values))
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ----------------------------------------------------------------------------- timing

@dataclasses.dataclass
class Timing:
    median_ms: float
    iqr_ms: float
    samples: int


def sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def warm_up(fn: Callable[[], object], budget_s: float) -> float:
    """Runs fn a few times (first calls allocate, pick kernels, fill caches); returns the
    estimated seconds per call (from the calls after the first, or from the first alone when
    it is slow: then the Timer's own block-size estimate, one more call, finishes the warm-up)."""
    t0 = time.perf_counter()
    fn()
    sync()
    first = time.perf_counter() - t0
    if first >= max(budget_s, 0.05):
        return first
    t0 = time.perf_counter()
    n = 0
    while n < 1 or (time.perf_counter() - t0 < budget_s and n < 50):
        fn()
        n += 1
        sync()
    return (time.perf_counter() - t0) / n


def time_interleaved(fns: dict[str, Callable[[], object]], envs: dict[str, tuple],
                     label: str, threads: int, min_run_time: float, rounds: int = 3,
                     min_samples: int = 2) -> tuple[dict[str, Timing], dict[str, str]]:
    """Times each fn with torch.utils.benchmark.Timer (blocked_autorange), in `rounds` rounds
    that alternate between the fns, so that every side of a ratio sees the same machine (other
    load, clocks, thermals); envs[name] is set while fn `name` runs. Returns
    ({name: Timing}, {name: error}); a fn that raises is dropped with its error and the others
    go on."""
    errors: dict[str, str] = {}
    per_call: dict[str, float] = {}
    for name, fn in fns.items():
        try:
            with env_vars(envs.get(name, ())):
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
            # Enough run time for min_samples blocks per round, so the median means something
            # (blocked_autorange stops once the time is reached: (n - 0.5) calls' worth -> n).
            t = max(min_run_time / rounds, (min_samples - 0.5) * per_call[name])
            try:
                with env_vars(envs.get(name, ())):
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


def time_nn_and_fused(cfg: Config, device: torch.device, mode: str, fused_env: tuple,
                      seconds: float) -> dict[str, float]:
    """Median ms of one `mode` call of nn.LSTM and of fused_lstm.LSTM (same weights, same inputs,
    interleaved timing), with fused_env (pairs of environment variable and value) set while
    fused runs. For the per-step probes (benchmarks/{gpu,cpu}_step_probe.py)."""
    dtype = DTYPES[cfg.dtype]
    models, errors = build_models(cfg, device, dtype, {"nn", "fused"})
    if errors:
        raise RuntimeError(errors)
    gen = torch.Generator().manual_seed(0)
    x, h0, c0 = make_inputs(cfg, device, dtype, gen)
    fns = {name: make_step(models[name], mode, x, h0, c0) for name in ("nn", "fused")}
    timings, errs = time_interleaved(fns, {"fused": fused_env}, cfg.name, torch.get_num_threads(),
                                     seconds)
    if errs:
        raise RuntimeError(errs)
    return {name: t.median_ms for name, t in timings.items()}


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


def _storage_key(t: torch.Tensor):
    try:
        s = t.untyped_storage()
        return s.data_ptr(), s.nbytes()
    except Exception:  # tensors without a plain storage (opaque layouts): not countable
        return None


def saved_for_backward_bytes(model: nn.Module, x, h0, c0) -> int:
    """Bytes of the unique storages that one forward with autograd recording hands to autograd
    (saved_tensors_hooks), not counting the input, h0, c0 and the parameters."""
    x, h0, c0 = with_grad(x, h0, c0, True)
    exclude = {k[0] for k in map(_storage_key, [out_data(x), h0, c0, *model.parameters()]) if k}
    seen: dict[int, int] = {}

    def pack(t):
        k = _storage_key(t)
        if k is not None and k[0] not in exclude and k[0] != 0:
            seen[k[0]] = max(seen.get(k[0], 0), k[1])
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        result = model(x, (h0, c0))  # kept alive until counted: no storage is freed and reused
    total = sum(seen.values())
    del result
    return total


def cuda_peak_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Peak allocated memory during one call, above what was allocated before it."""
    sync()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    result = fn()
    sync()
    peak = torch.cuda.max_memory_allocated(device) - base
    del result
    return peak


def token_count(cfg: Config, x) -> int:
    return int(x.data.size(0)) if isinstance(x, PackedSequence) else cfg.T * cfg.B


# ----------------------------------------------------------------------------- table

def fmt_ms(v: float | None, iqr: float | None = None) -> str:
    if v is None:
        return "-"

    def f(u):
        return f"{u:.3f}" if u < 10 else f"{u:.2f}" if u < 1000 else f"{u:.0f}"
    return f(v) + (f" [{f(iqr)}]" if iqr is not None else "")


def fmt_rate(v: float | None) -> str:
    if v is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= scale:
            return f"{v / scale:.2f}{unit}"
    return f"{v:.0f}"


def fmt_mb(v: int | None) -> str:
    return "-" if v is None else f"{v / 2**20:.1f}"


def cell(s: str, width: int = 80) -> str:
    s = " ".join(str(s).split()).replace("|", "/")
    return s if len(s) <= width else s[: width - 3] + "..."


class Printer:
    """Table rows to stdout, a progress bar (tqdm if importable, else a counter) to stderr."""

    def __init__(self, total: int, show: bool):
        self.total, self.done, self.bar = total, 0, None
        self.show = show
        if show:
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, file=sys.stderr, unit="row", leave=False,
                                dynamic_ncols=True)
            except ImportError:
                self.bar = None

    def row(self, values: list[str]) -> None:
        line = "| " + " | ".join(values) + " |"
        if self.bar is not None:
            self.bar.write(line, file=sys.stdout)
            sys.stdout.flush()
        else:
            print(line, flush=True)

    def text(self, line: str, err: bool = False) -> None:
        f = sys.stderr if err else sys.stdout
        if self.bar is not None:
            self.bar.write(line, file=f)
        else:
            print(line, file=f, flush=True)

    def step(self, what: str) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.set_description_str(what[:60])
            self.bar.update(1)
        elif self.show:
            print(f"[{self.done}/{self.total}] {what}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def table_header(impls: list[Impl], cuda: bool) -> tuple[list[str], list[str]]:
    cols = ["config", "dtype", "mode"]
    align = ["---"] * 3
    for i, impl in enumerate(impls):
        cols.append(f"{impl.label} ms [IQR]")
        align.append("---:")
        if i and impls[0].name == "nn":
            cols.append(f"nn/{impl.label}")
            align.append("---:")
    mem = "peak MB" if cuda else "saved MB"
    for impl in impls:
        if impl.name in ("nn", "fused"):
            cols.append(f"{impl.label} {mem}")
            align.append("---:")
    if any(i.name == "fused" for i in impls):
        cols.append("fused tok/s")
        align.append("---:")
    cols.append("max abs diff")
    align.append("---:")
    return cols, align


def table_row(row: dict, impls: list[Impl]) -> list[str]:
    r = row["results"]
    vals = [row["config"], row["dtype_label"], row["mode"]]
    for i, impl in enumerate(impls):
        res = r.get(impl.name, {})
        if res.get("median_ms") is not None:
            vals.append(fmt_ms(res["median_ms"], res.get("iqr_ms")))
        elif res.get("error"):
            vals.append("ERROR: " + cell(res["error"], 60))
        else:
            vals.append("-")
        if i and impls[0].name == "nn":
            ratio = res.get("ratio")
            vals.append(f"{ratio:.2f}x" if ratio else "-")
    for impl in impls:
        if impl.name in ("nn", "fused"):
            vals.append(fmt_mb(r.get(impl.name, {}).get("memory_bytes")))
    if any(i.name == "fused" for i in impls):
        vals.append(fmt_rate(r.get("fused", {}).get("tokens_per_s")))
    diff = r.get("fused", {}).get("max_abs_diff")
    vals.append(f"{diff:.1e}" if diff is not None else "-")
    return vals


# ----------------------------------------------------------------------------- running

def build_models(cfg: Config, device: torch.device, dtype: torch.dtype, wanted: set[str]):
    """Returns ({model kind: module}, {model kind: error})."""
    models: dict[str, nn.Module] = {}
    errors: dict[str, str] = {}
    torch.manual_seed(0)
    ref = nn.LSTM(cfg.I, cfg.H, num_layers=cfg.layers, bidirectional=cfg.bidirectional,
                  proj_size=cfg.proj_size).to(device=device, dtype=dtype)
    models["nn"] = ref
    if "reference" in wanted:
        models["reference"] = ReferenceLSTM(ref)
    if "fused" in wanted:
        try:
            fused = fused_lstm.LSTM(cfg.I, cfg.H, num_layers=cfg.layers,
                                    bidirectional=cfg.bidirectional, proj_size=cfg.proj_size)
            fused = fused.to(device=device, dtype=dtype)
            fused.load_state_dict(ref.state_dict())
            models["fused"] = fused
        except Exception as e:
            errors["fused"] = f"{type(e).__name__}: {e}"
            if VERBOSE:
                traceback.print_exc()
    return models, errors


def run_config(cfg: Config, device: torch.device, impls: list[Impl], args, rows: list[dict],
               printer: Printer) -> None:
    dtype = DTYPES[cfg.dtype]
    gen = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    cuda = device.type == "cuda"
    base = {"config": cfg.name, "group": cfg.group, "T": cfg.T, "B": cfg.B, "I": cfg.I,
            "H": cfg.H, "layers": cfg.layers, "bidirectional": cfg.bidirectional,
            "proj_size": cfg.proj_size, "packed": list(cfg.packed) if cfg.packed else None,
            "dtype": cfg.dtype, "tf32": cfg.tf32, "dtype_label": cfg.dtype_label}

    models: dict[str, nn.Module] = {}
    model_errors: dict[str, str] = {}
    try:
        models, model_errors = build_models(cfg, device, dtype, {i.model for i in impls})
        x, h0, c0 = make_inputs(cfg, device, dtype, gen)
        tokens = token_count(cfg, x)
    except Exception as e:  # nn.LSTM itself or the inputs: nothing to compare against
        models, tokens = {}, None
        model_errors = {k: f"{type(e).__name__}: {e}" for k in ("nn", "fused", "reference")}
        if args.verbose:
            traceback.print_exc()

    def model_of(impl: Impl):
        return models.get(impl.model), model_errors.get(impl.model)

    with tf32_setting(cfg.tf32):
        # Output differences against nn.LSTM, per implementation, and (CPU) the bytes each one
        # saves for backward: measured once per config, outside the timed runs.
        diffs: dict[str, float | None] = {}
        static_errors: dict[str, str] = {}
        saved: dict[str, int | None] = {}
        saved_errors: dict[str, str] = {}
        for impl in impls:
            model, err = model_of(impl)
            if err or model is None:
                static_errors[impl.name] = err or "not built"
                continue
            with env_vars(impl.env):
                try:
                    if impl.name != "nn":
                        diffs[impl.name] = max_abs_diff(models["nn"], model, x, h0, c0)
                except Exception as e:  # its forward fails: nothing to time either
                    static_errors[impl.name] = f"{type(e).__name__}: {e}"
                    if args.verbose:
                        traceback.print_exc()
                    continue
                if not cuda and any(m != "inference" for m in cfg.modes):
                    try:
                        saved[impl.name] = saved_for_backward_bytes(model, x, h0, c0)
                    except Exception as e:  # no memory figure; the timing still runs
                        saved_errors[impl.name] = f"{type(e).__name__}: {e}"

        for mode in cfg.modes:
            label = f"{cfg.name} {cfg.dtype_label} {mode}"
            results: dict[str, dict] = {}
            fns, envs = {}, {}
            for impl in impls:
                res = results[impl.name] = {"median_ms": None, "iqr_ms": None, "samples": 0,
                                            "tokens_per_s": None, "memory_bytes": None,
                                            "ratio": None, "max_abs_diff": diffs.get(impl.name),
                                            "error": static_errors.get(impl.name)}
                if impl.env:
                    res["env"] = dict(impl.env)
                elif impl.model == "fused" and cuda:
                    res["env"] = {ALGO_ENV: os.environ.get(ALGO_ENV) or "auto"}
                if res["error"]:
                    continue
                try:
                    fns[impl.name] = make_step(model_of(impl)[0], mode, x, h0, c0)
                    envs[impl.name] = impl.env
                except Exception as e:
                    res["error"] = f"{type(e).__name__}: {e}"
            timings, errs = time_interleaved(fns, envs, label, threads, args.repeat_seconds)
            sync()
            for name, e in errs.items():
                results[name]["error"] = e
            for name, t in timings.items():
                res = results[name]
                res.update(median_ms=t.median_ms, iqr_ms=t.iqr_ms, samples=t.samples,
                           tokens_per_s=tokens / (t.median_ms * 1e-3) if tokens else None)
                if cuda:
                    try:
                        with env_vars(envs[name]):
                            res["memory_bytes"] = cuda_peak_bytes(fns[name], device)
                        res["memory_kind"] = "cuda_peak_delta"
                    except Exception as e:
                        res["error"] = f"memory: {type(e).__name__}: {e}"
                elif mode != "inference" and name in saved:
                    res["memory_bytes"] = saved[name]
                    res["memory_kind"] = "cpu_saved_for_backward"
                elif mode != "inference" and name in saved_errors:
                    res["memory_error"] = saved_errors[name]
            nn_ms = results.get("nn", {}).get("median_ms")
            for name, res in results.items():
                if name != "nn" and nn_ms and res["median_ms"]:
                    res["ratio"] = nn_ms / res["median_ms"]
            fns.clear()
            errors = [f"{name}: {res['error']}" for name, res in results.items() if res["error"]]
            row = dict(base, mode=mode, tokens=tokens, results=results,
                       error="; ".join(errors) or None)
            # Flat copies of the two main columns (older readers of these files use them).
            for who in ("nn", "fused"):
                res = results.get(who, {})
                row[f"{who}_median_ms"] = res.get("median_ms")
                row[f"{who}_iqr_ms"] = res.get("iqr_ms")
                row[f"{who}_samples"] = res.get("samples")
            row["ratio"] = results.get("fused", {}).get("ratio")
            row["max_abs_diff"] = results.get("fused", {}).get("max_abs_diff")
            rows.append(row)
            if row["error"]:
                printer.text(f"[{label}] {row['error']}", err=True)
            printer.row(table_row(row, impls))
            printer.step(label)

    models.clear()
    if cuda:
        torch.cuda.empty_cache()


def geomean(values: list[float]) -> float | None:
    values = [v for v in values if v]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def parse_config(text: str) -> tuple[int, int, int, int]:
    try:
        T, B, I, H = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected T,B,I,H (four integers), got {text!r}")
    if min(T, B, I, H) < 1:
        raise argparse.ArgumentTypeError(f"T, B, I and H must be positive, got {text!r}")
    return T, B, I, H


def main(argv: list[str] | None = None) -> int:
    info = safe_build_info()
    cuda_ok = torch.cuda.is_available() and bool(info.get("cuda_built"))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Suites (--list prints a suite's configs):\n"
                                + "\n".join(textwrap.fill(f"{n:9s} {SUITE_HELP[n]}", 79,
                                                           initial_indent="  ",
                                                           subsequent_indent=" " * 12)
                                            for n in PUBLIC_SUITES))
    p.add_argument("--device", choices=["cpu", "cuda"], default=None,
                   help="default: cuda when a GPU is present and fused_lstm was built with CUDA")
    p.add_argument("--suite", choices=sorted(SUITES), default=None,
                   metavar="{" + ",".join(PUBLIC_SUITES) + "}",
                   help="default: gpu on cuda, quick on cpu")
    p.add_argument("--config", type=parse_config, action="append", default=None,
                   metavar="T,B,I,H", help="run this config instead of a suite (repeatable); "
                   "with --layers, --bidirectional, --dtypes, --packed")
    p.add_argument("--layers", type=int, default=1, help="for --config (default 1)")
    p.add_argument("--bidirectional", action="store_true", help="for --config")
    p.add_argument("--packed", default=None, metavar="LO,HI",
                   help="for --config: PackedSequence input, lengths uniform in [LO, HI)")
    p.add_argument("--dtypes", default="float32",
                   help="for --config: comma-separated dtypes (default float32)")
    p.add_argument("--impls", default=None,
                   help=f"comma-separated subset of {','.join(IMPLS)} (default: nn,fused,"
                   "reference on CPU; on CUDA all, except nn,fused for the gpu suite or when "
                   f"{ALGO_ENV} is set in the environment)")
    p.add_argument("--json", metavar="PATH", default=None, help="also write the results as JSON")
    p.add_argument("--out-dir", metavar="DIR", default=None,
                   help="write DIR/<device>-<suite>-<timestamp>.json and PNG plots made from it")
    p.add_argument("--repeat-seconds", type=float, default=1.0,
                   help="minimum measured time per row and implementation (default 1.0)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's default)")
    p.add_argument("--modes", default=",".join(MODES),
                   help=f"comma-separated subset of {','.join(MODES)}")
    p.add_argument("--progress", choices=["auto", "on", "off"], default="auto",
                   help="progress bar on stderr (tqdm if installed); auto: when stderr is a "
                   "terminal")
    p.add_argument("--list", action="store_true", help="print the suite's configs and exit")
    p.add_argument("-v", "--verbose", action="store_true", help="print tracebacks of errors")
    args = p.parse_args(argv)
    global VERBOSE
    VERBOSE = args.verbose

    device = torch.device(args.device or ("cuda" if cuda_ok else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no GPU is visible to torch")
    cuda = device.type == "cuda"
    if args.config and args.suite:
        p.error("--config and --suite exclude each other")
    suite_name = "custom" if args.config else (args.suite or ("gpu" if cuda else "quick"))
    if args.threads:
        torch.set_num_threads(args.threads)
    modes = tuple(m for m in args.modes.split(",") if m)
    bad = [m for m in modes if m not in MODES]
    if bad:
        p.error(f"unknown mode(s) {bad}; choose from {MODES}")
    impl_names = (args.impls.split(",") if args.impls else default_impls(device, suite_name))
    bad = [i for i in impl_names if i not in IMPLS]
    if bad:
        p.error(f"unknown implementation(s) {bad}; choose from {list(IMPLS)}")
    impls = [IMPLS[i] for i in dict.fromkeys(impl_names)
             if not (IMPLS[i].cuda_only and not cuda)]
    if not impls:
        p.error("no implementation left to run on this device")
    impls.sort(key=lambda i: list(IMPLS).index(i.name))  # nn first: the ratios are against it

    if args.config:
        dtypes = [d for d in args.dtypes.split(",") if d]
        if any(d not in DTYPES for d in dtypes):
            p.error(f"--dtypes: choose from {list(DTYPES)}")
        packed = None
        if args.packed:
            try:
                packed = tuple(int(v) for v in args.packed.split(","))
                assert len(packed) == 2 and 1 <= packed[0] < packed[1]
            except (ValueError, AssertionError):
                p.error(f"--packed: expected LO,HI with 1 <= LO < HI, got {args.packed!r}")
        configs = [Config(T=T, B=B, I=I, H=H, layers=args.layers,
                          bidirectional=args.bidirectional, dtype=d, packed=packed,
                          tf32=False if (cuda and d == "float32") else None, group="custom")
                   for (T, B, I, H) in args.config for d in dtypes]
    else:
        configs = SUITES[suite_name](cuda)
    for c in configs:
        c.modes = tuple(m for m in c.modes if m in modes)
    if not cuda:
        configs = [c for c in configs if c.dtype != "float16"]  # no fast fp16 LSTM on CPU
    configs = [c for c in configs if c.modes]
    if args.list:
        for c in configs:
            print(f"{c.group:12s} {c.name:40s} {c.dtype_label:22s} {','.join(c.modes)}")
        return 0

    now = datetime.datetime.now(datetime.timezone.utc)
    env = dict(environment(device, info), suite=suite_name, impls=[i.name for i in impls],
               modes=list(modes), cuda_algo_env=os.environ.get(ALGO_ENV),
               repeat_seconds=args.repeat_seconds,
               argv=sys.argv[1:] if argv is None else list(argv),
               timestamp=now.isoformat(timespec="seconds"))
    for line in describe_environment(env):
        print(line)
    if cuda and env["cuda_algo_env"]:
        print(f"{ALGO_ENV}={env['cuda_algo_env']} (from the environment): `fused` runs it")
    mem_note = ("peak MB: CUDA memory allocated during one call" if cuda else
                "saved MB: bytes saved for backward by one forward (forward/fwdbwd rows)")
    print(f"suite: {suite_name} ({len(configs)} configs); times: median [IQR] ms; "
          f"nn/X = nn.LSTM median / X median (> 1: X is faster); {mem_note}")
    print()

    printer = Printer(total=sum(len(c.modes) for c in configs),
                      show=args.progress == "on" or (args.progress == "auto"
                                                     and sys.stderr.isatty()))
    cols, align = table_header(impls, cuda)
    printer.row(cols)
    printer.row(align)

    rows: list[dict] = []
    t0 = time.perf_counter()
    try:
        for cfg in configs:
            run_config(cfg, device, impls, args, rows, printer)
    finally:
        printer.close()
    elapsed = time.perf_counter() - t0
    print(f"\n{len(rows)} rows in {elapsed:.0f} s")
    for impl in impls[1:]:
        parts = []
        for mode in modes:
            g = geomean([r["results"].get(impl.name, {}).get("ratio") for r in rows
                         if r["mode"] == mode])
            if g:
                parts.append(f"{mode} {g:.2f}x")
        if parts:
            print(f"geometric mean of nn/{impl.label}: " + ", ".join(parts))

    result = dict(env, elapsed_s=elapsed, rows=rows)
    paths = []
    if args.json:
        paths.append(os.path.abspath(args.json))
    out_json = None
    if args.out_dir:
        stamp = now.strftime("%Y%m%dT%H%M%SZ")
        out_json = os.path.join(os.path.abspath(args.out_dir),
                                f"{device_slug(env)}-{suite_name}-{stamp}.json")
        paths.append(out_json)
    for path in paths:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {path}")
    if out_json:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        try:
            import plot
            for png in plot.make_plots(result, os.path.dirname(out_json),
                                       os.path.splitext(os.path.basename(out_json))[0]):
                print(f"wrote {png}")
        except Exception as e:  # the JSON is written: say why there are no plots, exit non-zero
            print(f"plots failed ({type(e).__name__}: {e}); make them later with "
                  f"python3 benchmarks/plot.py {out_json}", file=sys.stderr)
            if args.verbose:
                traceback.print_exc()
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

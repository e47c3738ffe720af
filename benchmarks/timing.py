"""Measurement: warm-up, synchronised timing with torch.utils.benchmark.Timer, rounds that
interleave the implementations, medians and IQRs; and the settings a timed run sets around itself
(TF32, environment variables the C++ code reads per call)."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import statistics
import time
import traceback
import warnings
from typing import Callable

import torch
from torch.utils import benchmark as tbench


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
                     min_samples: int = 2,
                     verbose: bool = False) -> tuple[dict[str, Timing], dict[str, str]]:
    """Times each fn with torch.utils.benchmark.Timer (blocked_autorange), in `rounds` rounds
    that alternate between the fns, so that every side of a ratio sees the same machine (other
    load, clocks, thermals); envs[name] is set while fn `name` runs. Returns
    ({name: Timing}, {name: error}); a fn that raises is dropped with its error and the others
    go on (verbose: with its traceback printed)."""
    errors: dict[str, str] = {}
    per_call: dict[str, float] = {}
    for name, fn in fns.items():
        try:
            with env_vars(envs.get(name, ())):
                per_call[name] = warm_up(fn, 0.05 * min_run_time)
        except Exception as e:
            errors[name] = f"{type(e).__name__}: {e}"
            if verbose:
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
                if verbose:
                    traceback.print_exc()
    out = {}
    for name, ts in times.items():
        if name in errors or not ts:
            continue
        q = statistics.quantiles(ts, n=4) if len(ts) >= 2 else [ts[0]] * 3
        out[name] = Timing(median_ms=statistics.median(ts) * 1e3, iqr_ms=(q[2] - q[0]) * 1e3,
                           samples=len(ts))
    return out, errors

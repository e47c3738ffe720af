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
suite benchmarks/gpu_check.sh runs, kept small for its time box). See SUITES in suites.py for the
exact configs of each, and `--list` to print them for a device.

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
import dataclasses
import datetime
import os
import sys
import textwrap
import time
import traceback

if __package__ in (None, ""):
    # Run by path (python3 benchmarks/<script>.py, as the README and gpu_check.sh do), not with
    # -m: Python put benchmarks/ on sys.path, not the repo root that holds the `benchmarks`
    # package. Append the root (after site-packages: an installed fused_lstm keeps precedence).
    sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch
import torch.nn as nn

from benchmarks import plot
from benchmarks.environment import (
    describe_environment,
    device_slug,
    environment,
    safe_build_info,
    safe_kernel_choices,
)
from benchmarks.suites import (
    ALGO_ENV,
    DTYPES,
    IMPLS,
    MODES,
    PUBLIC_SUITES,
    SUITE_HELP,
    SUITES,
    Config,
    Impl,
    default_impls,
)
from benchmarks.tables import Printer, geomean, table_header, table_row, write_json
from benchmarks.timing import env_vars, sync, tf32_setting, time_interleaved
from benchmarks.workloads import (
    build_models,
    cuda_peak_bytes,
    make_inputs,
    make_step,
    max_abs_diff,
    saved_for_backward_bytes,
    token_count,
)


def _config_row(cfg: Config) -> dict:
    """The config's fields as every JSON row of it starts."""
    return {"config": cfg.name, "group": cfg.group, "T": cfg.T, "B": cfg.B, "I": cfg.I,
            "H": cfg.H, "layers": cfg.layers, "bidirectional": cfg.bidirectional,
            "proj_size": cfg.proj_size, "packed": list(cfg.packed) if cfg.packed else None,
            "dtype": cfg.dtype, "tf32": cfg.tf32, "dtype_label": cfg.dtype_label}


@dataclasses.dataclass
class _Workload:
    """One config's models (by model kind) and inputs, and what is measured once per config,
    outside the timed runs: output differences against nn.LSTM and (CPU) the bytes each
    implementation saves for backward, with the errors that stop an implementation (errors) or
    only its memory figure (saved_errors)."""
    models: dict[str, nn.Module]
    inputs: tuple | None
    tokens: int | None
    errors: dict[str, str]
    diffs: dict[str, float] = dataclasses.field(default_factory=dict)
    saved: dict[str, int] = dataclasses.field(default_factory=dict)
    saved_errors: dict[str, str] = dataclasses.field(default_factory=dict)


def _build_workload(cfg: Config, device: torch.device, impls: list[Impl],
                    verbose: bool) -> _Workload:
    dtype = DTYPES[cfg.dtype]
    gen = torch.Generator().manual_seed(0)
    try:
        models, model_errors = build_models(cfg, device, dtype, {i.model for i in impls},
                                            verbose=verbose)
        inputs = make_inputs(cfg, device, dtype, gen)
        work = _Workload(models, inputs, token_count(cfg, inputs[0]), {})
    except Exception as e:  # nn.LSTM itself or the inputs: nothing to compare against
        if verbose:
            traceback.print_exc()
        error = f"{type(e).__name__}: {e}"
        return _Workload({}, None, None, {impl.name: error for impl in impls})
    for impl in impls:
        model = models.get(impl.model)
        if model_errors.get(impl.model) or model is None:
            work.errors[impl.name] = model_errors.get(impl.model) or "not built"
            continue
        with env_vars(impl.env):
            try:
                if impl.name != "nn":
                    work.diffs[impl.name] = max_abs_diff(models["nn"], model, *inputs)
            except Exception as e:  # its forward fails: nothing to time either
                work.errors[impl.name] = f"{type(e).__name__}: {e}"
                if verbose:
                    traceback.print_exc()
                continue
            if device.type != "cuda" and any(m != "inference" for m in cfg.modes):
                try:
                    work.saved[impl.name] = saved_for_backward_bytes(model, *inputs)
                except Exception as e:  # no memory figure; the timing still runs
                    work.saved_errors[impl.name] = f"{type(e).__name__}: {e}"
    return work


def _run_mode(cfg: Config, mode: str, device: torch.device, impls: list[Impl],
              work: _Workload, repeat_seconds: float, verbose: bool) -> dict:
    """Times every implementation on one (config, mode), interleaved; returns the JSON row."""
    cuda = device.type == "cuda"
    label = f"{cfg.name} {cfg.dtype_label} {mode}"
    results: dict[str, dict] = {}
    fns, envs = {}, {}
    for impl in impls:
        res = results[impl.name] = {"median_ms": None, "iqr_ms": None, "samples": 0,
                                    "tokens_per_s": None, "memory_bytes": None,
                                    "ratio": None, "max_abs_diff": work.diffs.get(impl.name),
                                    "error": work.errors.get(impl.name)}
        if impl.env:
            res["env"] = dict(impl.env)
        elif impl.model == "fused" and cuda:
            res["env"] = {ALGO_ENV: os.environ.get(ALGO_ENV) or "auto"}
        if res["error"]:
            continue
        try:
            fns[impl.name] = make_step(work.models[impl.model], mode, *work.inputs)
            envs[impl.name] = impl.env
        except Exception as e:
            res["error"] = f"{type(e).__name__}: {e}"
    timings, errs = time_interleaved(fns, envs, label, torch.get_num_threads(), repeat_seconds,
                                     verbose=verbose)
    sync()
    for name, e in errs.items():
        results[name]["error"] = e
    tokens = work.tokens
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
        elif mode != "inference" and name in work.saved:
            res["memory_bytes"] = work.saved[name]
            res["memory_kind"] = "cpu_saved_for_backward"
        elif mode != "inference" and name in work.saved_errors:
            res["memory_error"] = work.saved_errors[name]
    nn_ms = results.get("nn", {}).get("median_ms")
    for name, res in results.items():
        if name != "nn" and nn_ms and res["median_ms"]:
            res["ratio"] = nn_ms / res["median_ms"]
    fns.clear()
    errors = [f"{name}: {res['error']}" for name, res in results.items() if res["error"]]
    row = dict(_config_row(cfg), mode=mode, tokens=tokens, results=results,
               error="; ".join(errors) or None)
    # Flat copies of the two main columns (older readers of these files use them).
    for who in ("nn", "fused"):
        res = results.get(who, {})
        row[f"{who}_median_ms"] = res.get("median_ms")
        row[f"{who}_iqr_ms"] = res.get("iqr_ms")
        row[f"{who}_samples"] = res.get("samples")
    row["ratio"] = results.get("fused", {}).get("ratio")
    row["max_abs_diff"] = results.get("fused", {}).get("max_abs_diff")
    return row


def run_config(cfg: Config, device: torch.device, impls: list[Impl], args, rows: list[dict],
               printer: Printer) -> None:
    """Runs every mode of one config: appends its rows and prints them."""
    with tf32_setting(cfg.tf32):
        work = _build_workload(cfg, device, impls, args.verbose)
        for mode in cfg.modes:
            row = _run_mode(cfg, mode, device, impls, work, args.repeat_seconds, args.verbose)
            rows.append(row)
            label = f"{cfg.name} {cfg.dtype_label} {mode}"
            if row["error"]:
                printer.text(f"[{label}] {row['error']}", err=True)
            printer.row(table_row(row, impls))
            printer.step(label)
    work.models.clear()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def parse_config(text: str) -> tuple[int, int, int, int]:
    try:
        T, B, I, H = (int(v) for v in text.split(","))  # noqa: E741  (Config's names)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected T,B,I,H (four integers), got {text!r}") from None
    if min(T, B, I, H) < 1:
        raise argparse.ArgumentTypeError(f"T, B, I and H must be positive, got {text!r}")
    return T, B, I, H


def _parser() -> argparse.ArgumentParser:
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
    return p


def _select_impls(p: argparse.ArgumentParser, args, device: torch.device,
                  suite_name: str) -> list[Impl]:
    cuda = device.type == "cuda"
    impl_names = (args.impls.split(",") if args.impls else default_impls(device, suite_name))
    bad = [i for i in impl_names if i not in IMPLS]
    if bad:
        p.error(f"unknown implementation(s) {bad}; choose from {list(IMPLS)}")
    impls = [IMPLS[i] for i in dict.fromkeys(impl_names)
             if not (IMPLS[i].cuda_only and not cuda)]
    if not impls:
        p.error("no implementation left to run on this device")
    impls.sort(key=lambda i: list(IMPLS).index(i.name))  # nn first: the ratios are against it
    return impls


def _select_configs(p: argparse.ArgumentParser, args, cuda: bool, suite_name: str,
                    modes: tuple[str, ...]) -> list[Config]:
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
                   for (T, B, I, H) in args.config for d in dtypes]  # noqa: E741  (Config's)
    else:
        configs = SUITES[suite_name](cuda)
    for c in configs:
        c.modes = tuple(m for m in c.modes if m in modes)
    if not cuda:
        configs = [c for c in configs if c.dtype != "float16"]  # no fast fp16 LSTM on CPU
    return [c for c in configs if c.modes]


def _print_header(env: dict, cuda: bool, suite_name: str, configs: list[Config]) -> None:
    for line in describe_environment(env):
        print(line)
    if cuda and env["cuda_algo_env"]:
        print(f"{ALGO_ENV}={env['cuda_algo_env']} (from the environment): `fused` runs it")
    mem_note = ("peak MB: CUDA memory allocated during one call" if cuda else
                "saved MB: bytes saved for backward by one forward (forward/fwdbwd rows)")
    print(f"suite: {suite_name} ({len(configs)} configs); times: median [IQR] ms; "
          f"nn/X = nn.LSTM median / X median (> 1: X is faster); {mem_note}")
    print()


def _print_geomeans(impls: list[Impl], modes: tuple[str, ...], rows: list[dict]) -> None:
    for impl in impls[1:]:
        parts = []
        for mode in modes:
            g = geomean([r["results"].get(impl.name, {}).get("ratio") for r in rows
                         if r["mode"] == mode])
            if g:
                parts.append(f"{mode} {g:.2f}x")
        if parts:
            print(f"geometric mean of nn/{impl.label}: " + ", ".join(parts))


def _write_outputs(result: dict, args, now: datetime.datetime) -> int:
    """--json and --out-dir (JSON and plots); returns the exit status."""
    paths = []
    if args.json:
        paths.append(os.path.abspath(args.json))
    out_json = None
    if args.out_dir:
        stamp = now.strftime("%Y%m%dT%H%M%SZ")
        out_json = os.path.join(os.path.abspath(args.out_dir),
                                f"{device_slug(result)}-{result['suite']}-{stamp}.json")
        paths.append(out_json)
    for path in paths:
        write_json(result, path)
        print(f"wrote {path}")
    if out_json:
        try:
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


def main(argv: list[str] | None = None) -> int:
    info = safe_build_info()
    cuda_ok = torch.cuda.is_available() and bool(info.get("cuda_built"))
    p = _parser()
    args = p.parse_args(argv)

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
    impls = _select_impls(p, args, device, suite_name)
    configs = _select_configs(p, args, cuda, suite_name, modes)
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
    _print_header(env, cuda, suite_name, configs)

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
    _print_geomeans(impls, modes, rows)
    # What the CPU layers measured and chose on this host (which GEMM kernels; which inference
    # layers ran ATen's LSTM): part of what a ratio means.
    choices = safe_kernel_choices() if not cuda else []
    return _write_outputs(dict(env, elapsed_s=elapsed, rows=rows, cpu_kernel_choices=choices), args,
                          now)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""PNG plots from a benchmarks/benchmark.py JSON result.

    python3 benchmarks/plot.py RESULT.json [MORE.json ...] [--out-dir DIR] [--impl fused]

For each JSON file, writes next to it (or into DIR):
  <stem>-speedup-vs-H.png       nn.LSTM median / fused median against H, one line per batch
                                size B (and T, dtype, layers, ...), one panel per mode; configs
                                with a single H show as single points
  <stem>-time-per-step-vs-T.png  microseconds per time step (median / T) against T, one line per
                                implementation and config where the result has several T for the
                                same (B, I, H, ...) (the sweep suite); otherwise every row as a
                                point, coloured by implementation
benchmark.py --out-dir DIR calls make_plots() after writing the JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict

MODES = ("inference", "forward", "fwdbwd")
COLORS = {"nn": "tab:blue", "fused": "tab:red", "fused_persistent": "tab:orange",
          "fused_step": "tab:purple", "reference": "tab:gray"}


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    return plt


def _dtype_label(row: dict) -> str:
    return row.get("dtype_label") or row["dtype"]


def _shape_label(row: dict, *, with_B=True, with_T=True, with_H=False) -> str:
    parts = []
    if with_B:
        parts.append(f"B={row['B']}")
    if with_T:
        parts.append(f"T={row['T']}")
    if with_H:
        parts.append(f"H={row['H']}")
    parts.append("I=H" if row["I"] == row["H"] else f"I={row['I']}")
    if row.get("layers", 1) != 1:
        parts.append(f"L={row['layers']}")
    if row.get("bidirectional"):
        parts.append("bidir")
    if row.get("proj_size"):
        parts.append(f"P={row['proj_size']}")
    if row.get("packed"):
        parts.append("packed")
    parts.append(_dtype_label(row))
    return " ".join(parts)


def _impl_result(row: dict, impl: str) -> dict:
    if "results" in row:
        return row["results"].get(impl) or {}
    # Files written before the per-implementation results: flat nn/fused columns.
    return {"median_ms": row.get(f"{impl}_median_ms"),
            "ratio": row.get("ratio") if impl == "fused" else None}


def _ticks(ax, axis: str, values, fmt: str = "{:g}") -> None:
    """Ticks at the values present, written plainly (not as powers of the log base)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator
    values = sorted(set(values))
    a = ax.xaxis if axis == "x" else ax.yaxis
    a.set_major_locator(FixedLocator(values))
    a.set_major_formatter(FuncFormatter(lambda v, _: fmt.format(v)))
    a.set_minor_locator(NullLocator())


def _plain_log_y(ax) -> None:
    """Log y axis labelled 1, 2, 5, 10, 20, ... (not 2x10^1)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _by_x(pts: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """Sorted by x; a config measured twice in one run (e.g. in two parts of a suite) becomes
    one point, the mean of its values."""
    acc: dict[float, list[float]] = defaultdict(list)
    for x, y in pts:
        acc[x].append(y)
    xs = sorted(acc)
    return xs, [sum(acc[x]) / len(acc[x]) for x in xs]


def _figure(plt, panels: int):
    return plt.subplots(1, panels, figsize=(max(9.0, 5.5 * panels), 4.8), squeeze=False)


def _modes(rows: list[dict]) -> list[str]:
    present = {r["mode"] for r in rows}
    return [m for m in MODES if m in present]


def _title(result: dict) -> str:
    name = result.get("device_name") or result.get("device", "?")
    commit = (result.get("git_commit") or "?")[:12]
    return (f"{result.get('suite', '?')} suite on {name}, {result.get('threads', '?')} threads, "
            f"torch {result.get('torch_version', '?')}, commit {commit}")


def _finish_figure(fig, result: dict, handles, labels, per_row: int, path: str) -> str:
    """Title, a shared legend below the panels (per_row entries a row), save and close."""
    fig.suptitle(_title(result), fontsize=9)
    fig.legend(handles, labels, loc="lower center", ncol=min(per_row, max(1, len(labels))),
               fontsize=7, frameon=False)
    rows_of_legend = (len(labels) + per_row - 1) // per_row
    fig.tight_layout(rect=(0, min(0.45, 0.05 * rows_of_legend + 0.03), 1, 0.95))
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def plot_speedup_vs_H(result: dict, path: str, impl: str = "fused") -> str | None:
    rows = [r for r in result["rows"] if _impl_result(r, impl).get("ratio")]
    if not rows:
        return None
    plt = _pyplot()
    modes = _modes(rows)
    fig, axes = _figure(plt, len(modes))
    for ax in axes[0][1:]:
        ax.sharey(axes[0][0])
    for ax, mode in zip(axes[0], modes):
        groups: dict[str, list[tuple[int, float]]] = defaultdict(list)
        order: dict[str, tuple] = {}
        for r in rows:
            if r["mode"] == mode:
                label = _shape_label(r)
                groups[label].append((r["H"], _impl_result(r, impl)["ratio"]))
                order[label] = (r["B"], r["T"], label)
        # Lines (several H) first, then single points; each by B, then T.
        for label, pts in sorted(groups.items(),
                                 key=lambda kv: (len({h for h, _ in kv[1]}) < 2, order[kv[0]])):
            xs, ys = _by_x(pts)
            ax.plot(xs, ys, marker="o", linestyle="-" if len(xs) > 1 else "none", label=label)
        ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)  # 2x faster and 2x slower are the same distance from 1
        ax.set_xlabel("hidden size H")
        _ticks(ax, "x", [r["H"] for r in rows])
        ratios = [_impl_result(r, impl)["ratio"] for r in rows]
        lo, hi = min(ratios + [1.0]), max(ratios + [1.0])
        _ticks(ax, "y", [v for v in (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1, 1.5, 2, 3, 5, 7, 10, 20,
                                     50, 100, 200, 500, 1000) if lo / 1.3 <= v <= hi * 1.3],
               "{:g}x")
        ax.set_title(mode)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel(f"speedup: nn.LSTM time / {impl} time")
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:  # union of the legends, in order
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    return _finish_figure(fig, result, handles, labels, per_row=4, path=path)


def plot_time_per_step_vs_T(result: dict, path: str) -> str | None:
    rows = result["rows"]
    impls = result.get("impls") or ["nn", "fused"]
    pts = [(r, i, _impl_result(r, i)["median_ms"]) for r in rows for i in impls
           if _impl_result(r, i).get("median_ms")]
    if not pts:
        return None
    plt = _pyplot()
    modes = _modes([r for r, _, _ in pts])
    # Configs measured at several T: lines. Otherwise every row as a point (per-step cost of
    # each config, placed at its T).
    Ts = defaultdict(set)
    for r, _, _ in pts:
        Ts[_shape_label(r, with_T=False, with_H=True)].add(r["T"])
    multi = {k for k, v in Ts.items() if len(v) > 1}
    fig, axes = _figure(plt, len(modes))
    styles = ["-", "--", ":", "-."]
    for ax, mode in zip(axes[0], modes):
        if multi:
            lines: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
            for r, i, ms in pts:
                key = _shape_label(r, with_T=False, with_H=True)
                if r["mode"] == mode and key in multi:
                    lines[(i, key)].append((r["T"], 1e3 * ms / r["T"]))
            keys = sorted(multi)
            for (i, key), p in sorted(lines.items()):
                xs, ys = _by_x(p)
                ax.plot(xs, ys, marker="o", color=COLORS.get(i), label=f"{i}: {key}",
                        linestyle=styles[keys.index(key) % len(styles)])
        else:
            for i in impls:
                p = [(r["T"], 1e3 * ms / r["T"]) for r, j, ms in pts
                     if j == i and r["mode"] == mode]
                if p:
                    xs, ys = zip(*p)
                    ax.scatter(xs, ys, color=COLORS.get(i), label=i, alpha=0.7)
        ax.set_xscale("log")
        ys = [y for line in ax.get_lines() for y in line.get_ydata()]
        ys += [y for coll in ax.collections for _, y in coll.get_offsets()]
        if ys and max(ys) > 8 * min(ys):
            ax.set_yscale("log")
            _plain_log_y(ax)
        else:  # within one order of magnitude: linear from 0 compares better
            ax.set_ylim(bottom=0, top=1.08 * max(ys or [1]))
        ax.set_xlabel("sequence length T")
        drawn = [r["T"] for r, _, _ in pts
                 if not multi or _shape_label(r, with_T=False, with_H=True) in multi]
        _ticks(ax, "x", drawn)
        ax.set_title(mode)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("time per step (µs) = median / T")
    handles, labels = axes[0][0].get_legend_handles_labels()
    return _finish_figure(fig, result, handles, labels, per_row=3, path=path)


def make_plots(result: dict, out_dir: str, stem: str, impl: str = "fused") -> list[str]:
    """Writes the PNGs for one result into out_dir; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    made = [plot_speedup_vs_H(result, os.path.join(out_dir, f"{stem}-speedup-vs-H.png"), impl),
            plot_time_per_step_vs_T(result,
                                    os.path.join(out_dir, f"{stem}-time-per-step-vs-T.png"))]
    return [p for p in made if p]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="+", metavar="RESULT.json")
    p.add_argument("--out-dir", default=None, help="default: next to each JSON file")
    p.add_argument("--impl", default="fused",
                   help="whose speedup over nn.LSTM to plot (default fused; on CUDA results also "
                   "fused_persistent, fused_step; or reference)")
    args = p.parse_args(argv)
    status = 0
    for path in args.results:
        with open(path) as f:
            result = json.load(f)
        out_dir = args.out_dir or os.path.dirname(os.path.abspath(path))
        stem = os.path.splitext(os.path.basename(path))[0]
        made = make_plots(result, out_dir, stem, args.impl)
        if not made:
            print(f"{path}: no timed rows to plot", file=sys.stderr)
            status = 1
        for png in made:
            print(f"wrote {png}")
    return status


if __name__ == "__main__":
    sys.exit(main())

"""Output: the markdown table (header, rows, number formats), the progress display, summary
statistics and the JSON result files."""
from __future__ import annotations

import json
import math
import os
import sys

from .suites import Impl


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


def geomean(values: list[float]) -> float | None:
    values = [v for v in values if v]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def write_json(result: dict, path: str) -> None:
    """Writes a result (the environment and its rows) as indented JSON, making its folder."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)

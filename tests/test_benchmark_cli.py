"""benchmarks/benchmark.py and benchmarks/plot.py end to end on CPU, on the hidden `tiny` suite
(seconds), and the reference runner the benchmark builds around lstm_layer_reference.

matplotlib is required, not optional: scripts/bootstrap.sh installs it, and the plots are part of
what --out-dir promises."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from benchmarks import benchmark as bench
from benchmarks import plot
from benchmarks.workloads import ReferenceLSTM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks", "benchmark.py")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ENV_KEYS = {"device", "device_name", "cpu_model", "cpu_capability", "threads", "torch_version",
            "cuda_version", "git_commit", "fused_lstm_build_info", "suite", "impls", "modes",
            "repeat_seconds", "timestamp", "elapsed_s", "rows"}
ROW_KEYS = {"config", "T", "B", "I", "H", "layers", "bidirectional", "packed", "dtype", "mode",
            "tokens", "results", "ratio", "nn_median_ms", "fused_median_ms", "max_abs_diff",
            "error"}
RESULT_KEYS = {"median_ms", "iqr_ms", "samples", "tokens_per_s", "memory_bytes", "ratio",
               "max_abs_diff", "error"}


def run_cli(*args, timeout=120):
    # Run by path, as the README does: the script appends the repo root to sys.path itself (an
    # installed fused_lstm keeps precedence: the source tree first on PYTHONPATH would shadow a
    # non-editable install's _C).
    return subprocess.run([sys.executable, BENCH, "--device", "cpu", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("bench")
    explicit = out_dir / "explicit" / "result.json"
    proc = run_cli("--suite", "tiny", "--repeat-seconds", "0.01", "--threads", "1",
                   "--out-dir", str(out_dir), "--json", str(explicit), "--progress", "on")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out_dir, explicit, proc


def test_cli_writes_table_json_and_pngs(tiny_run):
    out_dir, explicit, proc = tiny_run
    # Markdown table on stdout, one line per (config, mode).
    lines = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| config | dtype | mode | nn.LSTM ms")
    assert "nn/fused" in lines[0] and "nn/reference" in lines[0]
    jsons = sorted(out_dir.glob("cpu-tiny-*.json"))
    assert len(jsons) == 1, list(out_dir.iterdir())
    result = json.loads(jsons[0].read_text())
    assert json.loads(explicit.read_text()) == result  # --json and --out-dir: the same content
    assert ENV_KEYS <= result.keys()
    assert result["device"] == "cpu" and result["suite"] == "tiny" and result["threads"] == 1
    assert result["impls"] == ["nn", "fused", "reference"]
    assert "cpu_instruction_set" in result["fused_lstm_build_info"]
    rows = result["rows"]
    assert len(rows) == len(lines) - 2 == 4 * 3
    for row in rows:
        assert ROW_KEYS <= row.keys(), row.keys()
        assert row["error"] is None, row["error"]
        res = row["results"]
        assert set(res) == {"nn", "fused", "reference"}
        for name, r in res.items():
            assert RESULT_KEYS <= r.keys()
            assert r["median_ms"] > 0 and r["iqr_ms"] >= 0 and r["samples"] >= 3
            assert math.isclose(r["tokens_per_s"], row["tokens"] / (r["median_ms"] * 1e-3))
            if name != "nn":
                assert math.isclose(r["ratio"], res["nn"]["median_ms"] / r["median_ms"])
                assert r["max_abs_diff"] < 1e-4
            if row["mode"] == "inference":
                assert r["memory_bytes"] is None
            else:  # CPU: bytes saved for backward, the input and weights not counted
                assert r["memory_bytes"] > 0 and r["memory_kind"] == "cpu_saved_for_backward"
        assert math.isclose(row["ratio"], row["nn_median_ms"] / row["fused_median_ms"])
        assert row["ratio"] == res["fused"]["ratio"]
        if row["packed"]:
            assert row["tokens"] < row["T"] * row["B"]  # the real token count
        else:
            assert row["tokens"] == row["T"] * row["B"]
    pngs = sorted(p.name for p in out_dir.glob("*.png"))
    stem = jsons[0].stem
    assert pngs == [f"{stem}-speedup-vs-H.png", f"{stem}-time-per-step-vs-T.png"]
    for png in pngs:
        assert (out_dir / png).read_bytes()[:8] == PNG_SIGNATURE


def test_plot_cli_from_json(tiny_run, tmp_path):
    out_dir, explicit, _ = tiny_run
    assert plot.main([str(explicit), "--out-dir", str(tmp_path)]) == 0
    for name in ("result-speedup-vs-H.png", "result-time-per-step-vs-T.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_SIGNATURE
    # A JSON from before the per-implementation results (flat nn/fused columns) still plots.
    old = json.loads(explicit.read_text())
    for row in old["rows"]:
        del row["results"]
    old.pop("impls")
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert plot.main([str(tmp_path / "old.json")]) == 0
    assert (tmp_path / "old-speedup-vs-H.png").read_bytes()[:8] == PNG_SIGNATURE


def test_config_option_modes_and_json(tmp_path):
    # The options benchmarks/gpu_check.sh uses (--repeat-seconds, --json, --modes), on a
    # --config run instead of the gpu suite.
    path = tmp_path / "custom.json"
    proc = run_cli("--config", "3,2,4,5", "--layers", "2", "--dtypes", "float32,bfloat16",
                   "--impls", "nn,fused", "--repeat-seconds", "0.01", "--modes",
                   "inference,fwdbwd", "--json", str(path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(path.read_text())
    assert result["suite"] == "custom" and result["impls"] == ["nn", "fused"]
    assert [(r["dtype"], r["mode"], r["layers"]) for r in result["rows"]] == [
        ("float32", "inference", 2), ("float32", "fwdbwd", 2),
        ("bfloat16", "inference", 2), ("bfloat16", "fwdbwd", 2)]
    assert all(r["ratio"] > 0 for r in result["rows"])
    assert not list(tmp_path.glob("*.png"))  # --json alone writes no plots


def test_suites_list_and_argument_errors(capsys):
    for suite in ("quick", "standard", "packed", "sweep", "gpu"):
        assert bench.main(["--device", "cpu", "--suite", suite, "--list"]) == 0
    listing = capsys.readouterr().out
    assert "T=100 B=64 I=512 H=512 L=3" in listing and "packed len[30,100)" in listing
    for bad, why in ((["--modes", "backward"], "unknown mode"),
                     (["--impls", "cudnn"], "unknown implementation"),
                     (["--config", "1,2,3"], "expected T,B,I,H"),
                     (["--config", "1,2,3,4", "--suite", "quick"], "exclude each other")):
        with pytest.raises(SystemExit, match="^2$"):  # argparse's usage error
            bench.main(["--device", "cpu", *bad])
        assert why in capsys.readouterr().err, bad


def test_module_form_runs():
    # `python3 -m benchmarks.benchmark` (no sys.path bootstrap: the package is imported as such).
    proc = subprocess.run([sys.executable, "-m", "benchmarks.benchmark", "--device", "cpu",
                           "--suite", "tiny", "--list"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("tiny ") == 4 and "T=6 B=3 I=8 H=8 L=2 bidir" in proc.stdout


@pytest.mark.parametrize("packed", [False, True])
def test_reference_runner_matches_nn_lstm(packed):
    lstm = torch.nn.LSTM(5, 6, num_layers=2, bidirectional=True, proj_size=3,
                         dtype=torch.float64)
    ref = ReferenceLSTM(lstm)
    x = torch.randn(7, 4, 5, dtype=torch.float64)
    h0 = torch.randn(4, 4, 3, dtype=torch.float64)
    c0 = torch.randn(4, 4, 6, dtype=torch.float64)
    if packed:
        x = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor([3, 7, 1, 5]),
                                                    enforce_sorted=False)
    expected, (he, ce) = lstm(x, (h0, c0))
    got, (hg, cg) = ref(x, (h0, c0))
    if packed:
        assert isinstance(got, torch.nn.utils.rnn.PackedSequence)
        expected, got = expected.data, got.data
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(hg, he)
    torch.testing.assert_close(cg, ce)


def test_cpu_step_probe_reports_per_step_times(tmp_path):
    # The CPU per-step probe (issue 7's analysis): a tiny config, its table and JSON rows.
    out = tmp_path / "probe.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "cpu_step_probe.py"),
                           "--config", "2,16", "--steps", "3,9", "--seconds", "0.05", "--json",
                           str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| 2 | 16 |" in proc.stdout
    rows = json.load(open(out))["rows"]
    assert len(rows) == 1 and rows[0]["B"] == 2 and rows[0]["H"] == 16
    assert rows[0]["T_short"] == 3 and rows[0]["T_long"] == 9
    for key in ("nn_us_per_step", "fused_us_per_step", "nn_fixed_ms", "fused_fixed_ms"):
        assert math.isfinite(rows[0][key]), (key, rows[0])
    assert "nn_over_fused" in rows[0]


def test_cell_probe_reports_both_implementations():
    # benchmarks/cell_probe.py (per-call cost of LSTMCell steps and T=1 LSTM calls): a tiny run.
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "cell_probe.py"),
                           "--config", "1,8", "--calls", "3", "--samples", "2"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("B=1 H=8")]
    assert len(lines) == 2 and "no grad" in lines[0] and "grad" in lines[1], proc.stdout
    for line in lines:
        assert "LSTMCell" in line and "LSTM T=1" in line and line.count("x)") == 2, line

"""benchmarks/train_char_lm.py end to end on CPU: the tiny preset with both implementations
(JSON, PNG, loss agreement, checkpoint interchange), a 2-process gloo run against one process on
the same global batch, bf16 autocast, argument errors and the corpus split. 30-50 s on 2 shared
cores.
"""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import torch

from benchmarks import char_lm, train_char_lm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "train_char_lm.py")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TIMEOUT_S = 120  # each subprocess; the tiny preset takes seconds

# Agreement of fused_lstm.LSTM and nn.LSTM over the tiny run (30 AdamW steps, dropout 0.1). Both
# compute the same fp32 math from the same weights, data and dropout masks (on CPU both draw the
# inter-layer masks from the global generator in the same order, and each implementation replays
# the same generator state); only the summation order inside the GEMMs and gate passes differs,
# which moves a loss by ~1e-7 relative. Measured over the whole run: 1.2e-8 (validation) and
# 1.3e-7 (training). 1e-4 leaves room for other CPUs (AVX2 vs AVX-512 kernels, other BLAS
# blocking) and is still well below what a real difference does: with the dropout masks of one
# implementation drawn from another seed, the losses differ by 1.8e-3 (validation) and 5.5e-3
# (training); a wrong gate or bias, by far more.
IMPL_RTOL = 1e-4
# One process vs two on the same global batch (dropout 0, fp32): the gradients differ in the
# order the two halves of the batch are summed (gloo's all-reduce), and in the kernels: each rank
# runs B=4 on one thread, the single process B=8 on two, and the CPU path picks its recurrent
# GEMM by batch rows (oneDNN brgemm below 8 rows, MKL's packed SGEMM from 8) and its unit blocks
# by thread count (Note [Recurrent GEMMs on CPU]), so the products round differently. Measured
# when it was only the summation order: weights 4e-7 apart; with the kernels differing too,
# weights up to 4e-5 relative (one element of 2048) after the 30 steps, and (with the AVX-512
# gate pass's polynomial exp) one element 7.5e-6 = 1.2e-4 relative apart: AdamW's normalised
# updates amplify the rounding of a gradient near zero. The weights themselves are ~0.06.
DDP_RTOL = 1e-4
DDP_ATOL = 2e-5


def run(cmd, out_dir, *args):
    # As in test_benchmark_cli: the script finds the `benchmarks` package and fused_lstm on its
    # own (an installed fused_lstm first, else the tree's); PYTHONPATH is not set.
    proc = subprocess.run([*cmd, "--preset", "tiny", "--out-dir", str(out_dir), "--progress",
                           "off", "--device", "cpu", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (path,) = out_dir.glob("*.json")
    return json.loads(path.read_text()), path, proc


def single(out_dir, *args):
    return run([sys.executable, SCRIPT], out_dir, *args)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return single(tmp_path_factory.mktemp("tiny"))


def test_tiny_both_implementations(tiny):
    result, path, proc = tiny
    assert path.name.startswith("train-char-lm-tiny-cpu-")
    for key in ("device", "torch_version", "git_commit", "fused_lstm_build_info",
                "load_average_1min", "corpus", "config", "preset", "amp", "speedup"):
        assert key in result, key
    assert result["device"] == "cpu" and result["world_size"] == 1
    assert result["corpus"]["train"]["bytes"] == 256 << 10
    assert set(result["impls"]) == {"fused_lstm", "torch"}
    steps = result["config"]["steps"]
    for r in result["impls"].values():
        assert r["steps"] == steps and r["tokens_per_s"] > 0 and r["wall_s"] > r["train_s"] > 0
        assert [c["step"] for c in r["val_curve"]] == [0, 10, 20, 30]
        assert r["val_curve"][-1]["val_loss"] < r["val_curve"][0]["val_loss"] - 1  # it learns
        assert r["saved_for_backward_bytes"] > 0
        assert r["greedy_sample"].startswith("def ") and r["sampled_text"].startswith("def ")
        assert os.path.exists(r["checkpoint"])
    assert result["agreement"]["val_loss_max_rel_diff"] < IMPL_RTOL
    assert result["agreement"]["train_loss_max_rel_diff"] < IMPL_RTOL
    png = path.with_suffix(".png")
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    assert "| fused_lstm.LSTM |" in proc.stdout and "| torch.nn.LSTM |" in proc.stdout


def test_tiny_checkpoint_interchange(tiny):
    result, _, _ = tiny
    checks = {(c["checkpoint"], c["loaded_into"]): c for c in result["interchange"]}
    assert set(checks) == {("fused_lstm", "torch"), ("torch", "fused_lstm")}
    for c in checks.values():
        # The same weights in the other implementation: only summation order differs.
        assert c["val_loss_rel_diff"] < 1e-5, c
        assert c["same_greedy_sample"], c
    # The checkpoint is a plain state_dict with nn.LSTM's keys: it loads strictly into either.
    ckpt = torch.load(result["impls"]["fused_lstm"]["checkpoint"])
    reference = torch.nn.LSTM(16, 32, 2, batch_first=True)
    lstm_keys = {k[len("lstm."):] for k in ckpt["model"] if k.startswith("lstm.")}
    assert lstm_keys == set(reference.state_dict())
    assert ckpt["step"] == result["config"]["steps"] and ckpt["impl"] == "fused_lstm"


def test_two_processes_match_one_on_the_same_global_batch(tmp_path):
    # dropout 0: the ranks' dropout masks cannot match one process's.
    args = ("--impl", "fused_lstm", "--dropout", "0", "--no-interchange")
    one, _, _ = single(tmp_path / "one", *args)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node=2"]
    two, _, proc = run([*torchrun, SCRIPT], tmp_path / "two", *args)
    assert two["world_size"] == 2 and two["backend"] == "gloo"
    assert proc.stdout.count("| fused_lstm.LSTM |") == 1  # rank 0 alone reports
    a, b = one["impls"]["fused_lstm"], two["impls"]["fused_lstm"]
    for x, y in zip(a["val_curve"], b["val_curve"], strict=True):
        assert x["step"] == y["step"] and x["val_loss"] == pytest.approx(y["val_loss"],
                                                                        rel=DDP_RTOL)
    for (s, x), (t, y) in zip(a["train_loss_curve"], b["train_loss_curve"], strict=True):
        assert s == t and x == pytest.approx(y, rel=DDP_RTOL)
    wa = torch.load(a["checkpoint"])["model"]
    wb = torch.load(b["checkpoint"])["model"]
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=DDP_RTOL, atol=DDP_ATOL)


def test_bf16_autocast_and_argument_errors(tmp_path, capsys):
    assert train_char_lm.main(["--preset", "tiny", "--device", "cpu", "--amp", "bf16",
                               "--steps", "4", "--val-every", "2", "--impl", "fused_lstm",
                               "--no-interchange", "--progress", "off",
                               "--out-dir", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("*.json")
    result = json.loads(path.read_text())
    assert result["amp"] == "bf16"
    assert [c["step"] for c in result["impls"]["fused_lstm"]["val_curve"]] == [0, 2, 4]
    capsys.readouterr()
    for bad, word in ((["--amp", "fp16"], "--amp"), (["--dropout", "1"], "--dropout"),
                      (["--impl", "cudnn"], "--impl")):
        with pytest.raises(SystemExit, match="^2$"):  # argparse's usage error
            train_char_lm.main(["--device", "cpu", *bad])
        assert word in capsys.readouterr().err


def test_corpus_split_is_deterministic(tmp_path):
    names = [f"pkg/mod{i}.py" for i in range(60)] + ["tests/t.py", "site-packages/x.py",
                                                      "notes.txt"]
    for i, name in enumerate(reversed(names)):  # created in another order than sorted
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(f"x = {i}\n".encode())
    files = char_lm.corpus_files(str(tmp_path))
    assert files == sorted(f"pkg/mod{i}.py" for i in range(60))
    train, val, info = char_lm.load_corpus(str(tmp_path), None, None)
    n_val = sum(char_lm._path_hash(f) % char_lm.VAL_ONE_IN == 0 for f in files)
    assert 0 < n_val < 60 and info["val"]["files"] == n_val
    assert info["train"]["files"] == 60 - n_val
    assert train.count(char_lm.SEPARATOR) == 60 - n_val - 1
    assert char_lm.load_corpus(str(tmp_path), None, None) == (train, val, info)
    capped, _, info = char_lm.load_corpus(str(tmp_path), 20, None)
    assert len(capped) == 20 and capped == train[:20]


def test_default_output_folder_is_git_ignored():
    # Run from the repository root, the outputs must not show up as untracked files.
    out_dir = train_char_lm.DEFAULT_OUT_DIR
    assert out_dir == pathlib.Path(ROOT) / "benchmarks" / "out" / "train-char-lm"
    if shutil.which("git") is None or not (pathlib.Path(ROOT) / ".git").exists():
        pytest.skip("not a git checkout")
    probe = out_dir / "train-char-lm-tiny-cpu-x.json"
    proc = subprocess.run(["git", "check-ignore", "-q", str(probe)], cwd=ROOT)
    assert proc.returncode == 0, f"{probe} is not git-ignored"

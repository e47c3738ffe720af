"""The AVX512_BF16 dot-product kernel of the CPU recurrent products (Note [bf16 dot-product GEMM
on CPU] in csrc/cpu/bf16_dot_gemm.h): its product against an fp32 at::mm of the same bf16-rounded
operands, over row counts that exercise every register tile and remainder, depths odd and even,
widths that are and are not multiples of its 16-column panels, several blocks, and a strided
left operand; and the ValueError for pinning it where it cannot run. The layers it serves are
checked against torch.nn.LSTM in test_cpu_recurrent_paths.py (environment "bf16-dot").

Skipped on CPUs without AVX512_BF16, where the kernel never runs.
"""
import os
import subprocess
import sys

import pytest
import torch

import fused_lstm
from fused_lstm import _C
from tests.lstm_testing import cpu_has_avx512_bf16


def kernel_runs_here() -> bool:
    try:
        a, b = torch.zeros(1, 2, dtype=torch.bfloat16), torch.zeros(2, 16)
        _C._bf16_dot_gemm_for_tests(a, b, [0, 16])
    except RuntimeError:
        return False
    return True


pytestmark = pytest.mark.skipif(not cpu_has_avx512_bf16() or not kernel_runs_here(),
                                reason="the bf16 dot-product kernel needs a CPU with AVX512_BF16 "
                                       "(and ATEN_CPU_CAPABILITY avx512)")

# (k, column_begin): depths even, odd, 1 and deep; one block or several, widths multiples of 16
# or not (the last panel of each block partial), up to 4 panels a tile and beyond.
SHAPES = [
    (2, [0, 16]),
    (1, [0, 16]),
    (3, [0, 20]),
    (64, [0, 64]),
    (31, [0, 36, 100]),
    (255, [0, 48, 112]),
    (256, [0, 1024]),
    (512, [0, 128, 256, 512]),
    (33, [0, 8, 9, 80, 144]),
]


def reference(a, b):
    # fp32 at::mm of the bf16-rounded operands (the kernel accumulates in fp32 as well).
    return a.float() @ b.to(torch.bfloat16).float()


def tolerance(a, b):
    # Sums of fp32 products in another order: a few ulps of the sum of the terms' magnitudes.
    return 4e-6 * (a.float().abs() @ b.to(torch.bfloat16).float().abs()).max().item() + 1e-30


@pytest.mark.parametrize("m", [1, 2, 3, 5, 8, 16, 17, 33, 64])
def test_product_matches_fp32_reference(m):
    torch.manual_seed(m)
    for k, column_begin in SHAPES:
        n = column_begin[-1]
        a = torch.randn(m, k).to(torch.bfloat16)
        b = torch.randn(k, n)  # fp32: rounded to bf16 by the kernel's packing
        got = _C._bf16_dot_gemm_for_tests(a, b, column_begin)
        want = reference(a, b)
        err = (got - want).abs().max().item()
        assert err <= tolerance(a, b), f"m={m} k={k} blocks={column_begin}: off by {err:.3g}"


@pytest.mark.parametrize("m", [1, 7, 64])
def test_strided_rows_and_odd_depth_padding(m):
    # a's rows wider than k (row stride lda > k); past column k a NaN, which an odd k's last pair
    # must not read into the product.
    torch.manual_seed(100 + m)
    for k in (5, 64, 127):
        wide = torch.randn(m, k + 3).to(torch.bfloat16)
        wide[:, k:] = float("nan")
        a = wide[:, :k]
        b = torch.randn(k, 48).to(torch.bfloat16)
        got = _C._bf16_dot_gemm_for_tests(a, b, [0, 16, 48])
        assert torch.isfinite(got).all(), f"m={m} k={k}"
        assert (got - reference(a, b)).abs().max().item() <= tolerance(a, b), f"m={m} k={k}"


def test_repeated_products_are_identical():
    torch.manual_seed(5)
    a = torch.randn(17, 96).to(torch.bfloat16)
    b = torch.randn(96, 80)
    once = _C._bf16_dot_gemm_for_tests(a, b, [0, 80])
    assert torch.equal(once, _C._bf16_dot_gemm_for_tests(a, b, [0, 80], repeats=3))


def test_layer_output_with_the_kernel_pinned():
    # In process (the pin is read per call): H=40, P=7 (odd depth: a padded pair), B=5.
    torch.manual_seed(7)
    ref = torch.nn.LSTM(16, 40, proj_size=7).to(torch.bfloat16)
    fused = fused_lstm.LSTM(16, 40, proj_size=7).to(torch.bfloat16)
    fused.load_state_dict(ref.state_dict())
    x = torch.randn(12, 5, 16).to(torch.bfloat16)
    old = os.environ.get("FUSED_LSTM_CPU_BF16_RECURRENCE")
    os.environ["FUSED_LSTM_CPU_BF16_RECURRENCE"] = "bf16_dot"
    try:
        with torch.no_grad():
            got, want = fused(x)[0].float(), ref(x)[0].float()
    finally:
        if old is None:
            del os.environ["FUSED_LSTM_CPU_BF16_RECURRENCE"]
        else:
            os.environ["FUSED_LSTM_CPU_BF16_RECURRENCE"] = old
    assert (got - want).abs().max().item() < 0.03


def test_pin_where_the_kernel_cannot_run_is_a_clear_error():
    # A process held to AVX2 (ATEN_CPU_CAPABILITY) does not run the kernel: pinning it is a
    # ValueError naming the variable, not a silent fallback. H=40: not AMX's path on any host.
    code = ("import torch, fused_lstm\n"
            "try:\n"
            "    x = torch.randn(6, 2, 8).to(torch.bfloat16)\n"
            "    fused_lstm.LSTM(8, 40).to(torch.bfloat16)(x)\n"
            "    print('no error')\n"
            "except ValueError as e:\n"
            "    print('ValueError:', e)\n")
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2",
           "FUSED_LSTM_CPU_BF16_RECURRENCE": "bf16_dot", "FUSED_LSTM_CPU_BF16_GEMM": "1"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert proc.stdout.startswith("ValueError:"), out
    assert "FUSED_LSTM_CPU_BF16_RECURRENCE" in proc.stdout, out

"""Each path of the CPU recurrent products (Note [Recurrent GEMMs on CPU] in csrc/cpu/packed_gemm.h)
against torch.nn.LSTM: outputs, states and all gradients.

Which path serves a layer depends on the batch (MKL's packed SGEMM from 8 rows, when libtorch
exports it), the dtype (brgemm for fp32, at::mm for fp64, bf16 brgemm on AMX CPUs for bf16 layers
whose H is a multiple of 16) and FUSED_LSTM_CPU_PACKED_GEMM=0 (no MKL), read once per process: so
each environment runs in a subprocess of its own. The shapes
cover partial unit blocks (H not a multiple of the block size), packed sequences whose steps
shrink and (reverse direction) grow, projections, two layers, sequences too short to prepare the
weights for (fewer than 4 steps), single steps, and one and two threads; calls reusing pooled
scratch memory (Note [CPU scratch memory] in csrc/cpu/scratch_pool.h) against the same calls
without the pool;
and the prepared-weight cache seeing every kind of weight update.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import fused_lstm
from tests.lstm_testing import cpu_has_avx512_bf16

CHECK = textwrap.dedent("""
    import sys, torch, fused_lstm
    from torch import nn
    from torch.nn.utils.rnn import pack_padded_sequence
    from tests.lstm_testing import rel_err

    def check(B, H, dtype, threads, proj=0, layers=1, bidirectional=True, lengths=None, T=9):
        torch.set_num_threads(threads)
        torch.manual_seed(B * 1000 + H)
        I = 24
        ref = nn.LSTM(I, H, num_layers=layers, bidirectional=bidirectional,
                      proj_size=proj).to(dtype)
        fused = fused_lstm.LSTM(I, H, num_layers=layers, bidirectional=bidirectional,
                                proj_size=proj).to(dtype)
        fused.load_state_dict(ref.state_dict())
        x = torch.randn(T, B, I, dtype=dtype)
        if lengths is not None:
            x = pack_padded_sequence(x, lengths, enforce_sorted=False)
        results = []
        for m in (ref, fused):
            out, (h, c) = m(x)
            out = out.data if lengths is not None else out
            loss = out.square().sum() + h.sum() + 2 * c.sum()
            gs = torch.autograd.grad(loss, list(m.parameters()))
            results.append([out, h, c, *gs])
        tol = 1e-4 if dtype == torch.float32 else 1e-10
        for i, (a, b) in enumerate(zip(results[1], results[0])):
            err = (a - b).abs().max().item() / max(1.0, b.abs().max().item())
            if not err <= tol:
                sys.exit(f"B={B} H={H} {dtype} threads={threads} proj={proj} layers={layers} "
                         f"packed={lengths is not None}: result {i} off by {err:.2e}")

    def check_bf16(B, H, threads, lengths=None, proj=0):
        # bf16: fused's error vs an fp64 reference at most 2x nn.LSTM's own bf16 error + 1e-3 (the
        # suite's low-precision rule). H a multiple of 16: on CPUs with AMX the recurrent product
        # then runs as oneDNN bf16 brgemm per unit block (Note [bfloat16 GEMMs on CPU]); H a
        # multiple of 64: the backward's carry product too.
        torch.set_num_threads(threads)
        torch.manual_seed(B * 1000 + H)
        I = 32
        ref64 = nn.LSTM(I, H, bidirectional=True, proj_size=proj).double()
        for p in ref64.parameters():  # weights exactly representable in bf16
            p.data = p.data.to(torch.bfloat16).double()
        x = torch.randn(9, B, I, dtype=torch.float64).to(torch.bfloat16)
        results = {}
        for name, m, dtype in (("ref", ref64, torch.float64),
                               ("nn", nn.LSTM(I, H, bidirectional=True, proj_size=proj),
                                torch.bfloat16),
                               ("fused", fused_lstm.LSTM(I, H, bidirectional=True, proj_size=proj),
                                torch.bfloat16)):
            if name != "ref":
                m.load_state_dict(ref64.state_dict())
                m = m.to(dtype)
            xi = x.to(dtype)
            if lengths is not None:
                xi = pack_padded_sequence(xi, lengths, enforce_sorted=False)
            out, (h, c) = m(xi)
            out = out.data if lengths is not None else out
            loss = out.float().square().sum() + h.float().sum()
            results[name] = [out, h, c, *torch.autograd.grad(loss, list(m.parameters()))]
        for i, (f, t, r) in enumerate(zip(results["fused"], results["nn"], results["ref"])):
            e_f, e_t = rel_err(f, r), rel_err(t, r)
            if not e_f <= 2 * e_t + 1e-3:
                sys.exit(f"bf16 B={B} H={H} proj={proj} threads={threads}: result {i} "
                         f"error {e_f:.2e} > 2 x nn.LSTM's {e_t:.2e} + 1e-3")

    for threads in (1, 2):
        check_bf16(3, 48, threads)                              # blocks of 16 units
        check_bf16(40, 64, threads)
        lengths = torch.randint(1, 10, (11,))
        lengths[0] = 9
        check_bf16(11, 32, threads, lengths=lengths)
        check_bf16(11, 128, threads, lengths=lengths)           # AMX carry in the backward
        check_bf16(5, 32, threads, proj=8)                      # AMX products of float h
        check_bf16(17, 40, threads, proj=7)                     # odd depth (bf16 dot kernel)
        for dtype in (torch.float32, torch.float64):
            check(1, 20, dtype, threads)                       # too small to split: one block
            check(3, 130, dtype, threads, layers=2)            # 2 threads: block 32, partial 2
            check(40, 70, dtype, threads, proj=9)              # 40 rows: MKL's path when present
            check(36, 512, dtype, threads, bidirectional=False)  # block 64, eight full blocks
            lengths = torch.randint(1, 10, (37,))
            lengths[0] = 9
            check(37, 33, dtype, threads, lengths=lengths)     # packed: steps shrink / grow
            check(12, 40, dtype, threads, T=3)                 # < 4 steps: at::mm per step
            check(1, 40, dtype, threads, T=1, bidirectional=False)  # single steps (Note [Single
            check(5, 33, dtype, threads, T=1, layers=2)             # steps on CPU]), H and I not
            check(8, 17, dtype, threads, T=1)                       # multiples of the vector

    # Prepared weight cache (Note [Prepared weight cache]): the transposed W_hh operand (batches
    # below 8 rows) is reused only while the weight's bytes are unchanged -- whichever way they
    # change: through .data (no version bump), an in-place update, load_state_dict.
    torch.manual_seed(2)
    m = fused_lstm.LSTM(16, 48)
    ref = nn.LSTM(16, 48)
    x = torch.randn(7, 2, 16)
    def same_as_nn():
        ref.load_state_dict(m.state_dict())
        with torch.no_grad():
            a, b = m(x)[0], ref(x)[0]
        assert (a - b).abs().max().item() < 1e-5, (a - b).abs().max().item()
    same_as_nn()
    m.weight_hh_l0.data.mul_(0.5)
    same_as_nn()
    with torch.no_grad():
        m.weight_hh_l0.add_(0.01)
    same_as_nn()
    m.load_state_dict(nn.LSTM(16, 48).state_dict())
    same_as_nn()

    # Scratch memory (Note [CPU scratch memory]): a call reusing a larger call's buffers, and then
    # the larger call again, give what they gave on fresh memory.
    torch.manual_seed(1)
    for dtype in (torch.float32, torch.bfloat16):
        m = fused_lstm.LSTM(16, 48).to(dtype)
        big, small = torch.randn(30, 20, 16, dtype=dtype), torch.randn(6, 3, 16, dtype=dtype)
        with torch.no_grad():
            first_big, first_small = m(big)[0], m(small)[0]
            for _ in range(2):
                assert torch.equal(m(small)[0], first_small), dtype
                assert torch.equal(m(big)[0], first_big), dtype
    print("ok")
""")


# Every kernel choice forced in turn (Note [Measured GEMM choice on CPU]: by default each shape
# class takes whichever is measured faster on this host); "off": MKL left out and scratch memory
# never pooled (FUSED_LSTM_CPU_SCRATCH_MIB=0); "avx2": the CPU kernels, oneDNN and MKL all held to
# AVX2, as on an AVX2-only host.
ENVIRONMENTS = {
    "default": {},
    "off": {"FUSED_LSTM_CPU_PACKED_GEMM": "0", "FUSED_LSTM_CPU_SCRATCH_MIB": "0"},
    "mkl": {"FUSED_LSTM_CPU_RECURRENT_GEMM": "mkl_packed", "FUSED_LSTM_CPU_GEMM": "aten"},
    "onednn": {"FUSED_LSTM_CPU_RECURRENT_GEMM": "brgemm", "FUSED_LSTM_CPU_GEMM": "onednn"},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
             "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    # bf16 layers without AMX: each recurrence strategy (on AMX hosts these change nothing)
    "bf16-mm": {"FUSED_LSTM_CPU_BF16_RECURRENCE": "bf16_mm"},
    "bf16-fp32": {"FUSED_LSTM_CPU_BF16_RECURRENCE": "fp32"},
    # the AVX512_BF16 dot-product kernel (Note [bf16 dot-product GEMM on CPU]; skipped without it)
    "bf16-dot": {"FUSED_LSTM_CPU_BF16_RECURRENCE": "bf16_dot"},
}
TUNING_VARIABLES = ("FUSED_LSTM_CPU_PACKED_GEMM", "FUSED_LSTM_CPU_SCRATCH_MIB",
                    "FUSED_LSTM_CPU_GEMM", "FUSED_LSTM_CPU_RECURRENT_GEMM",
                    "FUSED_LSTM_CPU_BF16_RECURRENCE")


NEEDS_AVX512_BF16 = pytest.mark.skipif(
    not cpu_has_avx512_bf16(), reason="the bf16 dot-product kernel needs a CPU with AVX512_BF16")


@pytest.mark.parametrize("environment", [
    pytest.param(name, marks=NEEDS_AVX512_BF16) if name == "bf16-dot" else name
    for name in ENVIRONMENTS])
def test_recurrent_paths_match_nn_lstm(environment):
    env = {k: v for k, v in os.environ.items() if k not in TUNING_VARIABLES}
    env.update(ENVIRONMENTS[environment])
    # From the repo root, where `python -c` finds the `tests` package (CHECK imports its helpers).
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True,
                          timeout=600, cwd=root)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stdout + proc.stderr


CHOICES = textwrap.dedent("""
    import json, torch, fused_lstm
    torch.manual_seed(0)
    m = fused_lstm.LSTM(32, 64)
    x = torch.randn(6, 16, 32, requires_grad=True)
    rng = torch.get_rng_state()
    m(x)[0].sum().backward()                     # input projection, recurrent products, dx
    # Measuring draws no random numbers: the caller's next dropout masks stay the same.
    assert torch.equal(rng, torch.get_rng_state())
    print(json.dumps(fused_lstm.cpu_kernel_choices()))
""")


@pytest.mark.parametrize("environment", ["default", "mkl", "onednn"])
def test_kernel_choices_are_measured_or_pinned(environment):
    env = {k: v for k, v in os.environ.items() if k not in TUNING_VARIABLES}
    env.update(ENVIRONMENTS[environment])
    proc = subprocess.run([sys.executable, "-c", CHOICES], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    choices = json.loads(proc.stdout.strip().splitlines()[-1])
    linear = [c for c in choices if c["shape_class"].startswith("linear")]
    recurrent = [c for c in choices if c["shape_class"].startswith("recurrent")]
    if environment == "default":
        # The forward's projection [96, 32] x [32, 256], the backward's dx [96, 256] x [256, 32]
        # and weight gradients dgatesᵀ [256, 96] x [96, 32 or 64] (Note [Weight gradients on
        # CPU]): each measured, the faster kept.
        threads = torch.get_num_threads()
        assert {c["shape_class"] for c in linear} == {
            f"linear Float M<=128 K<=32 N=256 threads={threads}",
            f"linear Float M<=128 K<=256 N=32 threads={threads}",
            f"linear Float M<=256 K<=128 N=32 threads={threads}",
            f"linear Float M<=256 K<=128 N=64 threads={threads}"}, choices
        for c in linear:
            assert c["how"].startswith("measured: aten") and c["chosen"] in ("aten", "onednn"), c
        if "MKL" in fused_lstm.build_info()["cpu_recurrent_gemms"]:  # both candidates exist
            # The forward's blocks (depth P = 64) and the backward's (depth 4H = 256), 16 rows.
            assert sorted(c["shape_class"].split(" N_block")[0] for c in recurrent) == [
                "recurrent float32 rows<=16 K=256", "recurrent float32 rows<=16 K=64"], choices
            for c in recurrent:
                assert c["chosen"] in ("mkl_packed", "brgemm"), c
                assert c["how"].startswith("measured"), c
    else:
        assert choices == [], choices  # pinned: nothing measured


def test_build_info_names_the_recurrent_gemm_kernels():
    info = fused_lstm.build_info()["cpu_recurrent_gemms"]
    assert info.startswith("fp32: ") and "; bf16: " in info, info
    # FUSED_LSTM_CPU_PACKED_GEMM=0 (read once per process) takes MKL out.
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import fused_lstm; print(fused_lstm.build_info()['cpu_recurrent_gemms'])",
        ],
        env={**os.environ, "FUSED_LSTM_CPU_PACKED_GEMM": "0"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "MKL" not in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize("name,value", [("FUSED_LSTM_CPU_SCRATCH_MIB", "lots"),
                                        ("FUSED_LSTM_CPU_SCRATCH_MIB", "-1"),
                                        ("FUSED_LSTM_CPU_UNIT_BLOCK", "20"),
                                        ("FUSED_LSTM_CPU_GEMM", "mkl"),
                                        ("FUSED_LSTM_CPU_RECURRENT_GEMM", "fastest"),
                                        ("FUSED_LSTM_CPU_BF16_RECURRENCE", "bf16")])
def test_bad_tuning_variable_is_a_clear_error(name, value):
    code = ("import torch, fused_lstm\n"
            "try:\n"
            "    fused_lstm.LSTM(8, 32)(torch.randn(5, 2, 8))\n"
            "except ValueError as e:\n"
            "    print('ValueError:', e)\n")
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, name: value},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("ValueError:") and name in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_single_step_with_strided_operands(dtype):
    # Single steps (Note [Single steps on CPU]) read the weights and biases in place, made
    # contiguous first where they are not: strided views must give the reference's results.
    torch.manual_seed(3)
    B, I, H = 3, 10, 12  # noqa: E741 (I: the input size, as everywhere here)
    x = torch.randn(1, B, 2 * I, dtype=dtype)[:, :, ::2]
    h, c = (torch.randn(B, 2 * H, dtype=dtype)[:, ::2] for _ in range(2))
    w_ih = torch.randn(I, 4 * H, dtype=dtype).t()
    w_hh = torch.randn(H, 4 * H, dtype=dtype).t()
    b_ih, b_hh = (torch.randn(8 * H, dtype=dtype)[::2] for _ in range(2))
    got = fused_lstm.lstm_layer(x, h, c, w_ih, w_hh, b_ih, b_hh)
    want = fused_lstm.lstm_layer_reference(x, h, c, w_ih, w_hh, b_ih, b_hh)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)

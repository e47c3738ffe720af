"""Every per-instruction-set build of the CPU gate passes (Note [CPU instruction sets]) agrees
with nn.LSTM. The build is chosen once per process from ATEN_CPU_CAPABILITY / the CPU, so each
one runs in a subprocess; builds this CPU cannot run fall back (ATen caps the capability)."""
import functools
import os
import subprocess
import sys
import textwrap

import pytest

CHECK = textwrap.dedent("""
    import torch, fused_lstm
    torch.manual_seed(0)
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 2e-5)):
        # H = 37: vector bodies and scalar tails; packed + bidirectional: every row layout.
        ref = torch.nn.LSTM(5, 37, bidirectional=True, dtype=dtype)
        fused = fused_lstm.LSTM.from_torch(ref)
        x = torch.randn(6, 3, 5, dtype=dtype)
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor([6, 4, 1]))
        outs = []
        for m in (ref, fused):
            out, (h, c) = m(packed)
            loss = out.data.square().sum() + h.sum() + c.sum()
            outs.append([out.data, h, c, *torch.autograd.grad(loss, list(m.parameters()))])
        for a, b in zip(*outs):
            torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    # The build that ran, and the capability ATen settled on (ATEN_CPU_CAPABILITY, capped by
    # what this CPU has): fused_lstm picks its build from the latter.
    print(fused_lstm.build_info()["cpu_instruction_set"], torch.backends.cpu.get_cpu_capability())
""")
ORDER = ["default", "avx2", "avx512"]


@functools.lru_cache(maxsize=None)
def _hardware_capability() -> str:
    """The best capability ATen finds on this CPU (ATEN_CPU_CAPABILITY unset), lower-cased."""
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    result = subprocess.run([sys.executable, "-c", "import torch; "
                             "print(torch.backends.cpu.get_cpu_capability())"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().lower()


@pytest.mark.parametrize("capability", ["default", "avx2", "avx512"])
def test_cpu_instruction_set_builds_match_nn_lstm(capability):
    env = dict(os.environ, ATEN_CPU_CAPABILITY=capability)
    result = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    chosen, aten = result.stdout.strip().splitlines()[-1].split()
    hardware = _hardware_capability()
    if hardware not in ORDER:  # not an x86 CPU: only the default build exists
        assert chosen == "default", (chosen, aten, hardware)
        return
    # The build that ran is the one for ATen's capability...
    assert chosen == aten.lower(), (chosen, aten)
    # ...which is the requested one whenever this CPU has it (else the best it has).
    expected = ORDER[min(ORDER.index(capability), ORDER.index(hardware))]
    assert chosen == expected, f"asked for {capability} on a {hardware} CPU, ran {chosen}"

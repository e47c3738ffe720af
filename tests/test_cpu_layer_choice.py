"""The CPU layers' measured choice between the fused layer and ATen's LSTM for inference calls
(Note [ATen's LSTM as a candidate] in csrc/cpu/lstm_cpu.cpp), against torch.nn.LSTM.

The rest of the suite pins the fused layer (tests/conftest.py); here: ATen's side pinned, the
measured choice in a fresh process, training calls never leaving the fused layer, and a bad value
of FUSED_LSTM_CPU_LAYER.
"""
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

import fused_lstm
from tests.lstm_testing import json_from_fresh_process, rel_err


def _pair(input_size, hidden, dtype, **kwargs):
    ref = nn.LSTM(input_size, hidden, **kwargs).to(dtype)
    fused = fused_lstm.LSTM(input_size, hidden, **kwargs).to(dtype)
    fused.load_state_dict(ref.state_dict())
    return ref, fused


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kwargs", [{}, {"bidirectional": True, "num_layers": 2}, {"bias": False}])
def test_aten_lstm_layers_match_nn_lstm(monkeypatch, dtype, kwargs):
    monkeypatch.setenv("FUSED_LSTM_CPU_LAYER", "aten_lstm")
    ref, fused = _pair(12, 20, dtype, **kwargs)
    directions = 2 if kwargs.get("bidirectional") else 1
    layers = kwargs.get("num_layers", 1)
    x = torch.randn(7, 3, 12, dtype=dtype)
    h0 = torch.randn(layers * directions, 3, 20, dtype=dtype)
    c0 = torch.randn(layers * directions, 3, 20, dtype=dtype)
    with torch.no_grad():
        expected, (h_ref, c_ref) = ref(x, (h0, c0))
        out, (h, c) = fused(x, (h0, c0))
    # The same primitive on the same operands (a reverse direction on the flipped input).
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(h, h_ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(c, c_ref, rtol=1e-6, atol=1e-6)


def test_training_calls_run_the_fused_layer(monkeypatch):
    # Pinning ATen's LSTM changes nothing where gradients are wanted: the backward op needs the
    # fused layer's saved gates and cells.
    monkeypatch.setenv("FUSED_LSTM_CPU_LAYER", "aten_lstm")
    ref, fused = _pair(12, 20, torch.float32, num_layers=2)
    x = torch.randn(7, 3, 12)
    x_ref = x.clone().requires_grad_(True)
    x_fused = x.clone().requires_grad_(True)
    ref(x_ref)[0].square().sum().backward()
    fused(x_fused)[0].square().sum().backward()
    assert rel_err(x_fused.grad, x_ref.grad) < 1e-5
    for name, p in fused.named_parameters():
        assert rel_err(p.grad, dict(ref.named_parameters())[name].grad) < 1e-5, name


CHOICE = textwrap.dedent("""
    import json, torch, fused_lstm
    torch.manual_seed(0)
    ref = torch.nn.LSTM(16, 32, bidirectional=True)
    fused = fused_lstm.LSTM(16, 32, bidirectional=True)
    fused.load_state_dict(ref.state_dict())
    x = torch.randn(10, 4, 16)
    with torch.no_grad():
        for _ in range(3):  # the first call measures; later ones follow the choice
            out = fused(x)[0]
        err = (out - ref(x)[0]).abs().max().item()
    print(json.dumps({"err": err, "choices": fused_lstm.cpu_kernel_choices()}))
""")


def test_inference_layers_choose_by_measurement():
    result = json_from_fresh_process(CHOICE, without=("FUSED_LSTM_CPU_LAYER",))
    assert result["err"] < 1e-5, result
    layers = [c for c in result["choices"] if c["shape_class"].startswith("layer")]
    threads = torch.get_num_threads()
    # One class per direction, each timed both ways, the faster kept.
    assert sorted(c["shape_class"] for c in layers) == [
        f"layer Float T<=16 rows<=4 I=16 H=32 reverse threads={threads}",
        f"layer Float T<=16 rows<=4 I=16 H=32 threads={threads}"], result
    for c in layers:
        assert c["chosen"] in ("fused", "aten_lstm"), c
        assert c["how"].startswith("measured: fused ") and ", aten_lstm " in c["how"], c


def test_a_bad_layer_choice_names_the_variable():
    env = dict(os.environ, FUSED_LSTM_CPU_LAYER="fastest")
    code = ("import torch, fused_lstm\n"
            "with torch.no_grad(): fused_lstm.LSTM(4, 8)(torch.randn(5, 2, 4))\n")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0
    assert "ValueError" in proc.stderr and "FUSED_LSTM_CPU_LAYER" in proc.stderr, proc.stderr

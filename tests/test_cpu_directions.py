"""Both directions of a bidirectional CPU layer in one call (Note [Concurrent directions on CPU]
in csrc/cpu/lstm_cpu_directions.cpp), one after the other and concurrently, against
torch.nn.LSTM: outputs, states, gradients (second order too), the measured choice and a bad
FUSED_LSTM_CPU_DIRECTIONS.
"""
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import fused_lstm
from tests.lstm_testing import json_from_fresh_process, rel_err

F64 = torch.float64


def _pair(dtype, **kwargs):
    ref = nn.LSTM(6, 10, bidirectional=True, **kwargs).to(dtype)
    fused = fused_lstm.LSTM(6, 10, bidirectional=True, **kwargs).to(dtype)
    fused.load_state_dict(ref.state_dict())
    return ref, fused


def _outputs(module, x, h0, c0, packed):
    out, (h, c) = module(x, (h0, c0))
    if packed:
        out = out.data
    return [out, h, c]


@pytest.mark.parametrize("directions", ["sequential", "concurrent"])
@pytest.mark.parametrize("kwargs,packed", [
    ({}, False), ({"num_layers": 2, "bias": False}, False), ({"proj_size": 4}, False),
    ({"num_layers": 2}, True)], ids=["plain", "2-layers-no-bias", "proj", "packed"])
def test_both_directions_match_nn_lstm(monkeypatch, directions, kwargs, packed):
    monkeypatch.setenv("FUSED_LSTM_CPU_DIRECTIONS", directions)
    torch.manual_seed(0)
    ref, fused = _pair(F64, **kwargs)
    layers = kwargs.get("num_layers", 1)
    x = torch.randn(7, 3, 6, dtype=F64, requires_grad=True)
    h0 = torch.randn(2 * layers, 3, kwargs.get("proj_size") or 10, dtype=F64, requires_grad=True)
    c0 = torch.randn(2 * layers, 3, 10, dtype=F64, requires_grad=True)
    seq = pack_padded_sequence(x, [7, 5, 2]) if packed else x
    got = _outputs(fused, seq, h0, c0, packed)
    want = _outputs(ref, seq, h0, c0, packed)
    for a, b in zip(got, want):
        assert rel_err(a, b) < 1e-10
    leaves = [x, h0, c0]
    ups = [torch.randn_like(t) for t in got]
    # (retain_graph: packing x is part of both graphs)
    got_grads = torch.autograd.grad(got, leaves + list(fused.parameters()), ups, retain_graph=True)
    want_grads = torch.autograd.grad(want, leaves + list(ref.parameters()), ups)
    for a, b in zip(got_grads, want_grads):
        assert rel_err(a, b) < 1e-9
    with torch.no_grad():  # the inference route
        for a, b in zip(_outputs(fused, seq, h0, c0, packed), want):
            assert rel_err(a, b) < 1e-10


@pytest.mark.parametrize("directions", ["sequential", "concurrent"])
def test_second_order_gradients_match_nn_lstm(monkeypatch, directions):
    monkeypatch.setenv("FUSED_LSTM_CPU_DIRECTIONS", directions)
    torch.manual_seed(1)
    ref, fused = _pair(F64)
    x = torch.randn(5, 2, 6, dtype=F64, requires_grad=True)
    results = []
    for m in (fused, ref):
        out = m(x)[0]
        (first,) = torch.autograd.grad((out * out.sin()).sum(), x, create_graph=True)
        results.append(torch.autograd.grad((first * first).sum(), list(m.parameters())))
    for a, b in zip(*results):
        assert rel_err(a, b) < 1e-9


def test_only_some_weights_requiring_grad(monkeypatch):
    monkeypatch.setenv("FUSED_LSTM_CPU_DIRECTIONS", "concurrent")
    ref, fused = _pair(F64)
    for m in (ref, fused):
        m.weight_hh_l0.requires_grad_(False)
        m.bias_ih_l0_reverse.requires_grad_(False)
    x = torch.randn(4, 2, 6, dtype=F64)
    fused(x)[0].sum().backward()
    ref(x)[0].sum().backward()
    for (name, a), b in zip(fused.named_parameters(), ref.parameters()):
        assert (a.grad is None) == (b.grad is None), name
        if a.grad is not None:
            assert rel_err(a.grad, b.grad) < 1e-9, name


CHOICE = textwrap.dedent("""
    import json, torch, fused_lstm
    torch.set_num_threads(2)
    m = fused_lstm.LSTM(8, 16, bidirectional=True)
    with torch.no_grad():
        for _ in range(3):
            m(torch.randn(6, 2, 8))
    print(json.dumps(fused_lstm.cpu_kernel_choices()))
""")


def test_the_choice_is_measured_in_a_fresh_process():
    choices = json_from_fresh_process(CHOICE, without=("FUSED_LSTM_CPU_DIRECTIONS",))
    directions = [c for c in choices if c["shape_class"].startswith("directions")]
    assert [c["shape_class"] for c in directions] == [
        "directions inference Float tokens<=16 rows<=2 I=8 H=16 P=16 threads=2"], choices
    assert directions[0]["chosen"] in ("sequential", "concurrent")
    assert directions[0]["how"].startswith("measured: sequential "), directions


def test_a_bad_directions_value_names_the_variable():
    env = dict(os.environ, FUSED_LSTM_CPU_DIRECTIONS="both")
    code = ("import torch, fused_lstm\n"
            "m = fused_lstm.LSTM(4, 8, bidirectional=True)\n"
            "with torch.no_grad(): m(torch.randn(5, 2, 4))\n")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0
    assert "ValueError" in proc.stderr and "FUSED_LSTM_CPU_DIRECTIONS" in proc.stderr, proc.stderr


HOOKS = textwrap.dedent("""
    import torch, fused_lstm
    torch.set_num_threads(2)
    m = fused_lstm.LSTM(8, 16, bidirectional=True)
    x = torch.randn(6, 2, 8, requires_grad=True)
    saved = []
    def pack(t):
        saved.append(t.numel())
        return t
    # Python saved-tensor hooks live in the thread-local state the worker threads take over
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        m(x)[0].sum().backward()
        with torch.no_grad():
            m(x)
    print("ok", len(saved) > 0)
""")


def test_concurrent_directions_under_python_saved_tensor_hooks():
    # Once a deadlock: the workers' copy of the caller's thread-local state increfs the hooks'
    # Python objects, which needs the GIL that the calling thread held.
    env = dict(os.environ, FUSED_LSTM_CPU_DIRECTIONS="concurrent")
    proc = subprocess.run([sys.executable, "-c", HOOKS], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok True", proc.stdout + proc.stderr

"""The modules' plain-eager routes (fused_lstm/_eager.py, functional.run_layer): the lean
autograd.Functions and the direct op calls give what the general LSTMLayerFunction route gives
(bitwise, first and second order), module states are fresh tensors as nn.LSTM's are, and
subclasses that override nn's check methods still have them called.
"""
import pytest
import torch
from torch import nn

import fused_lstm
from fused_lstm.functional import LSTMLayerFunction, _apply_outside_transforms
from tests.lstm_testing import assert_close, grads

F32, F64 = torch.float32, torch.float64
I, H = 5, 6  # noqa: E741


def layer_function_step(cell, x, h, c):
    """One cell step through LSTMLayerFunction (the route before the lean Functions)."""
    weights = [cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh]
    _, hy, cy, _, _ = _apply_outside_transforms(
        LSTMLayerFunction, (x.unsqueeze(0), h, c, *weights, None, None, False, True))
    return hy, cy


def first_and_second_order(outputs, inputs):
    """The outputs, their first-order gradients (with a graph) and a second-order gradient."""
    loss = sum((o * o.sin()).sum() for o in outputs)
    first = torch.autograd.grad(loss, inputs, create_graph=True)
    second = torch.autograd.grad(sum((g * g).sum() for g in first), inputs)
    return [o.detach() for o in outputs] + [g.detach() for g in first] + list(second)


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("batch", [1, 3, 8, 9])  # 9: past the packed-step layout's rows
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_cell_step_bitwise_like_layer_function(dtype, batch, bias):
    torch.manual_seed(batch)
    cell = fused_lstm.LSTMCell(I, H, bias=bias, dtype=dtype)
    x, h, c = (torch.randn(batch, n, dtype=dtype, requires_grad=True) for n in (I, H, H))
    inputs = [x, h, c, *cell.parameters()]
    got = first_and_second_order(cell(x, (h, c)), inputs)
    want = first_and_second_order(layer_function_step(cell, x, h, c), inputs)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    with torch.no_grad():
        for a, b in zip(cell(x, (h, c)), want[:2]):
            assert torch.equal(a, b)


@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no-grad"])
def test_one_layer_module_states_are_fresh_like_nn(steps, grad):
    """h_n and c_n are not views (h_n.detach_() works, as on nn.LSTM's) and share no memory
    with the output; values and gradients as nn.LSTM's."""
    torch.manual_seed(steps)
    ref = nn.LSTM(I, H, dtype=F64)
    fused = fused_lstm.LSTM.from_torch(ref)
    x = torch.randn(steps, 2, I, dtype=F64, requires_grad=True)
    h0, c0 = (torch.randn(1, 2, H, dtype=F64, requires_grad=True) for _ in range(2))
    with torch.set_grad_enabled(grad):
        out, (h_n, c_n) = fused(x, (h0, c0))
        ref_out, (ref_h, ref_c) = ref(x, (h0, c0))
    for t in (out, h_n, c_n):
        assert t._base is None
    assert len({out.data_ptr(), h_n.data_ptr(), c_n.data_ptr()}) == 3
    for a, b in ((out, ref_out), (h_n, ref_h), (c_n, ref_c)):
        assert_close(a, b)
    if grad:
        ups = [torch.randn_like(t) for t in (out, h_n, c_n)]
        got = grads([out, h_n, c_n], [x, h0, c0, *fused.parameters()], ups)
        want = grads([ref_out, ref_h, ref_c], [x, h0, c0, *ref.parameters()], ups)
        for a, b in zip(got, want):
            assert_close(a, b)
    h_n.detach_()
    c_n.detach_()


def test_overridden_nn_check_methods_are_called():
    calls = []

    class Checked(fused_lstm.LSTM):
        def check_input(self, input, batch_sizes):
            calls.append("check_input")
            super().check_input(input, batch_sizes)

        def get_expected_hidden_size(self, input, batch_sizes):
            calls.append("get_expected_hidden_size")
            return super().get_expected_hidden_size(input, batch_sizes)

    m = Checked(I, H)
    m(torch.randn(3, 2, I), (torch.zeros(1, 2, H), torch.zeros(1, 2, H)))
    assert calls.count("check_input") == 1 and calls.count("get_expected_hidden_size") == 2
    with pytest.raises(RuntimeError, match=r"Expected hidden\[0\] size \(1, 2, 6\), got"):
        m(torch.randn(3, 2, I), (torch.zeros(1, 3, H), torch.zeros(1, 2, H)))


@pytest.mark.parametrize("steps", [1, 4])
@pytest.mark.parametrize("proj", [0, 3])
def test_one_layer_fast_path_matches_the_general_path(steps, proj):
    """Note [One-layer fast path]: (h_0, c_0) as a tuple takes it, as a list the general path;
    both give the same values and gradients, bitwise."""
    torch.manual_seed(steps + proj)
    m = fused_lstm.LSTM(I, H, proj_size=proj, dtype=F64)
    x = torch.randn(steps, 2, I, dtype=F64, requires_grad=True)
    h0 = torch.randn(1, 2, proj or H, dtype=F64, requires_grad=True)
    c0 = torch.randn(1, 2, H, dtype=F64, requires_grad=True)
    inputs = [x, h0, c0, *m.parameters()]
    fast_out, (fast_h, fast_c) = m(x, (h0, c0))
    general_out, (general_h, general_c) = m(x, [h0, c0])
    got = first_and_second_order([fast_out, fast_h, fast_c], inputs)
    want = first_and_second_order([general_out, general_h, general_c], inputs)
    for a, b in zip(got, want):
        assert torch.equal(a, b)

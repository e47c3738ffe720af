"""fused_lstm.lstm_layer (one layer, one direction) vs torch.nn.LSTM and vs the reference loop.

Every comparison covers output, hy, cy and the gradients of input, hx, cx, weight_ih, weight_hh,
bias_ih, bias_hh (and weight_hr with a projection), under a random upstream gradient on output,
hy and cy.
"""
import copy

import pytest
import torch
from torch import nn

import fused_lstm
from tests.lstm_testing import (
    Case,
    assert_close,
    compare,
    compare_lowp,
    copy_weights_from,
    proj_for,
    run,
)

F64 = torch.float64


def small_TB(H):
    return (2, 2) if H >= 257 else (5, 3)


DTYPES = [pytest.param(torch.float64, id="f64"), pytest.param(torch.float32, id="f32")]


# ------------------------------------------------------------------------------------------------
# Padded input, forward direction
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("H", [1, 7, 33, 257])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("proj", [False, True], ids=["noproj", "proj"])
def test_fused_vs_nn_lstm(dtype, H, bias, proj):
    if proj and H == 1:
        pytest.skip("nn.LSTM needs proj_size < hidden_size")
    T, B = small_TB(H)
    case = Case(T, B, 6, H, proj_for(H, proj), bias=bias)
    fused = run(case, "fused", dtype)
    compare(fused, run(case, "nn", dtype), dtype, what="fused vs nn.LSTM:")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("H", [1, 7, 33, 257])
@pytest.mark.parametrize("proj", [False, True], ids=["noproj", "proj"])
def test_fused_vs_reference(dtype, H, proj):
    if proj and H == 1:
        pytest.skip("projection needs H > 1")
    T, B = small_TB(H)
    case = Case(T, B, 6, H, proj_for(H, proj))
    compare(run(case, "fused", dtype), run(case, "reference", dtype), dtype,
            what="fused vs reference:")


@pytest.mark.parametrize("cfg", [
    dict(H=7, P=0, bias=True), dict(H=7, P=3, bias=False), dict(H=33, P=5, bias=True),
], ids=["H7", "H7-proj-nobias", "H33-proj"])
def test_reference_vs_nn_lstm(cfg):
    """The oracle itself must agree with nn.LSTM (float64)."""
    case = Case(4, 3, 5, cfg["H"], cfg["P"], bias=cfg["bias"])
    compare(run(case, "reference", F64), run(case, "nn", F64), F64, what="reference vs nn.LSTM:")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "H,proj", [(1, False), (33, False), (33, True)], ids=["H1", "H33", "H33-proj"]
)
def test_T1_B1_large_input(dtype, H, proj):
    case = Case(1, 1, 300, H, proj_for(H, proj))
    fused = run(case, "fused", dtype)
    compare(fused, run(case, "nn", dtype), dtype, what="fused vs nn.LSTM:")
    compare(fused, run(case, "reference", dtype), dtype, what="fused vs reference:")


@pytest.mark.parametrize("dtype", DTYPES)
def test_long_sequence(dtype):
    """Enough steps that an error in the recurrence (state carried across steps) shows."""
    case = Case(40, 2, 4, 9, 0)
    compare(run(case, "fused", dtype), run(case, "nn", dtype), dtype, what="fused vs nn.LSTM:")


# ------------------------------------------------------------------------------------------------
# Reverse direction
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("H,proj,bias", [(1, False, True), (7, False, True), (33, True, True),
                                         (7, True, False)],
                         ids=["H1", "H7", "H33-proj", "H7-proj-nobias"])
def test_reverse_vs_nn_bidirectional(dtype, H, proj, bias):
    case = Case(5, 3, 6, H, proj_for(H, proj), bias=bias, bidirectional=True)
    fused = run(case, "fused", dtype, reverse=True)
    compare(fused, run(case, "nn", dtype, reverse=True), dtype, what="fused(reverse) vs nn.LSTM:")
    compare(fused, run(case, "reference", dtype, reverse=True), dtype,
            what="fused(reverse) vs reference(reverse):")


@pytest.mark.parametrize("proj", [False, True], ids=["noproj", "proj"])
def test_reverse_equals_flipped_forward(proj):
    torch.manual_seed(1)
    T, B, I, H = 6, 3, 4, 7  # noqa: E741  (I: the input size, as in nn.LSTM)
    P = proj_for(H, proj)
    m = nn.LSTM(I, H, proj_size=P, dtype=F64)
    w = copy_weights_from(m, requires_grad=False)
    x = torch.randn(T, B, I, dtype=F64)
    h0, c0 = torch.randn(B, P or H, dtype=F64), torch.randn(B, H, dtype=F64)
    out_r, hy_r, cy_r = fused_lstm.lstm_layer(x, h0, c0, w["weight_ih"], w["weight_hh"],
                                              bias_ih=w["bias_ih"], bias_hh=w["bias_hh"],
                                              weight_hr=w["weight_hr"], reverse=True)
    out_f, hy_f, cy_f = fused_lstm.lstm_layer(x.flip(0), h0, c0, w["weight_ih"], w["weight_hh"],
                                              bias_ih=w["bias_ih"], bias_hh=w["bias_hh"],
                                              weight_hr=w["weight_hr"])
    assert_close(out_r, out_f.flip(0), name="out")
    assert_close(hy_r, hy_f, name="hy")
    assert_close(cy_r, cy_f, name="cy")
    # and reverse really is different from forward on the same input
    out_fwd, _, _ = fused_lstm.lstm_layer(x, h0, c0, w["weight_ih"], w["weight_hh"],
                                          bias_ih=w["bias_ih"], bias_hh=w["bias_hh"],
                                          weight_hr=w["weight_hr"])
    assert (out_fwd - out_r).abs().max() > 1e-3


# ------------------------------------------------------------------------------------------------
# Layouts and optional state
# ------------------------------------------------------------------------------------------------
X_VIEWS = {
    # same values, batch-major storage (time stride < batch stride)
    "transposed": lambda x: x.transpose(0, 1).contiguous().transpose(0, 1),
    # last dim not contiguous (stride 2)
    "strided_last": lambda x: torch.stack([x, torch.zeros_like(x)], dim=-1)[..., 0],
    # a slice of a larger tensor (storage offset, padded batch stride)
    "sliced": lambda x: torch.cat([torch.zeros_like(x), x, torch.zeros_like(x)], dim=1)[
        :, x.shape[1] : 2 * x.shape[1]
    ],
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("view", list(X_VIEWS))
def test_noncontiguous_input(dtype, view):
    case = Case(4, 3, 5, 7, 0)
    xv = X_VIEWS[view](case.x)
    assert torch.equal(xv, case.x)
    if view != "sliced":
        assert not xv.is_contiguous()
    compare(run(case, "fused", dtype, x_view=X_VIEWS[view]), run(case, "nn", dtype), dtype,
            what=f"fused({view} input) vs nn.LSTM:")


@pytest.mark.parametrize("proj", [False, True], ids=["noproj", "proj"])
def test_noncontiguous_weights(proj):
    case = Case(4, 3, 5, 7, proj_for(7, proj))
    def tview(w):  # same values, non-contiguous layout
        if w.dim() == 2:
            v = w.t().contiguous().t()
        else:
            v = torch.stack([w, torch.zeros_like(w)], dim=-1)[:, 0]
        assert not v.is_contiguous() and torch.equal(v, w)
        return v

    compare(run(case, "fused", F64, w_view=tview), run(case, "nn", F64), F64,
            what="fused(non-contiguous weights) vs nn.LSTM:")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("proj,reverse", [(False, False), (True, False), (False, True)],
                         ids=["plain", "proj", "reverse"])
def test_no_initial_state(dtype, proj, reverse):
    case = Case(4, 3, 5, 7, proj_for(7, proj), bidirectional=reverse)
    fused = run(case, "fused", dtype, with_state=False, reverse=reverse)
    compare(fused, run(case, "nn", dtype, with_state=False, reverse=reverse), dtype,
            what="fused(hx=None) vs nn.LSTM:")


def test_none_state_equals_zero_state():
    case = Case(3, 2, 4, 5, 0)
    w = copy_weights_from(case.m, requires_grad=False)
    a = fused_lstm.lstm_layer(case.x, None, None, w["weight_ih"], w["weight_hh"],
                              bias_ih=w["bias_ih"], bias_hh=w["bias_hh"])
    z = torch.zeros(2, 5, dtype=F64)
    b = fused_lstm.lstm_layer(case.x, z, z, w["weight_ih"], w["weight_hh"],
                              bias_ih=w["bias_ih"], bias_hh=w["bias_hh"])
    for u, v, n in zip(a, b, ("out", "hy", "cy")):
        assert_close(u, v, name=n)


def test_output_shapes_and_dtypes():
    T, B, I, H, P = 3, 2, 4, 6, 2  # noqa: E741  (I: the input size, as in nn.LSTM)
    case = Case(T, B, I, H, P)
    for dtype in (torch.float32, F64, torch.bfloat16):
        w = copy_weights_from(case.m, dtype=dtype, requires_grad=False)
        out, hy, cy = fused_lstm.lstm_layer(case.x.to(dtype), case.h0.to(dtype), case.c0.to(dtype),
                                            w["weight_ih"], w["weight_hh"], bias_ih=w["bias_ih"],
                                            bias_hh=w["bias_hh"], weight_hr=w["weight_hr"])
        assert out.shape == (T, B, P) and hy.shape == (B, P) and cy.shape == (B, H)
        assert out.dtype == hy.dtype == cy.dtype == dtype
    w = copy_weights_from(Case(T, B, I, H, 0).m, requires_grad=False)
    out, hy, cy = fused_lstm.lstm_layer(case.x, None, None, w["weight_ih"], w["weight_hh"],
                                        bias_ih=w["bias_ih"], bias_hh=w["bias_hh"])
    assert out.shape == (T, B, H)
    assert torch.equal(hy, out[-1])


def test_no_grad_inputs():
    """Without any input requiring grad the result matches and carries no graph."""
    case = Case(3, 2, 4, 5, 0)
    w = copy_weights_from(case.m, requires_grad=False)
    out, hy, cy = fused_lstm.lstm_layer(case.x, case.h0, case.c0, w["weight_ih"], w["weight_hh"],
                                        bias_ih=w["bias_ih"], bias_hh=w["bias_hh"])
    assert not out.requires_grad and not hy.requires_grad and not cy.requires_grad
    ref = run(case, "nn", F64)
    assert_close(out, ref["out"], name="out")
    assert_close(hy, ref["hy"], name="hy")
    assert_close(cy, ref["cy"], name="cy")


def test_grad_of_weights_only():
    """Only the weights require grad (the input does not): weight grads still right."""
    case = Case(4, 3, 5, 7, 0)
    ref = run(case, "nn", F64)
    w = copy_weights_from(case.m)
    out, hy, cy = fused_lstm.lstm_layer(case.x, case.h0, case.c0, w["weight_ih"], w["weight_hh"],
                                        bias_ih=w["bias_ih"], bias_hh=w["bias_hh"])
    g = torch.autograd.grad([out, hy, cy], [w["weight_ih"], w["weight_hh"], w["bias_hh"]],
                            [case.go, case.gh, case.gc])
    assert_close(g[0], ref["grad_weight_ih"], name="grad_weight_ih")
    assert_close(g[1], ref["grad_weight_hh"], name="grad_weight_hh")
    assert_close(g[2], ref["grad_bias_hh"], name="grad_bias_hh")


def test_grad_from_hy_only():
    """Upstream gradient only on hy (output unused): the gradient must still flow through time."""
    case = Case(4, 3, 5, 7, 0)
    x = case.x.clone().requires_grad_()
    w = copy_weights_from(case.m)
    _, hy, _ = fused_lstm.lstm_layer(x, case.h0, case.c0, w["weight_ih"], w["weight_hh"],
                                     bias_ih=w["bias_ih"], bias_hh=w["bias_hh"])
    gx, gw = torch.autograd.grad(hy, [x, w["weight_hh"]], case.gh)
    m = copy.deepcopy(case.m)
    x2 = case.x.clone().requires_grad_()
    _, (hn, _) = m(x2, (case.h0[None], case.c0[None]))
    gx2, gw2 = torch.autograd.grad(hn[0], [x2, m.weight_hh_l0], case.gh)
    assert gx[0].abs().max() > 0  # reached the first step
    assert_close(gx, gx2, name="grad_input")
    assert_close(gw, gw2, name="grad_weight_hh")


# ------------------------------------------------------------------------------------------------
# Packed input (PackedSequence.data / .batch_sizes)
# ------------------------------------------------------------------------------------------------
SORTED_LENGTHS = [5, 4, 4, 2, 1]
UNSORTED_LENGTHS = [2, 5, 1, 4, 4]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("enforce_sorted", [True, False], ids=["sorted", "unsorted"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("H,proj", [(7, False), (33, True)], ids=["H7", "H33-proj"])
def test_packed_vs_nn_lstm(dtype, enforce_sorted, reverse, H, proj):
    lengths = SORTED_LENGTHS if enforce_sorted else UNSORTED_LENGTHS
    case = Case(None, None, 6, H, proj_for(H, proj), bidirectional=reverse, lengths=lengths)
    kw = dict(reverse=reverse, enforce_sorted=enforce_sorted)
    fused = run(case, "fused", dtype, **kw)
    compare(fused, run(case, "nn", dtype, **kw), dtype, what="fused(packed) vs nn.LSTM:")
    if dtype == F64:
        compare(fused, run(case, "reference", dtype, **kw), dtype,
                what="fused(packed) vs reference(packed):")


@pytest.mark.parametrize("lengths", [[3], [1, 1, 1], [6, 1], [1]], ids=["B1", "T1", "6-1", "T1B1"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_packed_edge_lengths(lengths, reverse):
    case = Case(None, None, 4, 5, 0, bidirectional=reverse, lengths=lengths)
    compare(run(case, "fused", F64, reverse=reverse), run(case, "nn", F64, reverse=reverse), F64,
            what=f"fused(packed {lengths}) vs nn.LSTM:")


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_packed_equal_lengths_equals_padded(reverse):
    """Packed input whose sequences all have length T computes exactly the padded problem."""
    case = Case(4, 3, 5, 6, 0)
    w = copy_weights_from(case.m, requires_grad=False)
    kw = dict(bias_ih=w["bias_ih"], bias_hh=w["bias_hh"], reverse=reverse)
    out_p, hy_p, cy_p = fused_lstm.lstm_layer(case.x.reshape(12, 5), case.h0, case.c0,
                                              w["weight_ih"], w["weight_hh"],
                                              batch_sizes=torch.tensor([3, 3, 3, 3]), **kw)
    out, hy, cy = fused_lstm.lstm_layer(
        case.x, case.h0, case.c0, w["weight_ih"], w["weight_hh"], **kw
    )
    assert out_p.shape == (12, 6)
    assert_close(out_p, out.reshape(12, 6), name="out")
    assert_close(hy_p, hy, name="hy")
    assert_close(cy_p, cy, name="cy")


# ------------------------------------------------------------------------------------------------
# bfloat16 / float16: fused's error vs fp64 must be at most 2x nn.LSTM's own error
# ------------------------------------------------------------------------------------------------
BF16_CASES = {
    "H1": dict(T=5, B=3, I=6, H=1),
    "H7": dict(T=5, B=3, I=6, H=7),
    "H33-proj": dict(T=5, B=3, I=6, H=33, P=5),
    "H257": dict(T=2, B=2, I=6, H=257),
    "T1B1-I300": dict(T=1, B=1, I=300, H=33),
    "H33-rev": dict(T=5, B=3, I=6, H=33, reverse=True),
    "H33-packed": dict(I=6, H=33, lengths=UNSORTED_LENGTHS),
    "H7-packed-rev-proj": dict(I=6, H=7, P=3, lengths=SORTED_LENGTHS, reverse=True),
    "H33-nostate": dict(T=5, B=3, I=6, H=33, with_state=False),
}


@pytest.mark.parametrize("gemms", ["auto", "fp32-gemms", "bf16-gemms"])
@pytest.mark.parametrize("dtype", [pytest.param(torch.bfloat16, id="bf16"),
                                   pytest.param(torch.float16, id="f16")])
@pytest.mark.parametrize("name", list(BF16_CASES))
def test_lowp_error_rule(name, dtype, gemms, monkeypatch):
    """bf16 (and float16, which the CPU build also accepts): fused's relative error vs fp64 is at
    most 2x nn.LSTM's own error at the same precision (+1e-3). bf16 runs its GEMMs in bf16 on CPUs
    with bf16 dot products (Note [bfloat16 GEMMs on CPU]); both GEMM paths are forced in turn."""
    if gemms != "auto":
        if dtype != torch.bfloat16:
            pytest.skip("the GEMM switch only concerns bfloat16")
        monkeypatch.setenv("FUSED_LSTM_CPU_BF16_GEMM", "1" if gemms == "bf16-gemms" else "0")
    cfg = dict(BF16_CASES[name])
    reverse = cfg.pop("reverse", False)
    with_state = cfg.pop("with_state", True)
    lengths = cfg.pop("lengths", None)
    case = Case(cfg.get("T"), cfg.get("B"), cfg["I"], cfg["H"], cfg.get("P", 0),
                bidirectional=reverse, lengths=lengths, round_dtype=dtype)
    kw = dict(reverse=reverse, with_state=with_state, enforce_sorted=lengths != UNSORTED_LENGTHS)
    ref64 = run(case, "nn", F64, **kw)
    torch_lp = run(case, "nn", dtype, **kw)
    fused_lp = run(case, "fused", dtype, **kw)
    compare_lowp(fused_lp, torch_lp, ref64, what=f"{dtype} {name}:")

"""The raw ops torch.ops.fused_lstm.lstm_layer_forward / lstm_layer_backward: torch.library.opcheck
(schema, fake kernels, AOT dispatch with dynamic shapes) and the workspace/output_mask contract."""
import pytest
import torch

import fused_lstm  # noqa: F401  (registers the ops)
from tests.lstm_testing import assert_close

F64 = torch.float64
OPMATH = {torch.float32: torch.float32, torch.float64: torch.float64, torch.bfloat16: torch.float32}


def fwd_op():
    return torch.ops.fused_lstm.lstm_layer_forward.default


def bwd_op():
    return torch.ops.fused_lstm.lstm_layer_backward.default


def make_args(T=3, B=2, I=3, H=4, P=0, bias=True,  # noqa: E741  (I: input size)
              batch_sizes=None, reverse=False, save_workspace=True, dtype=torch.float32, seed=0,
              layer_dim=False):
    """Positional args of lstm_layer_forward; ``layer_dim``: the states as (1, B, .) (Note
    [States with a layer dimension] in csrc/layer_args.h)."""
    g = torch.Generator().manual_seed(seed)
    Pe = P or H

    def r(*shape):
        return (0.5 * torch.randn(*shape, generator=g, dtype=F64)).to(dtype)

    if batch_sizes is not None:
        bs = torch.tensor(batch_sizes, dtype=torch.int64)
        B = batch_sizes[0]
        x = r(int(bs.sum()), I)
    else:
        bs = None
        x = r(T, B, I)
    states = (r(1, B, Pe), r(1, B, H)) if layer_dim else (r(B, Pe), r(B, H))
    return [x, *states, r(4 * H, I), r(4 * H, Pe),
            r(4 * H) if bias else None, r(4 * H) if bias else None,
            r(Pe, H) if P else None, bs, reverse, save_workspace]


FWD_SAMPLES = {
    "f32-save": dict(),
    "f32-nosave": dict(save_workspace=False),
    "f64-packed": dict(dtype=F64, batch_sizes=[2, 2, 1]),
    "f64-packed-nosave-rev": dict(
        dtype=F64, batch_sizes=[3, 1], reverse=True, save_workspace=False
    ),
    "f32-proj-rev-nobias": dict(P=2, reverse=True, bias=False),
    "bf16": dict(dtype=torch.bfloat16),
    "T1B1": dict(T=1, B=1, H=1),
    "f32-layer-dim-states": dict(layer_dim=True),
    "f64-packed-layer-dim-states-nosave": dict(dtype=F64, batch_sizes=[2, 1], layer_dim=True,
                                               save_workspace=False),
}


@pytest.mark.parametrize("name", list(FWD_SAMPLES))
def test_opcheck_forward(name):
    args = make_args(**FWD_SAMPLES[name])
    torch.library.opcheck(fwd_op(), tuple(args))


def _bwd_args(fwd_kwargs, grads=("out", "hy", "cy"), mask=(True, True), seed=1):
    a = make_args(save_workspace=True, **fwd_kwargs)
    x, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr, bs, reverse, _ = a
    out, hy, cy, gates, cells = fwd_op()(*a)
    g = torch.Generator().manual_seed(seed)
    go = torch.randn(out.shape, generator=g, dtype=F64).to(out.dtype) if "out" in grads else None
    gh = torch.randn(hy.shape, generator=g, dtype=F64).to(hy.dtype) if "hy" in grads else None
    gc = torch.randn(cy.shape, generator=g, dtype=F64).to(cy.dtype) if "cy" in grads else None
    return [go, gh, gc, x, hx, cx, w_ih, w_hh, w_hr, bs, reverse, b_ih is not None,
            out, gates, cells, list(mask)]


BWD_SAMPLES = {
    "f32-all": (dict(), ("out", "hy", "cy"), (True, True)),
    "f32-only-state-grads": (dict(), ("hy", "cy"), (True, True)),
    "f32-only-output-grad": (dict(), ("out",), (True, True)),
    "f32-mask-input-only": (dict(), ("out", "hy", "cy"), (True, False)),
    "f32-mask-weights-only": (dict(), ("out", "hy", "cy"), (False, True)),
    "f64-packed": (dict(dtype=F64, batch_sizes=[2, 2, 1]), ("out", "hy", "cy"), (True, True)),
    "f64-packed-rev-proj": (dict(dtype=F64, batch_sizes=[2, 1, 1], reverse=True, P=2),
                            ("out", "hy"), (True, True)),
    "f32-nobias-proj": (dict(bias=False, P=3), ("out", "hy", "cy"), (True, True)),
    "bf16": (dict(dtype=torch.bfloat16), ("out", "hy", "cy"), (True, True)),
    "f32-layer-dim-states": (dict(layer_dim=True), ("out", "hy", "cy"), (True, True)),
}


@pytest.mark.parametrize("save_workspace", [False, True])
def test_states_with_a_layer_dimension(save_workspace):
    # (1, B, .) states give the values of (B, .) states, and the state results in their shape:
    # fresh tensors, not views (a module's h_n.detach_() must work).
    args = make_args(save_workspace=save_workspace)
    flat = fwd_op()(*args)
    args3 = list(args)
    args3[1], args3[2] = args[1].unsqueeze(0), args[2].unsqueeze(0)
    layered = fwd_op()(*args3)
    for a, b in zip(flat, layered):
        assert torch.equal(a, b.reshape(a.shape))
    for state in layered[1:3]:
        assert state.shape == (1, 2, 4) and state._base is None
        state.detach_()
    if save_workspace:
        grads = bwd_op()(*_bwd_args(dict(layer_dim=True)))
        flat_grads = bwd_op()(*_bwd_args(dict()))
        assert grads[1].shape == (1, 2, 4) and grads[2].shape == (1, 2, 4)
        for a, b in zip(flat_grads, grads):
            assert torch.equal(a, b.reshape(a.shape))


def test_states_with_a_layer_dimension_of_two_are_refused():
    args = make_args()
    args[1] = args[1].expand(2, -1, -1)
    with pytest.raises(ValueError, match=r"expected hx with 2 dims \(batch, proj_size or "
                                         r"hidden_size\), or \(1, batch"):
        fwd_op()(*args)


@pytest.mark.parametrize("name", list(BWD_SAMPLES))
def test_opcheck_backward(name):
    fkw, which, mask = BWD_SAMPLES[name]
    torch.library.opcheck(bwd_op(), tuple(_bwd_args(fkw, which, mask)))


# ------------------------------------------------------------------------------------------------
# Workspace and output_mask contract
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, F64, torch.bfloat16], ids=["f32", "f64", "bf16"])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_forward_workspace(dtype, packed):
    T, B, I, H = 3, 2, 3, 4  # noqa: E741  (I: the input size, as in nn.LSTM)
    kw = dict(dtype=dtype, batch_sizes=[2, 2, 1] if packed else None)
    args = make_args(T=T, B=B, I=I, H=H, **kw)
    out, hy, cy, gates, cells = fwd_op()(*args)
    rows = (5,) if packed else (T, B)
    assert out.shape == rows + (H,) and out.dtype == dtype
    assert hy.shape == (B, H) and cy.shape == (B, H) and hy.dtype == cy.dtype == dtype
    assert gates.shape == rows + (4 * H,), gates.shape
    assert cells.shape == rows + (H,), cells.shape
    assert gates.dtype == OPMATH[dtype] and cells.dtype == OPMATH[dtype]
    # activated gates: i, f, o in (0, 1); g in (-1, 1)
    i, f, gg, o = gates.split(H, dim=-1)
    for s, name in ((i, "i"), (f, "f"), (o, "o")):
        assert ((s >= 0) & (s <= 1)).all(), f"gate {name} not a sigmoid output"
    assert ((gg >= -1) & (gg <= 1)).all(), "gate g not a tanh output"
    # h_t = o * tanh(c_t) (no projection)
    tol = 1e-2 if dtype == torch.bfloat16 else 1e-5
    torch.testing.assert_close(out.to(OPMATH[dtype]), o * torch.tanh(cells), rtol=tol, atol=tol)
    if not packed:
        # c_t at the last step is cy (forward direction)
        torch.testing.assert_close(cells[-1].to(dtype), cy, rtol=tol, atol=tol)
    # workspace off: empty tensors, identical results
    args[-1] = False
    out2, hy2, cy2, gates2, cells2 = fwd_op()(*args)
    assert gates2.numel() == 0 and cells2.numel() == 0
    assert_close(out2, out, tol=1e-6 if dtype != torch.bfloat16 else 1e-2, name="out")
    assert_close(hy2, hy, tol=1e-6 if dtype != torch.bfloat16 else 1e-2, name="hy")
    assert_close(cy2, cy, tol=1e-6 if dtype != torch.bfloat16 else 1e-2, name="cy")


@pytest.mark.parametrize("cfg", [dict(), dict(P=2), dict(batch_sizes=[2, 2, 1], reverse=True),
                                 dict(bias=False)], ids=["plain", "proj", "packed-rev", "nobias"])
def test_backward_op_vs_reference_autograd(cfg):
    """The raw backward op's results equal autograd through fused_lstm.lstm_layer_reference;
    grad_bias is the gradient of bias_ih and of bias_hh alike."""
    bargs = _bwd_args(dict(dtype=F64, **cfg))
    go, gh, gc, x, hx, cx, w_ih, w_hh, w_hr, bs, reverse, has_bias = bargs[:12]
    fargs = make_args(dtype=F64, save_workspace=True, **cfg)
    b_ih, b_hh = fargs[5], fargs[6]
    gi, ghx, gcx, gwih, gwhh, gb, gwhr = bwd_op()(*bargs)

    leaves = [t.clone().requires_grad_() if t is not None else None
              for t in (x, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr)]
    lx, lhx, lcx, lwih, lwhh, lbih, lbhh, lwhr = leaves
    out, hy, cy = fused_lstm.lstm_layer_reference(lx, lhx, lcx, lwih, lwhh, bias_ih=lbih,
                                                  bias_hh=lbhh, weight_hr=lwhr, batch_sizes=bs,
                                                  reverse=reverse)
    used = [(o, g) for o, g in zip((out, hy, cy), (go, gh, gc)) if g is not None]
    req = [t for t in leaves if t is not None]
    ref = dict(zip([id(t) for t in req], torch.autograd.grad(
        [o for o, _ in used], req, [g for _, g in used], allow_unused=True)))
    assert_close(gi, ref[id(lx)], name="grad_input")
    assert_close(ghx, ref[id(lhx)], name="grad_hx")
    assert_close(gcx, ref[id(lcx)], name="grad_cx")
    assert_close(gwih, ref[id(lwih)], name="grad_weight_ih")
    assert_close(gwhh, ref[id(lwhh)], name="grad_weight_hh")
    if has_bias:
        assert_close(gb, ref[id(lbih)], name="grad_bias (bias_ih)")
        assert_close(gb, ref[id(lbhh)], name="grad_bias (bias_hh)")
    else:
        assert gb.numel() == 0
    if lwhr is not None:
        assert_close(gwhr, ref[id(lwhr)], name="grad_weight_hr")
    else:
        assert gwhr.numel() == 0


@pytest.mark.parametrize(
    "cfg", [dict(), dict(P=2, batch_sizes=[2, 2, 1])], ids=["plain", "proj-packed"]
)
def test_backward_output_mask(cfg):
    full = bwd_op()(*_bwd_args(dict(dtype=F64, **cfg), mask=(True, True)))
    names = ["grad_input", "grad_hx", "grad_cx", "grad_weight_ih", "grad_weight_hh", "grad_bias",
             "grad_weight_hr"]
    has_proj = "P" in cfg
    for t, n in zip(full, names):
        if n == "grad_weight_hr" and not has_proj:
            assert t.numel() == 0, "grad_weight_hr not empty without weight_hr"
        else:
            assert t.numel() > 0, f"{n} empty with output_mask [True, True]"
    only_input = bwd_op()(*_bwd_args(dict(dtype=F64, **cfg), mask=(True, False)))
    for k in (3, 4, 5, 6):
        assert only_input[k].numel() == 0, f"{names[k]} not empty with output_mask [True, False]"
    assert_close(only_input[0], full[0], name="grad_input")
    only_w = bwd_op()(*_bwd_args(dict(dtype=F64, **cfg), mask=(False, True)))
    assert only_w[0].numel() == 0, "grad_input not empty with output_mask [False, True]"
    for k in (3, 4, 5) + ((6,) if has_proj else ()):
        assert_close(only_w[k], full[k], name=names[k])
    for k in (1, 2):  # state gradients do not depend on the mask
        assert_close(only_input[k], full[k], name=names[k])
        assert_close(only_w[k], full[k], name=names[k])


def test_backward_none_grads_equal_zero_grads():
    a_none = _bwd_args(dict(dtype=F64), grads=("hy",))
    a_zero = list(a_none)
    a_zero[0] = torch.zeros_like(a_none[12])  # grad_output
    a_zero[2] = torch.zeros_like(a_none[5])   # grad_cy, like cx
    r_none = bwd_op()(*a_none)
    r_zero = bwd_op()(*a_zero)
    for u, v in zip(r_none, r_zero):
        assert_close(u, v)
    assert r_none[0].abs().max() > 0


def _forward_calls(fn):
    """Run fn and return the save_workspace flag of each lstm_layer_forward call it makes."""
    from torch.utils._python_dispatch import TorchDispatchMode

    flags = []

    class Log(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if "lstm_layer_forward" in str(func):
                flags.append(args[10] if len(args) > 10 else (kwargs or {}).get("save_workspace"))
            return func(*args, **(kwargs or {}))

    with Log():
        fn()
    return flags


def test_workspace_saved_only_when_grad_needed():
    x, hx, cx, w_ih, w_hh, b_ih, b_hh = make_args(dtype=F64)[:7]

    def call():
        return fused_lstm.lstm_layer(x, hx, cx, w_ih, w_hh, bias_ih=b_ih, bias_hh=b_hh)

    assert _forward_calls(call) == [False], "no input requires grad: the workspace is not needed"
    w_ih.requires_grad_()
    assert _forward_calls(call) == [True]
    with torch.no_grad():
        assert _forward_calls(call) == [False], "under no_grad the workspace is not needed"


def test_ops_are_tagged_cudagraph_unsafe():
    """The CUDA kernels copy host-built schedules every call, so a CUDA graph must not capture
    them: the tag makes torch.compile(mode="reduce-overhead") leave these ops out of CUDA graphs
    (tests/test_cuda.py runs that mode on a GPU)."""
    for op in (torch.ops.fused_lstm.lstm_layer_forward.default,
               torch.ops.fused_lstm.lstm_layer_backward.default):
        assert torch._C.Tag.cudagraph_unsafe in op.tags, (op, op.tags)

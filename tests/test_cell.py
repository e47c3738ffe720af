"""fused_lstm.LSTMCell vs torch.nn.LSTMCell: same interface, same numbers, same errors."""
import copy
import itertools
import re

import pytest
import torch
from torch import nn

import fused_lstm
from tests.lstm_testing import assert_close, assert_lowp_ok, grads, make_pair

F64, F32 = torch.float64, torch.float32
I, H = 3, 4  # noqa: E741  (I: the input size, as in nn.LSTM)


def run_cell(cell, x, hx, gh, gc):
    """Forward + backward with fresh leaves: outputs and the grads of x, h0, c0, every param."""
    x = x.clone().requires_grad_()
    hx = tuple(t.clone().requires_grad_() for t in hx) if hx is not None else None
    h1, c1 = cell(x, hx)
    names = [n for n, _ in cell.named_parameters()]
    params = [p for _, p in cell.named_parameters()]
    wrt = [x] + (list(hx) if hx is not None else [None, None]) + params
    g = grads([h1, c1], wrt, [gh, gc])
    res = {"h_1": h1.detach(), "c_1": c1.detach(), "grad_input": g[0], "grad_h0": g[1],
           "grad_c0": g[2]}
    res.update({"grad_" + n: gp for n, gp in zip(names, g[3:])})
    return res


def compare(a, b, dtype, what=""):
    assert list(a) == list(b), f"{what}: keys {list(a)} != {list(b)}"
    for k in b:
        if b[k] is None:
            assert a[k] is None, f"{what} {k}: expected no gradient"
            continue
        assert a[k] is not None, f"{what} {k}: missing gradient"
        assert a[k].dtype == b[k].dtype, f"{what} {k}: dtype {a[k].dtype} != {b[k].dtype}"
        assert_close(a[k], b[k], dtype=dtype, name=f"{what} {k}")


# ------------------------------------------------------------------------------------------------
# Parity: batched/unbatched x hx given/None x bias x dtype x batch size (B = 1 and 0 included)
# ------------------------------------------------------------------------------------------------
PARITY = list(itertools.product([3, 1, 0, None], [True, False], [True, False], [F64, F32]))


@pytest.mark.parametrize(
    "B,with_state,bias,dtype",
    [pytest.param(*c, id=f"{'unbatched' if c[0] is None else f'B{c[0]}'}-"
                        f"{'hx' if c[1] else 'nohx'}-{'bias' if c[2] else 'nobias'}-"
                        f"{'f64' if c[3] == F64 else 'f32'}") for c in PARITY])
def test_cell_vs_nn_lstm_cell(B, with_state, bias, dtype):
    ref, fused = make_pair(nn.LSTMCell, I, H, dtype=dtype, bias=bias, seed=B or 0)
    torch.manual_seed(1)
    batch = () if B is None else (B,)
    x = torch.randn(*batch, I, dtype=dtype)
    hx = ((0.5 * torch.randn(*batch, H, dtype=dtype), 0.5 * torch.randn(*batch, H, dtype=dtype))
          if with_state else None)
    gh, gc = torch.randn(*batch, H, dtype=dtype), torch.randn(*batch, H, dtype=dtype)
    r = run_cell(ref, x, hx, gh, gc)
    f = run_cell(fused, x, hx, gh, gc)
    assert f["h_1"].shape == f["c_1"].shape == (*batch, H)
    compare(f, r, dtype, what="cell")


def test_cell_unrolled_sequence_matches_nn_lstm_and_cell():
    """Ten steps of the cell in a Python loop: same as nn.LSTMCell, and as an nn.LSTM with the
    same weights, including the gradients through the whole unrolled chain (float64)."""
    ref, fused = make_pair(nn.LSTMCell, I, H, dtype=F64, seed=3)
    lstm = nn.LSTM(I, H, dtype=F64)
    lstm.load_state_dict({k + "_l0": v for k, v in ref.state_dict().items()})
    torch.manual_seed(4)
    xs = torch.randn(10, 2, I, dtype=F64)
    results = []
    for cell in (ref, fused):
        x = xs.clone().requires_grad_()
        h = c = None
        outs = []
        for t in range(10):
            h, c = cell(x[t], None if h is None else (h, c))
            outs.append(h)
        out = torch.stack(outs)
        (out.sin().sum() + c.cos().sum()).backward()
        results.append((out.detach(), c.detach(), x.grad,
                        [p.grad.clone() for p in cell.parameters()]))
    o_l, (_, c_l) = lstm(xs)
    assert_close(results[1][0], o_l, name="cell loop vs nn.LSTM output")
    assert_close(results[1][1], c_l[0], name="cell loop vs nn.LSTM c")
    (o_r, c_r, gx_r, gp_r), (o_f, c_f, gx_f, gp_f) = results
    assert_close(o_f, o_r, name="output")
    assert_close(c_f, c_r, name="c")
    assert_close(gx_f, gx_r, name="grad x")
    for (n, _), a, b in zip(ref.named_parameters(), gp_f, gp_r):
        assert_close(a, b, name=f"grad {n}")


def test_cell_backward_in_eval_mode():
    ref, fused = make_pair(nn.LSTMCell, I, H, dtype=F64)
    fused.eval(), ref.eval()
    x = torch.randn(2, I, dtype=F64)
    hx = (torch.randn(2, H, dtype=F64), torch.randn(2, H, dtype=F64))
    gh, gc = torch.randn(2, H, dtype=F64), torch.randn(2, H, dtype=F64)
    compare(run_cell(fused, x, hx, gh, gc), run_cell(ref, x, hx, gh, gc), F64, what="eval")


def test_cell_gradcheck():
    _, fused = make_pair(nn.LSTMCell, I, H, dtype=F64)
    x = torch.randn(2, I, dtype=F64, requires_grad=True)
    h = torch.randn(2, H, dtype=F64, requires_grad=True)
    c = torch.randn(2, H, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, h, c: fused(x, (h, c)), (x, h, c))


def test_cell_uses_fused_op():
    from torch.utils._python_dispatch import TorchDispatchMode

    seen = []

    class Log(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    cell = fused_lstm.LSTMCell(I, H)
    with Log():
        cell(torch.randn(2, I))
    assert any("fused_lstm" in s and "lstm_layer_forward" in s for s in seen), sorted(set(seen))
    assert not any("lstm_cell" in s for s in seen), sorted(set(seen))


def test_cell_bf16_and_autocast():
    ref, fused = make_pair(nn.LSTMCell, I, H, dtype=F32, seed=5)
    ref64 = copy.deepcopy(ref).double()
    torch.manual_seed(6)
    x, h, c = torch.randn(3, I), torch.randn(3, H), torch.randn(3, H)
    h64, c64 = ref64(x.double(), (h.double(), c.double()))
    # .bfloat16() module, bf16 inputs
    fb, rb = copy.deepcopy(fused).bfloat16(), copy.deepcopy(ref).bfloat16()
    hb, cb = fb(x.bfloat16(), (h.bfloat16(), c.bfloat16()))
    hr, cr = rb(x.bfloat16(), (h.bfloat16(), c.bfloat16()))
    assert hb.dtype == cb.dtype == torch.bfloat16
    assert_lowp_ok(hb, hr, h64, name="bf16 h_1")
    assert_lowp_ok(cb, cr, c64, name="bf16 c_1")
    # autocast: float32 module and inputs; nn.LSTMCell returns float32 on CPU (its linears run in
    # bf16, the cell update promotes with the float32 c_0), and so does the fused cell
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ha, ca = fused(x, (h, c))
        hr, cr = ref(x, (h, c))
    assert ha.dtype == ca.dtype == hr.dtype == cr.dtype == F32
    assert_lowp_ok(ha, hr, h64, name="autocast h_1")
    assert_lowp_ok(ca, cr, c64, name="autocast c_1")
    (ha.float().sum() + ca.float().sum()).backward()
    assert all(p.grad is not None and p.grad.dtype == F32 for p in fused.parameters())


@pytest.mark.parametrize("autocast_dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("x_dtype,state_dtype", [(F32, None), (F32, F32), (torch.bfloat16, None),
                                                 (torch.bfloat16, F32), (F32, torch.bfloat16)],
                         ids=["x-f32", "x-f32-state-f32", "x-bf16", "x-bf16-state-f32",
                              "x-f32-state-bf16"])
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
def test_autocast_cpu_result_dtype_like_nn_lstmcell(autocast_dtype, x_dtype, state_dtype,
                                                    batched):
    ref, fused = make_pair(nn.LSTMCell, I, H, dtype=F32, seed=5)
    shape = (3,) if batched else ()
    x = torch.randn(*shape, I).to(x_dtype)
    hx = None if state_dtype is None else tuple(torch.randn(*shape, H).to(state_dtype)
                                                for _ in range(2))
    with torch.autocast("cpu", dtype=autocast_dtype):
        got, want = fused(x, hx), ref(x, hx)
    for name, a, b in (("h_1", got[0], want[0]), ("c_1", got[1], want[1])):
        assert a.dtype == b.dtype, f"{name}: fused {a.dtype}, nn.LSTMCell {b.dtype}"
        torch.testing.assert_close(a.float(), b.float(), rtol=0.05, atol=0.05)


# ------------------------------------------------------------------------------------------------
# Interface: constructor, parameters, repr, init, state_dict, converters, copies
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
def test_cell_parameters_like_nn_lstm_cell(bias):
    ref = nn.LSTMCell(I, H, bias=bias)
    fused = fused_lstm.LSTMCell(I, H, bias=bias)
    assert isinstance(fused, nn.Module) and not isinstance(fused, nn.RNNCellBase)
    assert [n for n, _ in fused.named_parameters()] == [n for n, _ in ref.named_parameters()]
    assert [tuple(p.shape) for p in fused.parameters()] == \
        [tuple(p.shape) for p in ref.parameters()]
    assert list(fused.state_dict()) == list(ref.state_dict())
    assert repr(fused) == repr(ref)
    for attr in ("input_size", "hidden_size", "bias"):
        assert getattr(fused, attr) == getattr(ref, attr), attr
    assert fused.__constants__ == ref.__constants__
    if not bias:
        assert fused.bias_ih is None and fused.bias_hh is None


def test_cell_constructor_positional_and_factory_kwargs():
    fused = fused_lstm.LSTMCell(I, H, False, "cpu", F64)
    assert fused.bias is False and all(p.dtype == F64 for p in fused.parameters())
    ref = nn.LSTMCell(I, H, False, "cpu", F64)
    assert repr(fused) == repr(ref)
    # degenerate sizes behave like nn.LSTMCell (it accepts them; bad types raise TypeError)
    for args in ((0, H), (I, 0)):
        assert [tuple(p.shape) for p in fused_lstm.LSTMCell(*args).parameters()] == \
            [tuple(p.shape) for p in nn.LSTMCell(*args).parameters()]
    for args in ((3.5, H), (I, 4.0)):
        # torch.empty's message for the parameter shapes, in both (its wording varies with the
        # torch version: the same as nn.LSTMCell's, whatever it is)
        with pytest.raises(TypeError) as nn_error:
            nn.LSTMCell(*args)
        with pytest.raises(TypeError, match=re.escape(str(nn_error.value))):
            fused_lstm.LSTMCell(*args)


def test_cell_default_init_like_nn_lstm_cell():
    torch.manual_seed(0)
    ref = nn.LSTMCell(I, 16)
    torch.manual_seed(0)
    fused = fused_lstm.LSTMCell(I, 16)
    for (n, p), (_, q) in zip(fused.named_parameters(), ref.named_parameters()):
        assert torch.equal(p, q), n  # same draws in the same order
    fused.reset_parameters()
    k = 1 / 16 ** 0.5
    for n, p in fused.named_parameters():
        assert p.abs().max() <= k + 1e-6 and p.std() > 0.1 * k, n


@pytest.mark.parametrize("bias", [True, False])
def test_cell_state_dict_interchange(bias, tmp_path):
    torch.manual_seed(2)
    fused = fused_lstm.LSTMCell(I, H, bias=bias, dtype=F64)
    ref = nn.LSTMCell(I, H, bias=bias, dtype=F64)
    ref.load_state_dict(fused.state_dict())       # fused -> nn (strict)
    fused2 = fused_lstm.LSTMCell(I, H, bias=bias, dtype=F64)
    fused2.load_state_dict(ref.state_dict())      # nn -> fused (strict)
    for k, v in fused.state_dict().items():
        assert torch.equal(v, ref.state_dict()[k]) and torch.equal(v, fused2.state_dict()[k]), k
    torch.save(ref.state_dict(), tmp_path / "cell.pt")
    fused3 = fused_lstm.LSTMCell(I, H, bias=bias, dtype=F64)
    fused3.load_state_dict(torch.load(tmp_path / "cell.pt", weights_only=True))
    torch.save(fused3, tmp_path / "module.pt")
    fused4 = torch.load(tmp_path / "module.pt", weights_only=False)
    clone = copy.deepcopy(fused4)
    x = torch.randn(2, I, dtype=F64)
    hr, cr = ref(x)
    for m in (fused, fused2, fused3, fused4, clone):
        h, c = m(x)
        assert_close(h, hr, name="h_1")
        assert_close(c, cr, name="c_1")
    with pytest.raises(RuntimeError, match="size mismatch"):
        fused.load_state_dict(nn.LSTMCell(I, H + 1, bias=bias).state_dict())


def test_cell_from_torch_to_torch():
    torch.manual_seed(3)
    ref = nn.LSTMCell(I, H, dtype=F64).eval()
    ref.bias_hh.requires_grad_(False)
    fused = fused_lstm.LSTMCell.from_torch(ref)
    assert type(fused) is fused_lstm.LSTMCell and not fused.training
    assert not fused.bias_hh.requires_grad and fused.weight_ih.requires_grad
    back = fused.to_torch()
    assert type(back) is nn.LSTMCell and not back.training and not back.bias_hh.requires_grad
    for m in (fused, back):
        for (n, p), (_, q) in zip(m.named_parameters(), ref.named_parameters()):
            assert p is not q and p.dtype == q.dtype and torch.equal(p, q), n
        assert (m.input_size, m.hidden_size, m.bias) == (ref.input_size, ref.hidden_size, ref.bias)
    nb = fused_lstm.LSTMCell.from_torch(nn.LSTMCell(I, H, bias=False))
    assert nb.bias is False and nb.bias_ih is None and type(nb.to_torch()) is nn.LSTMCell


@pytest.mark.parametrize("move", ["double", "half", "bfloat16", "to(float64)"])
def test_cell_dtype_moves(move):
    ref, fused = make_pair(nn.LSTMCell, I, H, dtype=F32)
    for m in (ref, fused):
        out = m.to(F64) if move == "to(float64)" else getattr(m, move)()
        assert out is m
    assert [p.dtype for p in fused.parameters()] == [p.dtype for p in ref.parameters()]
    dtype = fused.weight_ih.dtype
    h, c = fused(torch.randn(2, I).to(dtype))
    assert h.dtype == c.dtype == dtype


# ------------------------------------------------------------------------------------------------
# Errors: nn.LSTMCell's exception class for each, and a message naming the argument
# ------------------------------------------------------------------------------------------------
def _h(*shape, dtype=F32):
    return torch.randn(shape, dtype=dtype)


ERROR_CASES = {
    "input-3d": (lambda: (_h(2, 2, I),), ValueError,
                 r"^LSTMCell: Expected input to be 1D or 2D, got 3D instead$"),
    "input-0d": (lambda: (_h(),), ValueError,
                 r"^LSTMCell: Expected input to be 1D or 2D, got 0D instead$"),
    "input_size": (lambda: (_h(2, I + 2),), RuntimeError,
                   r"^input has inconsistent input_size: got 5 expected 3$"),
    "input_size-unbatched": (lambda: (_h(I + 2),), RuntimeError,
                             r"^input has inconsistent input_size: got 5 expected 3$"),
    "hx0-3d": (lambda: (_h(2, I), (_h(1, 2, H), _h(2, H))), ValueError,
               r"^LSTMCell: Expected hx\[0\] to be 1D or 2D, got 3D instead$"),
    "hx1-3d": (lambda: (_h(2, I), (_h(2, H), _h(1, 2, H))), ValueError,
               r"^LSTMCell: Expected hx\[1\] to be 1D or 2D, got 3D instead$"),
    "hx0-batch": (lambda: (_h(2, I), (_h(3, H), _h(2, H))), RuntimeError,
                  r"^Input batch size 2 doesn't match hidden0 batch size 3$"),
    "hx1-batch": (lambda: (_h(2, I), (_h(2, H), _h(3, H))), RuntimeError,
                  r"^Input batch size 2 doesn't match hidden1 batch size 3$"),
    "hx0-width": (lambda: (_h(2, I), (_h(2, H + 1), _h(2, H))), RuntimeError,
                  r"^hidden0 has inconsistent hidden_size: got 5, expected 4$"),
    "hx1-width": (lambda: (_h(2, I), (_h(2, H), _h(2, H + 1))), RuntimeError,
                  r"^hidden1 has inconsistent hidden_size: got 5, expected 4$"),
    "hx0-width-unbatched": (lambda: (_h(I), (_h(H + 1), _h(H))), RuntimeError,
                            r"^hidden0 has inconsistent hidden_size: got 5, expected 4$"),
    "one-state": (lambda: (_h(2, I), (_h(2, H),)), RuntimeError,
                  r"^lstm_cell expects two hidden states$"),
    "three-states": (lambda: (_h(2, I), (_h(2, H), _h(2, H), _h(2, H))), RuntimeError,
                     r"^lstm_cell expects two hidden states$"),
    "hx-tensor": (lambda: (_h(2, I), _h(2, H)), TypeError, r"hx"),
    # nn.LSTMCell's own messages are incidental here (its hx is batched by accident); the class
    # matches and ours names hx
    "batched-input-1d-hx": (lambda: (_h(2, I), (_h(H), _h(H))), RuntimeError, r"hx|hidden0"),
    "unbatched-input-2d-hx": (lambda: (_h(I), (_h(2, H), _h(2, H))), RuntimeError, r"hx|hidden0"),
    "input-dtype": (lambda: (_h(2, I, dtype=F64),), RuntimeError, r"input|Double"),
    "hx-dtype": (lambda: (_h(2, I), (_h(2, H, dtype=F64), _h(2, H))), RuntimeError,
                 r"hx\[0\]|Double"),
    "input-int": (lambda: (torch.ones(2, I, dtype=torch.int64),), RuntimeError, r"input|Long"),
}


@pytest.mark.parametrize("name", list(ERROR_CASES))
def test_cell_errors_like_nn_lstm_cell(name):
    make_args, exc, match = ERROR_CASES[name]
    ref = nn.LSTMCell(I, H)
    fused = fused_lstm.LSTMCell(I, H)
    torch.manual_seed(0)
    args = make_args()
    with pytest.raises(exc, match=match) as ref_err:  # nn.LSTMCell's message names it too
        ref(*args)
    with pytest.raises(exc, match=match) as fused_err:
        fused(*args)
    assert type(fused_err.value) is type(ref_err.value), (fused_err.value, ref_err.value)
    if match.startswith("^"):  # torch's exact message
        assert str(fused_err.value) == str(ref_err.value)


def test_cell_torch_compile_fullgraph():
    """No graph break (nn.LSTMCell always breaks), hx given or not, batched or not; the same
    values and gradients as eager."""
    torch._dynamo.reset()
    _, fused = make_pair(nn.LSTMCell, I, H, dtype=F64, seed=7)
    compiled = torch.compile(fused, fullgraph=True, backend="aot_eager")
    torch.manual_seed(8)
    for batch, with_state in (((2,), False), ((2,), True), ((), True)):
        x = torch.randn(*batch, I, dtype=F64)
        hx = ((torch.randn(*batch, H, dtype=F64), torch.randn(*batch, H, dtype=F64))
              if with_state else None)
        gh, gc = torch.randn(*batch, H, dtype=F64), torch.randn(*batch, H, dtype=F64)
        eager = run_cell(fused, x, hx, gh, gc)
        comp = run_cell(compiled, x, hx, gh, gc)
        comp = {k.replace("_orig_mod.", ""): v for k, v in comp.items()}
        compare(comp, eager, F64, what=f"compiled {batch} {with_state}")


def test_cell_meta_device():
    cell = fused_lstm.LSTMCell(I, H, device="meta")
    h, c = cell(torch.randn(2, I, device="meta"))
    assert h.device.type == c.device.type == "meta" and h.shape == c.shape == (2, H)


# ------------------------------------------------------------------------------------------------
# Corners: hidden_size=0; one tensor as both states under torch.compile
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
def test_hidden_size_zero_like_nn(batched):
    """nn.LSTMCell accepts hidden_size=0 (empty states; the input still gets a zero gradient);
    nn.LSTM rejects it in its constructor, and so does fused_lstm.LSTM."""
    ref, fused = make_pair(nn.LSTMCell, I, 0, dtype=F64)
    x = torch.randn(*((2,) if batched else ()), I, dtype=F64)
    for hx in (None, (x.new_zeros(*x.shape[:-1], 0), x.new_zeros(*x.shape[:-1], 0))):
        xr, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
        want, got = ref(xr, hx), fused(xf, hx)
        for a, b in zip(got, want):
            assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape)
        assert_close(grads(got, [xf], [torch.ones_like(t) for t in got])[0],
                     grads(want, [xr], [torch.ones_like(t) for t in want])[0], name="dx")
    for make in (nn.LSTM, fused_lstm.LSTM):
        with pytest.raises(ValueError, match="hidden_size must be greater than zero"):
            make(I, 0)


@pytest.mark.parametrize("kind", ["cell", "lstm"])
def test_compile_fullgraph_with_one_tensor_as_h_and_c(kind):
    """h = c = zeros(...) passed as hx: no graph break (dynamo refused the autograd.Function
    given one tensor twice), values and gradients as nn's (the shared tensor gets the sum)."""
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    if kind == "cell":
        ref = nn.LSTMCell(I, H, dtype=F64)
        x, h = torch.randn(2, I, dtype=F64), torch.zeros(2, H, dtype=F64)
    else:
        ref = nn.LSTM(I, H, num_layers=2, dtype=F64)
        x, h = torch.randn(3, 2, I, dtype=F64), torch.zeros(2, 2, H, dtype=F64)
    fused = fused_lstm.convert(ref)

    def run(module):
        hh, xx = h.clone().requires_grad_(), x.clone().requires_grad_()
        out = module(xx, (hh, hh))
        out = out if kind == "cell" else (out[0], *out[1])
        return [*out, *grads(out, [xx, hh, *module.parameters()],
                             [torch.ones_like(t) for t in out])]

    want = run(ref)
    torch._dynamo.reset()
    counters.clear()
    run(torch.compile(fused, backend="aot_eager"))
    assert not counters["graph_break"], dict(counters["graph_break"])
    torch._dynamo.reset()
    got = run(torch.compile(fused, fullgraph=True, backend="aot_eager"))
    for a, b in zip(got, want):
        assert_close(a, b)

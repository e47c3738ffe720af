"""fused_lstm.LSTM computes what torch.nn.LSTM computes, with identical weights: outputs, final
states and every gradient, over the whole interface (a parity matrix), with dropout, under
autocast, under torch.compile and through double backward. tests/test_module_api.py checks the
rest of the drop-in interface (parameters, state_dict, conversions, copies, dtypes, helpers).

The matrix (``test_parity_matrix``) is the FULL cross product, no sampling:

    num_layers {1, 2, 3} x bias {T, F} x batch_first {T, F} x bidirectional {T, F}
    x proj_size {0, 2} x input {batched, unbatched, packed-sorted, packed-unsorted}
    x hx {given, None} x dtype {float64 (tol 1e-10), float32 (tol 1e-5)}      = 768 cases

(unbatched and packed are one axis because packed input is always batched). Each case compares
the output (PackedSequence fields included), h_n, c_n and the gradients of the input, h_0, c_0
and every parameter under random upstream gradients, against torch.nn.LSTM with the same
weights. Sizes are tiny (I=3, H=4, P=2, B<=3) and T and the packed lengths vary with the case
(T = 1 included), so the matrix runs in seconds. Every other case runs in eval mode, which
must not change gradients (the module does not look at the mode for autograd).

The NAMED_CONFIGS tests run six named configurations at I=5, H=7 (an odd H: vector bodies and
scalar tails in the gate passes), in float64 and float32.
"""
import copy
import itertools

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import fused_lstm
from tests.lstm_testing import (
    NAMED_CONFIGS,
    NAMED_H,
    NAMED_I,
    NAMED_SIZES,
    SIZES,
    H,
    I,
    P,
    Problem,
    assert_close,
    assert_lowp_ok,
    compare_results,
    leaves,
    make_pair,
    module_inputs,
    run_module,
)

F64, F32 = torch.float64, torch.float32

LAYERS = (1, 2, 3)
BIAS = (True, False)
BATCH_FIRST = (False, True)
BIDIRECTIONAL = (False, True)
PROJ = (0, P)
MODES = ("batched", "unbatched", "packed-sorted", "packed-unsorted")
WITH_STATE = (True, False)
DTYPES = (F64, F32)

MATRIX = list(itertools.product(LAYERS, BIAS, BATCH_FIRST, BIDIRECTIONAL, PROJ, MODES,
                                WITH_STATE, DTYPES))


def _case_id(case):
    layers, bias, bf, bi, proj, mode, with_state, dtype = case
    return (f"L{layers}-{'bias' if bias else 'nobias'}-{'bf' if bf else 'tm'}-"
            f"{'bi' if bi else 'uni'}-P{proj}-{mode}-{'hx' if with_state else 'nohx'}-"
            f"{'f64' if dtype == F64 else 'f32'}")


@pytest.mark.parametrize("case", [pytest.param(c, id=_case_id(c)) for c in MATRIX])
def test_parity_matrix(case):
    layers, bias, bf, bi, proj, mode, with_state, dtype = case
    index = MATRIX.index(case)
    cfg = dict(num_layers=layers, bias=bias, batch_first=bf, bidirectional=bi, proj_size=proj)
    ref, fused = make_pair(nn.LSTM, I, H, dtype=dtype, seed=index, **cfg)
    if index % 2:  # eval mode: same outputs, gradients still flow
        ref.eval(), fused.eval()
    prob = Problem(cfg, mode, with_state, dtype, seed=index, **SIZES)
    out_r, r = prob.run(ref)
    out_f, f = prob.run(fused)
    assert type(out_f) is type(out_r)
    if isinstance(out_r, PackedSequence):
        assert torch.equal(out_f.batch_sizes, out_r.batch_sizes)
        for attr in ("sorted_indices", "unsorted_indices"):
            a, b = getattr(out_f, attr), getattr(out_r, attr)
            assert (a is None) == (b is None) and (a is None or torch.equal(a, b)), attr
    compare_results(f, r, dtype, what=_case_id(case))


def test_matrix_size():
    """The matrix is the full cross product (see the module docstring)."""
    assert len(MATRIX) == 3 * 2 * 2 * 2 * 2 * 4 * 2 * 2 == 768


# ------------------------------------------------------------------------------------------------
# Named configurations (I=5, H=7)
# ------------------------------------------------------------------------------------------------
NAMED_DTYPES = [pytest.param(torch.float64, id="f64"), pytest.param(torch.float32, id="f32")]


@pytest.mark.parametrize("dtype", NAMED_DTYPES)
@pytest.mark.parametrize("with_state", [True, False], ids=["state", "nostate"])
@pytest.mark.parametrize("name", list(NAMED_CONFIGS))
def test_module_vs_nn_lstm(name, with_state, dtype):
    cfg = NAMED_CONFIGS[name]
    ref, fused = make_pair(nn.LSTM, NAMED_I, NAMED_H, dtype=dtype, **cfg)
    x, hx, go, gh, gc = module_inputs(cfg, dtype, with_state=with_state, **NAMED_SIZES)
    _, r = run_module(ref, *leaves(x, hx), go, gh, gc)
    out, f = run_module(fused, *leaves(x, hx), go, gh, gc)
    assert isinstance(out, torch.Tensor)
    compare_results(f, r, dtype, what=f"{name}:")


@pytest.mark.parametrize("dtype", NAMED_DTYPES)
@pytest.mark.parametrize("with_state", [True, False], ids=["state", "nostate"])
@pytest.mark.parametrize("name", ["L1", "L2-bi-bf-proj"])
def test_unbatched_input(name, with_state, dtype):
    cfg = NAMED_CONFIGS[name]
    ref, fused = make_pair(nn.LSTM, NAMED_I, NAMED_H, dtype=dtype, **cfg)
    x, hx, go, gh, gc = module_inputs(cfg, dtype, with_state=with_state, unbatched=True,
                                      **NAMED_SIZES)
    assert x.dim() == 2
    _, r = run_module(ref, *leaves(x, hx), go, gh, gc)
    _, f = run_module(fused, *leaves(x, hx), go, gh, gc)
    assert f["h_n"].dim() == 2 and f["c_n"].dim() == 2
    compare_results(f, r, dtype, what=f"unbatched {name}:")


@pytest.mark.parametrize("dtype", NAMED_DTYPES)
@pytest.mark.parametrize("enforce_sorted", [True, False], ids=["sorted", "unsorted"])
@pytest.mark.parametrize("name,with_state", [("L1", True), ("L2-bi", True),
                                             ("L2-bi-bf-proj", False), ("L3-bf-proj", True)])
def test_packed_sequence(name, with_state, enforce_sorted, dtype):
    cfg = NAMED_CONFIGS[name]
    bf = cfg.get("batch_first", False)
    lengths = torch.tensor([5, 4, 4, 2, 1] if enforce_sorted else [2, 5, 1, 4, 4])
    ref, fused = make_pair(nn.LSTM, NAMED_I, NAMED_H, dtype=dtype, **cfg)
    x, hx, _, gh, gc = module_inputs(cfg, dtype, T=5, B=5, with_state=with_state,
                                     **NAMED_SIZES)
    D = 2 if cfg.get("bidirectional") else 1
    go = torch.randn(int(lengths.sum()), D * (cfg.get("proj_size", 0) or NAMED_H),
                     dtype=dtype)
    results = []
    for m in (ref, fused):
        xl, hxl = leaves(x, hx)
        packed = pack_padded_sequence(xl, lengths, batch_first=bf, enforce_sorted=enforce_sorted)
        out, res = run_module(m, xl, hxl, go, gh, gc, packed=packed)
        assert isinstance(out, PackedSequence), f"{type(m).__name__}: output is {type(out)}"
        assert torch.equal(out.batch_sizes, packed.batch_sizes)
        for attr in ("sorted_indices", "unsorted_indices"):
            a, b = getattr(out, attr), getattr(packed, attr)
            assert (a is None and b is None) or torch.equal(a, b), attr
        results.append(res)
    compare_results(results[1], results[0], dtype, what=f"packed {name}:")


def test_packed_equals_per_sequence_runs():
    """Each sequence of a packed batch gives the same result as running it alone (float64)."""
    torch.manual_seed(3)
    fused = fused_lstm.LSTM(NAMED_I, NAMED_H, num_layers=2, bidirectional=True, dtype=F64)
    lengths = [2, 5, 3]
    xs = [torch.randn(L, NAMED_I, dtype=F64) for L in lengths]
    padded = torch.nn.utils.rnn.pad_sequence(xs)
    packed = pack_padded_sequence(padded, torch.tensor(lengths), enforce_sorted=False)
    out, (hn, cn) = fused(packed)
    out_pad, out_len = torch.nn.utils.rnn.pad_packed_sequence(out)
    assert out_len.tolist() == lengths
    for b, xb in enumerate(xs):
        o, (h, c) = fused(xb)  # unbatched
        assert_close(out_pad[: lengths[b], b], o, name=f"out[{b}]")
        assert_close(hn[:, b], h, name=f"h_n[{b}]")
        assert_close(cn[:, b], c, name=f"c_n[{b}]")


# ------------------------------------------------------------------------------------------------
# Gradients do not depend on the training mode
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_backward_in_eval_mode(dropout):
    """In eval mode backward works and, with dropout off in eval, equals nn.LSTM's eval grads;
    without dropout, eval and train give the same gradients."""
    cfg = dict(num_layers=2, bidirectional=True, proj_size=P, dropout=dropout)
    ref, fused = make_pair(nn.LSTM, I, H, dtype=F64, **cfg)
    prob = Problem(cfg, "batched", True, F64, seed=11, **SIZES)
    ref.eval(), fused.eval()
    assert not fused.training
    _, r = prob.run(ref)
    _, f = prob.run(fused)
    compare_results(f, r, F64, what="eval")
    assert all(v is not None for v in f.values())
    if dropout == 0.0:
        fused.train()
        _, t = prob.run(fused)
        compare_results(t, f, F64, what="train vs eval")


def test_backward_in_eval_mode_through_loss_backward():
    """The usual training-loop spelling (loss.backward() fills .grad) works in eval mode."""
    _, fused = make_pair(nn.LSTM, I, H, dtype=F32, num_layers=2)
    fused.eval()
    out, (h, c) = fused(torch.randn(3, 2, I))
    (out.sum() + h.sum() + c.sum()).backward()
    for name, p in fused.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


# ------------------------------------------------------------------------------------------------
# Dropout: nn.LSTM's masks, bit for bit on CPU (both draw them with at::dropout between layers)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["batched", "packed-unsorted"])
@pytest.mark.parametrize("bi", [False, True], ids=["uni", "bi"])
def test_dropout_train_matches_nn_lstm_with_same_seed(bi, mode):
    cfg = dict(num_layers=3, bidirectional=bi, dropout=0.4, proj_size=P)
    ref, fused = make_pair(nn.LSTM, I, H, dtype=F64, **cfg)
    ref.train(), fused.train()
    prob = Problem(cfg, mode, True, F64, seed=3, **SIZES)
    torch.manual_seed(1234)
    _, r = prob.run(ref)
    torch.manual_seed(1234)
    _, f = prob.run(fused)
    compare_results(f, r, F64, what="train+dropout")
    # and it really dropped something: eval differs
    ref.eval()
    _, e = prob.run(ref)
    assert not torch.allclose(e["output"], r["output"])


def test_dropout_gradients_reproducible_and_last_layer_undropped():
    cfg = dict(num_layers=2, dropout=0.5)
    _, fused = make_pair(nn.LSTM, I, H, dtype=F64, **cfg)
    prob = Problem(cfg, "batched", True, F64, seed=4, **SIZES)
    fused.train()
    torch.manual_seed(7)
    _, a = prob.run(fused)
    torch.manual_seed(7)
    _, b = prob.run(fused)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # The output is the last layer's h at every step: no dropout after the last layer.
    out = a["output"]
    last_h = out[-1] if not cfg.get("batch_first") else out[:, -1]
    assert torch.equal(last_h, a["h_n"][-1])


def test_dropout_one_drops_everything_between_layers():
    """dropout=1 zeroes the input of layer 2 in training (as nn.LSTM): it then sees only zeros."""
    cfg = dict(num_layers=2, dropout=1.0)
    ref, fused = make_pair(nn.LSTM, I, H, dtype=F64, **cfg)
    x = torch.randn(3, 2, I, dtype=F64)
    torch.manual_seed(0)
    o_f, (h_f, c_f) = fused.train()(x)
    torch.manual_seed(0)
    o_r, (h_r, c_r) = ref.train()(x)
    assert_close(o_f, o_r, name="output")
    assert_close(h_f, h_r, name="h_n")
    x2 = torch.randn(3, 2, I, dtype=F64)
    o_f2, _ = fused(x2)
    assert torch.equal(o_f, o_f2), "layer 2 should not see layer 1's (dropped) output"


# ------------------------------------------------------------------------------------------------
# Dropout on the named configurations
def test_dropout_eval_identical_to_nn_lstm():
    cfg = dict(num_layers=3, bidirectional=True, dropout=0.5)
    ref, fused = make_pair(nn.LSTM, NAMED_I, NAMED_H, dtype=F64, **cfg)
    ref.eval(), fused.eval()
    x, hx, _, _, _ = module_inputs(dict(cfg), F64, **NAMED_SIZES)
    o1, (h1, c1) = fused(x, hx)
    o2, (h2, c2) = ref(x, hx)
    assert_close(o1, o2, name="output")
    assert_close(h1, h2, name="h_n")
    assert_close(c1, c2, name="c_n")


def test_dropout_train_differs_and_is_reproducible():
    cfg = dict(num_layers=2, dropout=0.5)
    _, fused = make_pair(nn.LSTM, NAMED_I, NAMED_H, dtype=F64, **cfg)
    x, hx, _, _, _ = module_inputs(dict(cfg), F64, **NAMED_SIZES)
    fused.eval()
    o_eval, _ = fused(x, hx)
    fused.train()
    torch.manual_seed(123)
    o1, (h1, c1) = fused(x, hx)
    torch.manual_seed(123)
    o2, (h2, c2) = fused(x, hx)
    torch.manual_seed(124)
    o3, _ = fused(x, hx)
    assert torch.equal(o1, o2) and torch.equal(h1, h2) and torch.equal(c1, c2)
    assert not torch.allclose(o1, o_eval), "dropout had no effect in training mode"
    assert not torch.allclose(o1, o3), "dropout mask did not change with the seed"
    # no dropout on the last layer's output: it still ends in h_n of the last layer
    assert_close(o1[-1], h1[-1], name="output[-1] vs h_n[-1] in training mode")
    # the first layer's state never sees dropout (it is applied between layers only)
    _, (h_eval, c_eval) = fused.eval()(x, hx)
    assert_close(h1[0], h_eval[0], name="h_n[layer 0]")
    assert_close(c1[0], c_eval[0], name="c_n[layer 0]")


def test_dropout_single_layer_is_noop():
    """Like nn.LSTM, dropout only acts between layers: with one layer, train == eval."""
    cfg = dict(num_layers=1, dropout=0.5)
    ref, fused = make_pair(nn.LSTM, NAMED_I, NAMED_H, dtype=F64, **cfg)
    x, hx, _, _, _ = module_inputs(dict(cfg), F64, **NAMED_SIZES)
    fused.train()
    o1, (h1, c1) = fused(x, hx)
    o2, (h2, c2) = ref.train()(x, hx)
    assert_close(o1, o2, name="output")
    assert_close(h1, h2, name="h_n")


def test_train_mode_no_dropout_matches_nn_lstm():
    cfg = dict(num_layers=2, dropout=0.0)
    ref, fused = make_pair(nn.LSTM, NAMED_I, NAMED_H, dtype=F64, **cfg)
    fused.train(), ref.train()
    x, hx, _, _, _ = module_inputs(dict(cfg), F64, **NAMED_SIZES)
    assert_close(fused(x, hx)[0], ref(x, hx)[0], name="output")


# ------------------------------------------------------------------------------------------------
# Autocast (DESIGN.md: the module casts to the autocast dtype in Python)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("x_dtype", [F32, torch.bfloat16], ids=["x-f32", "x-bf16"])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_autocast_bf16_cpu_like_nn_lstm(x_dtype, packed):
    cfg = dict(num_layers=2, bidirectional=True)
    ref, fused = make_pair(nn.LSTM, I, H, dtype=F32, **cfg)
    ref64 = copy.deepcopy(ref).double()
    torch.manual_seed(2)
    x = torch.randn(4, 3, I).to(x_dtype)
    lengths = torch.tensor([2, 4, 3])

    def inp(t):
        return pack_padded_sequence(t, lengths, enforce_sorted=False) if packed else t

    def data(o):
        return o.data if isinstance(o, PackedSequence) else o

    with torch.autocast("cpu", dtype=torch.bfloat16):
        o_r, (h_r, c_r) = ref(inp(x))
        xf = x.clone().requires_grad_()
        o_f, (h_f, c_f) = fused(inp(xf))
    o64, (h64, c64) = ref64(inp(x.double()))
    for a, b, r64, name in ((data(o_f), data(o_r), data(o64), "output"), (h_f, h_r, h64, "h_n"),
                            (c_f, c_r, c64, "c_n")):
        # nn.LSTM returns bf16 for padded input, but the input's dtype for packed input (CPU
        # autocast has no rule for the packed overload of aten::lstm); so does the fused module.
        assert b.dtype == (x_dtype if packed else torch.bfloat16), f"nn.LSTM {name}: {b.dtype}"
        assert a.dtype == b.dtype, f"{name}: {a.dtype}"
        assert_lowp_ok(a, b, r64, name=name)
    # backward outside autocast (the documented recipe) reaches the float32 leaves
    (data(o_f).float().sum() + h_f.float().sum()).backward()
    assert xf.grad is not None and xf.grad.dtype == x_dtype
    for name, p in fused.named_parameters():
        assert p.grad is not None and p.grad.dtype == F32, name


@pytest.mark.parametrize("autocast_dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("x_dtype", [F32, torch.bfloat16], ids=["x-f32", "x-bf16"])
@pytest.mark.parametrize("kind", ["padded", "batch-first", "unbatched", "packed", "packed-state",
                                  "proj", "packed-proj"])
def test_autocast_cpu_result_dtype_like_nn_lstm(kind, x_dtype, autocast_dtype):
    """nn.LSTM's CPU autocast dtype policy, input kind by input kind (nn.LSTM's float16 padded
    CPU path fails in oneDNN: there the fused module runs float16, the autocast dtype)."""
    cfg = {"batch_first": kind == "batch-first", "proj_size": P if kind.endswith("proj") else 0}
    ref, fused = make_pair(nn.LSTM, I, H, dtype=F32, **cfg)
    x = torch.randn(3, 2, I).to(x_dtype)
    hx = None
    if kind == "unbatched":
        x = x[:, 0]
    elif kind.startswith("packed"):
        x = pack_padded_sequence(x, torch.tensor([3, 1]))
        if kind == "packed-state":
            hx = (torch.randn(1, 2, H), torch.randn(1, 2, H))
    with torch.autocast("cpu", dtype=autocast_dtype):
        got = fused(x, hx)
        try:
            want = ref(x, hx)
        except RuntimeError as e:
            assert autocast_dtype == torch.float16 and not kind.startswith("packed"), e
            want = (torch.empty(0, dtype=torch.float16), (torch.empty(0, dtype=torch.float16),) * 2)
    for name, a, b in (("output", got[0], want[0]), ("h_n", got[1][0], want[1][0]),
                       ("c_n", got[1][1], want[1][1])):
        a, b = (t.data if isinstance(t, PackedSequence) else t for t in (a, b))
        assert a.dtype == b.dtype, f"{name}: fused {a.dtype}, nn.LSTM {b.dtype}"
        if b.numel():
            torch.testing.assert_close(a.float(), b.float(), rtol=0.05, atol=0.05)


# ------------------------------------------------------------------------------------------------
# torch.compile
# ------------------------------------------------------------------------------------------------
def _compiled(module):
    return torch.compile(module, fullgraph=True, backend="aot_eager")


def test_torch_compile_fullgraph():
    """No graph break anywhere in the module (nn.LSTM always breaks): padded, unbatched and
    packed input, hx given or not, autocast; results and gradients equal eager."""
    torch._dynamo.reset()
    cfg = dict(num_layers=2, bidirectional=True, proj_size=P, batch_first=True)
    _, fused = make_pair(nn.LSTM, I, H, dtype=F64, **cfg)
    compiled = _compiled(fused)
    for mode, with_state in (("batched", True), ("batched", False), ("unbatched", True),
                             ("packed-unsorted", False)):
        prob = Problem(cfg, mode, with_state, F64, seed=12, **SIZES)
        _, eager = prob.run(fused)
        _, comp = prob.run(compiled)
        compare_results(comp, eager, F64, what=f"compiled {mode}")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = _compiled(copy.deepcopy(fused).float())(torch.randn(2, 3, I))
    assert out.dtype == torch.bfloat16


# ------------------------------------------------------------------------------------------------
# Double backward gives nn.LSTM's second derivative (tests/test_higher_order.py has the rest)
# ------------------------------------------------------------------------------------------------
def test_double_backward_matches_nn():
    ref, fused = make_pair(nn.LSTM, I, H, dtype=F64, num_layers=1)
    x = torch.randn(3, 2, I, dtype=F64)

    def second(m):
        xx = x.clone().requires_grad_()
        g, = torch.autograd.grad(m(xx)[0].pow(2).sum(), xx, create_graph=True)
        gg, = torch.autograd.grad(g.pow(2).sum(), xx)
        return gg

    assert_close(second(fused), second(ref), name="second derivative")

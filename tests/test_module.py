"""fused_lstm.LSTM vs torch.nn.LSTM with identical weights (state_dicts load both ways)."""
import copy

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import fused_lstm
from lstm_testing import assert_close, grads

F64 = torch.float64
DTYPES = [pytest.param(torch.float64, id="f64"), pytest.param(torch.float32, id="f32")]
I, H = 5, 7

CONFIGS = {
    "L1": dict(num_layers=1),
    "L2-bi": dict(num_layers=2, bidirectional=True),
    "L3-bf-proj": dict(num_layers=3, batch_first=True, proj_size=3),
    "L2-bi-bf-proj": dict(num_layers=2, bidirectional=True, batch_first=True, proj_size=4),
    "L1-bi-nobias": dict(num_layers=1, bidirectional=True, bias=False),
    "L3-bi": dict(num_layers=3, bidirectional=True),
}


def make_pair(cfg, dtype, seed=0):
    """(nn.LSTM, fused_lstm.LSTM) with the same weights (fused loads nn's state_dict)."""
    torch.manual_seed(seed)
    ref = nn.LSTM(I, H, dtype=dtype, **cfg)
    with torch.no_grad():
        for n, p in ref.named_parameters():
            if n.startswith("bias"):
                p.uniform_(-0.5, 0.5)
    fused = fused_lstm.LSTM(I, H, dtype=dtype, **cfg)
    fused.load_state_dict(ref.state_dict())
    return ref, fused


def state_shape(cfg, B):
    L = cfg.get("num_layers", 1) * (2 if cfg.get("bidirectional") else 1)
    P = cfg.get("proj_size", 0) or H
    return (L, B, P), (L, B, H)


def run_module(m, x, hx, go, gh, gc, packed=None):
    """Forward + random-upstream backward. x/hx are leaves. Returns outputs and grads by name."""
    out, (hn, cn) = m(packed if packed is not None else x, hx)
    out_t = out.data if isinstance(out, PackedSequence) else out
    params = [p for _, p in m.named_parameters()]
    wrt = [x] + (list(hx) if hx is not None else [None, None]) + params
    g = grads([out_t, hn, cn], wrt, [go, gh, gc])
    res = {"out": out_t.detach(), "h_n": hn.detach(), "c_n": cn.detach(),
           "grad_input": g[0], "grad_h0": g[1], "grad_c0": g[2]}
    for (n, _), gp in zip(m.named_parameters(), g[3:]):
        res["grad_" + n] = gp
    return out, res


def compare(a, b, dtype, what=""):
    assert set(a) == set(b), f"{what}: keys {sorted(set(a) ^ set(b))}"
    for k in b:
        if b[k] is None:
            assert a[k] is None, f"{what} {k}: expected None"
        else:
            assert a[k] is not None, f"{what} {k}: missing gradient"
            assert_close(a[k], b[k], dtype=dtype, name=f"{what} {k}")


def inputs(cfg, dtype, T=4, B=3, with_state=True, unbatched=False, seed=1):
    torch.manual_seed(seed)
    bf = cfg.get("batch_first", False)
    if unbatched:
        x = torch.randn(T, I, dtype=dtype)
    else:
        x = torch.randn(*((B, T) if bf else (T, B)), I, dtype=dtype)
    hs, cs = state_shape(cfg, B)
    if unbatched:
        hs, cs = (hs[0], hs[2]), (cs[0], cs[2])
    h0 = 0.5 * torch.randn(*hs, dtype=dtype)
    c0 = 0.5 * torch.randn(*cs, dtype=dtype)
    D = 2 if cfg.get("bidirectional") else 1
    P = cfg.get("proj_size", 0) or H
    go = torch.randn(*x.shape[:-1], D * P, dtype=dtype)
    gh, gc = torch.randn(*hs, dtype=dtype), torch.randn(*cs, dtype=dtype)
    return x, ((h0, c0) if with_state else None), go, gh, gc


def leaves(x, hx):
    x = x.clone().requires_grad_()
    hx = tuple(t.clone().requires_grad_() for t in hx) if hx is not None else None
    return x, hx


# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_state", [True, False], ids=["state", "nostate"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_module_vs_nn_lstm(name, with_state, dtype):
    cfg = CONFIGS[name]
    ref, fused = make_pair(cfg, dtype)
    x, hx, go, gh, gc = inputs(cfg, dtype, with_state=with_state)
    _, r = run_module(ref, *leaves(x, hx), go, gh, gc)
    out, f = run_module(fused, *leaves(x, hx), go, gh, gc)
    assert isinstance(out, torch.Tensor)
    compare(f, r, dtype, what=f"{name}:")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_state", [True, False], ids=["state", "nostate"])
@pytest.mark.parametrize("name", ["L1", "L2-bi-bf-proj"])
def test_unbatched_input(name, with_state, dtype):
    cfg = CONFIGS[name]
    ref, fused = make_pair(cfg, dtype)
    x, hx, go, gh, gc = inputs(cfg, dtype, with_state=with_state, unbatched=True)
    assert x.dim() == 2
    _, r = run_module(ref, *leaves(x, hx), go, gh, gc)
    _, f = run_module(fused, *leaves(x, hx), go, gh, gc)
    assert f["h_n"].dim() == 2 and f["c_n"].dim() == 2
    compare(f, r, dtype, what=f"unbatched {name}:")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("enforce_sorted", [True, False], ids=["sorted", "unsorted"])
@pytest.mark.parametrize("name,with_state", [("L1", True), ("L2-bi", True), ("L2-bi-bf-proj", False),
                                             ("L3-bf-proj", True)])
def test_packed_sequence(name, with_state, enforce_sorted, dtype):
    cfg = CONFIGS[name]
    bf = cfg.get("batch_first", False)
    lengths = torch.tensor([5, 4, 4, 2, 1] if enforce_sorted else [2, 5, 1, 4, 4])
    ref, fused = make_pair(cfg, dtype)
    x, hx, _, gh, gc = inputs(cfg, dtype, T=5, B=5, with_state=with_state)
    D = 2 if cfg.get("bidirectional") else 1
    go = torch.randn(int(lengths.sum()), D * (cfg.get("proj_size", 0) or H), dtype=dtype)
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
    compare(results[1], results[0], dtype, what=f"packed {name}:")


def test_packed_equals_per_sequence_runs():
    """Each sequence of a packed batch gives the same result as running it alone (float64)."""
    torch.manual_seed(3)
    fused = fused_lstm.LSTM(I, H, num_layers=2, bidirectional=True, dtype=F64)
    lengths = [2, 5, 3]
    xs = [torch.randn(L, I, dtype=F64) for L in lengths]
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
# Parameters, state_dict, converters
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CONFIGS))
def test_parameter_names_and_shapes(name):
    cfg = CONFIGS[name]
    ref = nn.LSTM(I, H, **cfg)
    fused = fused_lstm.LSTM(I, H, **cfg)
    assert [n for n, _ in fused.named_parameters()] == [n for n, _ in ref.named_parameters()]
    assert [tuple(p.shape) for p in fused.parameters()] == [tuple(p.shape) for p in ref.parameters()]
    assert list(fused.state_dict().keys()) == list(ref.state_dict().keys())
    assert isinstance(fused, nn.Module) and not isinstance(fused, nn.LSTM)
    expected = {**dict(input_size=I, hidden_size=H, num_layers=1, bias=True, batch_first=False,
                       dropout=0.0, bidirectional=False, proj_size=0), **cfg}
    for attr, v in expected.items():
        assert getattr(fused, attr) == v, attr


@pytest.mark.parametrize("name", ["L2-bi-bf-proj", "L1-bi-nobias"])
def test_fused_state_dict_loads_into_nn_lstm(name):
    cfg = CONFIGS[name]
    torch.manual_seed(5)
    fused = fused_lstm.LSTM(I, H, dtype=F64, **cfg)
    ref = nn.LSTM(I, H, dtype=F64, **cfg)
    ref.load_state_dict(fused.state_dict())  # strict
    for (n, p), (_, q) in zip(fused.named_parameters(), ref.named_parameters()):
        assert torch.equal(p, q), n
    x, hx, go, gh, gc = inputs(cfg, F64)
    _, r = run_module(ref, *leaves(x, hx), go, gh, gc)
    _, f = run_module(fused, *leaves(x, hx), go, gh, gc)
    compare(f, r, F64, what=f"{name}:")


def test_default_init_like_nn_lstm():
    """Parameters are initialised like nn.LSTM: U(-1/sqrt(H), 1/sqrt(H)), not all equal."""
    fused = fused_lstm.LSTM(I, 16, num_layers=2)
    k = 1 / 16 ** 0.5
    for n, p in fused.named_parameters():
        assert p.abs().max() <= k + 1e-6, n
        assert p.std() > 0.1 * k, n


@pytest.mark.parametrize("name", ["L1", "L2-bi-bf-proj", "L1-bi-nobias"])
def test_from_torch_to_torch_roundtrip(name):
    cfg = dict(CONFIGS[name])
    torch.manual_seed(7)
    ref = nn.LSTM(I, H, dtype=F64, dropout=0.25 if cfg.get("num_layers", 1) > 1 else 0.0, **cfg)
    fused = fused_lstm.LSTM.from_torch(ref)
    assert isinstance(fused, fused_lstm.LSTM)
    for attr in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                 "bidirectional", "proj_size"):
        assert getattr(fused, attr) == getattr(ref, attr), attr
    for (n, p), (m, q) in zip(fused.named_parameters(), ref.named_parameters()):
        assert n == m and p.dtype == q.dtype and torch.equal(p, q), n
    back = fused.to_torch()
    assert type(back) is nn.LSTM
    for attr in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                 "bidirectional", "proj_size"):
        assert getattr(back, attr) == getattr(ref, attr), attr
    sd_a, sd_b = back.state_dict(), ref.state_dict()
    assert list(sd_a) == list(sd_b)
    for k in sd_b:
        assert torch.equal(sd_a[k], sd_b[k]), k
    ref.eval(), fused.eval(), back.eval()
    x, hx, go, gh, gc = inputs(cfg, F64)
    outs = [m(x, hx) for m in (ref, fused, back)]
    for o, (h, c) in outs[1:]:
        assert_close(o, outs[0][0], name="output")
        assert_close(h, outs[0][1][0], name="h_n")
        assert_close(c, outs[0][1][1], name="c_n")


def test_module_uses_fused_op():
    """The module really runs the fused kernel (not torch's own LSTM)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    seen = []

    class Log(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    fused = fused_lstm.LSTM(I, H, num_layers=2, bidirectional=True)
    x = torch.randn(4, 3, I)
    with Log():
        fused(x)
    assert any("fused_lstm" in s and "lstm_layer_forward" in s for s in seen), sorted(set(seen))
    assert not any(s.startswith("aten.lstm") or "_thnn_fused_lstm" in s or "mkldnn_rnn" in s
                   for s in seen), sorted(set(seen))


def test_module_dtype_conversion():
    ref, fused = make_pair(CONFIGS["L2-bi"], torch.float32)
    fused.double()
    ref.double()
    assert all(p.dtype == F64 for p in fused.parameters())
    x = torch.randn(3, 2, I, dtype=F64)
    o1, (h1, c1) = fused(x)
    o2, (h2, c2) = ref(x)
    assert_close(o1, o2, name="output")
    assert_close(h1, h2, name="h_n")
    assert_close(c1, c2, name="c_n")


# ------------------------------------------------------------------------------------------------
# Dropout
# ------------------------------------------------------------------------------------------------
def test_dropout_eval_identical_to_nn_lstm():
    cfg = dict(num_layers=3, bidirectional=True, dropout=0.5)
    ref, fused = make_pair(cfg, F64)
    ref.eval(), fused.eval()
    x, hx, _, _, _ = inputs(dict(cfg), F64)
    o1, (h1, c1) = fused(x, hx)
    o2, (h2, c2) = ref(x, hx)
    assert_close(o1, o2, name="output")
    assert_close(h1, h2, name="h_n")
    assert_close(c1, c2, name="c_n")


def test_dropout_train_differs_and_is_reproducible():
    cfg = dict(num_layers=2, dropout=0.5)
    _, fused = make_pair(cfg, F64)
    x, hx, _, _, _ = inputs(dict(cfg), F64)
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
    ref, fused = make_pair(cfg, F64)
    x, hx, _, _, _ = inputs(dict(cfg), F64)
    fused.train()
    o1, (h1, c1) = fused(x, hx)
    o2, (h2, c2) = ref.train()(x, hx)
    assert_close(o1, o2, name="output")
    assert_close(h1, h2, name="h_n")


def test_train_mode_no_dropout_matches_nn_lstm():
    cfg = dict(num_layers=2, dropout=0.0)
    ref, fused = make_pair(cfg, F64)
    fused.train(), ref.train()
    x, hx, _, _, _ = inputs(dict(cfg), F64)
    assert_close(fused(x, hx)[0], ref(x, hx)[0], name="output")


# ------------------------------------------------------------------------------------------------
def test_build_info():
    info = fused_lstm.build_info()
    for k in ("cuda_built", "why", "torch_version", "cuda_version", "arch_list"):
        assert k in info, k
    assert isinstance(info["cuda_built"], bool)
    assert isinstance(info["why"], str)
    if not info["cuda_built"]:
        assert info["why"], "build_info()['why'] should say why CUDA was not built"
    assert isinstance(info["torch_version"], str) and info["torch_version"]
    if info["cuda_built"]:
        assert isinstance(info["cuda_version"], str)
    if torch.version.cuda is None:
        assert info["cuda_built"] is False

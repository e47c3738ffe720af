"""Higher-order and functional autograd through fused_lstm.LSTM / LSTMCell / lstm_layer:
double backward (gradgradcheck, and second derivatives equal to nn.LSTM's), forward mode
(torch.func.jvp, torch.autograd.forward_ad), torch.func (grad, vjp, jacrev, hessian), vmap (one
fused call over the folded batch, equal to a loop of single calls), per-sample gradients, and
that first-order training still runs only the fused kernels.

Oracles: torch.nn.LSTM / nn.LSTMCell with the same weights (float64, CPU), whose own
higher-order autograd is correct on CPU; nn.LSTM cannot vmap, so vmap is checked against a loop.
Sizes are tiny (T <= 4, B <= 3, H = 3) so the whole file runs in well under a minute.
"""
import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch import nn
from torch.func import functional_call, grad, hessian, jacrev, jvp, vjp, vmap
from torch.nn.utils.rnn import PackedSequence

import fused_lstm
from fused_lstm import _ops, functional
from tests.lstm_testing import assert_close, make_pair, spread_biases_

# torch's own chatter: the first forward-mode AD call loads jvp decompositions via jit.script.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")

F64 = torch.float64
I, H, P = 2, 3, 2  # noqa: E741  (I: the input size, as in nn.LSTM)

# Every module feature appears in some configuration: layers, bidirectional, proj_size, no
# biases, batch_first; each runs with padded and packed input, with and without (h0, c0).
CONFIGS = {
    "L1": dict(),
    "L2-bi-proj": dict(num_layers=2, bidirectional=True, proj_size=P),
    "nobias-batch_first": dict(bias=False, batch_first=True),
    "L2-proj-nobias": dict(num_layers=2, proj_size=P, bias=False),
}
MODES = ("padded", "packed")
CASES = [pytest.param(name, mode, state, id=f"{name}-{mode}-{'hx' if state else 'nohx'}")
         for name in CONFIGS for mode in MODES for state in (True, False)]


class Problem:
    """Inputs of one module call: x (padded, or packed data), optional (h0, c0), and the packed
    structure (batch_sizes and, to exercise the state permutation, unsorted indices)."""

    def __init__(self, cfg, mode, with_state, seed=0):
        torch.manual_seed(seed)
        layers = cfg.get("num_layers", 1) * (2 if cfg.get("bidirectional") else 1)
        pe = cfg.get("proj_size", 0) or H
        self.bf = cfg.get("batch_first", False)
        if mode == "packed":
            self.batch_sizes = torch.tensor([3, 2, 2, 1])
            self.sorted_indices = torch.tensor([1, 2, 0])
            self.unsorted_indices = torch.tensor([2, 0, 1])
            self.x = torch.randn(int(self.batch_sizes.sum()), I, dtype=F64)
            batch = 3
        else:
            self.batch_sizes = None
            T, batch = 3, 2
            self.x = torch.randn(*((batch, T) if self.bf else (T, batch)), I, dtype=F64)
        self.hx = ((0.5 * torch.randn(layers, batch, pe, dtype=F64),
                    0.5 * torch.randn(layers, batch, H, dtype=F64)) if with_state else None)

    def tensors(self):
        """The differentiable inputs: x, then h0 and c0 when given."""
        return (self.x,) + (self.hx if self.hx is not None else ())

    def call(self, module, params, x, *hx):
        """module(x, hx) through functional_call with ``params``; returns a flat tuple."""
        if self.batch_sizes is not None:
            x = PackedSequence(x, self.batch_sizes, self.sorted_indices, self.unsorted_indices)
        out, (h_n, c_n) = functional_call(module, params, (x, hx if hx else None))
        return (out.data if isinstance(out, PackedSequence) else out), h_n, c_n


def params_of(module):
    return {n: p.detach() for n, p in module.named_parameters()}


def close_all(actual, expected, name):
    if isinstance(expected, dict):
        assert actual.keys() == expected.keys(), name
        for k in expected:
            assert_close(actual[k], expected[k], name=f"{name} {k}")
    elif isinstance(expected, (tuple, list)):
        assert len(actual) == len(expected), name
        for i, (a, e) in enumerate(zip(actual, expected)):
            close_all(a, e, f"{name}[{i}]")
    else:
        assert_close(actual, expected, name=name)


def penalty(outputs):
    """A scalar that depends on every output non-linearly (so second derivatives are rich)."""
    return sum((o * o.sin()).sum() for o in outputs)


@pytest.fixture
def counted(monkeypatch):
    """Counts calls of the fused ops on unbatched tensors and of the reference paths."""
    counts = {"forward": 0, "backward": 0, "reference": 0}
    is_batched = torch._C._functorch.is_batchedtensor

    def wrap(name, key):
        original = getattr(_ops, name)

        def counting(*args):
            # Not an entry into the op's vmap rule, which calls it again on unbatched tensors.
            if not any(isinstance(a, torch.Tensor) and is_batched(a) for a in args):
                counts[key] += 1
            return original(*args)
        monkeypatch.setattr(_ops, name, counting)

    wrap("lstm_layer_forward", "forward")
    wrap("lstm_layer_backward", "backward")
    for name in ("lstm_layer_reference", "lstm_layer_reference_jvp"):
        original = getattr(functional, name)

        def counting(*args, _original=original, **kwargs):
            counts["reference"] += 1
            return _original(*args, **kwargs)
        monkeypatch.setattr(functional, name, counting)
    return counts


# ------------------------------------------------------------------------------------------------
# Double backward
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,mode,state", CASES)
def test_gradgradcheck_module(name, mode, state):
    _, fused = make_pair(nn.LSTM, I, H, **CONFIGS[name])
    prob = Problem(CONFIGS[name], mode, state)
    names = list(params_of(fused))
    leaves = [t.clone().requires_grad_() for t in prob.tensors()]
    leaves += [p.clone().requires_grad_() for p in params_of(fused).values()]
    n = len(prob.tensors())

    def fn(*args):
        return prob.call(fused, dict(zip(names, args[n:])), *args[:n])

    assert torch.autograd.gradgradcheck(fn, leaves, fast_mode=True)


@pytest.mark.parametrize("name,mode,state", CASES)
def test_double_backward_matches_nn(name, mode, state):
    """A gradient penalty: d/d(everything) of |d loss/d(x, params)|^2, as nn.LSTM computes it."""
    ref, fused = make_pair(nn.LSTM, I, H, **CONFIGS[name])
    prob = Problem(CONFIGS[name], mode, state)

    def second(module):
        inputs = [t.clone().requires_grad_() for t in prob.tensors()]
        params = {k: v.clone().requires_grad_() for k, v in params_of(module).items()}
        wrt = inputs + list(params.values())
        first = torch.autograd.grad(penalty(prob.call(module, params, *inputs)), wrt,
                                    create_graph=True)
        return torch.autograd.grad(sum((g * g).sum() for g in first), wrt)

    close_all(second(fused), second(ref), "second derivative")


LAYER_CASES = {
    "bias": dict(),
    "nobias": dict(bias=False),
    "proj-reverse": dict(P=2, reverse=True),
    "packed": dict(batch_sizes=[2, 2, 1]),
    "packed-reverse-proj-nostate": dict(P=2, reverse=True, batch_sizes=[2, 1, 1], state=False),
}


@pytest.mark.parametrize("name", list(LAYER_CASES))
def test_gradgradcheck_lstm_layer(name):
    cfg = dict(LAYER_CASES[name])
    bias, pe = cfg.get("bias", True), cfg.get("P", 0) or H
    batch_sizes = cfg.get("batch_sizes")
    if batch_sizes is not None:
        batch_sizes = torch.tensor(batch_sizes)
        x, B = torch.randn(int(batch_sizes.sum()), I, dtype=F64), int(batch_sizes[0])
    else:
        x, B = torch.randn(3, 2, I, dtype=F64), 2

    def r(*shape):
        return 0.5 * torch.randn(*shape, dtype=F64)

    args = dict(input=x, hx=r(B, pe), cx=r(B, H), weight_ih=r(4 * H, I), weight_hh=r(4 * H, pe),
                bias_ih=r(4 * H), bias_hh=r(4 * H), weight_hr=r(pe, H))
    if not bias:
        del args["bias_ih"], args["bias_hh"]
    if "P" not in cfg:
        del args["weight_hr"]
    if not cfg.get("state", True):
        del args["hx"], args["cx"]
    keys = list(args)

    def fn(*values):
        kw = dict(zip(keys, values))
        return fused_lstm.lstm_layer(kw.pop("input"), kw.pop("hx", None), kw.pop("cx", None),
                                     batch_sizes=batch_sizes, reverse=cfg.get("reverse", False),
                                     **kw)

    assert torch.autograd.gradgradcheck(fn, [v.requires_grad_() for v in args.values()])


def _cell_pair(bias):
    torch.manual_seed(1)
    ref = spread_biases_(nn.LSTMCell(I, H, bias=bias, dtype=F64))
    return ref, fused_lstm.LSTMCell.from_torch(ref)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("state", [True, False])
def test_gradgradcheck_cell(bias, state):
    _, cell = _cell_pair(bias)
    names = list(params_of(cell))
    x = torch.randn(3, I, dtype=F64)
    hx = [0.5 * torch.randn(3, H, dtype=F64) for _ in range(2)] if state else []
    leaves = [t.requires_grad_() for t in [x, *hx, *params_of(cell).values()]]
    n = 1 + len(hx)

    def fn(*args):
        return functional_call(cell, dict(zip(names, args[n:])),
                               (args[0], tuple(args[1:n]) if state else None))

    assert torch.autograd.gradgradcheck(fn, leaves)


@pytest.mark.parametrize("unbatched", [False, True])
def test_cell_double_backward_matches_nn(unbatched):
    ref, cell = _cell_pair(True)
    shape = (I,) if unbatched else (2, I)
    x = torch.randn(*shape, dtype=F64)
    hx = tuple(0.5 * torch.randn(*shape[:-1], H, dtype=F64) for _ in range(2))

    def second(module):
        leaves = [t.clone().requires_grad_() for t in (x, *hx)]
        params = {k: v.clone().requires_grad_() for k, v in params_of(module).items()}
        wrt = leaves + list(params.values())
        out = functional_call(module, params, (leaves[0], tuple(leaves[1:])))
        first = torch.autograd.grad(penalty(out), wrt, create_graph=True)
        return torch.autograd.grad(sum((g * g).sum() for g in first), wrt)

    close_all(second(cell), second(ref), "cell second derivative")


def test_third_order():
    """The recomputed gradient is differentiable again (d^3/dx^3 of a scalar)."""
    ref, fused = make_pair(nn.LSTM, I, H, **CONFIGS["L1"])
    x0 = torch.randn(2, 1, I, dtype=F64)

    def third(module):
        x = x0.clone().requires_grad_()
        g, = torch.autograd.grad(penalty(module(x)[0:1]), x, create_graph=True)
        g2, = torch.autograd.grad(g.sum(), x, create_graph=True)
        return torch.autograd.grad(g2.sum(), x)[0]

    assert_close(third(fused), third(ref), name="third derivative")


# ------------------------------------------------------------------------------------------------
# Forward mode
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,mode,state", CASES)
def test_jvp_matches_nn(name, mode, state):
    ref, fused = make_pair(nn.LSTM, I, H, **CONFIGS[name])
    prob = Problem(CONFIGS[name], mode, state)
    primals = (params_of(fused), prob.tensors())
    tangents = ({k: torch.randn_like(v) for k, v in primals[0].items()},
                tuple(torch.randn_like(t) for t in prob.tensors()))

    def f(module):
        return lambda params, inputs: prob.call(module, params, *inputs)

    out, tangent = jvp(f(fused), primals, tangents)
    if mode == "packed":
        # nn.LSTM's packed path has no forward-mode AD: its jvp by the double-vjp trick instead.
        names = list(primals[0])
        n = len(prob.tensors())

        def g(*args):
            return f(ref)(dict(zip(names, args[n:])), args[:n])

        flat = lambda pair: (*pair[1], *pair[0].values())  # noqa: E731
        out_ref, tangent_ref = torch.autograd.functional.jvp(g, flat(primals), flat(tangents))
    else:
        out_ref, tangent_ref = jvp(f(ref), primals, tangents)
    close_all(out, out_ref, "primal")
    close_all(tangent, tangent_ref, "tangent")


def test_forward_ad_module_and_cell():
    """torch.autograd.forward_ad dual tensors through both modules (not torch.func)."""
    ref, fused = make_pair(nn.LSTM, I, H, **CONFIGS["L2-bi-proj"])
    ref_cell, cell = _cell_pair(True)
    x, tx = torch.randn(3, 2, I, dtype=F64), torch.randn(3, 2, I, dtype=F64)
    w, tw = fused.weight_hh_l1_reverse.detach(), torch.randn_like(fused.weight_hh_l1_reverse)
    results = {}
    for key, module in (("ref", ref), ("fused", fused)):
        with fwAD.dual_level():
            out = functional_call(module, {"weight_hh_l1_reverse": fwAD.make_dual(w, tw)},
                                  (fwAD.make_dual(x, tx),))[0]
            results[key] = fwAD.unpack_dual(out).tangent
    assert_close(results["fused"], results["ref"], name="module tangent")
    for key, module in (("ref", ref_cell), ("fused", cell)):
        with fwAD.dual_level():
            h, c = module(fwAD.make_dual(x[0], tx[0]))
            results[key] = (fwAD.unpack_dual(h).tangent, fwAD.unpack_dual(c).tangent)
    close_all(results["fused"], results["ref"], "cell tangent")


# ------------------------------------------------------------------------------------------------
# torch.func: grad, vjp, jacrev, hessian-vector products
# ------------------------------------------------------------------------------------------------
def _nn_vjp(ref, prob, params, inputs, cotangents):
    """nn.LSTM's vector-Jacobian product by plain autograd (its packed path does not run under
    torch.func), as ({name: grad}, (grad per input))."""
    params = {k: v.clone().requires_grad_() for k, v in params.items()}
    inputs = [t.clone().requires_grad_() for t in inputs]
    outs = prob.call(ref, params, *inputs)
    if callable(cotangents):  # a loss of the outputs
        outs, cotangents = (cotangents(outs),), None
    g = torch.autograd.grad(outs, list(params.values()) + inputs, cotangents)
    return dict(zip(params, g[:len(params)])), tuple(g[len(params):])


@pytest.mark.parametrize("name,mode,state", CASES[::2])  # with (h0, c0)
def test_func_grad_vjp_match_nn(name, mode, state, counted):
    ref, fused = make_pair(nn.LSTM, I, H, **CONFIGS[name])
    prob = Problem(CONFIGS[name], mode, state)
    args = (params_of(fused), prob.tensors())

    def loss(params, inputs):
        return penalty(prob.call(fused, params, *inputs))

    got = grad(loss, argnums=(0, 1))(*args)
    assert counted["reference"] == 0  # first order under torch.func stays on the fused op
    close_all(got, _nn_vjp(ref, prob, *args, penalty), "torch.func.grad")
    if mode == "padded":  # nn.LSTM's own torch.func.grad too
        nn_loss = lambda p, i: penalty(prob.call(ref, p, *i))  # noqa: E731
        close_all(got, grad(nn_loss, argnums=(0, 1))(*args), "torch.func.grad vs nn's")
    cotangents = tuple(torch.randn_like(o) for o in prob.call(fused, *args[:1], *args[1]))
    _, pull = vjp(lambda p, i: prob.call(fused, p, *i), *args)
    close_all(pull(cotangents), _nn_vjp(ref, prob, *args, cotangents), "torch.func.vjp")


def test_jacrev_and_hessian_small():
    ref, fused = make_pair(nn.LSTM, I, H, **CONFIGS["L2-bi-proj"])
    params = params_of(fused)
    x = torch.randn(2, 1, I, dtype=F64)

    def out(module):
        return lambda p, xx: functional_call(module, p, (xx,))[0]

    close_all(jacrev(out(fused), argnums=(0, 1))(params, x),
              jacrev(out(ref), argnums=(0, 1))(params, x), "jacrev")
    scalar = lambda m: lambda xx: penalty((out(m)(params, xx),))  # noqa: E731
    assert_close(hessian(scalar(fused))(x), hessian(scalar(ref))(x), name="hessian")


def test_hessian_vector_products():
    """Forward-over-reverse (jvp of grad) and reverse-over-reverse, both with parameters."""
    ref, fused = make_pair(nn.LSTM, I, H, **CONFIGS["L2-proj-nobias"])
    params = params_of(fused)
    v = {k: torch.randn_like(p) for k, p in params.items()}
    x = torch.randn(3, 2, I, dtype=F64)

    def loss(module):
        def f(p):
            out, (h_n, c_n) = functional_call(module, p, (x,))
            return penalty((out, h_n, c_n))
        return f

    def hvp_fwd(module):
        return jvp(grad(loss(module)), (params,), (v,))[1]

    def hvp_rev(module):
        g = grad(loss(module))
        return grad(lambda p: sum((g(p)[k] * v[k]).sum() for k in v))(params)

    close_all(hvp_fwd(fused), hvp_fwd(ref), "jvp(grad)")
    close_all(hvp_rev(fused), hvp_rev(ref), "grad(grad . v)")


# ------------------------------------------------------------------------------------------------
# vmap
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,mode,state", CASES)
def test_vmap_matches_loop_in_one_fused_call(name, mode, state, counted):
    """vmap over a leading dimension of the input and of the states: one fused call per layer
    and direction (the vmapped dimension folds into the batch), equal to a loop of calls."""
    cfg = CONFIGS[name]
    _, fused = make_pair(nn.LSTM, I, H, **cfg)
    V = 3
    probs = [Problem(cfg, mode, state, seed=s) for s in range(V)]
    stacked = [torch.stack(ts) for ts in zip(*(p.tensors() for p in probs))]
    params = params_of(fused)
    expected = [p.call(fused, params, *p.tensors()) for p in probs]
    counted["forward"] = 0
    got = vmap(lambda *ts: probs[0].call(fused, params, *ts))(*stacked)
    layers = cfg.get("num_layers", 1) * (2 if cfg.get("bidirectional") else 1)
    assert counted["forward"] == layers
    for i in range(V):
        close_all([g[i] for g in got], expected[i], f"vmap slice {i}")


def test_vmap_states_only_and_unbatched_input():
    """in_dims=None for the input, vmapped states; and unbatched per-sample input."""
    _, fused = make_pair(nn.LSTM, I, H, **CONFIGS["L2-bi-proj"])
    x = torch.randn(3, 2, I, dtype=F64)
    h0, c0 = torch.randn(4, 4, 2, P, dtype=F64), torch.randn(4, 4, 2, H, dtype=F64)
    got = vmap(lambda h, c: fused(x, (h, c))[0])(h0, c0)
    close_all(list(got), [fused(x, (h0[i], c0[i]))[0] for i in range(4)], "states vmapped")
    xs = torch.randn(4, 3, I, dtype=F64)  # each sample unbatched [T, I]
    got = vmap(lambda xx: fused(xx)[1][0])(xs)
    close_all(list(got), [fused(xx)[1][0] for xx in xs], "unbatched samples")


def test_vmap_lstm_layer_packed_and_reverse():
    """The functional layer under vmap with packed data and reverse=True, in_dims not 0."""
    torch.manual_seed(3)
    batch_sizes = torch.tensor([3, 2, 1])
    data = torch.randn(6, 4, I, dtype=F64)  # vmapped dim 1
    w = dict(weight_ih=torch.randn(4 * H, I, dtype=F64), weight_hh=torch.randn(4 * H, H, dtype=F64),
             bias_ih=torch.randn(4 * H, dtype=F64), bias_hh=torch.randn(4 * H, dtype=F64))

    def f(d):
        return fused_lstm.lstm_layer(d, None, None, batch_sizes=batch_sizes, reverse=True, **w)

    got = vmap(f, in_dims=1, out_dims=1)(data)
    for i in range(4):
        expected = f(data[:, i])
        assert_close(got[0][:, i], expected[0], name="output")
        assert_close(got[1][:, i], expected[1], name="hy")


def test_vmap_raw_ops():
    """The ops' own vmap rules (for callers of torch.ops.fused_lstm.* directly): fold when only
    per-token/per-row tensors are vmapped, loop over vmapped weights or weight gradients."""
    torch.manual_seed(4)
    V, T, B = 3, 3, 2
    xs, hs, cs = (torch.randn(V, T, B, I, dtype=F64), torch.randn(V, B, H, dtype=F64),
                  torch.randn(V, B, H, dtype=F64))
    w_ih, w_hh, b = (torch.randn(V, 4 * H, I, dtype=F64), torch.randn(4 * H, H, dtype=F64),
                     torch.randn(4 * H, dtype=F64))
    fwd, bwd = torch.ops.fused_lstm.lstm_layer_forward, torch.ops.fused_lstm.lstm_layer_backward

    def run(x, h, c, wi, mask):
        out, hy, cy, gates, cells = fwd(x, h, c, wi, w_hh, b, b, None, None, False, True)
        return (out, hy, cy) + tuple(bwd(out, hy, None, x, h, c, wi, w_hh, None, None, False,
                                         True, out, gates, cells, mask)[:4])

    for wi_dim, mask in ((None, [True, False]), (0, [True, True]), (None, [False, True])):
        wi = w_ih if wi_dim is not None else w_ih[0]
        got = vmap(lambda x, h, c, w, mask=mask: run(x, h, c, w, mask),
                   in_dims=(0, 0, 0, wi_dim))(xs, hs, cs, wi)
        for v in range(V):
            expected = run(xs[v], hs[v], cs[v], w_ih[v] if wi_dim is not None else wi, mask)
            for k, (g, e) in enumerate(zip(got, expected)):
                if e.numel():
                    assert_close(g[v], e, name=f"output {k} slice {v} (mask {mask})")


def test_vmap_over_weights_loops():
    """Vmapped weights (an ensemble) cannot fold: one fused call per member, same numbers."""
    _, fused = make_pair(nn.LSTM, I, H, **CONFIGS["L1"])
    members = [params_of(make_pair(nn.LSTM, I, H, seed=s, **CONFIGS["L1"])[1]) for s in range(3)]
    stacked = {k: torch.stack([m[k] for m in members]) for k in members[0]}
    x = torch.randn(3, 2, I, dtype=F64)
    got = vmap(lambda p: functional_call(fused, p, (x,))[0])(stacked)
    close_all(list(got), [functional_call(fused, m, (x,))[0] for m in members], "ensemble")


def test_vmap_cell():
    ref, cell = _cell_pair(True)
    xs, hs = torch.randn(4, 2, I, dtype=F64), torch.randn(4, 2, H, dtype=F64)
    got = vmap(lambda x, h: cell(x, (h, h))[1])(xs, hs)
    close_all(list(got), [ref(x, (h, h))[1] for x, h in zip(xs, hs)], "cell vmap")


def test_grad_of_vmap_is_one_fused_backward(counted):
    """grad(vmap(f)): the folded call is what autograd sees, so backward is one fused call."""
    ref, fused = make_pair(nn.LSTM, I, H, **CONFIGS["L1"])
    xs = torch.randn(4, 3, 2, I, dtype=F64)

    def loss(module):
        return lambda p: penalty((vmap(lambda x: functional_call(module, p, (x,))[0])(xs),))

    got = grad(loss(fused))(params_of(fused))
    assert (counted["forward"], counted["backward"], counted["reference"]) == (1, 1, 0)
    expected = grad(lambda p: sum(penalty((functional_call(ref, p, (x,))[0],)) for x in xs))(
        params_of(ref))
    close_all(got, expected, "grad(vmap)")


@pytest.mark.parametrize("name", ["L2-bi-proj", "nobias-batch_first"])
def test_per_sample_gradients(name, counted):
    """vmap(grad(loss), in_dims=(None, 0, 0)) over samples equals a loop over samples with
    nn.LSTM; first order stays on the fused ops."""
    ref, fused = make_pair(nn.LSTM, I, H, **CONFIGS[name])
    V = 3
    xs = torch.randn(V, 4, I, dtype=F64)  # each sample unbatched [T, I]
    cfg = CONFIGS[name]
    ys = torch.randn(V, 4, (cfg.get("proj_size", 0) or H) * (2 if cfg.get("bidirectional") else 1),
                     dtype=F64)

    def loss(module):
        return lambda p, x, y: ((functional_call(module, p, (x,))[0] - y) ** 2).sum()

    got = vmap(grad(loss(fused)), in_dims=(None, 0, 0))(params_of(fused), xs, ys)
    assert counted["reference"] == 0
    for i in range(V):
        expected = grad(loss(ref))(params_of(ref), xs[i], ys[i])
        close_all({k: v[i] for k, v in got.items()}, expected, f"sample {i}")


def test_per_sample_gradients_cell():
    ref, cell = _cell_pair(True)
    xs = torch.randn(3, I, dtype=F64)  # unbatched samples

    def loss(module):
        return lambda p, x: penalty(functional_call(module, p, (x,)))

    got = vmap(grad(loss(cell)), in_dims=(None, 0))(params_of(cell), xs)
    for i in range(3):
        close_all({k: v[i] for k, v in got.items()}, grad(loss(ref))(params_of(ref), xs[i]),
                  f"sample {i}")


# ------------------------------------------------------------------------------------------------
# First order is unchanged; what is unsupported says so
# ------------------------------------------------------------------------------------------------
def test_first_order_runs_only_fused_ops(counted):
    """loss.backward(): one fused forward and backward per layer and direction, no recompute,
    and nothing saved beyond the workspace and the call's own inputs."""
    _, fused = make_pair(nn.LSTM, I, H, **CONFIGS["L2-bi-proj"])
    x = torch.randn(3, 2, I, dtype=F64, requires_grad=True)
    penalty(fused(x)[0:1]).backward()
    assert counted == {"forward": 4, "backward": 4, "reference": 0}
    assert all(p.grad is not None for p in fused.parameters())


@pytest.mark.parametrize("with_state", [False, True])
def test_vmap_over_batch_sizes_raises(with_state):
    """A packed schedule shared by the vmapped batch is supported; a vmapped one is not."""
    batch_sizes = torch.tensor([[2, 1], [2, 1]])
    w = dict(weight_ih=torch.randn(4 * H, I), weight_hh=torch.randn(4 * H, H))
    state = torch.zeros(2, 2, H) if with_state else None
    with pytest.raises(RuntimeError, match="vmap over batch_sizes is not supported"):
        vmap(lambda d, bs, s: fused_lstm.lstm_layer(d, s, s, batch_sizes=bs, **w),
             in_dims=(0, 0, 0 if with_state else None))(torch.randn(2, 3, I), batch_sizes, state)
    _, fused = make_pair(nn.LSTM, I, H, **CONFIGS["L1"])
    with pytest.raises(RuntimeError, match="vmap over batch_sizes is not supported"):
        vmap(lambda d, bs: fused(PackedSequence(d, bs))[1][0])(
            torch.randn(2, 3, I, dtype=F64), batch_sizes)


# ------------------------------------------------------------------------------------------------
# CUDA (skipped without a GPU): double backward, where cuDNN's LSTM has none; jvp; vmap
# ------------------------------------------------------------------------------------------------
@pytest.mark.cuda
def test_cuda_higher_order_matches_cpu():
    """The module with CUDA parameters (functional_call) gives the CPU's second derivatives,
    tangents and vmapped outputs."""
    _, fused = make_pair(nn.LSTM, I, H, **CONFIGS["L2-bi-proj"])
    prob = Problem(CONFIGS["L2-bi-proj"], "packed", True)
    params = params_of(fused)
    on = {"cpu": lambda t: t, "cuda": lambda t: t.cuda()}

    def second(device):
        move = on[device]
        prob_indices = (prob.sorted_indices, prob.unsorted_indices)
        prob.sorted_indices, prob.unsorted_indices = (move(i) for i in prob_indices)
        inputs = [move(t).requires_grad_() for t in prob.tensors()]
        p = {k: move(v).requires_grad_() for k, v in params.items()}
        wrt = inputs + list(p.values())
        first = torch.autograd.grad(penalty(prob.call(fused, p, *inputs)), wrt,
                                    create_graph=True)
        result = torch.autograd.grad(sum((g * g).sum() for g in first), wrt)
        prob.sorted_indices, prob.unsorted_indices = prob_indices
        return [g.cpu() for g in result]

    close_all(second("cuda"), second("cpu"), "cuda second derivative")

    x, tx = torch.randn(3, 2, I, dtype=F64), torch.randn(3, 2, I, dtype=F64)
    xs = torch.randn(3, 3, 2, I, dtype=F64)
    for device in ("cuda", "cpu"):
        p = {k: on[device](v) for k, v in params.items()}
        out = lambda xx, p=p: functional_call(fused, p, (xx,))[0]  # noqa: E731
        tangent = jvp(out, (on[device](x),), (on[device](tx),))[1].cpu()
        vmapped = vmap(out)(on[device](xs)).cpu()
        if device == "cuda":
            cuda_results = (tangent, vmapped)
    assert_close(cuda_results[0], tangent, name="cuda jvp")
    assert_close(cuda_results[1], vmapped, name="cuda vmap")

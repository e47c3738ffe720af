"""fused_lstm.LSTM as a drop-in torch.nn.LSTM: a parity matrix over the whole interface, and the
module-level behaviours a drop-in must share (dropout, autocast, state_dict, copies, dtypes).

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

What tests/test_module.py already checks (a few configs, dropout basics, from/to_torch) is not
repeated here.
"""
import copy
import io
import itertools
import random

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import fused_lstm
from lstm_testing import assert_close, assert_lowp_ok, grads

F64, F32 = torch.float64, torch.float32
I, H, P = 3, 4, 2

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


def make_pair(cfg, dtype, seed=0):
    """(nn.LSTM, fused_lstm.LSTM) with identical weights (biases made clearly non-zero)."""
    torch.manual_seed(seed)
    ref = nn.LSTM(I, H, dtype=F64, **cfg)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.startswith("bias"):
                p.uniform_(-0.5, 0.5)
    ref = ref.to(dtype)
    fused = fused_lstm.LSTM(I, H, dtype=dtype, **cfg)
    fused.load_state_dict(ref.state_dict())
    return ref, fused


class Problem:
    """Random inputs, initial states and upstream gradients for one configuration."""

    def __init__(self, cfg, mode, with_state, dtype, seed):
        rng = random.Random(seed)
        torch.manual_seed(seed)
        bf = cfg.get("batch_first", False)
        D = 2 if cfg.get("bidirectional") else 1
        L = cfg.get("num_layers", 1) * D
        Pe = cfg.get("proj_size", 0) or H
        self.mode = mode
        self.bf = bf
        if mode.startswith("packed"):
            B, T = 3, 4
            lengths = [T] + [rng.randint(1, T) for _ in range(B - 1)]
            lengths.sort(reverse=True)
            if mode == "packed-unsorted":
                while lengths == sorted(lengths, reverse=True):
                    rng.shuffle(lengths)
                    if len(set(lengths)) == 1:
                        lengths[-1] = max(1, lengths[-1] - 1)
            self.lengths = torch.tensor(lengths)
        else:
            B, T = rng.choice((1, 3)), rng.choice((1, 2, 4))
            self.lengths = None
        self.x = torch.randn(*((B, T) if bf else (T, B)), I, dtype=dtype)
        if mode == "unbatched":
            self.x = self.x.select(0 if bf else 1, 0).contiguous()
        state_batch = () if mode == "unbatched" else (B,)
        self.hx = None
        if with_state:
            self.hx = (0.5 * torch.randn(L, *state_batch, Pe, dtype=dtype),
                       0.5 * torch.randn(L, *state_batch, H, dtype=dtype))
        n_out = int(self.lengths.sum()) if self.lengths is not None else None
        out_shape = (n_out,) if n_out is not None else self.x.shape[:-1]
        self.go = torch.randn(*out_shape, D * Pe, dtype=dtype)
        self.gh = torch.randn(L, *state_batch, Pe, dtype=dtype)
        self.gc = torch.randn(L, *state_batch, H, dtype=dtype)

    def run(self, module):
        """Forward + backward with fresh leaves; returns (raw output, {name: tensor or None})."""
        x = self.x.clone().requires_grad_()
        hx = tuple(t.clone().requires_grad_() for t in self.hx) if self.hx is not None else None
        inp = x
        if self.lengths is not None:
            inp = pack_padded_sequence(x, self.lengths, batch_first=self.bf,
                                       enforce_sorted=self.mode == "packed-sorted")
        out, (h_n, c_n) = module(inp, hx)
        out_t = out.data if isinstance(out, PackedSequence) else out
        names = [n.removeprefix("_orig_mod.") for n, _ in module.named_parameters()]
        params = [p for _, p in module.named_parameters()]
        wrt = [x] + (list(hx) if hx is not None else [None, None]) + params
        g = grads([out_t, h_n, c_n], wrt, [self.go, self.gh, self.gc])
        res = {"output": out_t.detach(), "h_n": h_n.detach(), "c_n": c_n.detach(),
               "grad_input": g[0], "grad_h0": g[1], "grad_c0": g[2]}
        res.update({"grad_" + n: gp for n, gp in zip(names, g[3:])})
        return out, res


def compare(actual, expected, dtype, what=""):
    assert list(actual) == list(expected), f"{what}: keys {list(actual)} != {list(expected)}"
    for k, e in expected.items():
        if e is None:
            assert actual[k] is None, f"{what} {k}: expected no gradient"
            continue
        assert actual[k] is not None, f"{what} {k}: missing gradient"
        assert actual[k].dtype == e.dtype, f"{what} {k}: dtype {actual[k].dtype} != {e.dtype}"
        assert_close(actual[k], e, dtype=dtype, name=f"{what} {k}")


@pytest.mark.parametrize("case", [pytest.param(c, id=_case_id(c)) for c in MATRIX])
def test_parity_matrix(case):
    layers, bias, bf, bi, proj, mode, with_state, dtype = case
    index = MATRIX.index(case)
    cfg = dict(num_layers=layers, bias=bias, batch_first=bf, bidirectional=bi, proj_size=proj)
    ref, fused = make_pair(cfg, dtype, seed=index)
    if index % 2:  # eval mode: same outputs, gradients still flow
        ref.eval(), fused.eval()
    prob = Problem(cfg, mode, with_state, dtype, seed=index)
    out_r, r = prob.run(ref)
    out_f, f = prob.run(fused)
    assert type(out_f) is type(out_r)
    if isinstance(out_r, PackedSequence):
        assert torch.equal(out_f.batch_sizes, out_r.batch_sizes)
        for attr in ("sorted_indices", "unsorted_indices"):
            a, b = getattr(out_f, attr), getattr(out_r, attr)
            assert (a is None) == (b is None) and (a is None or torch.equal(a, b)), attr
    compare(f, r, dtype, what=_case_id(case))


def test_matrix_size():
    """The matrix is the full cross product (see the module docstring)."""
    assert len(MATRIX) == 3 * 2 * 2 * 2 * 2 * 4 * 2 * 2 == 768


# ------------------------------------------------------------------------------------------------
# Gradients do not depend on the training mode
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_backward_in_eval_mode(dropout):
    """In eval mode backward works and, with dropout off in eval, equals nn.LSTM's eval grads;
    without dropout, eval and train give the same gradients."""
    cfg = dict(num_layers=2, bidirectional=True, proj_size=P, dropout=dropout)
    ref, fused = make_pair(cfg, F64)
    prob = Problem(cfg, "batched", True, F64, seed=11)
    ref.eval(), fused.eval()
    assert not fused.training
    _, r = prob.run(ref)
    _, f = prob.run(fused)
    compare(f, r, F64, what="eval")
    assert all(v is not None for v in f.values())
    if dropout == 0.0:
        fused.train()
        _, t = prob.run(fused)
        compare(t, f, F64, what="train vs eval")


def test_backward_in_eval_mode_through_loss_backward():
    """The usual training-loop spelling (loss.backward() fills .grad) works in eval mode."""
    _, fused = make_pair(dict(num_layers=2), F32)
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
    ref, fused = make_pair(cfg, F64)
    ref.train(), fused.train()
    prob = Problem(cfg, mode, True, F64, seed=3)
    torch.manual_seed(1234)
    _, r = prob.run(ref)
    torch.manual_seed(1234)
    _, f = prob.run(fused)
    compare(f, r, F64, what="train+dropout")
    # and it really dropped something: eval differs
    ref.eval()
    _, e = prob.run(ref)
    assert not torch.allclose(e["output"], r["output"])


def test_dropout_gradients_reproducible_and_last_layer_undropped():
    cfg = dict(num_layers=2, dropout=0.5)
    _, fused = make_pair(cfg, F64)
    prob = Problem(cfg, "batched", True, F64, seed=4)
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
    ref, fused = make_pair(cfg, F64)
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
# Autocast (DESIGN.md: the module casts to the autocast dtype in Python)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("x_dtype", [F32, torch.bfloat16], ids=["x-f32", "x-bf16"])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_autocast_bf16_cpu_like_nn_lstm(x_dtype, packed):
    cfg = dict(num_layers=2, bidirectional=True)
    ref, fused = make_pair(cfg, F32)
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
    ref, fused = make_pair(cfg, F32)
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
# Interface details: repr, weight bookkeeping, state_dict, copies, save/load, dtype moves
# ------------------------------------------------------------------------------------------------
CONFIGS = [
    dict(),
    dict(num_layers=3, bias=False, batch_first=True, dropout=0.25),
    dict(num_layers=2, bidirectional=True, proj_size=P),
    dict(num_layers=1, bidirectional=True, bias=False, proj_size=1, batch_first=True),
]
CONFIG_IDS = ["default", "L3-nobias-bf-dropout", "L2-bi-proj", "L1-bi-nobias-proj-bf"]


@pytest.mark.parametrize("cfg", CONFIGS, ids=CONFIG_IDS)
def test_repr_and_weight_bookkeeping_like_nn_lstm(cfg):
    ref, fused = make_pair(cfg, F32)
    assert repr(fused) == repr(ref)
    assert fused._flat_weights_names == ref._flat_weights_names
    assert fused._all_weights == ref._all_weights
    assert [[tuple(w.shape) for w in ws] for ws in fused.all_weights] == \
        [[tuple(w.shape) for w in ws] for ws in ref.all_weights]
    assert [type(b) for b in fused.buffers()] == [type(b) for b in ref.buffers()]
    fused.flatten_parameters()  # exists, no-op


@pytest.mark.parametrize("cfg", CONFIGS, ids=CONFIG_IDS)
def test_state_dict_round_trips_both_ways(cfg):
    """fused -> nn.LSTM -> fused and nn.LSTM -> fused -> nn.LSTM keep every tensor bit for bit,
    with strict loading, and the loaded modules compute the same thing."""
    torch.manual_seed(9)
    fused = fused_lstm.LSTM(I, H, dtype=F64, **cfg)
    ref = nn.LSTM(I, H, dtype=F64, **cfg)
    ref.load_state_dict(fused.state_dict())           # fused -> nn
    fused2 = fused_lstm.LSTM(I, H, dtype=F64, **cfg)
    fused2.load_state_dict(ref.state_dict())          # -> fused
    sd0, sd1, sd2 = fused.state_dict(), ref.state_dict(), fused2.state_dict()
    assert list(sd0) == list(sd1) == list(sd2)
    for k in sd0:
        assert torch.equal(sd0[k], sd1[k]) and torch.equal(sd0[k], sd2[k]), k

    torch.manual_seed(10)
    ref_b = nn.LSTM(I, H, dtype=F64, **cfg)
    fused_b = fused_lstm.LSTM(I, H, dtype=F64, **cfg)
    fused_b.load_state_dict(ref_b.state_dict())       # nn -> fused
    ref_c = nn.LSTM(I, H, dtype=F64, **cfg)
    ref_c.load_state_dict(fused_b.state_dict())       # -> nn
    for k, v in ref_b.state_dict().items():
        assert torch.equal(v, ref_c.state_dict()[k]), k

    prob = Problem(cfg, "batched", True, F64, seed=5)
    ref.eval(), fused.eval(), fused2.eval()
    _, a = prob.run(ref)
    compare(prob.run(fused)[1], a, F64, what="fused vs nn after load")
    compare(prob.run(fused2)[1], a, F64, what="round-tripped fused")


def test_load_state_dict_mismatch_errors_like_nn_lstm():
    fused = fused_lstm.LSTM(I, H, num_layers=2)
    bad = nn.LSTM(I, H, num_layers=1).state_dict()
    with pytest.raises(RuntimeError, match="Missing key"):
        fused.load_state_dict(bad)
    with pytest.raises(RuntimeError, match="size mismatch"):
        fused.load_state_dict(nn.LSTM(I, H + 1, num_layers=2).state_dict())
    with pytest.raises(RuntimeError, match="Missing key"):
        nn.LSTM(I, H, num_layers=2).load_state_dict(fused_lstm.LSTM(I, H).state_dict())


def test_deepcopy_is_independent_and_equal():
    cfg = dict(num_layers=2, bidirectional=True, proj_size=P, dropout=0.3)
    _, fused = make_pair(cfg, F64)
    fused.eval()
    clone = copy.deepcopy(fused)
    assert type(clone) is fused_lstm.LSTM and not clone.training
    for (n, p), (_, q) in zip(fused.named_parameters(), clone.named_parameters()):
        assert p is not q and p.data_ptr() != q.data_ptr() and torch.equal(p, q), n
    prob = Problem(cfg, "packed-unsorted", True, F64, seed=6)
    compare(prob.run(clone)[1], prob.run(fused)[1], F64, what="deepcopy")
    with torch.no_grad():
        clone.weight_ih_l0.add_(1.0)
    assert not torch.equal(clone.weight_ih_l0, fused.weight_ih_l0)
    for attr in fused.__constants__:
        assert getattr(clone, attr) == getattr(fused, attr), attr


def test_torch_save_load_module_and_state_dict(tmp_path):
    cfg = dict(num_layers=2, bidirectional=True, proj_size=P, batch_first=True)
    ref, fused = make_pair(cfg, F64)
    fused.eval()
    # the whole module (pickled: needs weights_only=False, as for nn.LSTM)
    torch.save(fused, tmp_path / "module.pt")
    loaded = torch.load(tmp_path / "module.pt", weights_only=False)
    assert type(loaded) is fused_lstm.LSTM and not loaded.training
    # a state_dict loads with the safe loader, into both module kinds
    torch.save(fused.state_dict(), tmp_path / "sd.pt")
    sd = torch.load(tmp_path / "sd.pt", weights_only=True)
    fresh = fused_lstm.LSTM(I, H, dtype=F64, **cfg)
    fresh.load_state_dict(sd)
    ref2 = nn.LSTM(I, H, dtype=F64, **cfg)
    ref2.load_state_dict(sd)
    # and an nn.LSTM checkpoint loads into the fused module
    buf = io.BytesIO()
    torch.save(ref.state_dict(), buf)
    buf.seek(0)
    fresh2 = fused_lstm.LSTM(I, H, dtype=F64, **cfg)
    fresh2.load_state_dict(torch.load(buf, weights_only=True))
    prob = Problem(cfg, "batched", True, F64, seed=8)
    _, expected = prob.run(ref.eval())
    for m, what in ((loaded, "torch.load(module)"), (fresh, "state_dict"),
                    (ref2.eval(), "nn.LSTM <- saved fused"), (fresh2, "fused <- saved nn.LSTM")):
        compare(prob.run(m)[1], expected, F64, what=what)


@pytest.mark.parametrize("move", ["to(float64)", "double", "half", "bfloat16", "to(float32)",
                                  "float"])
def test_dtype_moves_like_nn_lstm(move):
    cfg = dict(num_layers=2, bidirectional=True, proj_size=P)
    ref, fused = make_pair(cfg, F32)
    start = {"to(float32)": F64, "float": torch.float16}.get(move)
    if start is not None:
        ref, fused = ref.to(start), fused.to(start)

    def apply(m):
        if move.startswith("to("):
            return m.to({"to(float64)": F64, "to(float32)": F32}[move])
        return getattr(m, move)()

    assert apply(ref) is ref and apply(fused) is fused  # in place, returns self, like nn.Module
    want = [p.dtype for p in ref.parameters()]
    assert [p.dtype for p in fused.parameters()] == want
    dtype = want[0]
    x = torch.randn(3, 2, I).to(dtype)
    out, (h, c) = fused(x)
    assert out.dtype == h.dtype == c.dtype == dtype
    ref64 = copy.deepcopy(ref).double()
    o64, (h64, c64) = ref64(x.double())
    if dtype in (F64, F32):
        o, (hr, cr) = ref(x)
        assert_close(out, o, name="output")
        assert_close(h, hr, name="h_n")
        assert_close(c, cr, name="c_n")
    else:  # low precision: against float64, at most nn.LSTM's own error (when it can run)
        try:
            o, _ = ref(x)
        except RuntimeError:  # nn.LSTM has no CPU kernel for this dtype
            o = o64.to(dtype)
        assert_lowp_ok(out, o, o64, name="output", floor=2e-2)


# ------------------------------------------------------------------------------------------------
# nn.LSTM's public helper methods and attributes, called directly
# ------------------------------------------------------------------------------------------------
def _outcome(fn):
    try:
        return ("ok", fn())
    except Exception as e:  # noqa: BLE001  (the class and message are what is compared)
        return (type(e).__name__, str(e))


@pytest.mark.parametrize("cfg", CONFIGS, ids=CONFIG_IDS)
def test_nn_lstm_helper_methods(cfg):
    ref, fused = make_pair(cfg, F32)
    L = ref.num_layers * (2 if ref.bidirectional else 1)
    Pe = ref.proj_size or H
    x = torch.randn(2, 5, I) if ref.batch_first else torch.randn(5, 2, I)
    packed = pack_padded_sequence(torch.randn(5, 3, I), torch.tensor([2, 5, 3]),
                                  enforce_sorted=False)
    good = (torch.randn(L, 2, Pe), torch.randn(L, 2, H))
    calls = {
        "get_expected_hidden_size": lambda m: m.get_expected_hidden_size(x, None),
        "get_expected_hidden_size-packed":
            lambda m: m.get_expected_hidden_size(packed.data, packed.batch_sizes),
        "get_expected_cell_size": lambda m: m.get_expected_cell_size(x, None),
        "check_input": lambda m: m.check_input(x, None),
        "check_input-dims": lambda m: m.check_input(x[0], None),
        "check_input-size": lambda m: m.check_input(torch.randn(5, 2, I + 1), None),
        "check_input-dtype": lambda m: m.check_input(x.double(), None),
        "check_forward_args": lambda m: m.check_forward_args(x, good, None),
        "check_forward_args-h": lambda m: m.check_forward_args(x, (good[1][:1], good[1]), None),
        "check_forward_args-c": lambda m: m.check_forward_args(x, (good[0], good[0][:, :1]), None),
        "check_hidden_size": lambda m: m.check_hidden_size(good[0], (L, 3, Pe)),
        "check_hidden_size-msg": lambda m: m.check_hidden_size(good[0], (L, 3, Pe), "{} vs {}"),
        "permute_hidden-None": lambda m: m.permute_hidden(good, None) is good,
        "permute_hidden": lambda m: [t.tolist() for t in
                                     m.permute_hidden(good, torch.tensor([1, 0]))],
        "flatten_parameters": lambda m: m.flatten_parameters(),
        "_flat_weights": lambda m: [(tuple(w.shape), w.dtype) for w in m._flat_weights],
    }
    for name, call in calls.items():
        assert _outcome(lambda: call(fused)) == _outcome(lambda: call(ref)), name
    assert [w is getattr(fused, n) for w, n in zip(fused._flat_weights, fused._flat_weights_names)]


def test_hx_dtype_mismatch_raises_runtime_error_like_nn_lstm():
    ref, fused = make_pair(dict(num_layers=1), F32)
    x = torch.randn(3, 2, I)
    for hx in ((torch.randn(1, 2, H, dtype=F64), torch.randn(1, 2, H)),
               (torch.randn(1, 2, H), torch.randn(1, 2, H, dtype=F64))):
        with pytest.raises(RuntimeError):
            ref(x, hx)
        with pytest.raises(RuntimeError, match=r"hidden\[\d\].*dtype"):
            fused(x, hx)


def test_packed_hx_wrong_batch_is_a_size_error():
    """With enforce_sorted=False the state's batch is checked before it is permuted (nn.LSTM
    permutes first and then fails with an indexing error, or not at all)."""
    _, fused = make_pair(dict(num_layers=1), F32)
    packed = pack_padded_sequence(torch.randn(5, 3, I), torch.tensor([2, 5, 3]),
                                  enforce_sorted=False)
    for batch in (2, 4):
        with pytest.raises(RuntimeError, match=r"Expected hidden\[0\] size \(1, 3, 4\)"):
            fused(packed, (torch.randn(1, batch, H), torch.randn(1, batch, H)))


# ------------------------------------------------------------------------------------------------
# Devices and transforms nn.LSTM supports
# ------------------------------------------------------------------------------------------------
def test_meta_device_and_to_empty():
    """Deferred initialisation: build on meta (shapes only), forward on meta, then to_empty +
    reset_parameters or load_state_dict, like nn.LSTM."""
    cfg = dict(num_layers=2, bidirectional=True, proj_size=P, batch_first=True)
    ref = nn.LSTM(I, H, device="meta", **cfg)
    fused = fused_lstm.LSTM(I, H, device="meta", **cfg)
    x = torch.randn(2, 5, I, device="meta")
    packed = pack_padded_sequence(torch.randn(2, 5, I), torch.tensor([5, 3]), batch_first=True)
    packed = packed.to("meta")
    for inp in (x, packed, x[0]):
        (o_r, (h_r, c_r)), (o_f, (h_f, c_f)) = ref(inp), fused(inp)
        o_r, o_f = getattr(o_r, "data", o_r), getattr(o_f, "data", o_f)
        for a, b in ((o_f, o_r), (h_f, h_r), (c_f, c_r)):
            assert a.device.type == "meta" and a.shape == b.shape and a.dtype == b.dtype
    fused.to_empty(device="cpu")
    fused.load_state_dict(make_pair(cfg, F32)[0].state_dict())
    assert all(p.device.type == "cpu" for p in fused.parameters())
    assert torch.isfinite(fused(torch.randn(2, 5, I))[0]).all()


def _compiled(module):
    return torch.compile(module, fullgraph=True, backend="aot_eager")


def test_torch_compile_fullgraph():
    """No graph break anywhere in the module (nn.LSTM always breaks): padded, unbatched and
    packed input, hx given or not, autocast; results and gradients equal eager."""
    torch._dynamo.reset()
    cfg = dict(num_layers=2, bidirectional=True, proj_size=P, batch_first=True)
    _, fused = make_pair(cfg, F64)
    compiled = _compiled(fused)
    for mode, with_state in (("batched", True), ("batched", False), ("unbatched", True),
                             ("packed-unsorted", False)):
        prob = Problem(cfg, mode, with_state, F64, seed=12)
        _, eager = prob.run(fused)
        _, comp = prob.run(compiled)
        compare(comp, eager, F64, what=f"compiled {mode}")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = _compiled(copy.deepcopy(fused).float())(torch.randn(2, 3, I))
    assert out.dtype == torch.bfloat16


# ------------------------------------------------------------------------------------------------
# Double backward gives nn.LSTM's second derivative (tests/test_higher_order.py has the rest)
# ------------------------------------------------------------------------------------------------
def test_double_backward_matches_nn():
    ref, fused = make_pair(dict(num_layers=1), F64)
    x = torch.randn(3, 2, I, dtype=F64)

    def second(m):
        xx = x.clone().requires_grad_()
        g, = torch.autograd.grad(m(xx)[0].pow(2).sum(), xx, create_graph=True)
        gg, = torch.autograd.grad(g.pow(2).sum(), xx)
        return gg

    assert_close(second(fused), second(ref), name="second derivative")

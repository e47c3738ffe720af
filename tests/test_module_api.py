"""fused_lstm.LSTM's drop-in interface, against torch.nn.LSTM: parameter names, shapes, order and
initialisation, repr and weight bookkeeping, state_dicts both ways, from_torch/to_torch, copies,
torch.save/load, dtype moves, nn.LSTM's helper methods, meta-device construction, that the
fused op really runs, and build_info(). tests/test_module.py compares what the module computes.
"""
import copy
import io

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

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
CONFIGS = [
    dict(),
    dict(num_layers=3, bias=False, batch_first=True, dropout=0.25),
    dict(num_layers=2, bidirectional=True, proj_size=P),
    dict(num_layers=1, bidirectional=True, bias=False, proj_size=1, batch_first=True),
]
CONFIG_IDS = ["default", "L3-nobias-bf-dropout", "L2-bi-proj", "L1-bi-nobias-proj-bf"]
# NAMED_CONFIGS / NAMED_SIZES (tests/lstm_testing.py): the configurations test_module.py runs too.


# ------------------------------------------------------------------------------------------------
# Parameters, state_dict, converters
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(NAMED_CONFIGS))
def test_parameter_names_and_shapes(name):
    cfg = NAMED_CONFIGS[name]
    ref = nn.LSTM(NAMED_I, NAMED_H, **cfg)
    fused = fused_lstm.LSTM(NAMED_I, NAMED_H, **cfg)
    assert [n for n, _ in fused.named_parameters()] == [n for n, _ in ref.named_parameters()]
    assert ([tuple(p.shape) for p in fused.parameters()]
            == [tuple(p.shape) for p in ref.parameters()])
    assert list(fused.state_dict().keys()) == list(ref.state_dict().keys())
    assert isinstance(fused, nn.Module) and not isinstance(fused, nn.LSTM)
    expected = {**dict(input_size=NAMED_I, hidden_size=NAMED_H, num_layers=1, bias=True,
                       batch_first=False,
                       dropout=0.0, bidirectional=False, proj_size=0), **cfg}
    for attr, v in expected.items():
        assert getattr(fused, attr) == v, attr


@pytest.mark.parametrize("name", ["L2-bi-bf-proj", "L1-bi-nobias"])
def test_fused_state_dict_loads_into_nn_lstm(name):
    cfg = NAMED_CONFIGS[name]
    torch.manual_seed(5)
    fused = fused_lstm.LSTM(NAMED_I, NAMED_H, dtype=F64, **cfg)
    ref = nn.LSTM(NAMED_I, NAMED_H, dtype=F64, **cfg)
    ref.load_state_dict(fused.state_dict())  # strict
    for (n, p), (_, q) in zip(fused.named_parameters(), ref.named_parameters()):
        assert torch.equal(p, q), n
    x, hx, go, gh, gc = module_inputs(cfg, F64, **NAMED_SIZES)
    _, r = run_module(ref, *leaves(x, hx), go, gh, gc)
    _, f = run_module(fused, *leaves(x, hx), go, gh, gc)
    compare_results(f, r, F64, what=f"{name}:")


def test_default_init_like_nn_lstm():
    """Parameters are initialised like nn.LSTM: U(-1/sqrt(H), 1/sqrt(H)), not all equal."""
    fused = fused_lstm.LSTM(NAMED_I, 16, num_layers=2)
    k = 1 / 16 ** 0.5
    for n, p in fused.named_parameters():
        assert p.abs().max() <= k + 1e-6, n
        assert p.std() > 0.1 * k, n


@pytest.mark.parametrize("name", ["L1", "L2-bi-bf-proj", "L1-bi-nobias"])
def test_from_torch_to_torch_roundtrip(name):
    cfg = dict(NAMED_CONFIGS[name])
    torch.manual_seed(7)
    ref = nn.LSTM(NAMED_I, NAMED_H, dtype=F64,
                  dropout=0.25 if cfg.get("num_layers", 1) > 1 else 0.0, **cfg)
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
    x, hx, go, gh, gc = module_inputs(cfg, F64, **NAMED_SIZES)
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

    fused = fused_lstm.LSTM(NAMED_I, NAMED_H, num_layers=2, bidirectional=True)
    x = torch.randn(4, 3, NAMED_I)
    with Log():
        fused(x)
    assert any("fused_lstm" in s and "lstm_layer_forward" in s for s in seen), sorted(set(seen))
    assert not any(s.startswith("aten.lstm") or "_thnn_fused_lstm" in s or "mkldnn_rnn" in s
                   for s in seen), sorted(set(seen))


# ------------------------------------------------------------------------------------------------
# Interface details: repr, weight bookkeeping, state_dict, copies, save/load, dtype moves
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cfg", CONFIGS, ids=CONFIG_IDS)
def test_repr_and_weight_bookkeeping_like_nn_lstm(cfg):
    ref, fused = make_pair(nn.LSTM, I, H, dtype=F32, **cfg)
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

    prob = Problem(cfg, "batched", True, F64, seed=5, **SIZES)
    ref.eval(), fused.eval(), fused2.eval()
    _, a = prob.run(ref)
    compare_results(prob.run(fused)[1], a, F64, what="fused vs nn after load")
    compare_results(prob.run(fused2)[1], a, F64, what="round-tripped fused")


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
    _, fused = make_pair(nn.LSTM, I, H, dtype=F64, **cfg)
    fused.eval()
    clone = copy.deepcopy(fused)
    assert type(clone) is fused_lstm.LSTM and not clone.training
    for (n, p), (_, q) in zip(fused.named_parameters(), clone.named_parameters()):
        assert p is not q and p.data_ptr() != q.data_ptr() and torch.equal(p, q), n
    prob = Problem(cfg, "packed-unsorted", True, F64, seed=6, **SIZES)
    compare_results(prob.run(clone)[1], prob.run(fused)[1], F64, what="deepcopy")
    with torch.no_grad():
        clone.weight_ih_l0.add_(1.0)
    assert not torch.equal(clone.weight_ih_l0, fused.weight_ih_l0)
    for attr in fused.__constants__:
        assert getattr(clone, attr) == getattr(fused, attr), attr


def test_torch_save_load_module_and_state_dict(tmp_path):
    cfg = dict(num_layers=2, bidirectional=True, proj_size=P, batch_first=True)
    ref, fused = make_pair(nn.LSTM, I, H, dtype=F64, **cfg)
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
    prob = Problem(cfg, "batched", True, F64, seed=8, **SIZES)
    _, expected = prob.run(ref.eval())
    for m, what in ((loaded, "torch.load(module)"), (fresh, "state_dict"),
                    (ref2.eval(), "nn.LSTM <- saved fused"), (fresh2, "fused <- saved nn.LSTM")):
        compare_results(prob.run(m)[1], expected, F64, what=what)


@pytest.mark.parametrize("move", ["to(float64)", "double", "half", "bfloat16", "to(float32)",
                                  "float"])
def test_dtype_moves_like_nn_lstm(move):
    cfg = dict(num_layers=2, bidirectional=True, proj_size=P)
    ref, fused = make_pair(nn.LSTM, I, H, dtype=F32, **cfg)
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
def _outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except Exception as e:  # noqa: BLE001  (the class and message are what is compared)
        return (type(e).__name__, str(e))


@pytest.mark.parametrize("cfg", CONFIGS, ids=CONFIG_IDS)
def test_nn_lstm_helper_methods(cfg):
    ref, fused = make_pair(nn.LSTM, I, H, dtype=F32, **cfg)
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
        assert _outcome(call, fused) == _outcome(call, ref), name
    # _flat_weights are the parameters themselves, in _flat_weights_names' order (nn.LSTM's).
    assert len(fused._flat_weights) == len(fused._flat_weights_names) == len(ref._flat_weights)
    assert all(w is getattr(fused, n)
               for w, n in zip(fused._flat_weights, fused._flat_weights_names))


def test_hx_dtype_mismatch_raises_runtime_error_like_nn_lstm():
    ref, fused = make_pair(nn.LSTM, I, H, dtype=F32, num_layers=1)
    x = torch.randn(3, 2, I)
    for hx in ((torch.randn(1, 2, H, dtype=F64), torch.randn(1, 2, H)),
               (torch.randn(1, 2, H), torch.randn(1, 2, H, dtype=F64))):
        with pytest.raises(RuntimeError, match="unsupported data type|dtype"):  # oneDNN's
            ref(x, hx)
        with pytest.raises(RuntimeError, match=r"hidden\[\d\].*dtype"):
            fused(x, hx)


def test_packed_hx_wrong_batch_is_a_size_error():
    """With enforce_sorted=False the state's batch is checked before it is permuted (nn.LSTM
    permutes first and then fails with an indexing error, or not at all)."""
    _, fused = make_pair(nn.LSTM, I, H, dtype=F32, num_layers=1)
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
    fused.load_state_dict(make_pair(nn.LSTM, I, H, dtype=F32, **cfg)[0].state_dict())
    assert all(p.device.type == "cpu" for p in fused.parameters())
    assert torch.isfinite(fused(torch.randn(2, 5, I))[0]).all()


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

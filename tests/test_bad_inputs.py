"""Bad input raises a clear Python exception naming the argument (never a crash, never garbage),
and legal but hostile input gives nn.LSTM's results, for the module, the functional API and the
raw ops.

One argument at a time (CASES, MODULE_CASES, CTOR_CASES): wrong number of dims / unsupported
dtype -> ValueError; wrong shapes, device mismatch, bad batch_sizes -> RuntimeError. Messages
are matched loosely (the argument's name).

The battery (RAISES, LIKE_NN, LAYER_EDGE): devices, non-Tensor arguments, malformed
PackedSequences, sizes past 32-bit (and 64-bit) arithmetic, state_dict and parameter surgery, the
backward op's own arguments, and inputs that are legal but hostile (non-contiguous, overlapping,
T = 0, B = 0, NaN/Inf), which must give nn.LSTM's results (NaN/Inf: the same positions as
nn.LSTM, in outputs and gradients).

Every case runs in this process, so a crash or hang fails the run; README (Reliability) records
this battery run under AddressSanitizer/UBSan (scripts/sanitize_cpu.sh runs this file).
"""
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

import fused_lstm
from tests.lstm_testing import assert_close, grads

T, B, I, H, P = 3, 2, 4, 5, 3  # noqa: E741  (I: the input size, as in nn.LSTM)


def base(packed=False, proj=False, dtype=torch.float32):
    Pe = P if proj else H
    a = dict(
        input=torch.randn(5, I) if packed else torch.randn(T, B, I),
        hx=torch.randn(B, Pe), cx=torch.randn(B, H),
        weight_ih=torch.randn(4 * H, I), weight_hh=torch.randn(4 * H, Pe),
        bias_ih=torch.randn(4 * H), bias_hh=torch.randn(4 * H),
        weight_hr=torch.randn(P, H) if proj else None,
        batch_sizes=torch.tensor([2, 2, 1]) if packed else None,
    )
    return {k: (v.to(dtype) if v is not None and v.is_floating_point() else v)
            for k, v in a.items()}


def call(caller, a):
    if caller == "functional":
        return fused_lstm.lstm_layer(a["input"], a["hx"], a["cx"], a["weight_ih"], a["weight_hh"],
                                     bias_ih=a["bias_ih"], bias_hh=a["bias_hh"],
                                     weight_hr=a["weight_hr"], batch_sizes=a["batch_sizes"])
    return torch.ops.fused_lstm.lstm_layer_forward(
        a["input"], a["hx"], a["cx"], a["weight_ih"], a["weight_hh"], a["bias_ih"], a["bias_hh"],
        a["weight_hr"], a["batch_sizes"], False, False)


def setv(**kw):
    def f(a):
        a.update({k: (v() if callable(v) else v) for k, v in kw.items()})
    return f


def to_int(a):
    for k, v in a.items():
        if v is not None and v.is_floating_point():
            a[k] = (v * 3).to(torch.int64)


EITHER = (ValueError, RuntimeError)

# name: (base kwargs, mutation, expected exception class(es), match regex)
CASES = {
    "input-4d": ({}, setv(input=lambda: torch.randn(T, B, I, 1)), ValueError, "input"),
    "input-1d": ({}, setv(input=lambda: torch.randn(I)), ValueError, "input"),
    "packed-input-3d": ({"packed": True}, setv(input=lambda: torch.randn(5, 1, I)), ValueError,
                        "input"),
    "input-size-mismatch": ({}, setv(input=lambda: torch.randn(T, B, I + 1)), RuntimeError,
                            "input|weight_ih"),
    "hx-batch": ({}, setv(hx=lambda: torch.randn(B + 1, H)), RuntimeError, "hx"),
    "hx-width": ({}, setv(hx=lambda: torch.randn(B, H + 1)), RuntimeError, "hx"),
    # (1, B, H) is a module's per-layer slice, which the op takes (not lstm_layer: below)
    "hx-3d": ({}, setv(hx=lambda: torch.randn(2, B, H)), EITHER, "hx"),
    "cx-3d": ({}, setv(cx=lambda: torch.randn(2, B, H)), EITHER, "cx"),
    "cx-batch": ({}, setv(cx=lambda: torch.randn(B + 1, H)), RuntimeError, "cx"),
    "cx-width": ({}, setv(cx=lambda: torch.randn(B, H - 1)), RuntimeError, "cx"),
    "weight_ih-rows": ({}, setv(weight_ih=lambda: torch.randn(4 * H + 1, I)), RuntimeError,
                       "weight_ih"),
    "weight_hh-cols": ({}, setv(weight_hh=lambda: torch.randn(4 * H, H + 1)), RuntimeError,
                       "weight_hh"),
    "weight_hh-rows": ({}, setv(weight_hh=lambda: torch.randn(4 * H + 1, H)), RuntimeError,
                       "weight_hh"),
    "bias_ih-shape": ({}, setv(bias_ih=lambda: torch.randn(4 * H + 1)), RuntimeError, "bias_ih"),
    "bias_hh-shape": ({}, setv(bias_hh=lambda: torch.randn(2 * H)), RuntimeError, "bias_hh"),
    "only-one-bias": ({}, setv(bias_hh=None), EITHER, "bias"),
    "weight_hr-shape": ({"proj": True}, setv(weight_hr=lambda: torch.randn(P, H + 1)), RuntimeError,
                        "weight_hr"),
    "proj-without-weight_hr": ({"proj": True}, setv(weight_hr=None), RuntimeError, "weight_hh|hx"),
    "dtype-mismatch-weights": ({}, lambda a: a.update(weight_ih=a["weight_ih"].double(),
                                                      weight_hh=a["weight_hh"].double()),
                               EITHER, "weight_ih|weight_hh|dtype"),
    "dtype-mismatch-hx": ({}, lambda a: a.update(hx=a["hx"].double()), EITHER, "hx|dtype"),
    "int-all": ({}, to_int, ValueError, "input|dtype"),
    "int-input": ({}, lambda a: a.update(input=a["input"].to(torch.int32)), EITHER, "input|dtype"),
    "complex-all": ({"dtype": torch.complex64}, lambda a: None, ValueError, "input|dtype|Complex"),
    "batch_sizes-increasing": ({"packed": True}, setv(batch_sizes=torch.tensor([1, 2, 2]),
                                                      hx=lambda: torch.randn(1, H),
                                                      cx=lambda: torch.randn(1, H)),
                               RuntimeError, "batch_sizes"),
    "batch_sizes-zero": ({"packed": True}, setv(batch_sizes=torch.tensor([3, 2, 0]),
                                                hx=lambda: torch.randn(3, H),
                                                cx=lambda: torch.randn(3, H)),
                         RuntimeError, "batch_sizes"),
    "batch_sizes-zero-first": ({"packed": True}, setv(batch_sizes=torch.tensor([2, 0]),
                                                      input=lambda: torch.randn(2, I)),
                               RuntimeError, "batch_sizes"),
    "batch_sizes-negative": ({"packed": True}, setv(batch_sizes=torch.tensor([2, 2, 2, -1])),
                             RuntimeError, "batch_sizes"),
    "batch_sizes-sum-too-small": ({"packed": True}, setv(batch_sizes=torch.tensor([2, 1])),
                                  RuntimeError, "batch_sizes"),
    "batch_sizes-sum-too-large": ({"packed": True}, setv(batch_sizes=torch.tensor([2, 2, 2])),
                                  RuntimeError, "batch_sizes"),
    "batch_sizes-empty": ({"packed": True}, setv(batch_sizes=torch.zeros(0, dtype=torch.int64)),
                          RuntimeError, "batch_sizes"),
    "batch_sizes-float": ({"packed": True}, setv(batch_sizes=torch.tensor([2.0, 2.0, 1.0])),
                          EITHER, "batch_sizes"),
    "batch_sizes-2d": ({"packed": True}, setv(batch_sizes=torch.tensor([[2, 2, 1]])),
                       EITHER, "batch_sizes"),
    "packed-hx-batch": ({"packed": True}, setv(hx=lambda: torch.randn(3, H),
                                               cx=lambda: torch.randn(3, H)),
                        RuntimeError, "hx"),
}


@pytest.mark.parametrize("caller", ["functional", "op"])
@pytest.mark.parametrize("packed,proj", [(False, False), (True, False), (False, True)])
def test_valid_baseline(caller, packed, proj):
    """The unmodified arguments used below are accepted (so each error case tests one thing)."""
    out, hy, cy = call(caller, base(packed=packed, proj=proj))[:3]
    assert out.shape[-1] == (P if proj else H) and torch.isfinite(out).all()


@pytest.mark.parametrize("caller", ["functional", "op"])
@pytest.mark.parametrize("name", list(CASES))
def test_layer_errors(name, caller):
    bkw, mutate, exc, match = CASES[name]
    a = base(**bkw)
    mutate(a)
    with pytest.raises(exc, match=match):
        call(caller, a)


# ------------------------------------------------------------------------------------------------
# Module
# ------------------------------------------------------------------------------------------------
def module(**kw):
    return fused_lstm.LSTM(I, H, **kw)


MODULE_CASES = {
    "input-4d": (dict(), lambda: (torch.randn(T, B, I, 1),), ValueError, "input|4"),
    "input-1d": (dict(), lambda: (torch.randn(I),), ValueError, "input|1"),
    "input-size": (dict(), lambda: (torch.randn(T, B, I + 1),), RuntimeError, "input"),
    "h0-shape": (dict(),
                 lambda: (torch.randn(T, B, I), (torch.randn(1, B + 1, H), torch.randn(1, B, H))),
                 RuntimeError, r"h0|hx|h_0|hidden"),
    "h0-layers": (dict(num_layers=2),
                  lambda: (torch.randn(T, B, I), (torch.randn(1, B, H), torch.randn(2, B, H))),
                  RuntimeError, r"h0|hx|h_0|hidden"),
    "c0-shape": (dict(),
                 lambda: (torch.randn(T, B, I), (torch.randn(1, B, H), torch.randn(1, B, H + 1))),
                 RuntimeError, r"c0|cx|c_0|hidden|cell"),
    "h0-proj-shape": (dict(proj_size=P),
                      lambda: (torch.randn(T, B, I), (torch.randn(1, B, H), torch.randn(1, B, H))),
                      RuntimeError, r"h0|hx|h_0|hidden"),
    "unbatched-with-3d-state": (dict(),
                                lambda: (torch.randn(T, I),
                                         (torch.randn(1, B, H), torch.randn(1, B, H))),
                                RuntimeError, r"h0|hx|h_0|hidden|2-?D|unbatched"),
    "int-input": (dict(), lambda: (torch.randint(0, 3, (T, B, I)),), EITHER, "input|dtype"),
    "dtype-mismatch": (dict(), lambda: (torch.randn(T, B, I, dtype=torch.float64),), EITHER,
                       "input|dtype|weight"),
    "packed-bad-batch_sizes": (dict(),
                               lambda: (PackedSequence(torch.randn(5, I),
                                                       torch.tensor([1, 2, 2])),),
                               RuntimeError, "batch_sizes"),
    "packed-zero-batch_sizes": (dict(),
                                lambda: (PackedSequence(torch.randn(3, I), torch.tensor([3, 0])),),
                                RuntimeError, "batch_sizes"),
}


@pytest.mark.parametrize("name", list(MODULE_CASES))
def test_module_errors(name):
    kw, args, exc, match = MODULE_CASES[name]
    m = module(**kw)
    with pytest.raises(exc, match=match):
        m(*args())


CTOR_CASES = {
    "hidden_size-0": (dict(input_size=I, hidden_size=0), ValueError, "hidden_size"),
    "hidden_size-float": (dict(input_size=I, hidden_size=7.5), TypeError, "hidden_size"),
    "num_layers-0": (dict(input_size=I, hidden_size=H, num_layers=0), ValueError, "num_layers"),
    "dropout-too-big": (dict(input_size=I, hidden_size=H, num_layers=2, dropout=1.5), ValueError,
                        "dropout"),
    "dropout-negative": (dict(input_size=I, hidden_size=H, num_layers=2, dropout=-0.1), ValueError,
                         "dropout"),
    "proj_size-negative": (dict(input_size=I, hidden_size=H, proj_size=-1), ValueError,
                           "proj_size"),
    "proj_size-ge-hidden": (dict(input_size=I, hidden_size=H, proj_size=H), ValueError,
                            "proj_size"),
}


@pytest.mark.parametrize("name", list(CTOR_CASES))
def test_constructor_errors(name):
    kw, exc, match = CTOR_CASES[name]
    with pytest.raises(exc, match=match):
        fused_lstm.LSTM(**kw)
    with pytest.raises(exc, match=match):  # nn.LSTM agrees on the class and names the argument
        nn.LSTM(**kw)


def test_module_rejects_empty_sequence_like_nn_lstm():
    # nn.LSTM: RuntimeError "Expected sequence length to be larger than 0 in RNN".
    for batch_first in (False, True):
        m = fused_lstm.LSTM(3, 4, batch_first=batch_first)
        x = torch.randn(2, 0, 3) if batch_first else torch.randn(0, 2, 3)
        with pytest.raises(RuntimeError, match="sequence length"):
            m(x)

# ------------------------------------------------------------------------------------------------
# The battery: devices, PackedSequences, sizes, surgery, the backward op, hostile inputs
# ------------------------------------------------------------------------------------------------
F64, F32 = torch.float64, torch.float32
BIG = 2**32 + 1  # a batch size that 32-bit arithmetic would truncate to 1
op_forward = torch.ops.fused_lstm.lstm_layer_forward
op_backward = torch.ops.fused_lstm.lstm_layer_backward


def meta(t):
    return t.to("meta")


def module_with(name=None, value=None, **kw):
    """fused_lstm.LSTM(I, H, **kw), with parameter `name` replaced by `value` when given."""
    m = fused_lstm.LSTM(I, H, **kw)
    if name is not None:
        setattr(m, name, nn.Parameter(value))
    return m


def x3():
    return torch.randn(T, B, I)


def state(width=H, batch=B, layers=1):
    return torch.zeros(layers, batch, width)


def load(state_dict, **kw):
    return module_with(**kw).load_state_dict(state_dict)


def functional(**overrides):
    a = base()
    a.update(overrides)
    return fused_lstm.lstm_layer(a["input"], a["hx"], a["cx"], a["weight_ih"], a["weight_hh"],
                                 bias_ih=a["bias_ih"], bias_hh=a["bias_hh"],
                                 weight_hr=a["weight_hr"], batch_sizes=a["batch_sizes"])


def forward_op(a, save_workspace=True):
    return op_forward(a["input"], a["hx"], a["cx"], a["weight_ih"], a["weight_hh"], a["bias_ih"],
                      a["bias_hh"], a["weight_hr"], a["batch_sizes"], False, save_workspace)


def on(device, a):
    return {k: (v.to(device) if isinstance(v, torch.Tensor) and k != "batch_sizes" else v)
            for k, v in a.items()}


def backward_op(device="cpu", **overrides):
    """The backward op on a valid forward's results, with some arguments replaced (a callable
    override gets the valid arguments)."""
    a = on(device, base())
    output, hy, cy, gates, cells = forward_op(a)
    b = dict(grad_output=torch.randn_like(output), grad_hy=torch.randn_like(hy),
             grad_cy=torch.randn_like(cy), input=a["input"], hx=a["hx"], cx=a["cx"],
             weight_ih=a["weight_ih"], weight_hh=a["weight_hh"], weight_hr=None, batch_sizes=None,
             reverse=False, has_bias=True, output=output, gates=gates, cells=cells,
             output_mask=[True, True])
    b.update({k: (v(b) if callable(v) else v) for k, v in overrides.items()})
    return op_backward(**b)


def huge_bs_sum():
    # batch_sizes whose sum wraps int64 to exactly input.size(0) = 3, with matching (zero-stride,
    # hidden size 1) states, so only the overflow itself can be caught.
    wide = 2**62
    return dict(input=torch.randn(3, I), batch_sizes=torch.tensor([wide] * 4 + [3]),
                hx=torch.zeros(1, 1).expand(wide, 1), cx=torch.zeros(1, 1).expand(wide, 1),
                weight_ih=torch.randn(4, I), weight_hh=torch.randn(4, 1), bias_ih=None,
                bias_hh=None)


# name: (call, exception class, regex the message must match: the argument's name)
RAISES = {
    # -- module: devices, PackedSequence, 32-bit sizes, state_dict and parameter surgery --------
    "module/input-on-meta": (lambda: module_with()(meta(x3())), RuntimeError, "device"),
    "module/h0-on-meta": (lambda: module_with()(x3(), (meta(state()), state())), RuntimeError,
                          "hx on the device"),
    "module/weight-on-meta": (lambda: module_with("weight_ih_l0",
                                                  meta(torch.randn(4 * H, I)))(x3()),
                              RuntimeError, "weight_ih on the device"),
    "module/empty-packed": (lambda: module_with()(PackedSequence(torch.empty(0, I),
                                                                 torch.empty(0, dtype=torch.long))),
                            IndexError, "batch_sizes"),
    "module/batch_sizes-longer-than-data": (
        lambda: module_with()(PackedSequence(torch.randn(3, I), torch.tensor([2, 2, 2]))),
        RuntimeError, "batch_sizes"),
    "module/batch_sizes0-beyond-data": (
        lambda: module_with()(PackedSequence(torch.randn(3, I), torch.tensor([2**40]))),
        RuntimeError, r"batch_sizes\[0\]"),
    "module/batch_sizes-int32": (
        lambda: module_with()(PackedSequence(torch.randn(5, I),
                                             torch.tensor([2, 2, 1], dtype=torch.int32))),
        RuntimeError, "batch_sizes"),
    "module/batch-2^32+1-vs-h0-batch-1": (
        lambda: module_with()(torch.zeros(1, 1, I).expand(T, BIG, I),
                              (state(batch=1), state(batch=1))),
        RuntimeError, r"hidden\[0\]"),
    "module/hx-not-a-pair": (lambda: module_with()(x3(), state()), TypeError, "hx"),
    "module/state_dict-wrong-hidden": (lambda: load(nn.LSTM(I, H + 1).state_dict()), RuntimeError,
                                       "size mismatch for weight_ih_l0"),
    "module/state_dict-with-projection": (lambda: load(nn.LSTM(I, H, proj_size=P).state_dict()),
                                          RuntimeError, "weight_hr_l0"),
    "module/state_dict-missing-bias": (
        lambda: load({k: v for k, v in nn.LSTM(I, H).state_dict().items() if k != "bias_hh_l0"}),
        RuntimeError, "bias_hh_l0"),
    "module/state_dict-bidirectional-into-one-direction": (
        lambda: load(nn.LSTM(I, H, bidirectional=True).state_dict()), RuntimeError, "_reverse"),
    "module/weight_hh-replaced-wrong-shape": (
        lambda: module_with("weight_hh_l0", torch.randn(4 * H, H + 1))(x3()), RuntimeError,
        "weight_hh"),
    "module/bias-replaced-wrong-dtype": (
        lambda: module_with("bias_hh_l0", torch.randn(4 * H, dtype=F64))(x3()), ValueError,
        "bias_hh"),
    # -- functional ----------------------------------------------------------------------------
    "functional/input-not-a-tensor": (lambda: functional(input=[[1.0] * I]), TypeError, "input"),
    "functional/hx-with-a-layer-dim": (lambda: functional(hx=torch.randn(1, B, H)), ValueError,
                                       r"expected hx with 2 dims"),
    "functional/cx-with-a-layer-dim": (lambda: functional(cx=torch.randn(1, B, H)), ValueError,
                                       r"expected cx with 2 dims"),
    "functional/batch_sizes-a-list": (lambda: functional(input=torch.randn(5, I),
                                                         batch_sizes=[2, 2, 1]),
                                      TypeError, "batch_sizes"),
    "functional/weight_hh-None": (lambda: functional(weight_hh=None), TypeError, "weight_hh"),
    "functional/batch_sizes-sum-overflows-int64": (lambda: functional(**huge_bs_sum()),
                                                   RuntimeError,
                                                   "batch_sizes"),
    "functional/batch_sizes0-beyond-data-no-hx": (
        lambda: functional(input=torch.randn(3, I), batch_sizes=torch.tensor([2**40]), hx=None,
                           cx=None),
        RuntimeError, r"batch_sizes\[0\]"),
    "functional/packed-batch-2^32+1-vs-hx-batch-1": (
        lambda: functional(input=torch.zeros(1, I).expand(BIG, I), batch_sizes=torch.tensor([BIG]),
                           hx=torch.zeros(1, H), cx=torch.zeros(1, H)),
        RuntimeError, "hx"),
    # -- raw forward op ------------------------------------------------------------------------
    "op/hx-on-meta": (lambda: forward_op({**base(), "hx": meta(torch.zeros(B, H))}), RuntimeError,
                      "hx on the device"),
    "op/batch_sizes-on-meta": (
        lambda: forward_op({**base(packed=True), "batch_sizes": meta(torch.tensor([2, 2, 1]))}),
        RuntimeError, "batch_sizes"),
    "op/batch_sizes-sum-overflows-int64": (lambda: forward_op({**base(), **huge_bs_sum()}),
                                           RuntimeError,
                                           "batch_sizes"),
    # -- raw backward op -----------------------------------------------------------------------
    "backward/workspace-not-saved": (
        lambda: backward_op(gates=torch.empty(0), cells=torch.empty(0)), RuntimeError,
        "save_workspace"),
    "backward/gates-float64": (lambda: backward_op(gates=lambda b: b["gates"].double()),
                               RuntimeError,
                               "gates"),
    "backward/cells-wrong-size": (lambda: backward_op(cells=torch.randn(T, B, H - 1)), RuntimeError,
                                  "cells"),
    "backward/gates-on-meta": (lambda: backward_op(gates=lambda b: meta(b["gates"])), RuntimeError,
                               "gates on the device"),
    "backward/grad_output-shape": (lambda: backward_op(grad_output=torch.randn(T, B + 1, H)),
                                   RuntimeError, "grad_output"),
    "backward/grad_hy-shape": (lambda: backward_op(grad_hy=torch.randn(B, H + 1)), RuntimeError,
                               "grad_hy"),
    "backward/grad_cy-shape": (lambda: backward_op(grad_cy=torch.randn(B + 1, H)), RuntimeError,
                               "grad_cy"),
    "backward/output-shape": (lambda: backward_op(output=torch.randn(T + 1, B, H)), RuntimeError,
                              "output"),
    "backward/hx-batch": (lambda: backward_op(hx=torch.randn(B + 1, H)), RuntimeError, "hx"),
    "backward/weight_hr-not-used-forward": (lambda: backward_op(weight_hr=torch.randn(P, H)),
                                            RuntimeError, "weight_hh|weight_hr"),
}


@pytest.mark.parametrize("name", list(RAISES))
def test_bad_input_raises_naming_the_argument(name):
    call, exc, match = RAISES[name]
    with pytest.raises(exc, match=match):
        call()


# The device kernels' own checks (on CPU the meta cases above reach the fake kernels instead).
CUDA_RAISES = {
    "op/hx-on-cpu": (lambda: forward_op({**on("cuda", base()), "hx": torch.zeros(B, H)}),
                     RuntimeError, "hx on the device"),
    "backward/gates-on-cpu": (lambda: backward_op("cuda", gates=lambda b: b["gates"].cpu()),
                              RuntimeError, "gates on the device"),
    "backward/output-on-cpu": (lambda: backward_op("cuda", output=lambda b: b["output"].cpu()),
                               RuntimeError, "output on the device"),
}


@pytest.mark.cuda
@pytest.mark.parametrize("name", list(CUDA_RAISES))
def test_bad_input_raises_on_cuda(name):
    call, exc, match = CUDA_RAISES[name]
    with pytest.raises(exc, match=match):
        call()


def test_battery_size():
    assert len(RAISES) + len(LIKE_NN) + len(LAYER_EDGE) >= 30


# ------------------------------------------------------------------------------------------------
# Legal but hostile: fused_lstm.LSTM must give nn.LSTM's results (and gradients)
# ------------------------------------------------------------------------------------------------
def leaf(*shape, dtype, gen):
    return torch.randn(*shape, dtype=dtype, generator=gen).requires_grad_()


def padded(dtype, gen):
    x, h0, c0 = leaf(T, B, I, dtype=dtype, gen=gen), leaf(4, B, H, dtype=dtype, gen=gen), \
        leaf(4, B, H, dtype=dtype, gen=gen)
    return [x, h0, c0], (x, (h0, c0))


def poke(index, value, which=0):
    """Inputs with one element of input (0), h_0 (1) or c_0 (2) set to `value`."""
    def build(dtype, gen):
        leaves, _ = padded(dtype, gen)
        with torch.no_grad():
            leaves[which][index] = value
        return leaves, (leaves[0], (leaves[1], leaves[2]))
    return build


def zero_stride_input(dtype, gen):
    x = leaf(1, 1, I, dtype=dtype, gen=gen)
    return [x], (x.expand(T, B, I),)


def transposed_input(dtype, gen):
    x = leaf(B, T, I, dtype=dtype, gen=gen)
    return [x], (x.transpose(0, 1),)


def zero_stride_states(dtype, gen):
    x, h0, c0 = leaf(T, B, I, dtype=dtype, gen=gen), leaf(1, 1, H, dtype=dtype, gen=gen), \
        leaf(4, 1, H, dtype=dtype, gen=gen)
    return [x, h0, c0], (x, (h0.expand(4, B, H), c0.expand(4, B, H)))


def empty_batch(dtype, gen):
    x = leaf(T, 0, I, dtype=dtype, gen=gen)
    return [x], (x,)


def set_param(name, index, value):
    def mutate(m):
        with torch.no_grad():
            getattr(m, name)[index] = value
    return mutate


def noncontiguous_weights(m):
    # Same values, every parameter a non-contiguous view (assign=True keeps the given tensors).
    m.load_state_dict({k: torch.stack((v, v), -1)[..., 0] for k, v in m.state_dict().items()},
                      assign=True)
    assert not any(p.is_contiguous() for p in m.parameters())


NAN, INF = float("nan"), float("inf")
# name: (inputs(dtype, generator) -> (leaves, forward args), parameter mutation or None)
LIKE_NN = {
    "zero-stride-input": (zero_stride_input, None),
    "transposed-input": (transposed_input, None),
    "zero-stride-h0-c0": (zero_stride_states, None),
    "noncontiguous-weights": (padded, noncontiguous_weights),
    "batch-0": (empty_batch, None),
    "nan-in-input": (poke((1, 1, 2), NAN), None),
    "inf-in-input": (poke((0, 0, 1), INF), None),
    "minus-inf-in-input": (poke((2, 1, 0), -INF), None),
    "huge-input": (poke((1, 0, 3), 1e30), None),
    "inf-in-h0": (poke((0, 1, 2), INF, which=1), None),
    "nan-in-c0": (poke((1, 0, 2), NAN, which=2), None),
    "inf-in-c0": (poke((3, 1, 4), -INF, which=2), None),
    "nan-in-weight_hh": (padded, set_param("weight_hh_l0", (3, 1), NAN)),
    "inf-in-weight_ih": (padded, set_param("weight_ih_l1_reverse", (7, 2), INF)),
    "inf-in-bias": (padded, set_param("bias_ih_l0", 6, -INF)),
}


def module_outcome(m, build, dtype):
    gen = torch.Generator().manual_seed(0)
    leaves, args = build(dtype, gen)
    out, (h_n, c_n) = m(*args)
    upstream = [torch.randn(t.shape, dtype=dtype, generator=gen) for t in (out, h_n, c_n)]
    return [out, h_n, c_n] + grads([out, h_n, c_n], leaves + list(m.parameters()), upstream)


def assert_same_values(got, want, dtype, what):
    """Same NaN and ±Inf positions; the finite values close."""
    assert len(got) == len(want)
    for k, (a, e) in enumerate(zip(got, want)):
        name = f"{what} result {k}"
        assert (a is None) == (e is None), f"{name}: gradient presence differs"
        if e is None:
            continue
        assert a.shape == e.shape, f"{name}: shape {tuple(a.shape)} != {tuple(e.shape)}"
        for mask in (torch.isnan, torch.isposinf, torch.isneginf):
            assert torch.equal(mask(a), mask(e)), f"{name}: {mask.__name__} positions differ"
        finite = torch.isfinite(e)
        assert_close(a[finite], e[finite], dtype=dtype, name=name)


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", list(LIKE_NN))
def test_hostile_input_like_nn_lstm(name, dtype):
    build, mutate = LIKE_NN[name]
    torch.manual_seed(0)
    ref = nn.LSTM(I, H, num_layers=2, bidirectional=True, dtype=dtype)
    fused = fused_lstm.LSTM.from_torch(ref)
    if mutate is not None:
        mutate(ref)
        mutate(fused)
    assert_same_values(module_outcome(fused, build, dtype), module_outcome(ref, build, dtype),
                       dtype, name)


# ------------------------------------------------------------------------------------------------
# Legal edge cases of the functional API and the raw op, where nn.LSTM has no counterpart
# ------------------------------------------------------------------------------------------------
def functional_outcome(fn, a, dtype):
    gen = torch.Generator().manual_seed(1)
    keys = ("input", "hx", "cx", "weight_ih", "weight_hh", "bias_ih", "bias_hh")
    leaves = {k: a[k].to(dtype).detach().requires_grad_() for k in keys}
    views = {k: (a["views"][k](v) if k in a.get("views", {}) else v) for k, v in leaves.items()}
    out = fn(views["input"], views["hx"], views["cx"], views["weight_ih"], views["weight_hh"],
             bias_ih=views["bias_ih"], bias_hh=views["bias_hh"])
    upstream = [torch.randn(t.shape, dtype=dtype, generator=gen) for t in out]
    return list(out) + grads(list(out), list(leaves.values()), upstream)


def expected_without_tokens(a, dtype):
    # T = 0 or B = 0: no step runs; the states pass through, and so do their gradients.
    x, hx, cx = (a[k].to(dtype) for k in ("input", "hx", "cx"))
    gen = torch.Generator().manual_seed(1)
    shapes = [(*x.shape[:-1], hx.size(1)), hx.shape, cx.shape]
    upstream = [torch.randn(s, dtype=dtype, generator=gen) for s in shapes]
    zeros = [torch.zeros_like(a[k].to(dtype))
             for k in ("input", "weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    return [torch.empty(shapes[0], dtype=dtype), hx, cx, zeros[0], upstream[1], upstream[2],
            *zeros[1:]]


def expanded(shape):
    return lambda t: t[tuple(slice(0, 1) for _ in shape)].expand(shape)


LAYER_EDGE = {
    "functional/T-0": dict(input=torch.randn(0, B, I)),
    "functional/B-0": dict(input=torch.randn(T, 0, I), hx=torch.randn(0, H), cx=torch.randn(0, H)),
    "functional/input-size-0": dict(input=torch.randn(T, B, 0), weight_ih=torch.randn(4 * H, 0)),
    "functional/zero-stride-weights": dict(views={"weight_hh": expanded((4 * H, H)),
                                                  "weight_ih": expanded((4 * H, I))}),
    "functional/overlapping-input-rows": dict(views={"input": expanded((T, B, I))}),
}


@pytest.mark.parametrize("name", list(LAYER_EDGE))
def test_layer_edge_case_like_reference(name):
    a = {**base(), **LAYER_EDGE[name]}
    got = functional_outcome(fused_lstm.lstm_layer, a, F64)
    if a["input"].shape[:-1].numel() == 0:  # the reference step loop needs a token
        want = expected_without_tokens(a, F64)
    else:
        want = functional_outcome(fused_lstm.lstm_layer_reference, a, F64)
    assert_same_values(got, want, F64, name)


def test_sizes_past_32_bits_on_meta():
    """Shapes whose element counts pass 2**32 (and their products 2**40): the fake kernels give
    exact int64 shapes without allocating."""
    Tm, Bm, Im, Hm = 2**20, 2**12, 2**10, 2**10
    out, hy, cy, gates, cells = op_forward(
        torch.empty(Tm, Bm, Im, device="meta"), torch.empty(Bm, Hm, device="meta"),
        torch.empty(Bm, Hm, device="meta"), torch.empty(4 * Hm, Im, device="meta"),
        torch.empty(4 * Hm, Hm, device="meta"), None, None, None, None, False, True)
    assert out.shape == (Tm, Bm, Hm) and gates.shape == (Tm, Bm, 4 * Hm)
    assert gates.numel() == 2**44 and hy.shape == cy.shape == (Bm, Hm)

"""Bad input raises a clear Python exception naming the argument (never a crash, never garbage).

Classes (contract): wrong number of dims / unsupported dtype -> ValueError; wrong shapes, device
mismatch, bad batch_sizes -> RuntimeError. Messages are matched loosely (the argument's name).
"""
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

import fused_lstm

T, B, I, H, P = 3, 2, 4, 5, 3


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
    return {k: (v.to(dtype) if v is not None and v.is_floating_point() else v) for k, v in a.items()}


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
    "packed-input-3d": ({"packed": True}, setv(input=lambda: torch.randn(5, 1, I)), ValueError, "input"),
    "input-size-mismatch": ({}, setv(input=lambda: torch.randn(T, B, I + 1)), RuntimeError,
                            "input|weight_ih"),
    "hx-batch": ({}, setv(hx=lambda: torch.randn(B + 1, H)), RuntimeError, "hx"),
    "hx-width": ({}, setv(hx=lambda: torch.randn(B, H + 1)), RuntimeError, "hx"),
    "hx-3d": ({}, setv(hx=lambda: torch.randn(1, B, H)), EITHER, "hx"),
    "cx-batch": ({}, setv(cx=lambda: torch.randn(B + 1, H)), RuntimeError, "cx"),
    "cx-width": ({}, setv(cx=lambda: torch.randn(B, H - 1)), RuntimeError, "cx"),
    "weight_ih-rows": ({}, setv(weight_ih=lambda: torch.randn(4 * H + 1, I)), RuntimeError, "weight_ih"),
    "weight_hh-cols": ({}, setv(weight_hh=lambda: torch.randn(4 * H, H + 1)), RuntimeError, "weight_hh"),
    "weight_hh-rows": ({}, setv(weight_hh=lambda: torch.randn(4 * H + 1, H)), RuntimeError, "weight_hh"),
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
    "h0-shape": (dict(), lambda: (torch.randn(T, B, I), (torch.randn(1, B + 1, H), torch.randn(1, B, H))),
                 RuntimeError, r"h0|hx|h_0|hidden"),
    "h0-layers": (dict(num_layers=2), lambda: (torch.randn(T, B, I), (torch.randn(1, B, H), torch.randn(2, B, H))),
                  RuntimeError, r"h0|hx|h_0|hidden"),
    "c0-shape": (dict(), lambda: (torch.randn(T, B, I), (torch.randn(1, B, H), torch.randn(1, B, H + 1))),
                 RuntimeError, r"c0|cx|c_0|hidden|cell"),
    "h0-proj-shape": (dict(proj_size=P), lambda: (torch.randn(T, B, I), (torch.randn(1, B, H), torch.randn(1, B, H))),
                      RuntimeError, r"h0|hx|h_0|hidden"),
    "unbatched-with-3d-state": (dict(), lambda: (torch.randn(T, I), (torch.randn(1, B, H), torch.randn(1, B, H))),
                                RuntimeError, r"h0|hx|h_0|hidden|2-?D|unbatched"),
    "int-input": (dict(), lambda: (torch.randint(0, 3, (T, B, I)),), EITHER, "input|dtype"),
    "dtype-mismatch": (dict(), lambda: (torch.randn(T, B, I, dtype=torch.float64),), EITHER,
                       "input|dtype|weight"),
    "packed-bad-batch_sizes": (dict(), lambda: (PackedSequence(torch.randn(5, I), torch.tensor([1, 2, 2])),),
                               RuntimeError, "batch_sizes"),
    "packed-zero-batch_sizes": (dict(), lambda: (PackedSequence(torch.randn(3, I), torch.tensor([3, 0])),),
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
    "dropout-too-big": (dict(input_size=I, hidden_size=H, num_layers=2, dropout=1.5), ValueError, "dropout"),
    "dropout-negative": (dict(input_size=I, hidden_size=H, num_layers=2, dropout=-0.1), ValueError, "dropout"),
    "proj_size-negative": (dict(input_size=I, hidden_size=H, proj_size=-1), ValueError, "proj_size"),
    "proj_size-ge-hidden": (dict(input_size=I, hidden_size=H, proj_size=H), ValueError, "proj_size"),
}


@pytest.mark.parametrize("name", list(CTOR_CASES))
def test_constructor_errors(name):
    kw, exc, match = CTOR_CASES[name]
    with pytest.raises(exc, match=match):
        fused_lstm.LSTM(**kw)
    with pytest.raises(exc):  # nn.LSTM agrees on the class
        nn.LSTM(**kw)


def test_module_rejects_empty_sequence_like_nn_lstm():
    # nn.LSTM: RuntimeError "Expected sequence length to be larger than 0 in RNN".
    for batch_first in (False, True):
        m = fused_lstm.LSTM(3, 4, batch_first=batch_first)
        x = torch.randn(2, 0, 3) if batch_first else torch.randn(0, 2, 3)
        with pytest.raises(RuntimeError, match="sequence length"):
            m(x)

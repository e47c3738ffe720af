"""torch.autograd.gradcheck on fused_lstm.lstm_layer (float64, CPU, tiny sizes)."""
import pytest
import torch
from torch.autograd import gradcheck

import fused_lstm

F64 = torch.float64
T, B, I, H = 3, 2, 3, 4  # noqa: E741  (I: the input size, as in nn.LSTM)

CASES = {
    "bias": dict(bias=True),
    "nobias": dict(bias=False),
    "proj": dict(bias=True, P=2),
    "reverse": dict(bias=True, reverse=True),
    "packed": dict(bias=True, batch_sizes=[2, 2, 1]),
    "packed-reverse-proj": dict(bias=True, P=3, reverse=True, batch_sizes=[2, 1, 1]),
    "nostate": dict(bias=True, state=False),
    "T1B1": dict(bias=True, T=1, B=1),
}


def make_inputs(bias=True, P=0, reverse=False, batch_sizes=None, state=True, T=T, B=B):
    Pe = P or H
    if batch_sizes is not None:
        bs = torch.tensor(batch_sizes, dtype=torch.int64)
        B = batch_sizes[0]
        x = torch.randn(int(bs.sum()), I, dtype=F64)
    else:
        bs = None
        x = torch.randn(T, B, I, dtype=F64)
    t = dict(
        input=x,
        hx=0.5 * torch.randn(B, Pe, dtype=F64) if state else None,
        cx=0.5 * torch.randn(B, H, dtype=F64) if state else None,
        weight_ih=0.5 * torch.randn(4 * H, I, dtype=F64),
        weight_hh=0.5 * torch.randn(4 * H, Pe, dtype=F64),
        bias_ih=0.5 * torch.randn(4 * H, dtype=F64) if bias else None,
        bias_hh=0.5 * torch.randn(4 * H, dtype=F64) if bias else None,
        weight_hr=0.5 * torch.randn(P, H, dtype=F64) if P else None,
    )
    for v in t.values():
        if v is not None:
            v.requires_grad_(True)
    return t, bs


@pytest.mark.parametrize("name", list(CASES))
def test_gradcheck_lstm_layer(name):
    cfg = dict(CASES[name])
    reverse = cfg.pop("reverse", False)
    torch.manual_seed(list(CASES).index(name))
    t, bs = make_inputs(**cfg)
    keys = [k for k, v in t.items() if v is not None]

    def fn(*args):
        kw = dict(zip(keys, args))
        return fused_lstm.lstm_layer(kw["input"], kw.get("hx"), kw.get("cx"), kw["weight_ih"],
                                     kw["weight_hh"], bias_ih=kw.get("bias_ih"),
                                     bias_hh=kw.get("bias_hh"), weight_hr=kw.get("weight_hr"),
                                     batch_sizes=bs, reverse=reverse)

    assert gradcheck(fn, tuple(t[k] for k in keys), eps=1e-6, atol=1e-7, rtol=1e-5)


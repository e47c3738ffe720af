"""Shared helpers for the fused_lstm test suite (imported by conftest.py and the test modules).

Kept in a plain module (not only in conftest.py) so that ``from lstm_testing import ...`` works
under both of pytest's import modes (conftest.py puts this folder on sys.path).
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import fused_lstm

PARAM_KINDS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")


# --------------------------------------------------------------------------------------------
# CUDA availability
# --------------------------------------------------------------------------------------------
def cuda_usable() -> bool:
    """True when a GPU is present AND the extension was built with CUDA kernels."""
    if not torch.cuda.is_available():
        return False
    try:
        return bool(fused_lstm.build_info()["cuda_built"])
    except Exception:  # pragma: no cover - build_info itself is tested elsewhere
        return False


def _cuda_skip_reason() -> str:
    if not torch.cuda.is_available():
        return "no CUDA GPU available"
    try:
        info = fused_lstm.build_info()
    except Exception as e:  # pragma: no cover
        return f"fused_lstm.build_info() failed: {e!r}"
    return f"fused_lstm built without CUDA: {info.get('why')}"


requires_cuda = pytest.mark.skipif(not cuda_usable(), reason=_cuda_skip_reason())


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------
def copy_weights_from(nn_lstm: nn.LSTM, layer: int = 0, reverse: bool = False, *,
                      dtype: torch.dtype | None = None, device=None,
                      requires_grad: bool = True) -> dict:
    """Fresh leaf copies of one layer/direction of an ``nn.LSTM``'s weights.

    Returns a dict with keys weight_ih, weight_hh, bias_ih, bias_hh, weight_hr; the missing ones
    (no bias, no projection) are None. Suitable as ``fused_lstm.lstm_layer(x, hx, cx, **w)``.
    """
    sfx = f"_l{layer}" + ("_reverse" if reverse else "")
    out = {}
    for kind in PARAM_KINDS:
        p = getattr(nn_lstm, kind + sfx, None)
        if p is None:
            out[kind] = None
            continue
        t = p.detach().clone()
        if dtype is not None or device is not None:
            t = t.to(dtype=dtype if dtype is not None else t.dtype, device=device)
        out[kind] = t.requires_grad_(requires_grad)
    return out


def nn_params_of(nn_lstm: nn.LSTM, layer: int = 0, reverse: bool = False) -> dict:
    """The nn.LSTM parameters themselves (not copies) of one layer/direction; None when absent."""
    sfx = f"_l{layer}" + ("_reverse" if reverse else "")
    return {k: getattr(nn_lstm, k + sfx, None) for k in PARAM_KINDS}


def spread_biases_(module: nn.Module) -> nn.Module:
    """Make a module's biases clearly non-zero and different from each other (U(-0.5, 0.5))."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.startswith("bias"):
                p.uniform_(-0.5, 0.5)
    return module


def round_to(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Round a tensor's values to what `dtype` can represent, keeping its dtype."""
    return t.to(dtype).to(t.dtype)


def round_module_(m: nn.Module, dtype: torch.dtype) -> nn.Module:
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(round_to(p, dtype))
    return m


# --------------------------------------------------------------------------------------------
# Comparisons
# --------------------------------------------------------------------------------------------
TOL = {
    torch.float64: 1e-10,
    torch.float32: 1e-5,
}


def assert_close(actual, expected, *, dtype=None, tol=None, name=""):
    """assert_close with rtol = atol/scale = tol, where scale = max(1, max|expected|).

    Checks dtype, device and shape too (torch.testing.assert_close does).
    """
    if tol is None:
        tol = TOL[dtype if dtype is not None else expected.dtype]
    assert actual is not None, f"{name}: got None"
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    scale = max(1.0, expected.detach().abs().max().item()) if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol * scale,
                               msg=lambda m: f"{name}: {m}")


def rel_err(actual: torch.Tensor, ref: torch.Tensor) -> float:
    """||actual - ref|| / ||ref||, computed in float64 (0 when both are zero)."""
    a = actual.detach().double().cpu()
    r = ref.detach().double().cpu()
    assert a.shape == r.shape, f"shape {tuple(a.shape)} != {tuple(r.shape)}"
    num = (a - r).norm().item()
    den = r.norm().item()
    if den == 0.0:
        return 0.0 if num == 0.0 else math.inf
    return num / den


def assert_lowp_ok(fused, torch_lowp, ref64, *, name="", factor=2.0, floor=1e-3):
    """The low-precision rule: fused's error vs an fp64 reference is at most `factor` times
    nn.LSTM's own error at the same precision, plus a small relative floor."""
    assert fused.dtype == torch_lowp.dtype, f"{name}: dtype {fused.dtype} != {torch_lowp.dtype}"
    assert torch.isfinite(fused.detach().float()).all(), f"{name}: non-finite values"
    e_f = rel_err(fused, ref64)
    e_t = rel_err(torch_lowp, ref64)
    assert e_f <= factor * e_t + floor, (
        f"{name}: fused rel. error {e_f:.3e} > {factor} x nn.LSTM's {e_t:.3e} + {floor:g}")
    return e_f, e_t


def grads(outputs, inputs, grad_outputs):
    """torch.autograd.grad over (possibly None) inputs; returns a list aligned with `inputs`."""
    pairs = [(o, g) for o, g in zip(outputs, grad_outputs) if g is not None]
    idx = [i for i, t in enumerate(inputs) if t is not None and t.requires_grad]
    res = torch.autograd.grad([o for o, _ in pairs], [inputs[i] for i in idx],
                              [g for _, g in pairs], allow_unused=True)
    out = [None] * len(inputs)
    for i, g in zip(idx, res):
        out[i] = g
    return out


# --------------------------------------------------------------------------------------------
# Misc
# --------------------------------------------------------------------------------------------
def proj_for(H: int, proj: bool) -> int:
    """A projection size < H for hidden size H (0 when proj is False or H is too small)."""
    if not proj or H < 2:
        return 0
    return max(1, min(H - 1, H // 3 + 1))


def lengths_to_batch_sizes(lengths):
    lengths = sorted(lengths, reverse=True)
    return torch.tensor([sum(1 for L in lengths if L > t) for t in range(lengths[0])],
                        dtype=torch.int64)


# --------------------------------------------------------------------------------------------
# One-layer problems run through fused_lstm.lstm_layer / lstm_layer_reference / nn.LSTM
# --------------------------------------------------------------------------------------------
F64 = torch.float64
KEYS = ("out", "hy", "cy", "grad_input", "grad_hx", "grad_cx") + tuple(f"grad_{k}" for k in PARAM_KINDS)


class Case:
    """Random problem in float64 (optionally rounded to a low-precision dtype's grid)."""

    def __init__(self, T, B, I, H, P=0, bias=True, bidirectional=False, lengths=None, seed=0,
                 round_dtype=None):
        torch.manual_seed(seed)
        if lengths is not None:
            T, B = max(lengths), len(lengths)
        self.T, self.B, self.I, self.H, self.P = T, B, I, H, P
        self.lengths = lengths
        Pe = P or H
        self.m = nn.LSTM(I, H, bias=bias, proj_size=P, bidirectional=bidirectional, dtype=F64)
        with torch.no_grad():  # make the biases clearly non-zero and different from each other
            for name, p in self.m.named_parameters():
                if name.startswith("bias"):
                    p.uniform_(-0.5, 0.5)
        self.x = torch.randn(T, B, I, dtype=F64)
        self.h0 = 0.5 * torch.randn(B, Pe, dtype=F64)
        self.c0 = 0.5 * torch.randn(B, H, dtype=F64)
        N = sum(lengths) if lengths is not None else None
        self.go = torch.randn(*((N,) if N is not None else (T, B)), Pe, dtype=F64)
        self.gh = torch.randn(B, Pe, dtype=F64)
        self.gc = torch.randn(B, H, dtype=F64)
        if round_dtype is not None:
            round_module_(self.m, round_dtype)
            for k in ("x", "h0", "c0", "go", "gh", "gc"):
                setattr(self, k, round_to(getattr(self, k), round_dtype))


def run(case, impl, dtype, *, reverse=False, with_state=True, enforce_sorted=True, x_view=None,
        w_view=None, device="cpu"):
    """Run one implementation: impl in {"fused", "reference", "nn"} on `device`.

    Returns {key: tensor|None} for KEYS: out, hy, cy and the gradients (under the case's random
    upstream gradients) of input, hx, cx and the layer's weights.
    """
    x = case.x.to(device=device, dtype=dtype).requires_grad_()
    h0 = case.h0.to(device=device, dtype=dtype).requires_grad_() if with_state else None
    c0 = case.c0.to(device=device, dtype=dtype).requires_grad_() if with_state else None
    xin = x_view(x) if x_view is not None else x
    packed = None
    if case.lengths is not None:
        packed = pack_padded_sequence(xin, torch.tensor(case.lengths), enforce_sorted=enforce_sorted)
    go, gh, gc = (t.to(device=device, dtype=dtype) for t in (case.go, case.gh, case.gc))

    if impl == "nn":
        m = copy.deepcopy(case.m).to(device=device, dtype=dtype)
        assert m.bidirectional == reverse or not reverse
        hx = None
        if with_state:
            if m.bidirectional:
                hx = (torch.stack([torch.zeros_like(h0), h0] if reverse else [h0, torch.zeros_like(h0)]),
                      torch.stack([torch.zeros_like(c0), c0] if reverse else [c0, torch.zeros_like(c0)]))
            else:
                hx = (h0.unsqueeze(0), c0.unsqueeze(0))
        out, (hn, cn) = m(packed if packed is not None else xin, hx)
        out = out.data if packed is not None else out
        d = 1 if reverse else 0
        Pe = hn.shape[-1]
        out = out[..., d * Pe:(d + 1) * Pe]
        hy, cy = hn[d], cn[d]
        params = nn_params_of(m, 0, reverse)
    else:
        fn = fused_lstm.lstm_layer if impl == "fused" else fused_lstm.lstm_layer_reference
        params = copy_weights_from(case.m, 0, reverse, dtype=dtype, device=device)
        pin = {k: (w_view(v) if (w_view is not None and v is not None) else v) for k, v in params.items()}
        h_in, c_in = h0, c0
        if packed is not None:
            data, bs = packed.data, packed.batch_sizes
            if packed.sorted_indices is not None and with_state:
                h_in = h0.index_select(0, packed.sorted_indices.to(device))
                c_in = c0.index_select(0, packed.sorted_indices.to(device))
        else:
            data, bs = xin, None
        kwargs = dict(bias_ih=pin["bias_ih"], bias_hh=pin["bias_hh"], weight_hr=pin["weight_hr"])
        if bs is not None:
            kwargs["batch_sizes"] = bs
        if reverse:
            kwargs["reverse"] = True
        out, hy, cy = fn(data, h_in, c_in, pin["weight_ih"], pin["weight_hh"], **kwargs)
        if packed is not None and packed.unsorted_indices is not None:
            hy = hy.index_select(0, packed.unsorted_indices.to(device))
            cy = cy.index_select(0, packed.unsorted_indices.to(device))

    wrt = [x, h0, c0] + [params[k] for k in PARAM_KINDS]
    g = grads([out, hy, cy], wrt, [go, gh, gc])
    res = {"out": out.detach(), "hy": hy.detach(), "cy": cy.detach()}
    for k, v in zip(KEYS[3:], g):
        res[k] = v
    return res


def compare(actual, expected, dtype, tol=None, what=""):
    for k in KEYS:
        if expected[k] is None:
            assert actual[k] is None, f"{what} {k}: expected no gradient, got one"
            continue
        assert actual[k] is not None, f"{what} {k}: missing (None)"
        assert_close(actual[k], expected[k], dtype=dtype, tol=tol, name=f"{what} {k}")


def compare_lowp(fused, torch_lowp, ref64, what=""):
    for k in KEYS:
        if ref64[k] is None:
            assert fused[k] is None, f"{what} {k}: expected no gradient, got one"
            continue
        assert fused[k] is not None, f"{what} {k}: missing (None)"
        assert_lowp_ok(fused[k], torch_lowp[k], ref64[k], name=f"{what} {k}")



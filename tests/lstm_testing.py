"""Shared helpers for the fused_lstm test suite (imported by conftest.py, the test modules and
benchmarks/fuzz_differential.py through tests/differential.py): ``from tests.lstm_testing import
...``.
"""
from __future__ import annotations

import copy
import json
import math
import os
import random
import subprocess
import sys

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

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


def cuda_skip_reason() -> str:
    if not torch.cuda.is_available():
        return "no CUDA GPU available"
    try:
        info = fused_lstm.build_info()
    except Exception as e:  # pragma: no cover
        return f"fused_lstm.build_info() failed: {e!r}"
    return f"fused_lstm built without CUDA: {info.get('why')}"


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------
def cpu_has_avx512_bf16() -> bool:
    """Whether this CPU has AVX512_BF16 (vdpbf16ps), whatever ATen's capability is set to."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " avx512_bf16" in line for line in f)
    except OSError:
        return False


def json_from_fresh_process(code: str, without: tuple = (), timeout: int = 300):
    """Runs ``python -c code`` in a fresh process, with this process's environment less the
    variables in ``without`` (a measured choice is then made there, not pinned), and returns
    the JSON its last line of output printed."""
    env = {k: v for k, v in os.environ.items() if k not in without}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


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


_FUSED_TWIN = {nn.LSTM: fused_lstm.LSTM, nn.LSTMCell: fused_lstm.LSTMCell}


def make_pair(torch_class: type, *args, dtype: torch.dtype = torch.float64, seed: int = 0,
              **kwargs):
    """(torch.nn module, its fused twin) with the same weights: ``torch_class(*args, **kwargs)``
    (nn.LSTM or nn.LSTMCell) made after ``torch.manual_seed(seed)`` in float64 with its biases
    spread (spread_biases_), then cast to ``dtype``; the fused module is built from it
    (``from_torch``), so every dtype gets the same values, rounded."""
    torch.manual_seed(seed)
    ref = spread_biases_(torch_class(*args, dtype=torch.float64, **kwargs)).to(dtype)
    return ref, _FUSED_TWIN[torch_class].from_torch(ref)


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
    assert actual.shape == expected.shape, (
        f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    )
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
KEYS = ("out", "hy", "cy", "grad_input", "grad_hx", "grad_cx") + tuple(
    f"grad_{k}" for k in PARAM_KINDS
)


class Case:
    """Random problem in float64 (optionally rounded to a low-precision dtype's grid)."""

    def __init__(self, T, B, I, H, P=0, bias=True,  # noqa: E741  (I: input size)
                 bidirectional=False, lengths=None, seed=0, round_dtype=None):
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
        packed = pack_padded_sequence(
            xin, torch.tensor(case.lengths), enforce_sorted=enforce_sorted
        )
    go, gh, gc = (t.to(device=device, dtype=dtype) for t in (case.go, case.gh, case.gc))

    if impl == "nn":
        m = copy.deepcopy(case.m).to(device=device, dtype=dtype)
        assert m.bidirectional == reverse or not reverse
        hx = None
        if with_state:
            if m.bidirectional:
                hx = (
                    torch.stack(
                        [torch.zeros_like(h0), h0] if reverse else [h0, torch.zeros_like(h0)]
                    ),
                    torch.stack(
                        [torch.zeros_like(c0), c0] if reverse else [c0, torch.zeros_like(c0)]
                    ),
                )
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
        pin = {
            k: (w_view(v) if (w_view is not None and v is not None) else v)
            for k, v in params.items()
        }
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


def compare_results(actual: dict, expected: dict, dtype, what=""):
    """Two {name: tensor or None} results (outputs, states, gradients) of a module call: the
    same names in the same order, None (no gradient) in the same places, and the same dtypes
    and values (assert_close at dtype's tolerance)."""
    assert list(actual) == list(expected), f"{what}: keys {list(actual)} != {list(expected)}"
    for k, e in expected.items():
        if e is None:
            assert actual[k] is None, f"{what} {k}: expected no gradient"
            continue
        assert actual[k] is not None, f"{what} {k}: missing gradient"
        assert actual[k].dtype == e.dtype, f"{what} {k}: dtype {actual[k].dtype} != {e.dtype}"
        assert_close(actual[k], e, dtype=dtype, name=f"{what} {k}")


def compare_lowp(fused, torch_lowp, ref64, what=""):
    for k in KEYS:
        if ref64[k] is None:
            assert fused[k] is None, f"{what} {k}: expected no gradient, got one"
            continue
        assert fused[k] is not None, f"{what} {k}: missing (None)"
        assert_lowp_ok(fused[k], torch_lowp[k], ref64[k], name=f"{what} {k}")


# --------------------------------------------------------------------------------------------
# Module calls with inputs, states and upstream gradients (tests/test_module*.py)
# --------------------------------------------------------------------------------------------
def _state_shapes(cfg, B, H):
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


def module_inputs(cfg, dtype, T=4, B=3, with_state=True, unbatched=False, seed=1, *,
                  input_size, hidden_size):
    """(x, (h0, c0) or None, upstream gradients of output, h_n, c_n) for nn.LSTM(input_size,
    hidden_size, **cfg)."""
    I, H = input_size, hidden_size  # noqa: E741  (the tests' names for the sizes)
    torch.manual_seed(seed)
    bf = cfg.get("batch_first", False)
    if unbatched:
        x = torch.randn(T, I, dtype=dtype)
    else:
        x = torch.randn(*((B, T) if bf else (T, B)), I, dtype=dtype)
    hs, cs = _state_shapes(cfg, B, H)
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
    """Fresh leaf copies of x and hx that require grad."""
    x = x.clone().requires_grad_()
    hx = tuple(t.clone().requires_grad_() for t in hx) if hx is not None else None
    return x, hx


class Problem:
    """Random inputs, initial states and upstream gradients for one nn.LSTM configuration ``cfg``
    (constructor keywords) and input mode (batched, unbatched, packed-sorted, packed-unsorted)."""

    def __init__(self, cfg, mode, with_state, dtype, seed, *, input_size, hidden_size):
        I, H = input_size, hidden_size  # noqa: E741  (the tests' names for the sizes)
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


# Sizes and module configurations shared by test_module.py (numerics) and test_module_api.py
# (interface).
I, H, P = 3, 4, 2  # noqa: E741  (input, hidden and projection sizes, as in nn.LSTM's docs)
SIZES = dict(input_size=I, hidden_size=H)
NAMED_I, NAMED_H = 5, 7
NAMED_SIZES = dict(input_size=NAMED_I, hidden_size=NAMED_H)
NAMED_CONFIGS = {
    "L1": dict(num_layers=1),
    "L2-bi": dict(num_layers=2, bidirectional=True),
    "L3-bf-proj": dict(num_layers=3, batch_first=True, proj_size=3),
    "L2-bi-bf-proj": dict(num_layers=2, bidirectional=True, batch_first=True, proj_size=4),
    "L1-bi-nobias": dict(num_layers=1, bidirectional=True, bias=False),
    "L3-bi": dict(num_layers=3, bidirectional=True),
}

"""Randomized differential testing of ``fused_lstm.LSTM`` against ``torch.nn.LSTM``.

Shared by tests/test_differential.py (a fixed number of seeded configs in CI) and
benchmarks/fuzz_differential.py (thousands off CI, on CPU or CUDA). A config is drawn from a
seeded ``random.Random``, so every config is reproducible from its seed alone
(``draw_config(seed)``), and a failure message carries the seed and the whole config.

What one config covers: num_layers, bias, batch_first, bidirectional, proj_size, T, B, I, H,
the input form (batched, unbatched, packed sorted, packed unsorted with random lengths), hx given
or not, dtype, train/eval mode (dropout is 0, so the mode must not matter), an input that needs a
gradient or not, frozen parameters (requires_grad=False), and non-contiguous input/state views.
Both modules get the same weights (nn.LSTM's, via state_dict) and the same inputs and upstream
gradients; outputs, final states and the gradients of input, h_0, c_0 and every parameter are
compared: float64/float32 with lstm_testing.TOL, float16/bfloat16 by the low-precision rule
(fused's error against a float64 nn.LSTM at most twice nn.LSTM's own at that dtype).
"""
from __future__ import annotations

import copy
import dataclasses
import random
from typing import Optional, Sequence

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import fused_lstm
from tests.lstm_testing import assert_close, assert_lowp_ok, grads, round_module_, round_to

F64 = torch.float64
MODES = ("batched", "unbatched", "packed-sorted", "packed-unsorted")
# CI's mix: mostly float64 (tight tolerance, so small errors show), some float32 and bfloat16.
DEFAULT_DTYPES = ((F64, 7), (torch.float32, 2), (torch.bfloat16, 1))
DTYPE_NAMES = {"float64": F64, "float32": torch.float32, "bfloat16": torch.bfloat16,
               "float16": torch.float16}
LIMITS = dict(T=6, B=4, I=8, H=8, layers=3)
# float16/bfloat16 use the low-precision rule (lstm_testing.assert_lowp_ok: fused's relative
# error at most twice nn.LSTM's) with two allowances for chance, both measured on 10,000 random
# configs: fused's error is typically half of nn.LSTM's (median 0.46x; fp32 inside each layer)
# but its tail reaches 2.3x on a 128-element bf16 gradient where both are a few roundings off
# (8e-3 vs 3.5e-3), so the rule's floor is one unit of the dtype's precision (finfo.eps) instead
# of 1e-3; and tensors with fewer than POOL_BELOW elements are judged together as one vector,
# because a sum that cancels (a 4-element weight gradient at H = 1) is off by a rounding of its
# terms, not of its value (seen at 6x).
POOL_BELOW = 32


@dataclasses.dataclass(frozen=True)
class Config:
    seed: int
    layers: int
    bias: bool
    batch_first: bool
    bidirectional: bool
    proj_size: int
    T: int
    B: int
    I: int  # noqa: E741  (I: the input size, as in nn.LSTM)
    H: int
    mode: str
    lengths: Optional[tuple]   # packed modes: one length per sequence (max == T)
    with_state: bool
    dtype: torch.dtype
    train: bool
    input_grad: bool           # does the input need a gradient
    frozen: tuple              # indices (named_parameters order) with requires_grad=False
    strided: bool              # input and states passed as non-contiguous views

    def module_kwargs(self) -> dict:
        return dict(num_layers=self.layers, bias=self.bias, batch_first=self.batch_first,
                    bidirectional=self.bidirectional, proj_size=self.proj_size)

    def __str__(self) -> str:
        fields = dataclasses.asdict(self)
        fields["dtype"] = str(self.dtype).removeprefix("torch.")
        return "Config(" + ", ".join(f"{k}={v}" for k, v in fields.items()) + ")"


def _pick_dtype(rng: random.Random, dtypes) -> torch.dtype:
    choices, weights = zip(*dtypes)
    return rng.choices(choices, weights=weights)[0]


def draw_config(seed: int, dtypes: Sequence = DEFAULT_DTYPES) -> Config:
    """The config for `seed` (dtypes: (dtype, weight) pairs to draw the dtype from)."""
    rng = random.Random(seed)
    layers = rng.randint(1, LIMITS["layers"])
    bias, batch_first, bidirectional = (rng.random() < 0.5 for _ in range(3))
    H = rng.randint(1, LIMITS["H"])
    proj_size = rng.randint(1, H - 1) if H > 1 and rng.random() < 0.3 else 0
    I = rng.randint(1, LIMITS["I"])  # noqa: E741  (I: the input size, as in nn.LSTM)
    mode = rng.choice(MODES)
    T, B = rng.randint(1, LIMITS["T"]), rng.randint(1, LIMITS["B"])
    lengths = None
    if mode.startswith("packed"):
        lengths = [T] + [rng.randint(1, T) for _ in range(B - 1)]
        rng.shuffle(lengths)
        if mode == "packed-sorted":
            lengths.sort(reverse=True)
        lengths = tuple(lengths)
    elif mode == "unbatched":
        B = 1
    n_params = layers * (2 if bidirectional else 1) * (2 + 2 * bias + (proj_size > 0))
    frozen = tuple(i for i in range(n_params) if rng.random() < 0.15)
    return Config(seed=seed, layers=layers, bias=bias, batch_first=batch_first,
                  bidirectional=bidirectional, proj_size=proj_size, T=T, B=B, I=I, H=H, mode=mode,
                  lengths=lengths, with_state=rng.random() < 0.6, dtype=_pick_dtype(rng, dtypes),
                  train=rng.random() < 0.5, input_grad=rng.random() < 0.85, frozen=frozen,
                  strided=rng.random() < 0.25)


class Problem:
    """Float64 inputs, states and upstream gradients of one config (dtype-independent)."""

    def __init__(self, cfg: Config):
        gen = torch.Generator().manual_seed(cfg.seed)
        randn = lambda *shape: torch.randn(*shape, generator=gen, dtype=F64)  # noqa: E731
        D = 2 if cfg.bidirectional else 1
        L, Pe = cfg.layers * D, cfg.proj_size or cfg.H
        batch = () if cfg.mode == "unbatched" else (cfg.B,)
        steps_batch = (cfg.T, *batch) if not cfg.batch_first or not batch else (cfg.B, cfg.T)
        self.x = randn(*steps_batch, cfg.I)
        self.h0 = 0.5 * randn(L, *batch, Pe)
        self.c0 = 0.5 * randn(L, *batch, cfg.H)
        tokens = (sum(cfg.lengths),) if cfg.lengths is not None else steps_batch
        self.go = randn(*tokens, D * Pe)
        self.gh = randn(L, *batch, Pe)
        self.gc = randn(L, *batch, cfg.H)


def make_reference(cfg: Config) -> nn.LSTM:
    """nn.LSTM in float64 with the config's seeded weights (biases clearly non-zero)."""
    torch.manual_seed(cfg.seed)
    ref = nn.LSTM(cfg.I, cfg.H, dtype=F64, **cfg.module_kwargs())
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.startswith("bias"):
                p.uniform_(-0.5, 0.5)
    for index, p in enumerate(ref.parameters()):
        p.requires_grad_(index not in cfg.frozen)
    return ref


def _noncontiguous(t: torch.Tensor) -> torch.Tensor:
    # Same values, last dimension with stride 2 (differentiable, so grads reach the leaf `t`).
    return torch.stack((t, torch.zeros_like(t)), dim=-1).flatten(-2)[..., ::2]


def forward_backward(module: nn.Module, cfg: Config, prob: Problem, dtype: torch.dtype,
                     device) -> dict:
    """One forward and backward: {name: output, final state or gradient (None: no gradient)}."""
    cast = lambda t: t.to(device=device, dtype=dtype)  # noqa: E731
    x = cast(prob.x).requires_grad_(cfg.input_grad)
    hx = tuple(cast(t).requires_grad_() for t in (prob.h0, prob.c0)) if cfg.with_state else None
    xin, hin = x, hx
    if cfg.strided:
        xin = _noncontiguous(x)
        hin = tuple(_noncontiguous(t) for t in hx) if hx is not None else None
    if cfg.lengths is not None:
        xin = pack_padded_sequence(xin, torch.tensor(cfg.lengths), batch_first=cfg.batch_first,
                                   enforce_sorted=cfg.mode == "packed-sorted")
    module.train(cfg.train)
    out, (h_n, c_n) = module(xin, hin)
    result = {}
    if isinstance(out, PackedSequence):
        result["batch_sizes"] = out.batch_sizes
        result["unsorted_indices"] = out.unsorted_indices
        out = out.data
    names = [name for name, _ in module.named_parameters()]
    wrt = [x, *(hx if hx is not None else (None, None)), *module.parameters()]
    if any(t is not None and t.requires_grad for t in wrt):
        g = grads([out, h_n, c_n], wrt, [cast(prob.go), cast(prob.gh), cast(prob.gc)])
    else:
        g = [None] * len(wrt)
    result.update(output=out.detach(), h_n=h_n.detach(), c_n=c_n.detach(), grad_input=g[0],
                  grad_h0=g[1], grad_c0=g[2])
    result.update({"grad_" + name: grad for name, grad in zip(names, g[3:])})
    return {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in result.items()}


def _compare(fused: dict, ref: dict, check) -> list:
    """Messages for every entry where `check(name, fused, ref)` fails (empty: all agree)."""
    problems = []
    if list(fused) != list(ref):
        return [f"keys {list(fused)} != {list(ref)}"]
    for name, want in ref.items():
        got = fused[name]
        if want is None or got is None:
            if (want is None) != (got is None):
                problems.append(f"{name}: gradient {'present' if got is not None else 'missing'}"
                                f" (nn.LSTM: {'present' if want is not None else 'none'})")
            continue
        try:
            if got.dtype != want.dtype:
                raise AssertionError(f"{name}: dtype {got.dtype} != {want.dtype}")
            if name in ("batch_sizes", "unsorted_indices"):
                assert torch.equal(got, want), f"{name}: {got.tolist()} != {want.tolist()}"
            else:
                check(name, got, want)
        except AssertionError as e:
            problems.append(str(e).splitlines()[0] if str(e) else f"{name}: mismatch")
    return problems


def run_config(cfg: Config, device="cpu") -> list:
    """Runs one config on `device`; returns the mismatches found (empty list: all agree)."""
    prob = Problem(cfg)
    ref64 = make_reference(cfg).to(device)
    if cfg.dtype in (F64, torch.float32):
        ref = ref64.to(cfg.dtype)
        fused = fused_lstm.LSTM.from_torch(ref)
        expected = forward_backward(ref, cfg, prob, cfg.dtype, device)
        actual = forward_backward(fused, cfg, prob, cfg.dtype, device)
        return _compare(actual, expected,
                        lambda name, a, e: assert_close(a, e, dtype=cfg.dtype, name=name))
    # Low precision: inputs and weights on the dtype's grid, the float64 run as the truth.
    round_module_(ref64, cfg.dtype)
    for key in ("x", "h0", "c0", "go", "gh", "gc"):
        setattr(prob, key, round_to(getattr(prob, key), cfg.dtype))
    ref_low = copy.deepcopy(ref64).to(cfg.dtype)
    fused = fused_lstm.LSTM.from_torch(ref_low)
    truth = forward_backward(ref64, cfg, prob, F64, device)
    torch_low = forward_backward(ref_low, cfg, prob, cfg.dtype, device)
    actual = forward_backward(fused, cfg, prob, cfg.dtype, device)
    small = [k for k, v in truth.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
             and v.numel() < POOL_BELOW and actual[k] is not None and torch_low[k] is not None]
    floor = torch.finfo(cfg.dtype).eps
    problems = _compare(actual, torch_low, lambda name, a, e: (
        assert_lowp_ok(a, e, truth[name], name=name, floor=floor) if name not in small else None))
    if small:  # the rule on the small tensors taken together (see POOL_BELOW)
        pool = lambda result: torch.cat([result[k].double().flatten() for k in small])  # noqa: E731
        problems += _compare({"small tensors": pool(actual)}, {"small tensors": pool(torch_low)},
                             lambda name, a, e: assert_lowp_ok(a, e, pool(truth), name=name,
                                                               floor=floor))
    return problems

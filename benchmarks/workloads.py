"""The work being timed: the models (nn.LSTM, fused_lstm.LSTM, the reference loop) built with
the same weights, their inputs, one call per mode, and what is measured besides time (output
differences, memory, tokens)."""
from __future__ import annotations

import traceback
from typing import Callable

import torch
import torch.nn as nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import fused_lstm

from .suites import DTYPES, Config
from .timing import sync, time_interleaved


class ReferenceLSTM(nn.Module):
    """nn.LSTM's forward (layers, directions, proj_size, PackedSequence) built from
    fused_lstm.lstm_layer_reference, over the given nn.LSTM's own parameters (shared, not
    copied). Dropout is not applied (the benchmarks use none)."""

    def __init__(self, lstm: nn.LSTM):
        super().__init__()
        self.lstm = lstm

    def forward(self, input, hx):
        lstm = self.lstm
        directions = 2 if lstm.bidirectional else 1
        h0, c0 = hx
        batch_sizes = sorted_indices = unsorted_indices = None
        if isinstance(input, PackedSequence):
            data, batch_sizes, sorted_indices, unsorted_indices = input
            if sorted_indices is not None:
                h0, c0 = h0.index_select(1, sorted_indices), c0.index_select(1, sorted_indices)
        else:
            data = input
        h_n, c_n = [], []
        layer_input = data
        for layer in range(lstm.num_layers):
            outputs = []
            for direction in range(directions):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                w = {name: getattr(lstm, name + suffix, None)
                     for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")}
                index = layer * directions + direction
                out, h, c = fused_lstm.lstm_layer_reference(
                    layer_input, h0[index], c0[index], w["weight_ih"], w["weight_hh"],
                    w["bias_ih"], w["bias_hh"], w["weight_hr"] if lstm.proj_size else None,
                    batch_sizes=batch_sizes, reverse=direction == 1)
                outputs.append(out)
                h_n.append(h)
                c_n.append(c)
            layer_input = outputs[0] if directions == 1 else torch.cat(outputs, -1)
        h_n, c_n = torch.stack(h_n), torch.stack(c_n)
        if batch_sizes is None:
            return layer_input, (h_n, c_n)
        if unsorted_indices is not None:
            h_n, c_n = h_n.index_select(1, unsorted_indices), c_n.index_select(1, unsorted_indices)
        output = PackedSequence(layer_input, batch_sizes, sorted_indices, unsorted_indices)
        return output, (h_n, c_n)


def make_inputs(cfg: Config, device: torch.device, dtype: torch.dtype, gen: torch.Generator):
    """Returns (x, h0, c0): x a [T, B, I] tensor or a PackedSequence; all leaves."""
    D = 2 if cfg.bidirectional else 1
    P = cfg.proj_size or cfg.H
    x = torch.randn(cfg.T, cfg.B, cfg.I, generator=gen).to(device=device, dtype=dtype)
    h0 = (0.1 * torch.randn(cfg.layers * D, cfg.B, P, generator=gen)).to(device=device, dtype=dtype)
    c0 = (0.1 * torch.randn(cfg.layers * D, cfg.B, cfg.H, generator=gen)).to(device=device,
                                                                           dtype=dtype)
    if cfg.packed:
        lo, hi = cfg.packed
        lengths = torch.randint(lo, hi, (cfg.B,), generator=gen)
        lengths[0] = min(cfg.T, hi - 1)  # the padded tensor is exactly as long as the longest
        lengths = lengths.clamp(max=cfg.T)
        p = pack_padded_sequence(x, lengths, enforce_sorted=False)
        # A leaf data tensor, so backward does not go through the packing every time.
        x = PackedSequence(p.data.detach().contiguous(), p.batch_sizes, p.sorted_indices,
                           p.unsorted_indices)
    return x, h0, c0


def with_grad(x, h0, c0, requires_grad: bool):
    def leaf(t):
        return t.detach().requires_grad_(requires_grad)
    if isinstance(x, PackedSequence):
        x = PackedSequence(leaf(x.data), x.batch_sizes, x.sorted_indices, x.unsorted_indices)
    else:
        x = leaf(x)
    return x, leaf(h0), leaf(c0)


def out_data(out):
    return out.data if isinstance(out, PackedSequence) else out


def make_step(model: nn.Module, mode: str, x, h0, c0) -> Callable[[], object]:
    if mode == "inference":
        x, h0, c0 = with_grad(x, h0, c0, False)

        def step():
            with torch.no_grad():
                return model(x, (h0, c0))
        return step
    x, h0, c0 = with_grad(x, h0, c0, True)
    if mode == "forward":
        def step():
            return model(x, (h0, c0))
        return step
    assert mode == "fwdbwd"
    leaves = [out_data(x), h0, c0] + [p for p in model.parameters() if p.requires_grad]

    def step():
        out, (hn, cn) = model(x, (h0, c0))
        loss = out_data(out).sum() + hn.sum() + cn.sum()
        return torch.autograd.grad(loss, leaves)
    return step


def max_abs_diff(a: nn.Module, b: nn.Module, x, h0, c0) -> float:
    x, h0, c0 = with_grad(x, h0, c0, False)
    with torch.no_grad():
        oa, (ha, ca) = a(x, (h0, c0))
        ob, (hb, cb) = b(x, (h0, c0))
        return max((out_data(oa).float() - out_data(ob).float()).abs().max().item(),
                   (ha.float() - hb.float()).abs().max().item(),
                   (ca.float() - cb.float()).abs().max().item())


def storage_key(t: torch.Tensor):
    try:
        s = t.untyped_storage()
        return s.data_ptr(), s.nbytes()
    except Exception:  # tensors without a plain storage (opaque layouts): not countable
        return None


def saved_for_backward_bytes(model: nn.Module, x, h0, c0) -> int:
    """Bytes of the unique storages that one forward with autograd recording hands to autograd
    (saved_tensors_hooks), not counting the input, h0, c0 and the parameters."""
    x, h0, c0 = with_grad(x, h0, c0, True)
    exclude = {k[0] for k in map(storage_key, [out_data(x), h0, c0, *model.parameters()]) if k}
    seen: dict[int, int] = {}

    def pack(t):
        k = storage_key(t)
        if k is not None and k[0] not in exclude and k[0] != 0:
            seen[k[0]] = max(seen.get(k[0], 0), k[1])
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        result = model(x, (h0, c0))  # kept alive until counted: no storage is freed and reused
    total = sum(seen.values())
    del result
    return total


def cuda_peak_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Peak allocated memory during one call, above what was allocated before it."""
    sync()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    result = fn()
    sync()
    peak = torch.cuda.max_memory_allocated(device) - base
    del result
    return peak


def token_count(cfg: Config, x) -> int:
    return int(x.data.size(0)) if isinstance(x, PackedSequence) else cfg.T * cfg.B


def build_models(cfg: Config, device: torch.device, dtype: torch.dtype, wanted: set[str],
                 verbose: bool = False):
    """Returns ({model kind: module}, {model kind: error}); verbose: print tracebacks."""
    models: dict[str, nn.Module] = {}
    errors: dict[str, str] = {}
    torch.manual_seed(0)
    ref = nn.LSTM(cfg.I, cfg.H, num_layers=cfg.layers, bidirectional=cfg.bidirectional,
                  proj_size=cfg.proj_size).to(device=device, dtype=dtype)
    models["nn"] = ref
    if "reference" in wanted:
        models["reference"] = ReferenceLSTM(ref)
    if "fused" in wanted:
        try:
            fused = fused_lstm.LSTM(cfg.I, cfg.H, num_layers=cfg.layers,
                                    bidirectional=cfg.bidirectional, proj_size=cfg.proj_size)
            fused = fused.to(device=device, dtype=dtype)
            fused.load_state_dict(ref.state_dict())
            models["fused"] = fused
        except Exception as e:
            errors["fused"] = f"{type(e).__name__}: {e}"
            if verbose:
                traceback.print_exc()
    return models, errors


def time_nn_and_fused(cfg: Config, device: torch.device, mode: str, fused_env: tuple,
                      seconds: float) -> dict[str, float]:
    """Median ms of one `mode` call of nn.LSTM and of fused_lstm.LSTM (same weights, same inputs,
    interleaved timing), with fused_env (pairs of environment variable and value) set while
    fused runs. For the per-step probes (benchmarks/{gpu,cpu}_step_probe.py)."""
    dtype = DTYPES[cfg.dtype]
    models, errors = build_models(cfg, device, dtype, {"nn", "fused"})
    if errors:
        raise RuntimeError(errors)
    gen = torch.Generator().manual_seed(0)
    x, h0, c0 = make_inputs(cfg, device, dtype, gen)
    fns = {name: make_step(models[name], mode, x, h0, c0) for name in ("nn", "fused")}
    timings, errs = time_interleaved(fns, {"fused": fused_env}, cfg.name, torch.get_num_threads(),
                                     seconds)
    if errs:
        raise RuntimeError(errs)
    return {name: t.median_ms for name, t in timings.items()}

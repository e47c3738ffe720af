"""Memory soak: repeated forward + backward through fused_lstm.LSTM while watching the process's
resident memory (and, on CUDA, the caching allocator's allocated bytes).

Shared by tests/test_reliability.py (a few hundred iterations in CI) and
benchmarks/memory_soak.py (5,000 and more, off CI).
"""
from __future__ import annotations

import gc
import os

import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fused_lstm


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc/self/statm: resident pages)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cuda_allocated(device) -> int:
    return torch.cuda.memory_allocated(device) if torch.device(device).type == "cuda" else 0


def make_step(device="cpu", dtype=torch.float32, impl="fused"):
    """One iteration: a padded and a packed forward + backward of a 2-layer bidirectional LSTM
    with a projection (every kind of workspace and index buffer the ops allocate). impl "nn":
    the same with torch.nn.LSTM, as the baseline to judge a drift against."""
    torch.manual_seed(0)
    m = (fused_lstm.LSTM if impl == "fused" else torch.nn.LSTM)(
        16, 32, num_layers=2, bidirectional=True, proj_size=8, device=device, dtype=dtype)
    x = torch.randn(12, 4, 16, device=device, dtype=dtype, requires_grad=True)
    lengths = torch.tensor([12, 9, 9, 3])

    def step():
        out, (h, c) = m(x)
        packed_out, (hp, cp) = m(pack_padded_sequence(x, lengths, enforce_sorted=False))
        loss = out.sum() + h.sum() + c.sum() + packed_out.data.sum() + hp.sum() + cp.sum()
        loss.backward()
        m.zero_grad(set_to_none=True)
        x.grad = None

    return step


def soak(step, iterations: int, *, warmup: int = 50, every: int = 100, device="cpu"):
    """Runs `warmup` then `iterations` steps; returns [(iteration, rss, cuda_allocated)] sampled
    every `every` iterations from the end of the warm-up (iteration 0) on."""
    for _ in range(warmup):
        step()
    gc.collect()
    samples = [(0, rss_bytes(), cuda_allocated(device))]
    for i in range(1, iterations + 1):
        step()
        if i % every == 0 or i == iterations:
            if torch.device(device).type == "cuda":
                torch.cuda.synchronize(device)
            samples.append((i, rss_bytes(), cuda_allocated(device)))
    return samples

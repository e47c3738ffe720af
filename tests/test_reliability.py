"""Reliability beyond correctness of one call: memory stays flat over many iterations, nothing is
saved for backward when no gradient can be asked for, the workspace dies with the graph, several
Python threads can run the ops at once, and repeated runs are bit-identical.

(benchmarks/memory_soak.py runs the memory loop for 5,000+ iterations off CI; the non-default
CUDA stream tests are in tests/test_cuda.py.)
"""
import os
import threading
import weakref

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fused_lstm
from fused_lstm import _ops
from tests.lstm_testing import assert_close, grads
from tests.soak import make_step, soak

MIB = 2**20


# ------------------------------------------------------------------------------------------------
# Memory
# ------------------------------------------------------------------------------------------------
@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="AddressSanitizer's quarantine holds freed memory: RSS grows by design")
def test_rss_flat_over_repeated_forward_backward():
    """400 padded + packed forward/backward iterations after a warm-up: resident memory grows by
    less than 2 MiB (about 5 KB an iteration; a layer call's workspace here is 21-30 KB and an
    iteration makes 8 layer calls). Measured: +0.25 MiB for 400, and it levels off (+0.28 MiB
    after 5,000: benchmarks/memory_soak.py, README)."""
    samples = soak(make_step("cpu"), 400, warmup=50, every=100)
    drift = samples[-1][1] - samples[0][1]
    assert drift < 2 * MIB, f"RSS grew {drift / MIB:.2f} MiB over 400 iterations: {samples}"


@pytest.mark.cuda
def test_cuda_allocated_memory_flat():
    samples = soak(make_step("cuda"), 300, warmup=20, every=100, device="cuda")
    assert samples[-1][2] == samples[0][2], f"CUDA allocated memory moved: {samples}"


class ForwardCalls:
    """Wraps the forward op to record each call's save_workspace flag and weak references to the
    workspace it returned."""

    def __init__(self, monkeypatch):
        self.save_flags, self.workspaces = [], []
        real = _ops.lstm_layer_forward

        def forward(*args):
            result = real(*args)
            self.save_flags.append(args[-1])
            self.workspaces += [weakref.ref(result[3]), weakref.ref(result[4])]
            return result

        monkeypatch.setattr(_ops, "lstm_layer_forward", forward)

    def alive(self):
        return sum(ref() is not None for ref in self.workspaces)


def run_lstm(m, x, lengths=None):
    """m(x) (packed with `lengths` when given) -> output data, h_n, c_n."""
    inp = x if lengths is None else pack_padded_sequence(x, lengths, enforce_sorted=False)
    out, (h, c) = m(inp)
    return out.data if lengths is not None else out, h, c


LENGTHS = torch.tensor([5, 3, 5])  # for [5, 3, I] input


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("context", ["no_grad", "inference_mode", "nothing-requires-grad"])
def test_nothing_saved_without_grad(context, packed, monkeypatch):
    calls = ForwardCalls(monkeypatch)
    m = fused_lstm.LSTM(4, 6, num_layers=2, bidirectional=True)
    x = torch.randn(5, 3, 4, requires_grad=context != "nothing-requires-grad")
    if context == "nothing-requires-grad":
        m.requires_grad_(False)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        with {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode}.get(
                context, torch.enable_grad)():
            out, h, c = run_lstm(m, x, LENGTHS if packed else None)
    assert calls.save_flags == [False] * 4, calls.save_flags
    assert saved == [] and out.grad_fn is None and h.grad_fn is None
    assert calls.alive() == 0  # the (empty) workspaces were not kept either


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_workspace_freed_after_backward(packed, monkeypatch):
    """The gates/cells workspace lives exactly as long as the graph: alive after the forward,
    gone after backward while the outputs are still held."""
    calls = ForwardCalls(monkeypatch)
    m = fused_lstm.LSTM(4, 6, num_layers=2, bidirectional=True)
    out, h, c = run_lstm(m, torch.randn(5, 3, 4, requires_grad=True), LENGTHS if packed else None)
    assert calls.save_flags == [True] * 4 and calls.alive() == 8
    (out.sum() + h.sum() + c.sum()).backward()
    assert calls.alive() == 0, "workspace still referenced after backward"
    assert out.shape[-1] == 12  # outputs still usable


# ------------------------------------------------------------------------------------------------
# Threads
# ------------------------------------------------------------------------------------------------
def forward_backward(m, x, lengths=None):
    """Outputs and gradients (input and every parameter) of one forward + backward, for a fixed
    upstream gradient; autograd.grad, so threads sharing a module do not share .grad."""
    x = x.clone().requires_grad_()
    out, h, c = run_lstm(m, x, lengths)
    gen = torch.Generator().manual_seed(7)
    ups = [torch.randn(t.shape, dtype=t.dtype, generator=gen).to(t.device) for t in (out, h, c)]
    return [out.detach(), h.detach(), c.detach()] + grads([out, h, c], [x, *m.parameters()], ups)


def run_in_threads(jobs, repeats=5):
    """Runs every job(), `repeats` times each, in one thread per job, all at once."""
    results = [None] * len(jobs)
    errors = []
    start = threading.Barrier(len(jobs))

    def worker(k):
        try:
            start.wait()
            results[k] = [jobs[k]() for _ in range(repeats)]
        except BaseException as e:  # noqa: BLE001  (reported below, in the test's thread)
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, errors
    return results


@pytest.mark.parametrize("shared", [False, True], ids=["own-modules", "shared-module"])
def test_threads_match_single_thread(shared):
    """Four Python threads run forward + backward at once (padded and packed input), each five
    times, on their own modules or all on one module; every result equals the same computation
    run alone in the main thread."""
    torch.manual_seed(0)
    modules = [fused_lstm.LSTM(8, 16, num_layers=2, bidirectional=True, proj_size=4,
                               dtype=torch.float64) for _ in range(1 if shared else 4)]
    inputs = [torch.randn(5, 3, 8, dtype=torch.float64) for k in range(4)]
    jobs = [lambda k=k: forward_backward(modules[0 if shared else k], inputs[k],
                                         LENGTHS if k % 2 else None) for k in range(4)]
    expected = [job() for job in jobs]
    for k, runs in enumerate(run_in_threads(jobs)):
        for run in runs:
            for n, (got, want) in enumerate(zip(run, expected[k])):
                assert_close(got, want, name=f"thread {k} result {n}")


# ------------------------------------------------------------------------------------------------
# Determinism
# ------------------------------------------------------------------------------------------------
def assert_bit_identical(runs, what):
    for r, run in enumerate(runs[1:], 1):
        for n, (a, b) in enumerate(zip(run, runs[0])):
            assert torch.equal(a, b), f"{what}: run {r} result {n} differs from run 0"


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_repeated_runs_bit_identical_cpu(packed, threads):
    """float32, sizes where the gate pass and the GEMMs really split across threads (B = 128,
    H = 256): three runs give identical bits in every output and gradient."""
    torch.manual_seed(0)
    m = fused_lstm.LSTM(32, 256, bidirectional=True, proj_size=64)
    x = torch.randn(4, 128, 32)
    lengths = torch.randint(1, 5, (128,)) if packed else None
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        runs = [forward_backward(m, x, lengths) for _ in range(3)]
    finally:
        torch.set_num_threads(old)
    assert_bit_identical(runs, f"{threads} threads")


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_repeated_runs_bit_identical_cuda(dtype):
    torch.manual_seed(0)
    m = fused_lstm.LSTM(64, 256, num_layers=2, bidirectional=True, device="cuda", dtype=dtype)
    x = torch.randn(20, 32, 64, device="cuda", dtype=dtype)
    assert_bit_identical([forward_backward(m, x) for _ in range(3)], f"cuda {dtype}")

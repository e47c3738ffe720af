"""CUDA tests: skipped unless a GPU is present and fused_lstm was built with CUDA.

Low precision (fp16/bf16) and fp32 follow the error rule: fused-CUDA's error vs an fp64 CPU
reference is at most 2x nn.LSTM-CUDA's (cuDNN) own error, plus a small floor.
"""
import pytest
import torch
from torch import nn
from torch.autograd import gradcheck
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import fused_lstm
from tests.lstm_testing import (
    KEYS,
    Case,
    assert_close,
    assert_lowp_ok,
    compare,
    copy_weights_from,
    run,
)

pytestmark = pytest.mark.cuda

F64 = torch.float64
LOWP = [pytest.param(torch.float16, id="f16"), pytest.param(torch.bfloat16, id="bf16")]
FLOOR = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-3}

# name: Case kwargs (+ reverse / with_state / enforce_sorted for run)
SHAPES = {
    "H7": dict(T=5, B=3, I=6, H=7),
    "H33-proj": dict(T=5, B=3, I=6, H=33, P=5),
    "H257": dict(T=3, B=2, I=6, H=257),
    "T1B1-I300": dict(T=1, B=1, I=300, H=33),
    "H512-B64": dict(T=16, B=64, I=256, H=512),
    "H1024-B8-T32": dict(T=32, B=8, I=64, H=1024),
    "H33-rev": dict(T=5, B=3, I=6, H=33, reverse=True),
    "H33-packed": dict(I=6, H=33, lengths=[2, 5, 1, 4, 4], enforce_sorted=False),
    "H128-packed-rev-proj": dict(I=16, H=128, P=32, lengths=[9, 7, 7, 3, 1], reverse=True),
    "H64-nostate": dict(T=6, B=4, I=8, H=64, with_state=False),
    "H40-B24": dict(T=4, B=24, I=8, H=40),
}


def _split(cfg):
    cfg = dict(cfg)
    run_kw = dict(reverse=cfg.pop("reverse", False), with_state=cfg.pop("with_state", True),
                  enforce_sorted=cfg.pop("enforce_sorted", True))
    case_kw = dict(T=cfg.get("T"), B=cfg.get("B"), I=cfg["I"], H=cfg["H"], P=cfg.get("P", 0),
                   bidirectional=run_kw["reverse"], lengths=cfg.get("lengths"))
    return case_kw, run_kw


def _error_rule(dtype, shape):
    case_kw, run_kw = _split(SHAPES[shape])
    case = Case(round_dtype=dtype if dtype != torch.float32 else None, **case_kw)
    ref64 = run(case, "nn", F64, **run_kw)  # CPU float64
    torch_res = run(case, "nn", dtype, device="cuda", **run_kw)  # cuDNN
    fused_res = run(case, "fused", dtype, device="cuda", **run_kw)
    for k in KEYS:
        if ref64[k] is None:
            assert fused_res[k] is None, k
            continue
        assert fused_res[k] is not None, f"{k}: missing gradient"
        assert fused_res[k].device.type == "cuda", k
        assert_lowp_ok(fused_res[k], torch_res[k], ref64[k], name=f"{dtype} {shape} {k}",
                       floor=FLOOR[dtype])


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("dtype", LOWP)
def test_cuda_lowp_error_rule(dtype, shape):
    _error_rule(dtype, shape)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_cuda_fp32_error_rule(shape, no_tf32):
    _error_rule(torch.float32, shape)


@pytest.mark.parametrize(
    "shape", ["H7", "H33-proj", "H33-rev", "H33-packed", "H128-packed-rev-proj"]
)
def test_cuda_fp64_vs_cpu_nn(shape):
    case_kw, run_kw = _split(SHAPES[shape])
    case = Case(**case_kw)
    gpu = run(case, "fused", F64, device="cuda", **run_kw)
    for k, v in gpu.items():
        assert v is None or v.is_cuda, k
    gpu = {k: (v.cpu() if v is not None else None) for k, v in gpu.items()}
    compare(gpu, run(case, "nn", F64, **run_kw), F64, tol=1e-9,
            what=f"fused CUDA f64 {shape} vs nn.LSTM CPU:")


@pytest.mark.parametrize("dtype,tol", [(F64, 1e-10), (torch.float32, 1e-4)], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", ["H33-proj", "H33-packed", "H512-B64"])
def test_cuda_vs_cpu_fused(dtype, tol, shape, no_tf32):
    case_kw, run_kw = _split(SHAPES[shape])
    case = Case(**case_kw)
    gpu = run(case, "fused", dtype, device="cuda", **run_kw)
    cpu = run(case, "fused", dtype, **run_kw)
    for k in KEYS:
        if cpu[k] is None:
            assert gpu[k] is None, k
        else:
            assert_close(gpu[k].cpu(), cpu[k], tol=tol, name=f"{shape} {k}")


@pytest.mark.parametrize("name", ["plain", "proj", "reverse", "packed-reverse"])
def test_cuda_gradcheck(name):
    torch.manual_seed(0)
    T, B, I, H = 3, 2, 3, 4  # noqa: E741  (I: the input size, as in nn.LSTM)
    P = 2 if name == "proj" else 0
    Pe = P or H
    reverse = "reverse" in name
    bs = torch.tensor([2, 2, 1]) if "packed" in name else None
    dev = "cuda"
    x = (
        torch.randn(5, I, dtype=F64, device=dev)
        if bs is not None
        else torch.randn(T, B, I, dtype=F64, device=dev)
    )
    args = [
        x,
        0.5 * torch.randn(B, Pe, dtype=F64, device=dev),
        0.5 * torch.randn(B, H, dtype=F64, device=dev),
        0.5 * torch.randn(4 * H, I, dtype=F64, device=dev),
        0.5 * torch.randn(4 * H, Pe, dtype=F64, device=dev),
        0.5 * torch.randn(4 * H, dtype=F64, device=dev),
        0.5 * torch.randn(4 * H, dtype=F64, device=dev),
    ]
    if P:
        args.append(0.5 * torch.randn(P, H, dtype=F64, device=dev))
    for a in args:
        a.requires_grad_()

    def fn(x, hx, cx, wih, whh, bih, bhh, whr=None):
        return fused_lstm.lstm_layer(x, hx, cx, wih, whh, bias_ih=bih, bias_hh=bhh, weight_hr=whr,
                                     batch_sizes=bs, reverse=reverse)

    assert gradcheck(fn, tuple(args), eps=1e-6, atol=1e-7, rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# Module on CUDA
# ------------------------------------------------------------------------------------------------
MODULE_CFGS = {
    "L2-bi": dict(num_layers=2, bidirectional=True),
    "L3-proj-bf": dict(num_layers=3, proj_size=8, batch_first=True),
    "L2-bi-proj": dict(num_layers=2, bidirectional=True, proj_size=8),
}


def _module_run(m, x, hx, packed_lengths=None, enforce_sorted=True, seed=3):
    x = x.clone().requires_grad_()
    hx = tuple(t.clone().requires_grad_() for t in hx) if hx is not None else None
    inp = x
    if packed_lengths is not None:
        inp = pack_padded_sequence(x, packed_lengths, batch_first=m.batch_first,
                                   enforce_sorted=enforce_sorted)
    out, (hn, cn) = m(inp, hx)
    if packed_lengths is not None:
        assert isinstance(out, PackedSequence)
        out = out.data
    g = torch.Generator().manual_seed(seed)
    ups = [torch.randn(t.shape, generator=g, dtype=F64).to(t) for t in (out, hn, cn)]
    wrt = [x] + (list(hx) if hx is not None else []) + list(m.parameters())
    gr = torch.autograd.grad([out, hn, cn], wrt, ups)
    return [out, hn, cn] + list(gr)


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("name", list(MODULE_CFGS))
def test_cuda_module_vs_cpu_nn_fp64(name, packed):
    cfg = MODULE_CFGS[name]
    I, H, T, B = 12, 24, 6, 4  # noqa: E741  (I: the input size, as in nn.LSTM)
    torch.manual_seed(0)
    ref = nn.LSTM(I, H, dtype=F64, **cfg)
    fused = fused_lstm.LSTM.from_torch(ref).cuda()
    assert all(p.is_cuda for p in fused.parameters())
    bf = cfg.get("batch_first", False)
    x = torch.randn(*((B, T) if bf else (T, B)), I, dtype=F64)
    L = cfg["num_layers"] * (2 if cfg.get("bidirectional") else 1)
    hx = (
        torch.randn(L, B, cfg.get("proj_size", 0) or H, dtype=F64),
        torch.randn(L, B, H, dtype=F64),
    )
    lengths = torch.tensor([6, 2, 5, 3]) if packed else None
    r = _module_run(ref, x, hx, lengths, enforce_sorted=False)
    f = _module_run(fused, x.cuda(), tuple(t.cuda() for t in hx), lengths, enforce_sorted=False)
    assert len(r) == len(f)
    for i, (a, b) in enumerate(zip(f, r)):
        assert a.is_cuda, i
        assert_close(a.cpu(), b, tol=1e-9, name=f"{name} result #{i}")


@pytest.mark.parametrize("name", list(MODULE_CFGS))
def test_cuda_module_vs_cudnn_fp32(name, no_tf32):
    cfg = MODULE_CFGS[name]
    I, H, T, B = 32, 64, 10, 8  # noqa: E741  (I: the input size, as in nn.LSTM)
    torch.manual_seed(0)
    ref = nn.LSTM(I, H, **cfg).cuda()
    fused = fused_lstm.LSTM.from_torch(ref)
    bf = cfg.get("batch_first", False)
    x = torch.randn(*((B, T) if bf else (T, B)), I, device="cuda")
    r = _module_run(ref, x, None)
    f = _module_run(fused, x, None)
    for i, (a, b) in enumerate(zip(f, r)):
        assert_close(a, b, tol=1e-4, name=f"{name} result #{i}")


@pytest.mark.parametrize("dtype", LOWP)
def test_cuda_module_lowp_error_rule(dtype):
    I, H, T, B = 32, 64, 10, 8  # noqa: E741  (I: the input size, as in nn.LSTM)
    torch.manual_seed(0)
    ref64 = nn.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=16, dtype=F64)
    with torch.no_grad():
        for p in ref64.parameters():
            p.copy_(p.to(dtype).to(F64))
    x = torch.randn(T, B, I, dtype=F64).to(dtype).to(F64)
    ref_lp = nn.LSTM(
        I, H, num_layers=2, bidirectional=True, proj_size=16, device="cuda", dtype=dtype
    )
    ref_lp.load_state_dict(ref64.state_dict())
    fused = fused_lstm.LSTM(
        I, H, num_layers=2, bidirectional=True, proj_size=16, device="cuda", dtype=dtype
    )
    fused.load_state_dict(ref64.state_dict())
    r64 = _module_run(ref64, x, None)
    rlp = _module_run(ref_lp, x.to("cuda", dtype), None)
    flp = _module_run(fused, x.to("cuda", dtype), None)
    for i, (a, b, c) in enumerate(zip(flp, rlp, r64)):
        assert_lowp_ok(a, b, c, name=f"module {dtype} result #{i}")


def test_cuda_module_dropout_reproducible():
    fused = fused_lstm.LSTM(8, 16, num_layers=3, dropout=0.5, device="cuda")
    x = torch.randn(5, 3, 8, device="cuda")
    torch.manual_seed(11)
    a = fused(x)[0]
    torch.manual_seed(11)
    b = fused(x)[0]
    assert torch.equal(a, b)
    assert not torch.allclose(a, fused.eval()(x)[0])


# ------------------------------------------------------------------------------------------------
# Streams, devices, errors, opcheck
# ------------------------------------------------------------------------------------------------
def test_cuda_nondefault_stream():
    """The kernels run on the current stream: work queued before them on a side stream (here a
    long sleep, then the copy that fills the input) must be complete when they read the input."""
    torch.manual_seed(0)
    T, B, I, H = 8, 4, 16, 32  # noqa: E741  (I: the input size, as in nn.LSTM)
    m = nn.LSTM(I, H, dtype=torch.float32)
    w = copy_weights_from(m, device="cuda", requires_grad=False)
    x_host = torch.randn(T, B, I)
    ref, hy_ref, cy_ref = fused_lstm.lstm_layer(
        x_host.cuda(),
        None,
        None,
        w["weight_ih"],
        w["weight_hh"],
        bias_ih=w["bias_ih"],
        bias_hh=w["bias_hh"],
    )
    torch.cuda.synchronize()
    x = torch.zeros(T, B, I, device="cuda")
    src = x_host.cuda()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        torch.cuda._sleep(200_000_000)  # ~0.1 s of GPU time on the side stream
        x.copy_(src)
        out, hy, cy = fused_lstm.lstm_layer(x, None, None, w["weight_ih"], w["weight_hh"],
                                            bias_ih=w["bias_ih"], bias_hh=w["bias_hh"])
        out2 = out.clone()
        hy2 = hy.clone()
    torch.cuda.synchronize()
    assert_close(
        out2, ref, tol=1e-5, name="output on a side stream (kernel not on the current stream?)"
    )
    assert_close(hy2, hy_ref, tol=1e-5, name="hy on a side stream")


def test_cuda_nondefault_stream_backward():
    torch.manual_seed(0)
    case = Case(6, 4, 16, 32, 0)
    base = run(case, "fused", torch.float32, device="cuda")
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        torch.cuda._sleep(100_000_000)
        side = run(case, "fused", torch.float32, device="cuda")
    torch.cuda.synchronize()
    for k in KEYS:
        if base[k] is not None:
            assert_close(side[k], base[k], tol=1e-5, name=f"{k} on a side stream")


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_cuda_second_device():
    case = Case(5, 3, 6, 33, 5)
    assert torch.cuda.current_device() == 0
    r1 = run(case, "fused", F64, device="cuda:1")
    cpu = run(case, "nn", F64)
    for k in KEYS:
        if cpu[k] is not None:
            assert r1[k].device == torch.device("cuda:1"), k
            assert_close(r1[k].cpu(), cpu[k], tol=1e-9, name=k)
    m = fused_lstm.LSTM(6, 16, num_layers=2, bidirectional=True, device="cuda:1")
    out, (h, c) = m(torch.randn(4, 2, 6, device="cuda:1"))
    assert out.device == h.device == c.device == torch.device("cuda:1")


def test_cuda_device_mismatch_errors():
    T, B, I, H = 3, 2, 4, 5  # noqa: E741  (I: the input size, as in nn.LSTM)
    x = torch.randn(T, B, I, device="cuda")
    hx, cx = torch.randn(B, H, device="cuda"), torch.randn(B, H, device="cuda")
    wih, whh = torch.randn(4 * H, I, device="cuda"), torch.randn(4 * H, H, device="cuda")
    with pytest.raises(RuntimeError, match="weight_ih|device"):
        fused_lstm.lstm_layer(x, hx, cx, wih.cpu(), whh)
    with pytest.raises(RuntimeError, match="hx|device"):
        fused_lstm.lstm_layer(x, hx.cpu(), cx, wih, whh)
    with pytest.raises(RuntimeError, match="bias|device"):
        fused_lstm.lstm_layer(
            x, hx, cx, wih, whh, bias_ih=torch.randn(4 * H), bias_hh=torch.randn(4 * H)
        )
    m = fused_lstm.LSTM(I, H)
    with pytest.raises(RuntimeError, match="weight_ih|device"):
        m(x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, F64],
                         ids=["f32", "f16", "bf16", "f64"])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_cuda_opcheck(dtype, packed):
    T, B, I, H = 3, 2, 3, 4  # noqa: E741  (I: the input size, as in nn.LSTM)
    g = torch.Generator().manual_seed(0)

    def r(*s):
        return (0.5 * torch.randn(*s, generator=g, dtype=F64)).to("cuda", dtype)

    bs = torch.tensor([2, 2, 1]) if packed else None
    x = r(5, I) if packed else r(T, B, I)
    fargs = (
        x,
        r(B, H),
        r(B, H),
        r(4 * H, I),
        r(4 * H, H),
        r(4 * H),
        r(4 * H),
        None,
        bs,
        packed,
        True,
    )
    torch.library.opcheck(torch.ops.fused_lstm.lstm_layer_forward.default, fargs)
    out, hy, cy, gates, cells = torch.ops.fused_lstm.lstm_layer_forward(*fargs)
    assert gates.device.type == "cuda" and gates.dtype == (F64 if dtype == F64 else torch.float32)
    bargs = (
        r(*out.shape),
        r(*hy.shape),
        r(*cy.shape),
        x,
        fargs[1],
        fargs[2],
        fargs[3],
        fargs[4],
        None,
        bs,
        packed,
        True,
        out,
        gates,
        cells,
        [True, True],
    )
    torch.library.opcheck(torch.ops.fused_lstm.lstm_layer_backward.default, bargs)


def test_cuda_torch_compile_reduce_overhead():
    """mode="reduce-overhead" (CUDA graphs): the ops are tagged cudagraph_unsafe, so inductor
    leaves their graph out of CUDA graphs and the compiled module still matches eager, in
    forward and backward, over repeated calls (when graphs would be recorded and replayed)."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    fused = fused_lstm.LSTM(8, 16, num_layers=2, bidirectional=True, device="cuda")
    compiled = torch.compile(fused, mode="reduce-overhead", fullgraph=True)
    for _ in range(3):
        x = torch.randn(5, 3, 8, device="cuda", requires_grad=True)
        out, (h, c) = compiled(x)
        g, = torch.autograd.grad(out.sum() + h.sum() + c.sum(), x)
        x_ref = x.detach().requires_grad_()
        out_ref, (h_ref, c_ref) = fused(x_ref)
        g_ref, = torch.autograd.grad(out_ref.sum() + h_ref.sum() + c_ref.sum(), x_ref)
        for got, want in ((out, out_ref), (h, h_ref), (c, c_ref), (g, g_ref)):
            assert_close(got, want, tol=1e-5, name="reduce-overhead")


def test_cuda_graph_capture_is_refused_clearly():
    fused = fused_lstm.LSTM(8, 16, device="cuda")
    x = torch.randn(5, 3, 8, device="cuda")
    fused(x)  # warm-up outside capture
    graph = torch.cuda.CUDAGraph()
    with pytest.raises(RuntimeError, match="CUDA graph capture is not supported"):
        with torch.cuda.graph(graph):
            fused(x)


def test_cuda_build_info():
    info = fused_lstm.build_info()
    assert info["cuda_built"] is True
    assert isinstance(info["cuda_version"], str) and info["cuda_version"]


# ------------------------------------------------------------------------------------------------
# Recurrence kernels: persistent (one cooperative launch), per-step, and the generic backward
# loop, each forced in turn. Batches of at most 8 take the small-batch split-K SIMT forward tile
# (fp32/fp64), larger ones the 16 x 16 tile (H512-B64, H40-B24).
# ------------------------------------------------------------------------------------------------
ALGO_SHAPES = ["H7", "H257", "H512-B64", "H1024-B8-T32", "H33-rev", "H33-packed", "H64-nostate",
               "H40-B24"]


@pytest.mark.parametrize("shape", ALGO_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16],
                         ids=["f32", "f16", "bf16"])
@pytest.mark.parametrize("algo", ["step", "persistent", "generic"])
def test_cuda_algorithm_error_rule(algo, dtype, shape, monkeypatch, no_tf32):
    monkeypatch.setenv("FUSED_LSTM_CUDA_ALGO", algo)
    _error_rule(dtype, shape)


@pytest.mark.parametrize("shape", ["H257", "H512-B64", "H33-packed", "H128-packed-rev-proj"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("algo", ["step", "persistent"])
def test_cuda_narrow_k_chunks_error_rule(algo, dtype, shape, monkeypatch, no_tf32):
    # K staged in several chunks (and, persistent, W_hh re-read every step) instead of one.
    monkeypatch.setenv("FUSED_LSTM_CUDA_ALGO", algo)
    monkeypatch.setenv("FUSED_LSTM_CUDA_K_CHUNK", "64")
    _error_rule(dtype, shape)


# float32 on tensor cores (Note [Tensor-core precision]): 3xTF32 must keep fp32-level error (the
# rule against cuDNN with TF32 off); TF32 is held to cuDNN's own TF32 error (TF32 on both sides).
FP32_SHAPES = ["H257", "H512-B64", "H1024-B8-T32", "H33-packed", "H40-B24"]


# FUSED_LSTM_CUDA_FP32=auto takes tensor cores only once that variant is verified or allowed
# (Note [Verified CUDA kernel variants]), so "auto" runs here with FUSED_LSTM_CUDA_UNVERIFIED set.
@pytest.mark.parametrize("shape", FP32_SHAPES)
@pytest.mark.parametrize("mode", ["3xtf32", "simt", "auto"])
@pytest.mark.parametrize("algo", ["auto", "step"])
def test_cuda_fp32_modes_error_rule(algo, mode, shape, monkeypatch, no_tf32):
    monkeypatch.setenv("FUSED_LSTM_CUDA_ALGO", algo)
    monkeypatch.setenv("FUSED_LSTM_CUDA_FP32", mode)
    monkeypatch.setenv("FUSED_LSTM_CUDA_UNVERIFIED", "float32_tensor_cores")
    _error_rule(torch.float32, shape)


@pytest.mark.parametrize("shape", FP32_SHAPES)
@pytest.mark.parametrize("mode", ["auto", "tf32"])
def test_cuda_fp32_tf32_error_rule(mode, shape, monkeypatch, with_tf32):
    monkeypatch.setenv("FUSED_LSTM_CUDA_FP32", mode)
    monkeypatch.setenv("FUSED_LSTM_CUDA_UNVERIFIED", "float32_tensor_cores")
    _error_rule(torch.float32, shape)


# The 8-warp tensor-core forward tile (opt-in until a GPU check passes), persistent and per step.
@pytest.mark.parametrize("shape", ALGO_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("algo", ["auto", "step"])
def test_cuda_forward_mma_8warp_error_rule(algo, dtype, shape, monkeypatch):
    monkeypatch.setenv("FUSED_LSTM_CUDA_ALGO", algo)
    monkeypatch.setenv("FUSED_LSTM_CUDA_UNVERIFIED", "forward_mma_8warp")
    _error_rule(dtype, shape)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("batch", [1, 64])
def test_cuda_default_selection_on_this_gpu_is_verified(dtype, batch, monkeypatch):
    # What a default call on this GPU runs: only variants that passed the GPU check.
    monkeypatch.delenv("FUSED_LSTM_CUDA_UNVERIFIED", raising=False)
    verified = {v["name"] for v in fused_lstm.cuda_kernel_variants() if v["verified"]}
    sm_major = torch.cuda.get_device_capability()[0]
    selection = fused_lstm._C.cuda_kernel_selection(dtype, sm_major, batch, False, True)
    assert selection["refused"] == ""
    assert set(selection["forward"] + selection["backward"]) <= verified


@pytest.mark.parametrize("algo", ["step", "persistent"])
def test_cuda_algorithm_fp64_packed_reverse(algo, monkeypatch):
    monkeypatch.setenv("FUSED_LSTM_CUDA_ALGO", algo)
    case_kw, run_kw = _split(dict(I=6, H=40, lengths=[7, 7, 5, 2, 1], reverse=True))
    case = Case(**case_kw)
    gpu = {k: (v.cpu() if v is not None else None)
           for k, v in run(case, "fused", F64, device="cuda", **run_kw).items()}
    compare(gpu, run(case, "nn", F64, **run_kw), F64, tol=1e-9, what=f"{algo} f64 packed reverse:")


def test_cuda_persistent_falls_back_when_grid_too_large(no_tf32):
    # fp32 SIMT blocks are 16 x 16 cells; B=1024, H=2048 needs 8192 co-resident blocks, more
    # than any GPU holds, so the persistent path must fall back to per-step kernels correctly.
    torch.manual_seed(0)
    T, B, I, H = 2, 1024, 8, 2048  # noqa: E741  (I: the input size, as in nn.LSTM)
    x = torch.randn(T, B, I)
    w = [torch.randn(4 * H, I) * 0.05, torch.randn(4 * H, H) * 0.02, torch.randn(4 * H) * 0.1,
         torch.randn(4 * H) * 0.1]
    out_cpu, h_cpu, c_cpu = fused_lstm.lstm_layer(x, None, None, *w)
    out, h, c = fused_lstm.lstm_layer(x.cuda(), None, None, *[t.cuda() for t in w])
    for got, want in ((out, out_cpu), (h, h_cpu), (c, c_cpu)):
        assert_close(got.cpu(), want, tol=1e-4, name="fallback")


@pytest.mark.parametrize("name,value", [("FUSED_LSTM_CUDA_ALGO", "fastest"),
                                        ("FUSED_LSTM_CUDA_K_CHUNK", "-3"),
                                        ("FUSED_LSTM_CUDA_FP32", "fp16"),
                                        ("FUSED_LSTM_CUDA_UNVERIFIED", "fastest_tile")])
def test_cuda_tuning_env_is_validated(name, value, monkeypatch):
    monkeypatch.setenv(name, value)
    x = torch.randn(2, 1, 3, device="cuda")
    w = [torch.randn(8, 3, device="cuda"), torch.randn(8, 2, device="cuda")]
    with pytest.raises(ValueError, match=name):
        fused_lstm.lstm_layer(x, None, None, *w)

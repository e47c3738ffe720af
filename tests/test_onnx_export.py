"""Export: torch.export of fused_lstm.LSTM runs and matches eager; ONNX export (fused_lstm.onnx)
produces ONNX LSTM nodes that onnxruntime runs with eager's outputs and states."""
import pytest
import torch

import fused_lstm

ONNX_CASES = {  # name: (module kwargs, with initial state)
    "2-layer-bidirectional-batch-first": (dict(num_layers=2, bidirectional=True, batch_first=True), False),
    "no-bias-with-state": (dict(bias=False), True),
}


def make(kwargs, with_state):
    torch.manual_seed(0)
    model = fused_lstm.LSTM(4, 6, **kwargs).eval()
    D = 2 if kwargs.get("bidirectional") else 1
    L = kwargs.get("num_layers", 1)
    T, B = 3, 5
    x = torch.randn(B, T, 4) if kwargs.get("batch_first") else torch.randn(T, B, 4)
    if not with_state:
        return model, (x,)
    return model, (x, (torch.randn(L * D, B, 6), torch.randn(L * D, B, 6)))


@pytest.mark.parametrize("name", list(ONNX_CASES))
def test_torch_export_runs_and_matches_eager(name):
    model, args = make(*ONNX_CASES[name])
    with torch.no_grad():
        program = torch.export.export(model, args)
        got, want = program.module()(*args), model(*args)
    torch.testing.assert_close(got[0], want[0])
    torch.testing.assert_close(got[1][0], want[1][0])
    torch.testing.assert_close(got[1][1], want[1][1])


@pytest.mark.parametrize("name", list(ONNX_CASES))
def test_onnx_export_runs_in_onnxruntime(name, tmp_path):
    pytest.importorskip("onnxscript")
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model, args = make(*ONNX_CASES[name])
    path = tmp_path / "model.onnx"
    fused_lstm.onnx.export(model, args).save(str(path))
    graph = onnx.load(str(path)).graph
    assert sum(node.op_type == "LSTM" for node in graph.node) == (
        model.num_layers * (2 if model.bidirectional else 1)), [n.op_type for n in graph.node]
    session = ort.InferenceSession(str(path))
    flat = [args[0]] + (list(args[1]) if len(args) > 1 else [])
    feeds = {i.name: t.numpy() for i, t in zip(session.get_inputs(), flat)}
    out, h_n, c_n = session.run(None, feeds)
    with torch.no_grad():
        want_out, (want_h, want_c) = model(*args)
    for got, want in ((out, want_out), (h_n, want_h), (c_n, want_c)):
        torch.testing.assert_close(torch.from_numpy(got), want, rtol=1e-5, atol=1e-5)


def test_onnx_export_of_proj_size_says_why(tmp_path):
    pytest.importorskip("onnxscript")
    model = fused_lstm.LSTM(4, 6, proj_size=3).eval()
    with pytest.raises(Exception, match="proj_size is not supported"):
        fused_lstm.onnx.export(model, (torch.randn(3, 2, 4),))

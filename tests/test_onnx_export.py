"""Export: torch.export of fused_lstm.LSTM runs and matches eager; ONNX export (fused_lstm.onnx)
produces ONNX LSTM nodes that onnxruntime runs with eager's outputs and states."""
import pytest
import torch

import fused_lstm

ONNX_CASES = {  # name: (module kwargs, with initial state)
    "2-layer-bidirectional-batch-first": (
        dict(num_layers=2, bidirectional=True, batch_first=True),
        False,
    ),
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


@pytest.mark.parametrize("export", ["fused_lstm.onnx.export", "torch.onnx.export"])
def test_onnx_export_of_proj_size_says_why(export):
    """(A plain torch.onnx.export of nn.LSTM with proj_size writes an ONNX LSTM without the
    projection, which onnxruntime then refuses to run.)"""
    pytest.importorskip("onnxscript")
    model = fused_lstm.LSTM(4, 6, proj_size=3).eval()
    run = fused_lstm.onnx.export if export == "fused_lstm.onnx.export" else torch.onnx.export
    with pytest.raises(Exception, match="proj_size is not supported"):
        run(model, (torch.randn(3, 2, 4),))


def run_in_onnxruntime(path, args):
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path))
    flat = [args[0]] + (list(args[1]) if len(args) > 1 else [])
    feeds = {i.name: t.numpy() for i, t in zip(session.get_inputs(), flat)}
    return [torch.from_numpy(o) for o in session.run(None, feeds)]


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
@pytest.mark.parametrize("name", list(ONNX_CASES))
def test_plain_torch_onnx_export_runs_like_nn_lstm(name, dynamo, tmp_path):
    """torch.onnx.export itself (dynamo=True is its default on this torch), not
    fused_lstm.onnx.export: the module runs aten::lstm while exporting, an ONNX LSTM node."""
    pytest.importorskip("onnxscript")
    onnx = pytest.importorskip("onnx")
    model, args = make(*ONNX_CASES[name])
    ref = model.to_torch()
    path = tmp_path / "model.onnx"
    with torch.no_grad():
        if dynamo:
            torch.onnx.export(model, args).save(str(path))
        else:
            torch.onnx.export(model, args, str(path), dynamo=False)
    ops = [node.op_type for node in onnx.load(str(path)).graph.node]
    assert "LSTM" in ops and not any("lstm_layer" in op for op in ops), ops
    with torch.no_grad():
        want_out, (want_h, want_c) = ref(*args)
    for got, want in zip(run_in_onnxruntime(path, args), (want_out, want_h, want_c)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_plain_torch_onnx_export_of_converted_model_with_cell(tmp_path):
    """A model of nn modules after fused_lstm.convert, with an LSTMCell too, exports with the
    default torch.onnx.export and runs in onnxruntime like the nn model."""
    pytest.importorskip("onnxscript")

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(4, 6)
            self.cell = torch.nn.LSTMCell(6, 5)

        def forward(self, x):
            out, _ = self.lstm(x)
            return self.cell(out[-1])

    torch.manual_seed(0)
    ref = Model().eval()
    model = fused_lstm.convert(ref)
    assert isinstance(model.lstm, fused_lstm.LSTM) and isinstance(model.cell, fused_lstm.LSTMCell)
    x = torch.randn(3, 2, 4)
    path = tmp_path / "model.onnx"
    with torch.no_grad():
        torch.onnx.export(model, (x,)).save(str(path))
        want = ref(x)
    got = run_in_onnxruntime(path, (x,))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)

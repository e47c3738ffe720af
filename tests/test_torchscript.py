"""TorchScript: torch.jit.trace of the fused modules records fused_lstm::lstm_layer_forward calls
(not the Python autograd.Function), so the trace check passes and torch.jit.save / load work as
for nn.LSTM / nn.LSTMCell; torch.jit.script raises an error naming what to use instead."""
import pytest
import torch
from torch import nn

import fused_lstm


def trace_save_load(model, args, path):
    traced = torch.jit.trace(model, args)  # check_trace on: the re-trace must give one graph
    torch.jit.save(traced, str(path))
    return traced, torch.jit.load(str(path))


def test_trace_with_grad_warns_that_the_trace_is_for_inference():
    model = fused_lstm.LSTM(4, 6)
    with pytest.warns(UserWarning, match="the traced module is for inference"):
        torch.jit.trace(model, (torch.randn(3, 2, 4),))


@pytest.mark.parametrize("kind", ["lstm", "cell"])
def test_trace_save_load_matches_nn(kind, tmp_path):
    torch.manual_seed(0)
    if kind == "lstm":
        ref = nn.LSTM(4, 6, num_layers=2, bidirectional=True, batch_first=True).eval()
        args = (torch.randn(2, 3, 4), (torch.randn(4, 2, 6), torch.randn(4, 2, 6)))
    else:
        ref = nn.LSTMCell(4, 6).eval()
        args = (torch.randn(2, 4), (torch.randn(2, 6), torch.randn(2, 6)))
    fused = fused_lstm.convert(ref)
    _, ref_loaded = trace_save_load(ref, args, tmp_path / "ref.pt")
    with torch.no_grad():  # a trace for inference, which is what the traced op can do
        _, loaded = trace_save_load(fused, args, tmp_path / "fused.pt")
    assert "fused_lstm::lstm_layer_forward" in str(loaded.inlined_graph)
    # new values too: the loaded graph computes, it did not freeze the traced outputs
    torch.manual_seed(1)
    other = tuple(torch.randn_like(a) if isinstance(a, torch.Tensor) else
                  tuple(torch.randn_like(t) for t in a) for a in args)
    for got, want in ((loaded(*args), ref_loaded(*args)), (loaded(*other), ref(*other))):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("make", [lambda: fused_lstm.LSTM(4, 6), lambda: fused_lstm.LSTMCell(4, 6),
                                  lambda: nn.Sequential(fused_lstm.LSTMCell(4, 6))],
                         ids=["lstm", "cell", "inside-a-model"])
def test_script_raises_naming_the_alternatives(make):
    torch.jit.script(nn.LSTMCell(4, 6))  # what nn does: scripts
    with pytest.raises(RuntimeError, match=r"does not support torch.jit.script.*torch.compile "
                                           r"or torch.export"):
        torch.jit.script(make())

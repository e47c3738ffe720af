"""ONNX export: fused_lstm's layer op becomes ONNX's own LSTM operator.

    onnx_program = fused_lstm.onnx.export(model, (x,))       # torch.onnx.export(dynamo=True)
    onnx_program.save("model.onnx")                            # runs in onnxruntime

torch.onnx's exporter (torch.export + onnxscript) knows nothing of `fused_lstm::lstm_layer_forward`;
`translation_table()` maps it to `LSTM` (opset 18) with the layout ONNX wants: gates reordered
from PyTorch's (i, f, g, o) to ONNX's (i, o, f, c), weights and the concatenated biases
(Wb, Rb) given a leading num_directions axis of 1 (every layer direction is its own op, as in
the exported graph of the module), and the outputs squeezed back. Each layer and direction
becomes one ONNX LSTM node, so any runtime with an LSTM kernel runs the model.

What ONNX's LSTM cannot express raises a clear error at export: `proj_size` (no projection in
ONNX's LSTM) and PackedSequence input (ONNX takes padded input with sequence_lens instead).
Needs the `onnx` and `onnxscript` packages (and `onnxruntime` to run the result).

A plain `torch.onnx.export(model, args)` (dynamo=True, the default, or the TorchScript exporter
with dynamo=False) also works: while it runs, the modules call aten::lstm as nn.LSTM does
(Note [Routes off the fused op] in modules.py), which both exporters map to ONNX's LSTM, one
node per layer (bidirectional layers as one node). proj_size raises the same error as here
(torch's exporters would write an ONNX LSTM without the projection, which onnxruntime rejects);
PackedSequence input fails in torch.export, as with nn.LSTM.
"""
from __future__ import annotations

import torch


def _lstm_layer_forward_onnx(input, hx, cx, weight_ih, weight_hh, bias_ih=None, bias_hh=None,
                             weight_hr=None, batch_sizes=None, reverse=False, save_workspace=False):
    from onnxscript import opset18 as op

    if weight_hr is not None:
        raise NotImplementedError(
            "fused_lstm ONNX export: proj_size is not supported (ONNX's LSTM operator has no "
            "projection); export a model without proj_size")
    if batch_sizes is not None:
        raise NotImplementedError(
            "fused_lstm ONNX export: PackedSequence input is not supported; export with padded "
            "input (ONNX's LSTM takes sequence lengths, not packed data)")

    def iofc(w):  # PyTorch's gate order (i, f, g, o) -> ONNX's (i, o, f, c)
        i, f, g, o = op.Split(w, num_outputs=4, axis=0)
        return op.Concat(i, o, f, g, axis=0)

    w = op.Unsqueeze(iofc(weight_ih), [0])   # [1, 4H, I]
    r = op.Unsqueeze(iofc(weight_hh), [0])   # [1, 4H, H]
    b = None
    if bias_ih is not None:
        b = op.Unsqueeze(op.Concat(iofc(bias_ih), iofc(bias_hh), axis=0), [0])  # [1, 8H]: Wb, Rb
    y, y_h, y_c = op.LSTM(input, w, r, b, None, op.Unsqueeze(hx, [0]), op.Unsqueeze(cx, [0]),
                          direction="reverse" if reverse else "forward",
                          hidden_size=weight_hh.shape[1])
    # The op's last two outputs are backward workspaces; nothing reads them in an exported graph.
    empty = op.ConstantOfShape(op.Constant(value_ints=[0]))
    return op.Squeeze(y, [1]), op.Squeeze(y_h, [0]), op.Squeeze(y_c, [0]), empty, empty


_translating = False


def translating() -> bool:
    """True inside :func:`export`, whose table translates the fused op itself; a plain
    torch.onnx.export instead sees the modules run aten::lstm (Note [Routes off the fused op] in
    modules.py), which torch's exporters map to ONNX's LSTM."""
    return _translating


def translation_table() -> dict:
    """The custom_translation_table for torch.onnx.export(..., dynamo=True)."""
    return {torch.ops.fused_lstm.lstm_layer_forward.default: _lstm_layer_forward_onnx}


def export(model: torch.nn.Module, args: tuple, f=None, **kwargs):
    """torch.onnx.export(model, args, f, dynamo=True) with fused_lstm's translation added (on top
    of any custom_translation_table given), traced without autograd (an exported graph is for
    inference: no backward workspace is computed). Returns the ONNXProgram."""
    table = {**translation_table(), **kwargs.pop("custom_translation_table", {})}
    global _translating
    previous, _translating = _translating, True
    try:
        with torch.no_grad():
            return torch.onnx.export(model, args, f, dynamo=True, custom_translation_table=table,
                                     **kwargs)
    finally:
        _translating = previous

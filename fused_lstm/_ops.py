"""Python face of the compiled ops: ``torch.ops.fused_lstm.*`` and their fake kernels.

The fake (meta) kernels give torch.compile / opcheck the output shapes without running anything.
Shapes follow Note [Op schemas] in csrc/lstm_ops.cpp: per-token buffers are [T, B, X] for padded
input and [N, X] for packed input.
"""

import torch

from . import _C  # noqa: F401  (loads the extension, which registers torch.ops.fused_lstm)

lstm_layer_forward = torch.ops.fused_lstm.lstm_layer_forward
lstm_layer_backward = torch.ops.fused_lstm.lstm_layer_backward


def _opmath_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


@torch.library.register_fake("fused_lstm::lstm_layer_forward")
def _lstm_layer_forward_fake(input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr,
                             batch_sizes, reverse, save_workspace):
    hidden = weight_hh.size(0) // 4
    proj = weight_hr.size(0) if weight_hr is not None else hidden
    tokens_shape = input.shape[:-1]
    output = input.new_empty((*tokens_shape, proj))
    workspace_dtype = _opmath_dtype(input.dtype)
    if save_workspace:
        gates = input.new_empty((*tokens_shape, 4 * hidden), dtype=workspace_dtype)
        cells = input.new_empty((*tokens_shape, hidden), dtype=workspace_dtype)
    else:
        gates = input.new_empty((0,), dtype=workspace_dtype)
        cells = input.new_empty((0,), dtype=workspace_dtype)
    return output, hx.new_empty(hx.shape), cx.new_empty(cx.shape), gates, cells


@torch.library.register_fake("fused_lstm::lstm_layer_backward")
def _lstm_layer_backward_fake(grad_output, grad_hy, grad_cy, input, hx, cx, weight_ih, weight_hh,
                              weight_hr, batch_sizes, reverse, has_bias, output, gates, cells,
                              output_mask):
    want_input, want_weights = output_mask

    def maybe(want, like):
        return like.new_empty(like.shape) if want else input.new_empty((0,))

    grad_bias = (input.new_empty((weight_hh.size(0),)) if want_weights and has_bias
                 else input.new_empty((0,)))
    grad_weight_hr = (maybe(want_weights, weight_hr) if weight_hr is not None
                      else input.new_empty((0,)))
    return (maybe(want_input, input), hx.new_empty(hx.shape), cx.new_empty(cx.shape),
            maybe(want_weights, weight_ih), maybe(want_weights, weight_hh), grad_bias,
            grad_weight_hr)

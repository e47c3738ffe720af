"""Functional, differentiable API for one LSTM layer (one direction) on the fused ops."""

from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import _ops


class LSTMLayerFunction(torch.autograd.Function):
    """Autograd over ``lstm_layer_forward`` / ``lstm_layer_backward``.

    The forward op saves its workspace (activated gates and cell states) only when a gradient
    will be asked for: some input needs one (``ctx.needs_input_grad``; grad mode is always off
    inside ``forward``) and grad mode was on at the call (``grad_enabled``, read by the caller),
    so ``torch.no_grad()`` inference allocates no workspace.
    """

    @staticmethod
    def forward(ctx, input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr,
                batch_sizes, reverse, grad_enabled):
        training = grad_enabled and any(ctx.needs_input_grad[:8])
        output, hy, cy, gates, cells = _ops.lstm_layer_forward(
            input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, batch_sizes,
            reverse, training)
        ctx.reverse = reverse
        ctx.has_bias = bias_ih is not None
        if training:
            ctx.save_for_backward(input, hx, cx, weight_ih, weight_hh, weight_hr, batch_sizes,
                                  output, gates, cells)
        return output, hy, cy

    @staticmethod
    @once_differentiable  # the backward op has no derivative yet: refuse double backward loudly
    def backward(ctx, grad_output, grad_hy, grad_cy):
        (input, hx, cx, weight_ih, weight_hh, weight_hr, batch_sizes, output, gates,
         cells) = ctx.saved_tensors
        needs = ctx.needs_input_grad
        output_mask = [needs[0], any(needs[3:8])]
        (grad_input, grad_hx, grad_cx, grad_weight_ih, grad_weight_hh, grad_bias,
         grad_weight_hr) = _ops.lstm_layer_backward(
            grad_output, grad_hy, grad_cy, input, hx, cx, weight_ih, weight_hh, weight_hr,
            batch_sizes, ctx.reverse, ctx.has_bias, output, gates, cells, output_mask)

        def keep(grad, index):
            return grad if needs[index] else None

        return (keep(grad_input, 0), keep(grad_hx, 1), keep(grad_cx, 2),
                keep(grad_weight_ih, 3), keep(grad_weight_hh, 4), keep(grad_bias, 5),
                keep(grad_bias, 6), keep(grad_weight_hr, 7), None, None, None)


def lstm_layer(
    input: Tensor,
    hx: Optional[Tensor],
    cx: Optional[Tensor],
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Optional[Tensor] = None,
    bias_hh: Optional[Tensor] = None,
    weight_hr: Optional[Tensor] = None,
    batch_sizes: Optional[Tensor] = None,
    reverse: bool = False,
) -> Tuple[Tensor, Tensor, Tensor]:
    r"""Runs one LSTM layer in one direction over a whole sequence with the fused kernels.

    Gate order and math are ``torch.nn.LSTM``'s (i, f, g, o)::

        gates = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh
        c_t = f * c_{t-1} + i * g;   h_t = o * tanh(c_t)   (then h_t W_hr^T with a projection)

    Args:
        input: ``[T, B, I]`` (time-major) or, when ``batch_sizes`` is given, packed data
            ``[N, I]`` (``PackedSequence.data``).
        hx: ``[B, P]`` initial hidden state, or ``None`` for zeros. ``P`` is ``proj_size`` when
            ``weight_hr`` is given, else ``H``.
        cx: ``[B, H]`` initial cell state, or ``None`` for zeros.
        weight_ih: ``[4H, I]``.  weight_hh: ``[4H, P]``.
        bias_ih, bias_hh: ``[4H]`` each, both or neither.
        weight_hr: ``[P, H]`` projection weight, or ``None``.
        batch_sizes: int64 CPU tensor ``[T]`` (``PackedSequence.batch_sizes``): step ``t``
            updates only the first ``batch_sizes[t]`` rows; non-increasing.
        reverse: run from the last step to the first (for packed input, every sequence starts
            at its own last step), as the reverse direction of a bidirectional LSTM.

    Returns:
        ``(output, hy, cy)``: ``output`` ``[T, B, P]`` (or ``[N, P]`` packed) holds every step's
        ``h``; ``hy`` ``[B, P]`` and ``cy`` ``[B, H]`` are each sequence's final states.

    Arithmetic and the cell state are float32 for float16/bfloat16 inputs; outputs have the
    input's dtype. Differentiable with respect to every tensor argument except ``batch_sizes``.
    """
    batch = hx.size(0) if hx is not None else (
        int(batch_sizes[0]) if batch_sizes is not None and batch_sizes.numel() > 0
        else input.size(1) if input.dim() == 3 else 0)
    hidden = weight_hh.size(0) // 4
    proj = weight_hr.size(0) if weight_hr is not None else hidden
    if hx is None:
        hx = input.new_zeros((batch, proj))
    if cx is None:
        cx = input.new_zeros((batch, hidden))
    return LSTMLayerFunction.apply(input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh,
                                   weight_hr, batch_sizes, reverse, torch.is_grad_enabled())

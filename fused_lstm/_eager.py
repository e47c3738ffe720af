"""The fused modules' plain-eager routes: a cell step (``run_cell``) and a one-layer,
one-direction ``fused_lstm.LSTM`` (``run_module_layer``), each with an autograd.Function that
does only what plain eager training needs (as ``functional._LSTMLayerEager``, which see), and
the op itself when nothing needs grad. Under torch.func transforms, forward AD, torch.compile
or tracing they take ``functional.run_layer``, which has every rule. No argument checks: the op
makes them (Note [Argument checks] in modules.py).
"""

from typing import Optional, Tuple

import torch
import torch.autograd.forward_ad as _fwad
from torch import Tensor
from torch._C._functorch import unwrap_if_dead

from . import _ops
from .functional import _layer_backward, run_layer

# Note [Cell steps as packed input]
# A cell step's input is [B, I]; the op wants [1, B, I], or packed data [N, I] with batch_sizes.
# With batch_sizes = [B], [B, I] is already packed data of one step: no unsqueeze (a view op,
# about 1 us with grad mode on) and no reshape of the input's gradient, and the op computes the
# same (bitwise: the same single-step path, Note [Single steps on CPU] in
# csrc/cpu/lstm_cpu.cpp). Done on CPU for the batches that path takes, where a microsecond is a
# visible part of a step; one constant batch_sizes tensor per batch size, never exposed (not
# saved for backward either: the backward takes the same constant again).
_PACKED_STEP_MAX_ROWS = 8
_STEP_BATCH_SIZES = tuple(torch.tensor([rows]) for rows in range(_PACKED_STEP_MAX_ROWS + 1))


def _cell_step_layout(input: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
    """``(op input, batch_sizes)`` of a cell step's ``[B, I]`` input (Note [Cell steps as
    packed input])."""
    rows = input.size(0)
    if input.is_cpu and 0 < rows <= _PACKED_STEP_MAX_ROWS:
        return input, _STEP_BATCH_SIZES[rows]
    return input.unsqueeze(0), None


class _LSTMCellEager(torch.autograd.Function):
    """One LSTMCell step in plain eager training (as _LSTMLayerEager, which see): ``apply(input,
    hx, cx, weight_ih, weight_hh, bias_ih, bias_hh)`` with ``input`` ``[B, I]`` returns ``(hy,
    cy)``. Two outputs rather than the layer's three (each output costs autograd bookkeeping);
    the layer's output, the same values as hy, is saved for the backward op. The input is
    saved as given and laid out for the op again in backward (Note [Cell steps as packed
    input]), where a second derivative can see it (Note [Higher-order autograd])."""

    @staticmethod
    def forward(ctx, input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh):
        save = ctx.has_workspace = any(ctx.needs_input_grad)
        rows = input.size(0)  # _cell_step_layout, inlined
        if input.is_cpu and 0 < rows <= _PACKED_STEP_MAX_ROWS:
            op_input, batch_sizes = input, _STEP_BATCH_SIZES[rows]
        else:
            op_input, batch_sizes = input.unsqueeze(0), None
        output, hy, cy, gates, cells = _ops.eager_forward()(
            op_input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, None, batch_sizes, False,
            save)
        ctx.set_materialize_grads(False)
        ctx.reverse = False
        if save:
            ctx.save_for_backward(input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, output,
                                  gates, cells)
        else:
            ctx.save_for_backward(input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh)
        return hy, cy

    @staticmethod
    def backward(ctx, grad_hy, grad_cy):
        s = ctx.saved_tensors
        op_input, batch_sizes = _cell_step_layout(s[0])
        grads = _layer_backward(ctx, (op_input, *s[1:7], None, batch_sizes, *s[7:]), None,
                                grad_hy, grad_cy)
        grad_input = grads[0]
        if grad_input is not None and batch_sizes is None:
            grad_input = grad_input.squeeze(0)
        return (grad_input, *grads[1:7])


class _LSTMModuleLayerEager(torch.autograd.Function):
    """A one-layer, one-direction fused_lstm.LSTM in plain eager training (as _LSTMLayerEager,
    which see): ``apply(input, h_0, c_0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr,
    batch_sizes)`` with the module's ``[1, B, P]`` / ``[1, B, H]`` states returns ``(output,
    h_n, c_n)`` in the module's shapes. The op takes and gives the states with their layer
    dimension (Note [States with a layer dimension] in csrc/layer_args.h): h_n and c_n are its
    fresh tensors, so not views, as nn.LSTM's are not (``h_n.detach_()`` works). The backward
    drops and adds the dimension itself (with grad mode off), so the saved states reach
    ``_layer_backward``'s reference and higher-order paths in the shapes they take."""

    @staticmethod
    def forward(ctx, input, h_0, c_0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr,
                batch_sizes):
        save = ctx.has_workspace = any(ctx.needs_input_grad)
        output, h_n, c_n, gates, cells = _ops.eager_forward()(
            input, h_0, c_0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, batch_sizes,
            False, save)
        ctx.set_materialize_grads(False)
        ctx.reverse = False
        if save:
            ctx.save_for_backward(input, h_0, c_0, weight_ih, weight_hh, bias_ih, bias_hh,
                                  weight_hr, batch_sizes, output, gates, cells)
        else:
            ctx.save_for_backward(input, h_0, c_0, weight_ih, weight_hh, bias_ih, bias_hh,
                                  weight_hr, batch_sizes)
        return output, h_n, c_n

    @staticmethod
    def backward(ctx, grad_output, grad_h_n, grad_c_n):
        s = ctx.saved_tensors
        grads = _layer_backward(
            ctx, (s[0], s[1][0], s[2][0], *s[3:]), grad_output,
            None if grad_h_n is None else grad_h_n[0], None if grad_c_n is None else grad_c_n[0])
        grad_h, grad_c = grads[1], grads[2]
        return (grads[0], None if grad_h is None else grad_h.unsqueeze(0),
                None if grad_c is None else grad_c.unsqueeze(0), *grads[3:9])


_module_layer_apply = super(torch.autograd.Function, _LSTMModuleLayerEager).apply
_cell_apply = super(torch.autograd.Function, _LSTMCellEager).apply


def _plain_eager() -> bool:
    """No torch.func transform, forward-AD level, torch.compile or TorchScript tracing: where
    the lean autograd.Functions above serve."""
    return (not torch.compiler.is_compiling() and _fwad._current_level < 0
            and not torch._C._are_functorch_transforms_active() and not torch._C._is_tracing())


def run_module_layer(input: Tensor, h_0: Tensor, c_0: Tensor, weight_ih: Tensor,
                     weight_hh: Tensor, bias_ih: Optional[Tensor], bias_hh: Optional[Tensor],
                     weight_hr: Optional[Tensor],
                     batch_sizes: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
    """A one-layer, one-direction fused_lstm.LSTM: ``input`` time-major (or packed data),
    ``h_0`` ``[1, B, P]``, ``c_0`` ``[1, B, H]``; returns ``(output, h_n, c_n)``, h_n and c_n
    ``[1, B, .]``."""
    if _plain_eager():
        if torch.is_grad_enabled() and (
                input.requires_grad or h_0.requires_grad or c_0.requires_grad
                or weight_ih.requires_grad or weight_hh.requires_grad
                or (bias_ih is not None and bias_ih.requires_grad)
                or (bias_hh is not None and bias_hh.requires_grad)
                or (weight_hr is not None and weight_hr.requires_grad)):
            return _module_layer_apply(
                unwrap_if_dead(input), unwrap_if_dead(h_0), unwrap_if_dead(c_0),
                unwrap_if_dead(weight_ih), unwrap_if_dead(weight_hh),
                bias_ih if bias_ih is None else unwrap_if_dead(bias_ih),
                bias_hh if bias_hh is None else unwrap_if_dead(bias_hh),
                weight_hr if weight_hr is None else unwrap_if_dead(weight_hr), batch_sizes)
        # Nothing to differentiate: the op itself (run_layer's choice), on and giving the
        # module's states (fresh tensors, not views).
        return _ops.eager_forward()(input, h_0, c_0, weight_ih, weight_hh, bias_ih, bias_hh,
                                    weight_hr, batch_sizes, False, False)[:3]
    output, hy, cy = run_layer(input, h_0[0], c_0[0], weight_ih, weight_hh, bias_ih, bias_hh,
                               weight_hr, batch_sizes, False)
    return output, torch.stack((hy,)), torch.stack((cy,))


def run_cell(input: Tensor, hx: Tensor, cx: Tensor, weight_ih: Tensor, weight_hh: Tensor,
             bias_ih: Optional[Tensor], bias_hh: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """One LSTMCell step, ``input`` ``[B, I]``, states ``[B, H]``: ``run_layer`` of one step,
    and in plain eager training the cheaper _LSTMCellEager."""
    if _plain_eager():
        if torch.is_grad_enabled() and (
                input.requires_grad or hx.requires_grad or cx.requires_grad
                or weight_ih.requires_grad or weight_hh.requires_grad
                or (bias_ih is not None and bias_ih.requires_grad)
                or (bias_hh is not None and bias_hh.requires_grad)):
            return _cell_apply(unwrap_if_dead(input), unwrap_if_dead(hx), unwrap_if_dead(cx),
                               unwrap_if_dead(weight_ih), unwrap_if_dead(weight_hh),
                               bias_ih if bias_ih is None else unwrap_if_dead(bias_ih),
                               bias_hh if bias_hh is None else unwrap_if_dead(bias_hh))
        # Nothing to differentiate: the op itself (run_layer's choice, one call less).
        op_input, batch_sizes = _cell_step_layout(input)
        return _ops.eager_forward()(op_input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh,
                                       None, batch_sizes, False, False)[1:3]
    _, hy, cy = run_layer(input.unsqueeze(0), hx, cx, weight_ih, weight_hh, bias_ih, bias_hh,
                          None, None, False)
    return hy, cy

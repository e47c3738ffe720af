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

from . import _C, _ops
from .functional import _graph_may_be_recorded, _layer_backward, run_layer

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
        ctx.save_for_backward(input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh,
                              *((output, gates, cells) if save else ()))
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
        ctx.save_for_backward(input, h_0, c_0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr,
                              batch_sizes, *((output, gates, cells) if save else ()))
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


class _DirectionContext:
    """What ``_layer_backward`` reads of a one-direction Function's ctx, for one direction of
    _BidirectionalLayerEager: the 11 flags of (input, hx, cx, the five weights, batch_sizes,
    reverse, save_workspace)."""

    def __init__(self, needs_input: bool, needs_own: Tuple[bool, ...], has_workspace: bool,
                 reverse: bool):
        self.needs_input_grad = (needs_input, *needs_own, False, False, False)
        self.has_workspace = has_workspace
        self.reverse = reverse


class _BidirectionalLayerEager(torch.autograd.Function):
    """Both directions of a bidirectional CPU layer in plain eager training, in one call each
    way that may run them concurrently (Note [Concurrent directions on CPU] in
    csrc/cpu/lstm_cpu_directions.cpp): ``apply(input, batch_sizes, h_f, c_f, 5 weights of the
    forward direction, h_r, c_r, 5 weights of the reverse one)``, states ``[B, .]``, returns
    ``(output, h_f, c_f, h_r, c_r)`` with the directions' outputs concatenated along the last
    dimension, as the module's layer output. The backward runs both directions' backward ops in
    one call too where it can (a saved workspace, no graph of the backward to record); else
    each direction through ``_layer_backward``, which has every rule (higher orders included)."""

    @staticmethod
    def forward(ctx, input, batch_sizes, h_f, c_f, w_ih_f, w_hh_f, b_ih_f, b_hh_f, w_hr_f,
                h_r, c_r, w_ih_r, w_hh_r, b_ih_r, b_hh_r, w_hr_r):
        save = ctx.has_workspace = any(ctx.needs_input_grad)
        r = _C._cpu_forward_directions(input, batch_sizes, save, (h_f, c_f, w_ih_f, w_hh_f),
                                       (b_ih_f, b_hh_f, w_hr_f), (h_r, c_r, w_ih_r, w_hh_r),
                                       (b_ih_r, b_hh_r, w_hr_r))
        ctx.set_materialize_grads(False)
        ctx.width = r[0].size(-1)
        primals = (input, batch_sizes, h_f, c_f, w_ih_f, w_hh_f, b_ih_f, b_hh_f, w_hr_f,
                   h_r, c_r, w_ih_r, w_hh_r, b_ih_r, b_hh_r, w_hr_r)
        ctx.save_for_backward(*primals, *((r[0], r[3], r[4], r[5], r[8], r[9]) if save else ()))
        return torch.cat((r[0], r[5]), -1), r[1], r[2], r[6], r[7]

    @staticmethod
    def backward(ctx, grad_output, grad_h_f, grad_c_f, grad_h_r, grad_c_r):
        s = ctx.saved_tensors
        input, batch_sizes = s[0], s[1]
        own = (s[2:9], s[9:16])  # hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr
        workspace = (s[16:19], s[19:22]) if ctx.has_workspace else ((), ())
        needs = ctx.needs_input_grad
        own_needs = (needs[2:9], needs[9:16])
        width = ctx.width
        upstream = ((None if grad_output is None else grad_output[..., :width], grad_h_f, grad_c_f),
                    (None if grad_output is None else grad_output[..., width:], grad_h_r, grad_c_r))
        if ctx.has_workspace and not torch.compiler.is_compiling() and not _graph_may_be_recorded():
            masks = [(needs[0], any(n[2:7])) for n in own_needs]
            g = _C._cpu_backward_directions(
                input, batch_sizes, own[0][4] is not None,
                own[0][:4], own[0][6], upstream[0], workspace[0], masks[0],
                own[1][:4], own[1][6], upstream[1], workspace[1], masks[1])
            # per direction: grad_input, grad_hx, grad_cx, grad_weight_ih, grad_weight_hh,
            # grad_bias (both biases), grad_weight_hr
            grads = [(g[7 * d], g[7 * d + 1], g[7 * d + 2], g[7 * d + 3], g[7 * d + 4],
                      g[7 * d + 5], g[7 * d + 5], g[7 * d + 6]) for d in (0, 1)]
            grads = [[grad if (k == 0 and needs[0]) or (k > 0 and own_needs[d][k - 1]
                                                        and own[d][k - 1] is not None) else None
                      for k, grad in enumerate(grads[d])] for d in (0, 1)]
        else:
            grads = [_layer_backward(
                _DirectionContext(needs[0], own_needs[d], ctx.has_workspace, d == 1),
                (input, *own[d], batch_sizes, *workspace[d]), *upstream[d])[:8] for d in (0, 1)]
        grad_input = grads[0][0]
        if grads[1][0] is not None:
            grad_input = grads[1][0] if grad_input is None else grad_input + grads[1][0]
        return (grad_input, None, *grads[0][1:], *grads[1][1:])


_module_layer_apply = super(torch.autograd.Function, _LSTMModuleLayerEager).apply
_bidirectional_apply = super(torch.autograd.Function, _BidirectionalLayerEager).apply
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


def run_bidirectional_layer(input: Tensor, batch_sizes: Optional[Tensor], h_f: Tensor,
                            c_f: Tensor, weights_f: Tuple, h_r: Tensor, c_r: Tensor,
                            weights_r: Tuple) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Both directions of a bidirectional layer, CPU, plain eager only (the caller checks
    both): states ``[B, .]``, ``weights_*`` the five of ``LSTM._layer_weights``; returns
    ``(output, h_f, c_f, h_r, c_r)``, output the directions' outputs concatenated."""
    tensors = (h_f, c_f, *weights_f, h_r, c_r, *weights_r)
    if torch.is_grad_enabled() and (input.requires_grad or any(
            t is not None and t.requires_grad for t in tensors)):
        return _bidirectional_apply(
            unwrap_if_dead(input), batch_sizes,
            *(t if t is None else unwrap_if_dead(t) for t in tensors))
    r = _C._cpu_forward_directions(input, batch_sizes, False, (h_f, c_f, *weights_f[:2]),
                                   weights_f[2:], (h_r, c_r, *weights_r[:2]), weights_r[2:])
    return torch.cat((r[0], r[5]), -1), r[1], r[2], r[6], r[7]


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

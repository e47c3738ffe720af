"""Functional, differentiable API for one LSTM layer (one direction) on the fused ops."""

import warnings
from typing import Optional, Tuple

import torch
import torch.autograd.forward_ad as _fwad
from torch import Tensor
from torch._C._functorch import maybe_current_level, unwrap_if_dead

from . import _ops
from .reference import lstm_layer_reference, lstm_layer_reference_jvp

# Note [Higher-order autograd]
# First order stays exactly the fused path: LSTMLayerFunction saves what it always saved (plus
# references to the biases, which are its inputs) and its backward calls the fused backward op.
# When that backward runs where a graph of the gradient may be recorded (create_graph=True, a
# torch.func grad/jvp/vmap level, a forward-AD dual level), the op is called through
# _LSTMLayerBackward, an autograd.Function whose forward is the same fused op and whose own
# derivatives (backward = double backward, jvp = forward-over-reverse) recompute the layer
# through the plain differentiable step loop of reference.py. So a second derivative costs a
# reference recompute only when one is actually taken; torch.func.grad, jacrev and per-sample
# gradients (vmap(grad)) stay on the fused kernels. The recompute is made of torch ops, so it
# runs on CPU and CUDA (cuDNN's LSTM has no double backward) and differentiates to any order.
#
# Forward mode (LSTMLayerFunction.jvp) is composite for the same reason:
# reference.lstm_layer_reference_jvp runs the tangent recurrence (d gates from dx, dh_{t-1} and
# the weights' tangents; then dc_t, dh_t) in torch ops next to a recompute of the primal. It
# needs no workspace (forwards without grad save none), works on CPU and CUDA, and is itself
# differentiable under outer transforms (jacfwd(jacrev), hessian). It is written out rather
# than taken from torch.func.jvp of the reference because a jvp rule cannot open a nested
# forward-AD level under torch.autograd.forward_ad. A fused tangent kernel would be a new op and
# CUDA kernel for a path used on small problems (Hessian-vector products, meta-learning), not
# for training throughput.
#
# vmap: LSTMLayerFunction.vmap folds the vmapped dimension into the LSTM batch when neither the
# weights nor batch_sizes are vmapped (one fused call over V*B rows; Note [vmap rules] in
# _ops.py), and loops over it, one fused call per slice, when the weights are (ensembles). The
# backward op has the same kind of rule, except that per-slice weight gradients (per-sample
# gradients, jacrev over weights) need one call per slice.

# The backward op's gradients (input, hx, cx, weight_ih, weight_hh, bias, weight_hr) as indices
# of the layer's primals (input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr).
_PRIMAL_OF_GRAD = (0, 1, 2, 3, 4, 5, 7)


def _requires_grad(tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _zeros_for_none(tensors, like):
    return tuple(torch.zeros_like(o) if t is None else t for t, o in zip(tensors, like))


def _substitute(values, index, replacements):
    values = list(values)
    for i, value in zip(index, replacements):
        values[i] = value
    return values


def _reference_vjp(primals, cotangents, index, batch_sizes, reverse):
    """Gradients of <cotangents, reference layer(primals)> with respect to ``primals[i] for i in
    index``: differentiable, to any order."""
    def layer(*args):
        return lstm_layer_reference(*_substitute(primals, index, args),
                                    batch_sizes=batch_sizes, reverse=reverse)

    outs, pullback = torch.func.vjp(layer, *(primals[i] for i in index))
    return pullback(_zeros_for_none(cotangents, outs))


class _LSTMLayerBackward(torch.autograd.Function):
    """The fused backward op as a differentiable function of the upstream gradients and the
    layer's primals (Note [Higher-order autograd]).

    ``apply(grad_output, grad_hy, grad_cy, *primals, output, gates, cells, batch_sizes, reverse,
    wanted)`` returns the op's gradients listed in ``wanted``, a frozenset of indices into the
    op's outputs (not a tuple: vmap would take a tuple for a container of its inputs).
    """

    generate_vmap_rule = True  # forward is the op (which has a vmap rule), the rest torch ops

    @staticmethod
    def forward(grad_output, grad_hy, grad_cy, input, hx, cx, weight_ih, weight_hh, bias_ih,
                bias_hh, weight_hr, output, gates, cells, batch_sizes, reverse, wanted):
        grads = _ops.lstm_layer_backward(
            grad_output, grad_hy, grad_cy, input, hx, cx, weight_ih, weight_hh, weight_hr,
            batch_sizes, reverse, bias_ih is not None, output, gates, cells,
            [0 in wanted, any(k >= 3 for k in wanted)])
        return tuple(grads[k] for k in sorted(wanted))

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.set_materialize_grads(False)
        ctx.reverse, ctx.wanted = inputs[15], inputs[16]
        saved = (*inputs[:11], inputs[14])  # upstream gradients, primals, batch_sizes
        ctx.save_for_backward(*saved)
        ctx.save_for_forward(*saved)  # the same tuple: generate_vmap_rule tracks one layout

    @staticmethod
    def _unpack(ctx):
        saved = ctx.saved_tensors
        return saved[:3], saved[3:11], saved[11], [_PRIMAL_OF_GRAD[k] for k in sorted(ctx.wanted)]

    @staticmethod
    def backward(ctx, *grad_grads):
        cotangents, primals, batch_sizes, index = _LSTMLayerBackward._unpack(ctx)
        needs = ctx.needs_input_grad
        # Differentiate the recomputed first-order gradients with respect to the upstream
        # gradients and primals that need it. (output, gates and cells are functions of the
        # primals, which the recompute differentiates through: they get no gradient here.)
        arguments = (*cotangents, *primals)
        diff = [j for j in range(11) if needs[j] and arguments[j] is not None]
        result = [None] * 17
        if not diff:
            return tuple(result)

        def first_order(*args):
            full = _substitute(arguments, diff, args)
            return _reference_vjp(full[3:], full[:3], index, batch_sizes, ctx.reverse)

        outs, pullback = torch.func.vjp(first_order, *(arguments[j] for j in diff))
        for j, grad in zip(diff, pullback(_zeros_for_none(grad_grads, outs))):
            result[j] = grad
        return tuple(result)

    @staticmethod
    def jvp(ctx, *tangents):
        # With s(p) = <u, f(p)> the op computes grad_p s. Its tangent along (dp, du) is
        # J(p)^T du + grad_p <u, J(p) dp>: two vector-Jacobian products, the second of the
        # written-out tangent recurrence, so no forward-AD level is opened here.
        cotangents, primals, batch_sizes, index = _LSTMLayerBackward._unpack(ctx)
        d_cotangents, d_primals = tangents[:3], tangents[3:11]
        result = (None,) * len(index)  # also when only output/gates/cells had tangents
        if any(t is not None for t in d_cotangents):
            result = _reference_vjp(primals, d_cotangents, index, batch_sizes, ctx.reverse)
        if any(t is not None for t in d_primals):
            def directional(*args):
                return lstm_layer_reference_jvp(_substitute(primals, index, args), d_primals,
                                                batch_sizes, ctx.reverse)

            outs, pullback = torch.func.vjp(directional, *(primals[i] for i in index))
            second = pullback(_zeros_for_none(cotangents, outs))
            result = tuple(b if a is None else a + b for a, b in zip(result, second))
        return result


def _graph_may_be_recorded() -> bool:
    """False in the plain loss.backward() case (grad mode off, no torch.func transform, no
    forward-AD level): then nothing can differentiate the gradient."""
    return (torch.is_grad_enabled() or _fwad._current_level >= 0
            or maybe_current_level() is not None)


class _LSTMLayerFunctionBase(torch.autograd.Function):
    """Forward op, context and backward (Note [Higher-order autograd]). Used as is under
    torch.compile, which cannot trace a custom ``jvp``; eager code uses
    :class:`LSTMLayerFunction`, which adds ``jvp`` and ``vmap``.

    ``save_workspace`` is decided by the caller (``forward`` has no ctx to read
    ``needs_input_grad``): some input requires grad and grad mode is on, so ``torch.no_grad()``
    inference allocates no workspace. The op returns the workspace (activated gates and cell
    states) as two non-differentiable outputs, which is how setup_context gets to save it.
    """

    @staticmethod
    def forward(input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, batch_sizes,
                reverse, save_workspace):
        return _ops.lstm_layer_forward(input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh,
                                       weight_hr, batch_sizes, reverse, save_workspace)

    @staticmethod
    def setup_context(ctx, inputs, output):
        primals = inputs[:9]  # input, hx, cx, the five weights, batch_sizes
        reverse, save_workspace = inputs[9], inputs[10]
        out, _, _, gates, cells = output
        ctx.mark_non_differentiable(gates, cells)
        ctx.set_materialize_grads(False)  # the op takes None for an unused output's gradient
        ctx.reverse = reverse
        ctx.has_workspace = save_workspace
        # The primals are this call's own inputs (no memory of their own); the workspace is
        # saved only when it was computed. The jvp rule gets the primals too.
        if save_workspace:
            ctx.save_for_backward(*primals, out, gates, cells)
        else:
            ctx.save_for_backward(*primals)
        ctx.save_for_forward(*primals)

    @staticmethod
    def backward(ctx, grad_output, grad_hy, grad_cy, _grad_gates, _grad_cells):
        return _layer_backward(ctx, ctx.saved_tensors, grad_output, grad_hy, grad_cy)


def _layer_backward(ctx, saved, grad_output, grad_hy, grad_cy):
    """The 11 gradients of the layer Functions' inputs (input, hx, cx, the five weights,
    batch_sizes, reverse, save_workspace) from ``saved``: the primals, batch_sizes and (when
    ``ctx.has_workspace``) output, gates and cells."""
    primals, batch_sizes = saved[:8], saved[8]
    needs = ctx.needs_input_grad
    wanted = [k for k, i in enumerate(_PRIMAL_OF_GRAD)
              if primals[i] is not None and (needs[i] or (i == 5 and needs[6]))]
    grads = [None] * 11
    if not wanted:
        return tuple(grads)
    upstream = (grad_output, grad_hy, grad_cy)
    if not ctx.has_workspace:
        # The forward ran without saving (no input required grad where it was called):
        # recompute, which is always right.
        result = _reference_vjp(primals, upstream, [_PRIMAL_OF_GRAD[k] for k in wanted],
                                batch_sizes, ctx.reverse)
    elif torch.compiler.is_compiling() or not _graph_may_be_recorded():
        op_grads = _ops.lstm_layer_backward(
            *upstream, saved[0], saved[1], saved[2], saved[3], saved[4], saved[7],
            batch_sizes, ctx.reverse, primals[5] is not None, *saved[9:],
            [needs[0], any(needs[3:8])])
        result = [op_grads[k] for k in wanted]
    else:
        result = _LSTMLayerBackward.apply(*upstream, *primals, *saved[9:], batch_sizes,
                                          ctx.reverse, frozenset(wanted))
    for k, grad in zip(wanted, result):
        grads[_PRIMAL_OF_GRAD[k]] = grad
        if k == 5:
            grads[6] = grad  # d/d bias_hh = d/d bias_ih
    return tuple(grads)


class _LSTMLayerEager(torch.autograd.Function):
    """The layer's autograd in plain eager code (no torch.func transform, no forward-AD level,
    not compiling or tracing): what LSTMLayerFunction does there, with less per-call work, which
    at a single step (tens of us) is a large part of the call (benchmarks/cell_probe.py). No
    jvp or vmap rule (nothing can ask for them), so no ``save_for_forward``; one ``forward(ctx,
    ...)`` instead of forward + setup_context; the workspace saved as intermediates rather than
    returned as non-differentiable outputs. Same saved layout as _LSTMLayerFunctionBase, so the
    same backward (higher orders included).

    ``_FunctionBase.apply(_LSTMLayerEager, input, hx, cx, weight_ih, weight_hh, bias_ih,
    bias_hh, weight_hr, batch_sizes, reverse, save_workspace)`` returns ``(output, hy, cy)``;
    ``save_workspace`` is ignored (decided here, from ``ctx.needs_input_grad``: grad mode is
    off inside forward).
    """

    @staticmethod
    def forward(ctx, input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr,
                batch_sizes, reverse, save_workspace):
        save = ctx.has_workspace = any(ctx.needs_input_grad)
        output, hy, cy, gates, cells = _ops.lstm_layer_forward(
            input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, batch_sizes,
            reverse, save)
        ctx.set_materialize_grads(False)  # the op takes None for an unused output's gradient
        ctx.reverse = reverse
        ctx.save_for_backward(input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr,
                              batch_sizes, *((output, gates, cells) if save else ()))
        return output, hy, cy

    @staticmethod
    def backward(ctx, grad_output, grad_hy, grad_cy):
        return _layer_backward(ctx, ctx.saved_tensors, grad_output, grad_hy, grad_cy)


_eager_apply = super(torch.autograd.Function, _LSTMLayerEager).apply


class LSTMLayerFunction(_LSTMLayerFunctionBase):
    """Autograd over ``lstm_layer_forward`` / ``lstm_layer_backward``, with every torch.func
    transform: first-order backward on the fused op, higher orders, forward mode and vmap as
    Note [Higher-order autograd] describes.

    ``apply(input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, batch_sizes,
    reverse, save_workspace)`` returns ``(output, hy, cy, gates, cells)``; the last two are the
    workspace (empty when not saved), non-differentiable.
    """

    @staticmethod
    def jvp(ctx, *tangents):
        primals, batch_sizes = ctx.saved_tensors[:8], ctx.saved_tensors[8]
        output_t, hy_t, cy_t = lstm_layer_reference_jvp(primals, tangents[:8], batch_sizes,
                                                        ctx.reverse)
        return output_t, hy_t, cy_t, None, None

    @staticmethod
    def vmap(info, in_dims, *args):
        args = list(args)
        # grad(vmap(f)): the tensors under this level may require grad although the caller's
        # BatchedTensors did not say so.
        args[10] = args[10] or _requires_grad(args[:8])
        return _ops.fold_or_loop_vmap(LSTMLayerFunction.apply, _ops.FORWARD_VMAP_ROLES, info,
                                      in_dims, args, fold=True)


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
    input's dtype. Differentiable with respect to every tensor argument except ``batch_sizes``,
    to any order, in forward mode and under torch.func transforms (vmap included); see Note
    [Higher-order autograd].
    """
    # Before anything reads the arguments (and a TypeError naming the argument, where the op's
    # schema check would raise a RuntimeError); the loop only to name the culprit.
    if not (isinstance(input, Tensor) and isinstance(weight_ih, Tensor)
            and isinstance(weight_hh, Tensor)
            and all(v is None or isinstance(v, Tensor)
                    for v in (hx, cx, bias_ih, bias_hh, weight_hr, batch_sizes))):
        for name, value, optional in (
                ("input", input, False), ("hx", hx, True), ("cx", cx, True),
                ("weight_ih", weight_ih, False), ("weight_hh", weight_hh, False),
                ("bias_ih", bias_ih, True), ("bias_hh", bias_hh, True),
                ("weight_hr", weight_hr, True), ("batch_sizes", batch_sizes, True)):
            if not isinstance(value, Tensor) and not (optional and value is None):
                raise TypeError(f"fused_lstm.lstm_layer: expected {name} to be a Tensor"
                                f"{' or None' if optional else ''}, got {type(value).__name__}")
    # (B, .) states only (Note [Argument checks] (2)): the op also takes a module's (1, B, .)
    # states, which the vmap rule here would fold into the wrong dimension.
    for name, state in (("hx", hx), ("cx", cx)):
        if state is not None and state.dim() != 2:
            raise ValueError(f"fused_lstm.lstm_layer: expected {name} with 2 dims (batch, "
                             f"{'proj_size or hidden_size' if name == 'hx' else 'hidden_size'}), "
                             f"got {state.dim()} dims (shape {tuple(state.shape)})")
    if hx is None or cx is None:
        if batch_sizes is not None and hx is None:
            # Read here, before the states are allocated from it (with hx given, the op and the
            # vmap rules check batch_sizes): the clear error before .item() reads a vmapped one.
            _ops.check_batch_sizes_not_vmapped(batch_sizes)
        batch = hx.size(0) if hx is not None else (
            int(batch_sizes[0]) if batch_sizes is not None and batch_sizes.numel() > 0
            else input.size(1) if input.dim() == 3 else 0)
        if batch_sizes is not None and hx is None:  # runs before the op: the states' allocation
            torch._check(batch <= input.size(0), lambda: (
                "fused_lstm.lstm_layer: expected batch_sizes[0] to be at most input.size(0) (the "
                "number of packed rows)"))
        hidden = weight_hh.size(0) // 4
        proj = weight_hr.size(0) if weight_hr is not None else hidden
        if hx is None:
            hx = input.new_zeros((batch, proj))
        if cx is None:
            cx = input.new_zeros((batch, hidden))
    return run_layer(input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr,
                     batch_sizes, reverse)


def run_layer(input: Tensor, hx: Tensor, cx: Tensor, weight_ih: Tensor, weight_hh: Tensor,
              bias_ih: Optional[Tensor], bias_hh: Optional[Tensor], weight_hr: Optional[Tensor],
              batch_sizes: Optional[Tensor], reverse: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """:func:`lstm_layer` for callers that pass tensors (or None for the optional weights and
    batch_sizes) and both states, as the modules do: no argument checks here, the op makes
    them (Note [Argument checks] in modules.py)."""
    if cx is hx:
        # One tensor as both states (h = c = zeros(...)): dynamo refuses an autograd.Function
        # given the same tensor twice ("duplicate tensor input"). A view is a distinct tensor
        # over the same memory: no copy, and its gradient flows back into the one tensor (the
        # op only reads its inputs, so the aliasing is harmless).
        cx = cx.view_as(cx)
    # _requires_grad written out (a generator over the arguments costs about 1 us a call).
    needs_grad = torch.is_grad_enabled() and (
        input.requires_grad or hx.requires_grad or cx.requires_grad or weight_ih.requires_grad
        or weight_hh.requires_grad or (bias_ih is not None and bias_ih.requires_grad)
        or (bias_hh is not None and bias_hh.requires_grad)
        or (weight_hr is not None and weight_hr.requires_grad))
    if torch.compiler.is_compiling():
        # Dynamo cannot trace a custom jvp: compiled code runs the class without it.
        return _LSTMLayerFunctionBase.apply(input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh,
                                            weight_hr, batch_sizes, reverse, needs_grad)[:3]
    if torch._C._are_functorch_transforms_active():
        return LSTMLayerFunction.apply(input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh,
                                       weight_hr, batch_sizes, reverse, needs_grad)[:3]
    if torch._C._is_tracing():
        # Note [TorchScript tracing]: the tracer cannot record a Python autograd.Function in a
        # graph it can save (and records it with per-call constants, so the trace check fails).
        # The raw op is a TorchScript-visible call, fused_lstm::lstm_layer_forward, which
        # torch.jit.save/load keep (the loading process must `import fused_lstm` to register
        # it). The op has no autograd kernel: a traced graph is for inference, so no workspace.
        if needs_grad:
            warnings.warn(_TRACED_NO_AUTOGRAD, stacklevel=3)
        needs_grad = False
    elif _fwad._current_level >= 0:
        # A forward-AD level: the Function with its jvp rule (dual tensors need it).
        return _apply_outside_transforms(LSTMLayerFunction, (
            input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, batch_sizes,
            reverse, needs_grad))[:3]
    if not needs_grad:
        # Nothing to differentiate (no input requires grad, or grad mode is off): the op itself,
        # without an autograd.Function's bookkeeping (a few us a call: as much as a small single
        # step, Note [Single steps on CPU] in csrc/cpu/lstm_cpu.cpp).
        return _ops.lstm_layer_forward(input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh,
                                       weight_hr, batch_sizes, reverse, False)[:3]
    # Plain eager training: the lean Function. Dead functorch wrappers (tensors that escaped a
    # finished transform) unwrapped first, as autograd.Function.apply does.
    return _eager_apply(unwrap_if_dead(input), unwrap_if_dead(hx), unwrap_if_dead(cx),
                        unwrap_if_dead(weight_ih), unwrap_if_dead(weight_hh),
                        bias_ih if bias_ih is None else unwrap_if_dead(bias_ih),
                        bias_hh if bias_hh is None else unwrap_if_dead(bias_hh),
                        weight_hr if weight_hr is None else unwrap_if_dead(weight_hr),
                        batch_sizes, reverse, True)


_TRACED_NO_AUTOGRAD = (
    "fused_lstm: torch.jit.trace records fused_lstm::lstm_layer_forward, which has no autograd "
    "kernel: the traced module is for inference (no gradients flow through it). Train the "
    "eager or torch.compile'd module; trace under torch.no_grad() to silence this.")


def _apply_outside_transforms(function, args):
    """``function.apply(*args)`` without its per-call ``inspect.signature`` binding.

    With a ``setup_context``, ``torch.autograd.Function.apply`` binds the arguments to
    ``forward``'s signature on every call (about 20 us, as much as a small layer's whole step);
    ours are always complete and positional. Outside torch.func transforms it then only unwraps
    dead functorch wrappers and calls the C++ apply, which this does directly.
    """
    args = tuple(unwrap_if_dead(a) if isinstance(a, Tensor) else a for a in args)
    return super(torch.autograd.Function, function).apply(*args)

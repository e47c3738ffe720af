"""A plain PyTorch step loop: the oracle for tests and a baseline for benchmarks.

Same signature and semantics as :func:`fused_lstm.functional.lstm_layer`, written for clarity,
not speed: one matmul and a few pointwise ops per step, autograd through all of it. It is also
the differentiable path of the fused layer's higher-order gradients, and its tangent twin
:func:`lstm_layer_reference_jvp` the fused layer's forward-mode rule (Note [Higher-order
autograd] in functional.py).
"""

from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor


def _scan(step: Callable, sequences: Sequence[Tensor], states: Sequence[Tensor],
          batch_sizes: Optional[Tensor], reverse: bool) -> Tuple[List[Tensor], List[Tensor]]:
    """Runs ``step`` over time: ``step(inputs_t, states_t) -> (outputs_t, new_states_t)``.

    ``sequences`` are per-token tensors (``[T, B, X]``, or packed ``[N, X]`` with
    ``batch_sizes``), ``states`` per-row ``[B, X]`` tensors; step t sees the first
    ``batch_sizes[t]`` rows of each. Returns every output over all steps (``[T, B, X]`` or
    ``[N, X]``) and the final states, in which finished sequences keep their last values.
    """
    if batch_sizes is None:
        sizes = [states[0].size(0)] * sequences[0].size(0)
        steps = list(zip(*(s.unbind(0) for s in sequences)))
    else:
        sizes = [int(s) for s in batch_sizes]
        steps = list(zip(*(torch.split(s, sizes, dim=0) for s in sequences)))
    # Final states live in per-row lists so that finished sequences keep theirs.
    rows = [list(s.unbind(0)) for s in states]
    outputs: List = [None] * len(sizes)
    order = range(len(sizes) - 1, -1, -1) if reverse else range(len(sizes))
    for t in order:
        n = sizes[t]
        outputs[t], new_states = step(steps[t], [torch.stack(r[:n]) for r in rows])
        for r, new in zip(rows, new_states):
            r[:n] = list(new.unbind(0))
    join = torch.stack if batch_sizes is None else torch.cat
    return ([join([out[k] for out in outputs]) for k in range(len(outputs[0]))],
            [torch.stack(r) for r in rows])


def _initial_states(input, hx, cx, weight_hh, weight_hr, batch_sizes):
    hidden = weight_hh.size(0) // 4
    proj = weight_hr.size(0) if weight_hr is not None else hidden
    batch = int(batch_sizes[0]) if batch_sizes is not None else input.size(1)
    h = hx if hx is not None else input.new_zeros((batch, proj))
    c = cx if cx is not None else input.new_zeros((batch, hidden))
    return h, c


def lstm_layer_reference(
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
    def step(inputs, states):
        (x,), (h_prev, c_prev) = inputs, states
        gates = x @ weight_ih.t() + h_prev @ weight_hh.t()
        if bias_ih is not None:
            gates = gates + bias_ih + bias_hh
        i, f, g, o = gates.chunk(4, dim=1)
        i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
        c_new = f * c_prev + i * g
        h_new = o * c_new.tanh()
        if weight_hr is not None:
            h_new = h_new @ weight_hr.t()
        return (h_new,), (h_new, c_new)

    h, c = _initial_states(input, hx, cx, weight_hh, weight_hr, batch_sizes)
    (output,), (hy, cy) = _scan(step, (input,), (h, c), batch_sizes, reverse)
    return output, hy, cy


def lstm_layer_reference_jvp(primals: Sequence[Optional[Tensor]],
                             tangents: Sequence[Optional[Tensor]],
                             batch_sizes: Optional[Tensor] = None,
                             reverse: bool = False) -> Tuple[Tensor, Tensor, Tensor]:
    """Tangents ``(d output, d hy, d cy)`` of :func:`lstm_layer_reference` at ``primals`` =
    ``(input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr)`` along ``tangents``
    (same order; ``None`` for a zero tangent): the linearised recurrence, written out so that it
    needs no forward-mode AD of its own (a custom ``jvp`` rule cannot open a nested dual level).
    """
    input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr = primals
    h, c = _initial_states(input, hx, cx, weight_hh, weight_hr, batch_sizes)
    tangents = [torch.zeros_like(p) if t is None and p is not None else t
                for p, t in zip((input, h, c) + tuple(primals[3:]), tangents)]
    d_input, dh, dc, d_weight_ih, d_weight_hh, d_bias_ih, d_bias_hh, d_weight_hr = tangents

    def step(inputs, states):
        (x, dx), (h_prev, c_prev, dh_prev, dc_prev) = inputs, states
        gates = x @ weight_ih.t() + h_prev @ weight_hh.t()
        d_gates = (dx @ weight_ih.t() + x @ d_weight_ih.t() + dh_prev @ weight_hh.t()
                   + h_prev @ d_weight_hh.t())
        if bias_ih is not None:
            gates = gates + bias_ih + bias_hh
            d_gates = d_gates + d_bias_ih + d_bias_hh
        i, f, g, o = gates.chunk(4, dim=1)
        di, df, dg, do = d_gates.chunk(4, dim=1)
        i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
        di, df, dg, do = di * i * (1 - i), df * f * (1 - f), dg * (1 - g * g), do * o * (1 - o)
        c_new = f * c_prev + i * g
        dc_new = df * c_prev + f * dc_prev + di * g + i * dg
        tanh_c = c_new.tanh()
        h_new = o * tanh_c
        dh_new = do * tanh_c + o * (1 - tanh_c * tanh_c) * dc_new
        if weight_hr is not None:
            h_new, dh_new = h_new @ weight_hr.t(), dh_new @ weight_hr.t() + h_new @ d_weight_hr.t()
        return (dh_new,), (h_new, c_new, dh_new, dc_new)

    (d_output,), (_, _, d_hy, d_cy) = _scan(step, (input, d_input), (h, c, dh, dc), batch_sizes,
                                            reverse)
    return d_output, d_hy, d_cy

"""A plain PyTorch step loop: the oracle for tests and a baseline for benchmarks.

Same signature and semantics as :func:`fused_lstm.functional.lstm_layer`, written for clarity,
not speed: one matmul and a few pointwise ops per step, autograd through all of it.
"""

from typing import Optional, Tuple

import torch
from torch import Tensor


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
    hidden = weight_hh.size(0) // 4
    proj = weight_hr.size(0) if weight_hr is not None else hidden
    if batch_sizes is None:
        steps, batch = input.size(0), input.size(1)
        sizes = [batch] * steps
        rows = list(input.unbind(0))
    else:
        sizes = [int(s) for s in batch_sizes]
        batch = sizes[0]
        rows = list(torch.split(input, sizes, dim=0))
    h = hx if hx is not None else input.new_zeros((batch, proj))
    c = cx if cx is not None else input.new_zeros((batch, hidden))
    # Final states live in per-row lists so that finished sequences keep theirs.
    h_rows, c_rows = list(h.unbind(0)), list(c.unbind(0))
    outputs = [None] * len(sizes)
    order = range(len(sizes) - 1, -1, -1) if reverse else range(len(sizes))
    for t in order:
        n = sizes[t]
        h_prev = torch.stack(h_rows[:n])
        c_prev = torch.stack(c_rows[:n])
        gates = rows[t] @ weight_ih.t() + h_prev @ weight_hh.t()
        if bias_ih is not None:
            gates = gates + bias_ih + bias_hh
        i, f, g, o = gates.chunk(4, dim=1)
        i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
        c_new = f * c_prev + i * g
        h_new = o * c_new.tanh()
        if weight_hr is not None:
            h_new = h_new @ weight_hr.t()
        outputs[t] = h_new
        h_rows[:n] = list(h_new.unbind(0))
        c_rows[:n] = list(c_new.unbind(0))
    output = torch.stack(outputs) if batch_sizes is None else torch.cat(outputs)
    return output, torch.stack(h_rows), torch.stack(c_rows)

"""``fused_lstm.LSTMCell``: torch.nn.LSTMCell's interface on the fused ops.

One step of the cell is one call of the fused layer op with T = 1. Like ``fused_lstm.LSTM`` it
subclasses ``nn.Module``, not ``nn.LSTMCell`` (dynamo graph-breaks on nn.RNNCellBase; see
DESIGN.md), and keeps nn.LSTMCell's constructor, attribute and parameter names, parameter order,
initialisation and ``state_dict`` keys, so state dicts move between the two unchanged.
"""

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from ._base import (
    _autocast_cast,
    _autocast_enabled,
    _autocast_run_dtype,
    _FusedModule,
    _route_to_aten,
)
from ._eager import run_cell


def _lstm_cell_composite(input: Tensor, hx: Tensor, cx: Tensor, weight_ih: Tensor,
                         weight_hh: Tensor, bias_ih: Optional[Tensor],
                         bias_hh: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """One step in torch ops (aten's lstm_cell, written out): for ONNX export, ExpandedWeights
    (F.linear is one of the functions it has per-sample rules for) and hidden_size == 0, which
    the fused op rejects. Under autocast F.linear casts as in nn.LSTMCell."""
    gates = (nn.functional.linear(input, weight_ih, bias_ih)
             + nn.functional.linear(hx, weight_hh, bias_hh))
    # unflatten/unbind rather than chunk: chunk(4) of an empty dimension gives one chunk.
    i, f, g, o = gates.unflatten(1, (4, -1) if gates.size(1) else (4, 0)).unbind(1)
    c_1 = f.sigmoid() * cx + i.sigmoid() * g.tanh()
    h_1 = o.sigmoid() * c_1.tanh()
    return h_1, c_1


class LSTMCell(_FusedModule):
    r"""Drop-in replacement for :class:`torch.nn.LSTMCell` running the fused CPU/CUDA kernels.

    Same arguments, shapes, parameters and results as ``torch.nn.LSTMCell`` (see its
    documentation): ``LSTMCell(input_size, hidden_size, bias=True, device=None, dtype=None)``;
    ``forward(input, hx=None)`` takes ``input`` ``[B, I]`` (or unbatched ``[I]``) and
    ``hx = (h_0, c_0)``, each ``[B, H]`` (or ``[H]``), zeros when ``None``, and returns
    ``(h_1, c_1)`` with ``h_0``'s shape.

    Parameters: ``weight_ih`` ``[4H, I]``, ``weight_hh`` ``[4H, H]``, ``bias_ih`` and ``bias_hh``
    ``[4H]`` (``None`` when ``bias=False``), gate order i, f, g, o, all initialised from
    ``U(-1/sqrt(H), 1/sqrt(H))``.

    Under autocast the step runs in one dtype (inputs, states and weights are cast to it, as
    DESIGN.md says for the fused modules), nn.LSTMCell's result dtype: on CUDA the autocast
    dtype (CUDA autocast runs aten::lstm_cell in it); on CPU the autocast dtype promoted with
    ``c_0``'s (CPU nn.LSTMCell runs its two linears in the autocast dtype, then the cell update
    promotes with ``c_0``: float32 states give float32 ``h_1``/``c_1``).

    ``hidden_size=0`` is accepted as by nn.LSTMCell (empty states). TorchScript: see
    ``fused_lstm.LSTM``.
    """

    __constants__ = ["input_size", "hidden_size", "bias"]
    _torch_class = nn.LSTMCell
    _constructor_args = ("input_size", "hidden_size", "bias")

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None,
                 dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        # Same construction (and so the same exceptions for bad sizes) as nn.RNNCellBase.
        self.weight_ih = nn.Parameter(torch.empty((4 * hidden_size, input_size), **factory))
        self.weight_hh = nn.Parameter(torch.empty((4 * hidden_size, hidden_size), **factory))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size, **factory))
            self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def extra_repr(self) -> str:
        s = "{input_size}, {hidden_size}"
        if "bias" in self.__dict__ and self.bias is not True:
            s += ", bias={bias}"
        return s.format(**self.__dict__)

    # -- forward ------------------------------------------------------------------------------
    def _weights(self):
        # Through _parameters rather than four nn.Module.__getattr__ lookups (a few us a step);
        # attributes that are not plain parameters (torch.nn.utils.parametrize turns them into
        # properties) through getattr.
        params = self._parameters
        return tuple(params[name] if name in params else getattr(self, name)
                     for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))

    @staticmethod
    def _raise_for_states(hx, is_batched: bool) -> None:
        # nn.LSTMCell's checks of hx's length and dims, in its order.
        state_dims = [value.dim() for value in hx]
        for index, value_dim in enumerate(state_dims):
            if value_dim != 2 and value_dim != 1:
                raise ValueError(f"LSTMCell: Expected hx[{index}] to be 1D or 2D, got "
                                 f"{value_dim}D instead")
        if len(hx) != 2:
            raise RuntimeError("lstm_cell expects two hidden states")
        expected = 2 if is_batched else 1
        if state_dims[0] != expected or state_dims[1] != expected:
            kind = "batched 2-D" if is_batched else "unbatched 1-D"
            raise RuntimeError(f"LSTMCell: for {kind} input, hx[0] and hx[1] should also be "
                               f"{expected}-D but got ({state_dims[0]}-D, {state_dims[1]}-D) "
                               "tensors")

    def forward(self, input: Tensor,
                hx: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[Tensor, Tensor]:
        # Checks in nn.LSTMCell's order, with its exception classes and messages (theirs come
        # from aten's lstm_cell), before anything runs: the op checks the rest (Note [Argument
        # checks] in modules.py). Written for a cheap common case (a step costs tens of us).
        input_dim = input.dim()
        if input_dim != 2 and input_dim != 1:
            raise ValueError(f"LSTMCell: Expected input to be 1D or 2D, got {input_dim}D instead")
        is_batched = input_dim == 2
        hidden_size = self.hidden_size
        if hx is not None:
            if not isinstance(hx, (tuple, list)):
                raise TypeError("LSTMCell: expected hx to be a tuple (h_0, c_0) of two tensors, "
                                f"got {type(hx).__name__}")
            if len(hx) != 2 or hx[0].dim() != input_dim or hx[1].dim() != input_dim:
                self._raise_for_states(hx, is_batched)  # (the checks below all pass otherwise)
            h, c = hx[0], hx[1]
            if not is_batched:
                input, h, c = input.unsqueeze(0), h.unsqueeze(0), c.unsqueeze(0)
            batch, input_size = input.shape
        else:
            if not is_batched:
                input = input.unsqueeze(0)
            batch, input_size = input.shape
            # Two tensors, not one twice: dynamo cannot trace an autograd.Function that gets the
            # same tensor as two inputs.
            h = torch.zeros(batch, hidden_size, dtype=input.dtype, device=input.device)
            c = torch.zeros(batch, hidden_size, dtype=input.dtype, device=input.device)

        if input_size != self.input_size:
            raise RuntimeError(f"input has inconsistent input_size: got {input_size} expected "
                               f"{self.input_size}")
        expected_shape = (batch, hidden_size)
        if h.shape != expected_shape or c.shape != expected_shape:
            for index, state in enumerate((h, c)):
                state_batch, state_hidden = state.shape
                if state_batch != batch:
                    raise RuntimeError(f"Input batch size {batch} doesn't match "
                                       f"hidden{index} batch size {state_batch}")
                if state_hidden != hidden_size:
                    raise RuntimeError(f"hidden{index} has inconsistent hidden_size: got "
                                       f"{state_hidden}, expected {hidden_size}")

        params = self._parameters
        try:
            weights = (params["weight_ih"], params["weight_hh"], params["bias_ih"],
                       params["bias_hh"])
        except KeyError:  # a parametrized weight (a property): _weights() handles it
            weights = self._weights()
        if _route_to_aten(weights[0]) or hidden_size == 0:
            # Note [Routes off the fused op] in _base.py; the fused op needs hidden_size > 0.
            h_1, c_1 = _lstm_cell_composite(input, h, c, *weights)
        elif torch._C._is_any_autocast_enabled() and _autocast_enabled(input.device.type):
            # Run the whole step in one dtype, with autocast off inside (the op's own GEMMs must
            # not be re-cast underneath it): nn.LSTMCell's result dtype (class docstring).
            device_type = input.device.type
            dtype = _autocast_run_dtype(device_type, c, promote_on_cpu=True)
            input, h, c = (_autocast_cast(t, dtype) for t in (input, h, c))
            weights = tuple(_autocast_cast(w, dtype) for w in weights)
            with torch.autocast(device_type, enabled=False):
                h_1, c_1 = run_cell(input, h, c, *weights)
        else:
            weight_dtype = weights[0].dtype
            if input.dtype != weight_dtype or h.dtype != weight_dtype or c.dtype != weight_dtype:
                # nn.LSTMCell raises RuntimeError for mixed dtypes (from its matmul), the op a
                # ValueError: so checked here.
                for name, t in (("input", input), ("hx[0]", h), ("hx[1]", c)):
                    if t.dtype != weight_dtype:
                        raise RuntimeError(f"LSTMCell: expected {name} to have the dtype of the "
                                           f"weights ({weight_dtype}), got {t.dtype}")
            h_1, c_1 = run_cell(input, h, c, *weights)

        if not is_batched:
            h_1, c_1 = h_1.squeeze(0), c_1.squeeze(0)
        return h_1, c_1

"""``fused_lstm.LSTM``: torch.nn.LSTM's interface on the fused ops.

It subclasses ``nn.Module``, not ``nn.LSTM`` (dynamo graph-breaks on any nn.RNNBase instance; see
DESIGN.md), and keeps nn.LSTM's constructor, attribute and parameter names, parameter order,
initialisation and ``state_dict`` keys, so state dicts move between the two unchanged.
"""

import numbers
import operator
import warnings
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from . import _ops
from ._base import (
    _autocast_cast,
    _autocast_enabled,
    _autocast_run_dtype,
    _ExpandedWeight,
    _FusedModule,
    _in_onnx_export,
    _route_to_aten,
)
from ._eager import _plain_eager, run_bidirectional_layer, run_module_layer
from ._ops import check_batch_sizes_not_vmapped
from .functional import run_layer

# Note [Argument checks]
# One place checks a layer's arguments: the op (check_forward_arguments in csrc/layer_args.cpp),
# which every route reaches, with a message naming the op and the argument. Python adds only
# (1) what nn.LSTM / nn.LSTMCell raise before any op runs, with their exception classes and
# messages (drop-in compatibility: tests/test_bad_inputs.py, test_module_api.py, test_cell.py),
# where the op's would differ (its dtype mismatches are ValueErrors, nn's state dtype and cell
# dtype errors RuntimeErrors; its shape messages are not nn's); (2) what must hold before Python
# reads or allocates from an argument (batch_sizes[0] for the default states, non-Tensor
# arguments of fused_lstm.lstm_layer), and fused_lstm.lstm_layer's 2-D states (the op also takes
# a module's (1, B, .) states, Note [States with a layer dimension] in csrc/layer_args.h, which
# the function's vmap rule would fold wrongly); (3) the fake kernels' device checks in _ops.py,
# which run instead of the C++ ones on meta tensors. Each such check says which of these it is. The
# modules pass their arguments to functional.run_layer / run_cell / run_module_layer, which
# check nothing: the op does.


def _apply_permutation(tensor: Tensor, permutation: Tensor, dim: int = 1) -> Tensor:
    return tensor.index_select(dim, permutation)


class LSTM(_FusedModule):
    r"""Drop-in replacement for :class:`torch.nn.LSTM` running fused CPU/CUDA kernels.

    Same arguments, shapes, parameters and results as ``torch.nn.LSTM`` (see its documentation):
    ``LSTM(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
    bidirectional=False, proj_size=0, device=None, dtype=None)``; ``forward(input, hx=None)``
    returns ``(output, (h_n, c_n))`` and accepts batched, unbatched and packed input.

    Where it differs from nn.LSTM on purpose:

    - Autocast on CUDA: runs in the autocast dtype, bfloat16 included; nn.LSTM's cuDNN path
      runs float16 under a bfloat16 autocast (its autocast rule casts to half), with which a
      model was measured not to learn. On CPU it returns nn.LSTM's dtypes (Note [CPU autocast
      dtypes]), and runs float16 autocast where nn.LSTM's oneDNN path fails.
    - TorchScript: ``torch.jit.script`` raises (use ``torch.compile`` / ``torch.export``);
      ``torch.jit.trace`` records ``fused_lstm::lstm_layer_forward`` calls, which save and load
      (``import fused_lstm`` first, to register the ops) and run for inference only (the traced
      op has no autograd).
    - ``torch.onnx.export`` and ExpandedWeights (per-sample gradients) run torch's own
      ``aten::lstm``, as nn.LSTM does (Note [Routes off the fused op]).
    """

    __constants__ = ["input_size", "hidden_size", "num_layers", "bias", "batch_first",
                     "dropout", "bidirectional", "proj_size"]
    _torch_class = nn.LSTM
    _constructor_args = ("input_size", "hidden_size", "num_layers", "bias", "batch_first",
                         "dropout", "bidirectional", "proj_size")

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device=None, dtype=None) -> None:
        super().__init__()
        # Argument checks in nn.RNNBase's order, with its exception classes and messages.
        if (not isinstance(dropout, numbers.Number) or not 0 <= dropout <= 1
                or isinstance(dropout, bool)):
            raise ValueError("dropout should be a number in range [0, 1] representing the "
                             "probability of an element being zeroed")
        if dropout > 0 and num_layers == 1:
            warnings.warn("dropout option adds dropout after all but last recurrent layer, so "
                          "non-zero dropout expects num_layers greater than 1, but got "
                          f"dropout={dropout} and num_layers={num_layers}", stacklevel=2)
        if not isinstance(bias, bool):
            raise TypeError(f"bias should be of type bool, got: {type(bias).__name__}")
        if not isinstance(batch_first, bool):
            raise TypeError("batch_first should be of type bool, got: "
                            f"{type(batch_first).__name__}")
        if not isinstance(input_size, int):
            raise TypeError(f"input_size should be of type int, got: {type(input_size).__name__}")
        if input_size <= 0:
            raise ValueError("input_size must be greater than zero")
        if not isinstance(hidden_size, int):
            raise TypeError(f"hidden_size should be of type int, got: {type(hidden_size).__name__}")
        if hidden_size <= 0:
            raise ValueError("hidden_size must be greater than zero")
        if num_layers <= 0:
            raise ValueError("num_layers must be greater than zero")
        if proj_size < 0:
            raise ValueError("proj_size should be a positive integer or zero to disable "
                             "projections")
        if proj_size >= hidden_size:
            raise ValueError("proj_size has to be smaller than hidden_size")

        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size

        factory = {"device": device, "dtype": dtype}
        gate_size = 4 * hidden_size
        real_hidden_size = proj_size if proj_size > 0 else hidden_size
        self._all_weights: List[List[str]] = []
        for layer in range(num_layers):
            for direction in range(self._num_directions):
                layer_input_size = (input_size if layer == 0
                                    else real_hidden_size * self._num_directions)
                suffix = "_reverse" if direction == 1 else ""
                params = [(f"weight_ih_l{layer}{suffix}", (gate_size, layer_input_size)),
                          (f"weight_hh_l{layer}{suffix}", (gate_size, real_hidden_size))]
                if bias:
                    params += [(f"bias_ih_l{layer}{suffix}", (gate_size,)),
                               (f"bias_hh_l{layer}{suffix}", (gate_size,))]
                if proj_size > 0:
                    params += [(f"weight_hr_l{layer}{suffix}", (proj_size, hidden_size))]
                for name, shape in params:
                    self.register_parameter(name, nn.Parameter(torch.empty(shape, **factory)))
                self._all_weights.append([name for name, _ in params])
        self.reset_parameters()

    @property
    def _num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def _flat_weights_names(self) -> List[str]:
        return [name for names in self._all_weights for name in names]

    @property
    def _flat_weights(self) -> List[nn.Parameter]:
        return [getattr(self, name) for name in self._flat_weights_names]

    @property
    def all_weights(self) -> List[List[nn.Parameter]]:
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def flatten_parameters(self) -> None:
        """No-op, kept for nn.LSTM compatibility (the fused kernels need no flat buffer)."""

    def extra_repr(self) -> str:
        s = "{input_size}, {hidden_size}"
        if self.proj_size != 0:
            s += ", proj_size={proj_size}"
        if self.num_layers != 1:
            s += ", num_layers={num_layers}"
        if self.bias is not True:
            s += ", bias={bias}"
        if self.batch_first is not False:
            s += ", batch_first={batch_first}"
        if self.dropout != 0:
            s += ", dropout={dropout}"
        if self.bidirectional is not False:
            s += ", bidirectional={bidirectional}"
        return s.format(**self.__dict__)

    # -- checks (nn.RNNBase's / nn.LSTM's methods, messages and exception classes) ------------
    def check_input(self, input: Tensor, batch_sizes: Optional[Tensor]) -> None:
        weight = self._parameters.get("weight_ih_l0")  # (nn.Module.__getattr__: 0.6 us)
        weight_dtype = (self.weight_ih_l0 if weight is None else weight).dtype
        if input.dtype != weight_dtype and not _autocast_enabled(input.device.type):
            raise ValueError(f"RNN input dtype ({input.dtype}) does not match weight dtype "
                             f"({weight_dtype}). Convert input: input.to({weight_dtype}), or "
                             f"convert model: model.to({input.dtype})")
        expected_dim = 2 if batch_sizes is not None else 3
        if input.dim() != expected_dim:
            raise RuntimeError(f"input must have {expected_dim} dimensions, got {input.dim()}")
        if self.input_size != input.size(-1):
            raise RuntimeError("input.size(-1) must be equal to input_size. Expected "
                               f"{self.input_size}, got {input.size(-1)}")

    def get_expected_hidden_size(self, input: Tensor,
                                 batch_sizes: Optional[Tensor]) -> Tuple[int, int, int]:
        if batch_sizes is not None:
            mini_batch = int(batch_sizes[0])
        else:
            mini_batch = input.size(0) if self.batch_first else input.size(1)
        real_hidden = self.proj_size if self.proj_size > 0 else self.hidden_size
        return (self.num_layers * self._num_directions, mini_batch, real_hidden)

    def get_expected_cell_size(self, input: Tensor,
                               batch_sizes: Optional[Tensor]) -> Tuple[int, int, int]:
        layers, mini_batch, _ = self.get_expected_hidden_size(input, batch_sizes)
        return (layers, mini_batch, self.hidden_size)

    def check_hidden_size(self, hx: Tensor, expected_hidden_size: Tuple[int, int, int],
                          msg: str = "Expected hidden size {}, got {}") -> None:
        if hx.size() != expected_hidden_size:
            raise RuntimeError(msg.format(expected_hidden_size, list(hx.size())))

    def check_forward_args(self, input: Tensor, hidden: Tuple[Tensor, Tensor],
                           batch_sizes: Optional[Tensor]) -> None:
        self.check_input(input, batch_sizes)
        self.check_hidden_size(hidden[0], self.get_expected_hidden_size(input, batch_sizes),
                               "Expected hidden[0] size {}, got {}")
        self.check_hidden_size(hidden[1], self.get_expected_cell_size(input, batch_sizes),
                               "Expected hidden[1] size {}, got {}")

    # Whether a subclass overrides any of nn's check methods above: then forward calls them as
    # nn.LSTM does; else padded input takes _check_padded_forward_args, the same checks and
    # messages in one call (five method calls cost about 1.5 us of a single step's ~25).
    _nn_checks_overridden = False
    _NN_CHECK_METHODS = ("check_input", "get_expected_hidden_size", "get_expected_cell_size",
                         "check_hidden_size", "check_forward_args")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._nn_checks_overridden = any(getattr(cls, name) is not getattr(LSTM, name)
                                        for name in LSTM._NN_CHECK_METHODS)

    def _check_padded_forward_args(self, input: Tensor, hx: Tuple[Tensor, Tensor]) -> None:
        # check_forward_args(input, hx, None), inlined (Note [Argument checks] (1)).
        weight = self._parameters.get("weight_ih_l0")
        weight_dtype = (self.weight_ih_l0 if weight is None else weight).dtype
        if input.dtype != weight_dtype and not _autocast_enabled(input.device.type):
            self.check_input(input, None)  # raises nn's message
        if input.dim() != 3 or self.input_size != input.size(-1):
            self.check_input(input, None)
        mini_batch = input.size(0) if self.batch_first else input.size(1)
        layers = self.num_layers * 2 if self.bidirectional else self.num_layers
        hidden = self.hidden_size
        expected = (layers, mini_batch, self.proj_size if self.proj_size > 0 else hidden)
        if hx[0].shape != expected:
            self.check_hidden_size(hx[0], expected, "Expected hidden[0] size {}, got {}")
        expected = (layers, mini_batch, hidden)
        if hx[1].shape != expected:
            self.check_hidden_size(hx[1], expected, "Expected hidden[1] size {}, got {}")

    def permute_hidden(self, hx: Tuple[Tensor, Tensor],
                       permutation: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        if permutation is None:
            return hx
        return _apply_permutation(hx[0], permutation), _apply_permutation(hx[1], permutation)

    # -- forward ------------------------------------------------------------------------------
    # Note [One-layer fast path]
    # A call of a one-layer, one-direction, time-major module on a padded batch with (h_0, c_0)
    # given -- a decoding loop's step, T = 1 -- spends more time in forward's general checks and
    # dispatch than the op takes: measured at B=1 H=128 (no grad), a T=1 call 23.5 us against
    # 20.1 for an LSTMCell step, of which the op is 14. Such a call is recognised by a few cheap
    # tests that together imply every check of the general path (nn.LSTM's), and goes straight
    # to run_module_layer; anything else -- a failing check included, so that its error comes
    # from the general path with nn.LSTM's message -- takes the general path.
    def _one_layer_fast_path(self, input: Tensor, hx: Tuple[Tensor, Tensor]):
        h_0, c_0 = hx
        shape = input.shape
        if len(shape) != 3 or shape[0] == 0 or shape[2] != self.input_size:
            return None
        weights = self._layer_weights(0)
        dtype = weights[0].dtype
        hidden = self.hidden_size
        if (input.dtype != dtype or h_0.dtype != dtype or c_0.dtype != dtype
                or h_0.shape != (1, shape[1], self.proj_size if self.proj_size > 0 else hidden)
                or c_0.shape != (1, shape[1], hidden) or torch._C._is_any_autocast_enabled()
                or _route_to_aten(weights[0])):
            return None
        output, h_n, c_n = run_module_layer(input, h_0, c_0, *weights, None)
        return output, (h_n, c_n)

    def forward(self, input, hx: Optional[Tuple[Tensor, Tensor]] = None):
        if (type(hx) is tuple and len(hx) == 2 and type(input) is Tensor and self.num_layers == 1
                and not self.bidirectional and not self.batch_first
                and not self._nn_checks_overridden):
            result = self._one_layer_fast_path(input, hx)
            if result is not None:
                return result
        orig_input = input
        batch_sizes = sorted_indices = unsorted_indices = None
        packed = isinstance(orig_input, PackedSequence)
        if packed:
            input, batch_sizes, sorted_indices, unsorted_indices = orig_input
            check_batch_sizes_not_vmapped(batch_sizes)  # before int(batch_sizes[0]) reads it
            if batch_sizes.numel() == 0:  # nn.LSTM fails here with an IndexError too
                raise IndexError("LSTM: expected a PackedSequence with at least one time step, "
                                 "got an empty batch_sizes")
            is_batched = True
            mini_batch = int(batch_sizes[0])
            # Before the states are allocated from it (torch._check: also under torch.compile,
            # whose message closures may only hold constants).
            torch._check(mini_batch <= input.size(0), lambda: (
                "LSTM: expected batch_sizes[0] to be at most the number of packed rows "
                "(PackedSequence.data.size(0))"))
        else:
            input_dim = input.dim()
            if input_dim != 3 and input_dim != 2:  # nn.LSTM's message (the op's names the op)
                raise ValueError(f"LSTM: Expected input to be 2D or 3D, got {input_dim}D instead")
            is_batched = input_dim == 3
            if not is_batched:
                input = input.unsqueeze(0 if self.batch_first else 1)
            mini_batch = input.size(0) if self.batch_first else input.size(1)

        if hx is None:
            real_hidden = self.proj_size if self.proj_size > 0 else self.hidden_size
            layers = self.num_layers * self._num_directions
            zeros = dict(dtype=input.dtype, device=input.device)
            hx = (torch.zeros(layers, mini_batch, real_hidden, **zeros),
                  torch.zeros(layers, mini_batch, self.hidden_size, **zeros))
            # These states have the right shape by construction; not checking them keeps packed
            # input free of a second data-dependent read of batch_sizes[0] (which
            # torch.compile(fullgraph=True) cannot reconcile with the first).
            self.check_input(input, batch_sizes)
        else:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:  # before hx[0] is read
                raise TypeError("LSTM: expected hx to be a tuple (h_0, c_0) of two tensors, got "
                                f"{type(hx).__name__}")
            if batch_sizes is None:
                expected = 3 if is_batched else 2
                if hx[0].dim() != expected or hx[1].dim() != expected:  # nn.LSTM's message
                    kind = "batched 3-D" if is_batched else "unbatched 2-D"
                    raise RuntimeError(
                        f"For {kind} input, hx and cx should also be {expected}-D but got "
                        f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors")
                if not is_batched:
                    hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
            else:
                # Each state row must match the sequence the user passed in that position.
                hx = (hx[0], hx[1])
            # nn.LSTM's checks and messages; before the permutation, so a wrong batch size gets
            # the size message.
            if batch_sizes is None and not self._nn_checks_overridden:
                self._check_padded_forward_args(input, hx)  # the same, in fewer calls
            else:
                self.check_forward_args(input, hx, batch_sizes)
            if ((hx[0].dtype != input.dtype or hx[1].dtype != input.dtype)
                    and not _autocast_enabled(input.device.type)):
                # nn.LSTM fails with a RuntimeError here too (the op would raise a ValueError).
                for index, state in enumerate(hx):
                    if state.dtype != input.dtype:
                        raise RuntimeError(f"Expected hidden[{index}] to have the input's dtype "
                                           f"{input.dtype}, got {state.dtype}")
            hx = self.permute_hidden(hx, sorted_indices)

        if batch_sizes is None and self.batch_first:
            input = input.transpose(0, 1)  # the kernels are time-major; reshape copies if needed
        if batch_sizes is None and input.size(0) == 0:
            # nn.LSTM's rule (the raw op itself accepts T = 0 and returns the states unchanged).
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
        output, h_n, c_n = self._run_layers(input, hx, batch_sizes)

        if packed:
            output = PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices)
            if unsorted_indices is not None:
                h_n = _apply_permutation(h_n, unsorted_indices)
                c_n = _apply_permutation(c_n, unsorted_indices)
            return output, (h_n, c_n)
        if self.batch_first:
            output = output.transpose(0, 1)
        if not is_batched:
            output = output.squeeze(0 if self.batch_first else 1)
            h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
        return output, (h_n, c_n)

    def _run_layers(self, input: Tensor, hx: Tuple[Tensor, Tensor],
                    batch_sizes: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
        # (_parameters, not the attribute: nn.Module.__getattr__ costs 0.6 us; functional_call,
        # which puts ExpandedWeights in place, swaps them into _parameters)
        if _route_to_aten(self._parameters["weight_ih_l0"]):
            if self.proj_size > 0 and _in_onnx_export():
                # torch's exporters turn aten::lstm with projections into an ONNX LSTM without
                # them (onnxruntime then rejects the state shapes): say so at export instead.
                raise NotImplementedError(
                    "fused_lstm ONNX export: proj_size is not supported (ONNX's LSTM operator "
                    "has no projection); export a model without proj_size")
            return self._run_aten(input, hx, batch_sizes)
        if torch._C._is_any_autocast_enabled() and _autocast_enabled(input.device.type):
            device_type = input.device.type
            # _autocast_run_dtype: cast in Python, then run with autocast off.
            out_dtype = None
            promote = batch_sizes is not None or self.proj_size > 0
            if device_type == "cpu" and promote:
                # Note [CPU autocast dtypes]: nn.LSTM's policy. Padded input without projection
                # runs mkldnn_rnn_layer, all in the autocast dtype. Packed input and proj_size
                # run aten's own cell loop, where autocast casts only the linears: the cell
                # state promotes with c_0's dtype, and so do h and the output, unless projected
                # (the projection is a linear: autocast dtype). Computing in the promoted dtype
                # and casting the projected outputs down gives those dtypes.
                # On CUDA the fused module runs every input kind in the autocast dtype; nn.LSTM
                # there runs cuDNN in float16 even under a bfloat16 autocast (its cuDNN autocast
                # rule casts to half), which we deliberately do not copy.
                if self.proj_size > 0:
                    out_dtype = torch.get_autocast_dtype(device_type)
            dtype = _autocast_run_dtype(device_type, hx[1], promote_on_cpu=promote)
            with torch.autocast(device_type, enabled=False):
                output, h_n, c_n = self._run_layers_cast(_autocast_cast(input, dtype),
                                                         (_autocast_cast(hx[0], dtype),
                                                          _autocast_cast(hx[1], dtype)),
                                                         batch_sizes, dtype)
            if out_dtype is not None:
                output, h_n = output.to(out_dtype), h_n.to(out_dtype)
            return output, h_n, c_n
        if self.num_layers == 1 and not self.bidirectional:  # the common case, one call less
            return run_module_layer(input, hx[0], hx[1], *self._layer_weights(0), batch_sizes)
        return self._run_layers_cast(input, hx, batch_sizes, None)

    def _run_aten(self, input: Tensor, hx: Tuple[Tensor, Tensor],
                  batch_sizes: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
        # nn.LSTM's own call (Note [Routes off the fused op]); input is time-major here.
        weights = self._flat_weights
        # ExpandedWeight decomposes torch.lstm, and on CPU the decomposition picks
        # mkldnn_rnn_layer (which ExpandedWeight has no rule for) unless the input requires
        # grad: nn.LSTM fails there; with mkldnn off it takes the linear-op loop.
        mkldnn = not isinstance(weights[0], _ExpandedWeight) and torch.backends.mkldnn.enabled
        with torch.backends.mkldnn.flags(enabled=mkldnn):
            if batch_sizes is None:
                return tuple(torch._VF.lstm(input, hx, weights, self.bias, self.num_layers,
                                            self.dropout, self.training, self.bidirectional,
                                            False))
            return tuple(torch._VF.lstm(input, batch_sizes, hx, weights, self.bias,
                                        self.num_layers, self.dropout, self.training,
                                        self.bidirectional))

    def _layer_weights(self, index: int) -> Tuple[Tensor, Tensor, Optional[Tensor],
                                                  Optional[Tensor], Optional[Tensor]]:
        """(weight_ih, weight_hh, bias_ih, bias_hh, weight_hr) of layer-direction ``index``."""
        names = self._all_weights[index]
        params = self._parameters
        try:  # _parameters, not getattr: nn.Module.__getattr__ costs 0.6 us a name
            weights = operator.itemgetter(*names)(params)  # (one call: 0.15 us, a map 0.27)
        except KeyError:  # a parametrized weight (a property) or a plain tensor attribute
            weights = tuple(getattr(self, name) for name in names)
        if self.bias:
            return weights if len(weights) == 5 else (*weights, None)
        return weights[0], weights[1], None, None, weights[2] if len(weights) > 2 else None

    def _run_layers_cast(self, input: Tensor, hx: Tuple[Tensor, Tensor],
                         batch_sizes: Optional[Tensor],
                         dtype: Optional[torch.dtype]) -> Tuple[Tensor, Tensor, Tensor]:
        directions = self._num_directions
        if self.num_layers == 1 and directions == 1 and dtype is None:  # the common case, short
            return run_module_layer(input, hx[0], hx[1], *self._layer_weights(0), batch_sizes)
        h_n, c_n = [], []
        layer_input = input
        # Both directions of a layer in one call, which may run them concurrently (Note
        # [Concurrent directions on CPU] in csrc/cpu/lstm_cpu_directions.cpp): CPU, plain eager.
        both_at_once = (directions == 2 and input.device.type == "cpu" and _plain_eager()
                        and not _ops.ops_replaced())
        for layer in range(self.num_layers):
            if both_at_once:
                weights = [self._layer_weights(2 * layer + d) for d in (0, 1)]
                if dtype is not None:
                    weights = [[_autocast_cast(w, dtype) for w in ws] for ws in weights]
                layer_output, h_f, c_f, h_r, c_r = run_bidirectional_layer(
                    layer_input, batch_sizes, hx[0][2 * layer], hx[1][2 * layer], weights[0],
                    hx[0][2 * layer + 1], hx[1][2 * layer + 1], weights[1])
                h_n += [h_f, h_r]
                c_n += [c_f, c_r]
            else:
                outputs = []
                for direction in range(directions):
                    index = layer * directions + direction
                    weights = self._layer_weights(index)
                    if dtype is not None:
                        weights = [_autocast_cast(w, dtype) for w in weights]
                    output, h, c = run_layer(layer_input, hx[0][index], hx[1][index], *weights,
                                             batch_sizes, direction == 1)
                    outputs.append(output)
                    h_n.append(h)
                    c_n.append(c)
                layer_output = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-1)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                layer_output = nn.functional.dropout(layer_output, self.dropout, training=True)
            layer_input = layer_output
        return layer_input, torch.stack(h_n), torch.stack(c_n)

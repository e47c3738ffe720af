"""What ``fused_lstm.LSTM`` and ``fused_lstm.LSTMCell`` share: the autocast, ONNX-export and
ExpandedWeights checks of their hot paths, and a base class with nn's parameter initialisation,
the conversions from and to the torch.nn module and the TorchScript refusal.
"""

import math
import warnings
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from . import onnx as _onnx

try:  # what torch.nn.utils._per_sample_grad.call_for_per_sample_grads puts in place of weights
    from torch.nn.utils._expanded_weights.expanded_weights_impl import (
        ExpandedWeight as _ExpandedWeight,
    )
except ImportError:  # pragma: no cover - a torch without ExpandedWeights: nothing to detect
    _ExpandedWeight = ()


# Device types with an autocast mode. torch.is_autocast_enabled raises for the others (meta, ...);
# a constant set rather than torch.amp.is_autocast_available, which dynamo cannot trace on torch
# 2.11 (a graph break under torch.compile(fullgraph=True)).
_AUTOCAST_DEVICE_TYPES = frozenset({"cpu", "cuda", "xpu", "mps", "hpu", "mtia", "xla", "ipu"})


def _autocast_enabled(device_type: str) -> bool:
    return device_type in _AUTOCAST_DEVICE_TYPES and torch.is_autocast_enabled(device_type)


def _autocast_cast(tensor: Optional[Tensor], dtype: Optional[torch.dtype]) -> Optional[Tensor]:
    # What autocast does to an op's arguments: floating tensors other than float64 are cast
    # (None, an absent bias, stays None).
    if (tensor is None or dtype is None or not tensor.is_floating_point()
            or tensor.dtype == torch.float64):
        return tensor
    return tensor.to(dtype)


def _autocast_run_dtype(device_type: str, c_0: Tensor, promote_on_cpu: bool) -> torch.dtype:
    """The one dtype a fused op runs in under autocast (DESIGN.md: inputs, states and weights
    are cast to it in Python, then the op runs with autocast off, so that its own GEMMs are not
    re-cast underneath it): the autocast dtype, promoted with ``c_0``'s on CPU where nn's CPU
    path promotes (its cell update after autocast-cast linears; each module says when)."""
    dtype = torch.get_autocast_dtype(device_type)
    if promote_on_cpu and device_type == "cpu":
        dtype = torch.promote_types(dtype, c_0.dtype)
    return dtype


# torch.jit.script cannot compile the modules' forward (Python autograd.Functions, closures,
# keyword-argument expansion); tracing works (Note [TorchScript tracing] in functional.py).
_SCRIPT_UNSUPPORTED = (
    "fused_lstm.{name} does not support torch.jit.script (its forward calls Python "
    "autograd.Functions, which TorchScript cannot compile). Use torch.compile or torch.export "
    "instead; torch.jit.trace also works (the traced graph calls the torch.ops.fused_lstm ops: "
    "`import fused_lstm` before torch.jit.load); or script the torch.nn modules that "
    "fused_lstm.revert(model) gives back.")


try:
    # torch.onnx.is_in_onnx_export() reads these two flags, but imports their modules on every
    # call (over 1 us): imported once here for the hot path's check. The field, not the
    # in_onnx_export property: dynamo refuses to trace torch.onnx's functions (a graph break).
    from torch.onnx._internal.exporter import _flags as _onnx_flags
    from torch.onnx._internal.torchscript_exporter._globals import GLOBALS as _onnx_globals

    def _in_onnx_export() -> bool:
        return _onnx_globals._in_onnx_export or _onnx_flags._is_onnx_exporting
except ImportError:  # pragma: no cover - another torch's layout: the public, slower call
    _in_onnx_export = torch.onnx.is_in_onnx_export


def _route_to_aten(weight: Tensor) -> bool:
    """Whether to run torch's own LSTM ops instead of the fused op (Note [Routes off the fused
    op]). Cheap (about 0.2 us): a type test and two flag reads, on the hot path."""
    return (isinstance(weight, _ExpandedWeight)
            or (_in_onnx_export() and not _onnx.translating()))


# Note [Routes off the fused op]
# Two callers cannot use fused_lstm::lstm_layer_forward and get torch's own ops instead, the
# ones nn.LSTM / nn.LSTMCell would run, so they behave as nn does:
# - torch.onnx.export (either exporter, while torch.onnx.is_in_onnx_export()): aten::lstm, which
#   both exporters turn into ONNX's LSTM operator (the cell: F.linear and pointwise ops). Not
#   under fused_lstm.onnx.export, whose translation table maps the fused op itself.
# - ExpandedWeights (torch.nn.utils._per_sample_grad.call_for_per_sample_grads, which DP-SGD
#   libraries build on): ExpandedWeight handles only the torch functions it knows, among them
#   torch.lstm (decomposed into linear ops over time) and F.linear, so that per-sample gradients
#   land in each parameter's grad_sample as with nn.LSTM. The cell uses F.linear and pointwise
#   ops, so it gets per-sample gradients where nn.LSTMCell (aten::lstm_cell) raises.
# TorchScript tracing stays on the fused op, called raw (functional.lstm_layer).


def _copy_requires_grad(dst: nn.Module, src: nn.Module) -> None:
    # load_state_dict copies values only; frozen weights must stay frozen across conversions.
    src_params = dict(src.named_parameters())
    for name, param in dst.named_parameters():
        param.requires_grad_(src_params[name].requires_grad)


class _FusedModule(nn.Module):
    """Base of the fused modules. A subclass sets ``_torch_class`` (the nn module it replaces)
    and ``_constructor_args`` (the attributes passed positionally to either class's constructor,
    which both share), and registers its parameters in nn's order before ``reset_parameters``."""

    _torch_class: type = nn.Module
    _constructor_args: Tuple[str, ...] = ()

    def reset_parameters(self) -> None:
        # nn.RNNBase's and nn.RNNCellBase's initialisation: all parameters U(-1/sqrt(H), 1/sqrt(H)).
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for weight in self.parameters():
            nn.init.uniform_(weight, -stdv, stdv)

    @staticmethod
    def _convert(module: nn.Module, to: type, arg_names: Tuple[str, ...]) -> nn.Module:
        weight = next(module.parameters())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the source module already warned (nn.LSTM: dropout)
            new = to(*(getattr(module, name) for name in arg_names), device=weight.device,
                     dtype=weight.dtype)
        new.load_state_dict(module.state_dict())
        _copy_requires_grad(new, module)
        return new.train(module.training)

    @classmethod
    def from_torch(cls, module: nn.Module):
        """A fused module with ``module``'s (the torch.nn one's) configuration, weights, device,
        dtype, mode and ``requires_grad`` flags."""
        return cls._convert(module, cls, cls._constructor_args)

    def to_torch(self) -> nn.Module:
        """The ``torch.nn`` module with this module's configuration, weights, device, dtype, mode
        and ``requires_grad`` flags."""
        return self._convert(self, self._torch_class, self._constructor_args)

    def __prepare_scriptable__(self):
        # torch.jit.script calls this before compiling a module (and each submodule).
        raise RuntimeError(_SCRIPT_UNSUPPORTED.format(name=self._torch_class.__name__))

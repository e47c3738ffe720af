"""Swap ``torch.nn.LSTM`` / ``torch.nn.LSTMCell`` for the fused modules inside a model, and back.

``convert(model)`` replaces every ``nn.LSTM`` and ``nn.LSTMCell`` in the module tree (the root
included) by ``fused_lstm.LSTM`` / ``fused_lstm.LSTMCell`` built with ``from_torch``;
``revert(model)`` (same as ``convert(model, back=True)``) does the reverse with ``to_torch``.
"""

import copy
from typing import Dict

from torch import nn

from .cell import LSTMCell
from .modules import LSTM


def _swap(module: nn.Module, back: bool, memo: Dict[int, nn.Module]) -> nn.Module:
    # Exact types only: a subclass of nn.LSTM may override forward, so it is left alone.
    if id(module) in memo:
        return memo[id(module)]
    if back:
        table = {LSTM: LSTM.to_torch, LSTMCell: LSTMCell.to_torch}
    else:
        table = {nn.LSTM: LSTM.from_torch, nn.LSTMCell: LSTMCell.from_torch}
    make = table.get(type(module))
    if make is not None:
        new = make(module)
    else:
        new = module
        for name, child in list(module._modules.items()):
            if child is None:
                continue
            replacement = _swap(child, back, memo)
            if replacement is not child:
                setattr(module, name, replacement)
    memo[id(module)] = new
    return new


def convert(module: nn.Module, inplace: bool = True, back: bool = False) -> nn.Module:
    r"""Replace every ``torch.nn.LSTM``/``torch.nn.LSTMCell`` in ``module`` by the fused ones.

    Args:
        module: any ``nn.Module``; it may itself be an ``nn.LSTM`` or ``nn.LSTMCell``.
        inplace: swap the submodules of ``module`` itself (default); when ``False``, a deep copy
            is converted and ``module`` is left untouched.
        back: convert the other way (fused -> torch); ``revert(module)`` is the same.

    Returns:
        The converted model: ``module`` itself, or its replacement when the root was one of the
        swapped types (so always use the return value: ``model = fused_lstm.convert(model)``).

    Each replacement has the same configuration, weights (copied, so they are new ``Parameter``
    objects: create optimizers *after* converting), ``requires_grad`` flags, device, dtype and
    training mode; ``state_dict`` keys are unchanged. A module that appears several times in the
    tree is replaced by one shared replacement. Only the exact types are swapped (subclasses of
    ``nn.LSTM``/``nn.LSTMCell`` may change ``forward``); hooks registered on a swapped module and
    parametrizations of its weights are not carried over.
    """
    if not inplace:
        module = copy.deepcopy(module)
    return _swap(module, back, {})


def revert(module: nn.Module, inplace: bool = True) -> nn.Module:
    """Replace every ``fused_lstm.LSTM``/``fused_lstm.LSTMCell`` in ``module`` by
    ``torch.nn.LSTM``/``torch.nn.LSTMCell``: the inverse of :func:`convert` (see it)."""
    return convert(module, inplace=inplace, back=True)

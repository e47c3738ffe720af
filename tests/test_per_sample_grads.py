"""Per-sample gradients through PyTorch's ExpandedWeights
(torch.nn.utils._per_sample_grad.call_for_per_sample_grads, what DP-SGD libraries build on):
fused_lstm modules fill each parameter's grad_sample as nn.LSTM does (they run aten::lstm /
F.linear there: Note [Routes off the fused op] in fused_lstm/modules.py). The torch.func route,
vmap(grad(...)), stays on the fused kernels: tests/test_higher_order.py::test_per_sample_gradients.
"""
import copy

import pytest
import torch
from torch import nn
from torch.nn.utils._per_sample_grad import call_for_per_sample_grads
from torch.nn.utils.rnn import pack_padded_sequence

import fused_lstm

F64 = torch.float64


def grad_samples(module, *args):
    for p in module.parameters():
        p.grad_sample = None
    # batch_size given: the batch size cannot be read off a PackedSequence's flattened tensors.
    out = call_for_per_sample_grads(module, batch_size=3)(*args)
    out = out[0].data if isinstance(out[0], nn.utils.rnn.PackedSequence) else out[0]
    out.pow(2).sum().backward()
    return {name: p.grad_sample for name, p in module.named_parameters()}


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_lstm_grad_sample_matches_nn_lstm(packed):
    torch.manual_seed(0)
    ref = nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True, dtype=F64)
    fused = fused_lstm.LSTM.from_torch(ref)
    x = torch.randn(3, 5, 3, dtype=F64)

    def args(model):
        xx = x.clone()
        if packed:
            return (pack_padded_sequence(xx, [5, 2, 4], batch_first=True, enforce_sorted=False),)
        # nn.LSTM's CPU decomposition under ExpandedWeights picks mkldnn_rnn_layer (and fails)
        # when the input does not require grad; the fused module works either way.
        return (xx.requires_grad_() if model is ref else xx,)

    want = grad_samples(ref, *args(ref))
    got = grad_samples(fused, *args(fused))
    for name, g in want.items():
        assert g is not None and g.shape[0] == 3, name
        torch.testing.assert_close(got[name], g, msg=lambda m, name=name: f"{name}: {m}")


def test_cell_grad_sample_matches_nn_lstmcell_per_sample_loop():
    """nn.LSTMCell itself raises under ExpandedWeights (no rule for aten::lstm_cell): the
    reference is one backward of nn.LSTMCell per sample."""
    torch.manual_seed(0)
    ref = nn.LSTMCell(3, 4, dtype=F64)
    fused = fused_lstm.LSTMCell.from_torch(ref)
    x, h, c = (torch.randn(3, n, dtype=F64) for n in (3, 4, 4))
    got = grad_samples(fused, x, (h, c))
    for b in range(3):
        ref.zero_grad()
        ref(x[b:b + 1], (h[b:b + 1], c[b:b + 1]))[0].pow(2).sum().backward()
        for name, p in ref.named_parameters():
            torch.testing.assert_close(
                got[name][b], p.grad, msg=lambda m, name=name, b=b: f"{name}[{b}]: {m}"
            )
    with pytest.raises(RuntimeError, match="cannot handle function lstm_cell"):
        grad_samples(copy.deepcopy(ref), x, (h, c))

"""fused_lstm.convert / fused_lstm.revert: swap nn.LSTM / nn.LSTMCell inside a model and back."""
import copy

import pytest
import torch
from torch import nn

import fused_lstm
from tests.lstm_testing import assert_close

F64 = torch.float64
I, H = 3, 4  # noqa: E741  (I: the input size, as in nn.LSTM)


class Model(nn.Module):
    """An encoder nn.LSTM, a decoder nn.LSTMCell unrolled in Python, and nested containers."""

    def __init__(self, dtype=None):
        super().__init__()
        self.embed = nn.Linear(I, I, dtype=dtype)
        self.encoder = nn.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=2,
                               batch_first=True, dropout=0.3, dtype=dtype)
        self.decoder = nn.LSTMCell(4, H, dtype=dtype)
        self.heads = nn.ModuleDict({
            "stack": nn.Sequential(nn.LSTM(H, H, bias=False, dtype=dtype)),
            "cells": nn.ModuleList([nn.LSTMCell(H, H, dtype=dtype), nn.Identity()]),
        })
        self.out = nn.Linear(H, 2, dtype=dtype)

    def forward(self, x):  # x: [B, T, I]
        enc, (h, c) = self.encoder(self.embed(x))
        state = None
        steps = []
        for t in range(enc.size(1)):
            state = self.decoder(enc[:, t], state)
            steps.append(state[0])
        seq = torch.stack(steps)                           # [T, B, H]
        seq, _ = self.heads["stack"][0](seq)
        hc = self.heads["cells"][0](seq[-1])
        return self.out(self.heads["cells"][1](hc[0])) + h.sum() + c.sum()


def lstm_types(model):
    return sorted(type(m).__module__ + "." + type(m).__name__ for m in model.modules()
                  if isinstance(m, (nn.LSTM, nn.LSTMCell, fused_lstm.LSTM, fused_lstm.LSTMCell)))


NN_TYPES = sorted(["torch.nn.modules.rnn.LSTM"] * 2 + ["torch.nn.modules.rnn.LSTMCell"] * 2)
FUSED_TYPES = sorted(["fused_lstm.modules.LSTM"] * 2 + ["fused_lstm.cell.LSTMCell"] * 2)


def test_convert_model_outputs_unchanged_and_revert():
    torch.manual_seed(0)
    model = Model(dtype=F64).eval()
    x = torch.randn(2, 5, I, dtype=F64)
    expected = model(x)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    assert lstm_types(model) == NN_TYPES

    same = fused_lstm.convert(model)
    assert same is model  # in place: the root is kept when it is not itself an LSTM
    assert lstm_types(model) == FUSED_TYPES
    assert type(model.encoder) is fused_lstm.LSTM and type(model.decoder) is fused_lstm.LSTMCell
    assert type(model.heads["stack"][0]) is fused_lstm.LSTM
    assert type(model.heads["cells"][0]) is fused_lstm.LSTMCell
    assert model.encoder.dropout == 0.3 and model.encoder.proj_size == 2
    assert_close(model(x), expected, name="converted output")
    assert list(model.state_dict()) == list(sd)
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k
    assert all(not m.training for m in model.modules())

    back = fused_lstm.revert(model)
    assert back is model and lstm_types(model) == NN_TYPES
    assert_close(model(x), expected, name="reverted output")
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k
    # convert(..., back=True) is the same as revert
    fused_lstm.convert(model)
    assert lstm_types(fused_lstm.convert(model, back=True)) == NN_TYPES


def test_convert_not_inplace_leaves_original():
    torch.manual_seed(1)
    model = Model(dtype=F64).eval()
    x = torch.randn(2, 3, I, dtype=F64)
    converted = fused_lstm.convert(model, inplace=False)
    assert converted is not model
    assert lstm_types(model) == NN_TYPES and lstm_types(converted) == FUSED_TYPES
    assert_close(converted(x), model(x), name="output")
    reverted = fused_lstm.revert(converted, inplace=False)
    assert lstm_types(converted) == FUSED_TYPES and lstm_types(reverted) == NN_TYPES


@pytest.mark.parametrize("kind", ["LSTM", "LSTMCell"])
def test_convert_root_module(kind):
    torch.manual_seed(2)
    root = (nn.LSTM(I, H, num_layers=2, batch_first=True, dtype=F64) if kind == "LSTM"
            else nn.LSTMCell(I, H, bias=False, dtype=F64))
    x = torch.randn(2, 3, I, dtype=F64) if kind == "LSTM" else torch.randn(2, I, dtype=F64)
    expected = root(x)
    new = fused_lstm.convert(root)
    assert type(new) is getattr(fused_lstm, kind)
    got = new(x)
    if kind == "LSTM":
        assert_close(got[0], expected[0], name="output")
        got, expected = got[1], expected[1]
    assert_close(got[0], expected[0], name="h")
    assert_close(got[1], expected[1], name="c")
    old = fused_lstm.revert(new)
    assert type(old) is getattr(nn, kind)
    for (n, p), (_, q) in zip(old.named_parameters(), root.named_parameters()):
        assert torch.equal(p, q), n


@pytest.mark.parametrize("dtype", [torch.float32, F64, torch.bfloat16])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_convert_preserves_dtype_device_mode_and_requires_grad(dtype, training):
    model = Model().to(dtype).train(training)
    model.encoder.weight_hh_l0.requires_grad_(False)   # partly frozen
    for p in model.decoder.parameters():               # fully frozen
        p.requires_grad_(False)
    before = {n: (p.dtype, p.device, p.requires_grad) for n, p in model.named_parameters()}
    modes = {n: m.training for n, m in model.named_modules()}
    for direction in ("convert", "revert"):
        model = getattr(fused_lstm, direction)(model)
        assert {n: (p.dtype, p.device, p.requires_grad)
                for n, p in model.named_parameters()} == before, direction
        assert {n: m.training for n, m in model.named_modules()} == modes, direction


def test_optimizer_created_after_convert_trains_the_model():
    torch.manual_seed(3)
    model = fused_lstm.convert(Model())
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    assert {id(p) for g in opt.param_groups for p in g["params"]} == \
        {id(p) for p in model.parameters()}
    x, y = torch.randn(4, 5, I), torch.randn(4, 2)
    before = copy.deepcopy(model.state_dict())
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    for name in ("encoder.weight_ih_l0", "encoder.weight_hr_l1_reverse", "decoder.weight_hh",
                 "heads.stack.0.weight_hh_l0", "heads.cells.0.bias_ih"):
        assert not torch.equal(model.state_dict()[name], before[name]), f"{name} did not train"


def test_converted_and_nn_models_train_identically():
    """One SGD step on the nn model and on its converted copy gives the same weights (float64)."""
    torch.manual_seed(4)
    model = Model(dtype=F64)
    model.encoder.dropout = 0.0  # no random masks, so both models see the same computation
    fused = fused_lstm.convert(model, inplace=False)
    x, y = torch.randn(3, 4, I, dtype=F64), torch.randn(3, 2, dtype=F64)
    for m in (model, fused):
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        nn.functional.mse_loss(m(x), y).backward()
        opt.step()
    sd_a, sd_b = model.state_dict(), fused.state_dict()
    for k in sd_a:
        assert_close(sd_b[k], sd_a[k], name=k)


def test_convert_shared_module_stays_shared_and_leaves_others_alone():
    class MyLSTM(nn.LSTM):  # a subclass may change forward: not swapped
        pass

    shared = nn.LSTM(I, H)
    model = nn.Sequential(shared, nn.Sequential(shared), MyLSTM(I, H), nn.GRU(I, H),
                          fused_lstm.LSTM(I, H))
    fused_lstm.convert(model)
    assert type(model[0]) is fused_lstm.LSTM and model[1][0] is model[0]
    assert type(model[2]) is MyLSTM and type(model[3]) is nn.GRU
    assert type(model[4]) is fused_lstm.LSTM
    assert len(list(model.parameters())) == 4 * 3 + 4  # the shared one is counted once
    fused_lstm.revert(model)
    assert type(model[0]) is nn.LSTM and model[1][0] is model[0]
    assert type(model[4]) is nn.LSTM


def test_convert_is_exported():
    assert {"LSTMCell", "convert", "revert"} <= set(fused_lstm.__all__)

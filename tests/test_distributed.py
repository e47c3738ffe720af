"""DistributedDataParallel over gloo, 2 CPU processes: a model holding fused_lstm.LSTM trains like
one process on the full batch (same gradients, same parameters after optimizer steps).

DDP needs nothing special from the module: its parameters are ordinary nn.Parameters and its
backward is an autograd.Function, so DDP's gradient hooks and all-reduce see the same tensors as
with nn.LSTM. The same holds with NCCL on GPUs (README: "Distributed training")."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import fused_lstm

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with gloo is not available")

WORLD = 2
STEPS = 3


class Tagger(nn.Module):
    """A small sequence model: bidirectional 2-layer LSTM (with proj_size) and a linear head."""

    def __init__(self):
        super().__init__()
        self.lstm = fused_lstm.LSTM(5, 8, num_layers=2, bidirectional=True, proj_size=4, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.lstm(x)[0])


def make_data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(STEPS, 4 * WORLD, 6, 5, generator=g), torch.randn(STEPS, 4 * WORLD, 6, 3, generator=g)


def train(model, batches, targets):
    """STEPS of SGD on mean squared error; returns the gradients of the last step."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for x, y in zip(batches, targets):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
    return [p.grad.clone() for p in model.parameters()]


def worker(rank, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        torch.manual_seed(0)
        model = nn.parallel.DistributedDataParallel(Tagger())
        x, y = make_data()
        shard = slice(rank * 4, (rank + 1) * 4)  # each rank: its half of the global batch of 8
        grads = train(model, x[:, shard], y[:, shard])
        torch.save({"grads": grads, "params": [p.detach() for p in model.module.parameters()]},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_gloo_matches_single_process(tmp_path):
    mp.start_processes(worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True,
                       start_method="spawn")
    torch.manual_seed(0)
    single = Tagger()
    x, y = make_data()
    grads = train(single, x, y)  # the full batch: the mean loss DDP's averaged gradients match
    for rank in range(WORLD):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        for name, (got, want) in zip([n for n, _ in single.named_parameters()], zip(result["grads"], grads)):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=lambda m: f"grad {name}: {m}")
        for got, want in zip(result["params"], single.parameters()):
            torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-6)

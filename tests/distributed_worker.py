"""One rank of tests/test_distributed.py's DDP run, started as its own process:

    RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 \
        python3 tests/distributed_worker.py OUT_DIR

(a script rather than a multiprocessing target, so it runs the same whatever way pytest imported
the test module). Also the shared model, data and training loop for the single-process side."""
import os
import sys

import torch
from torch import nn

import fused_lstm

WORLD = 2
STEPS = 3
PER_RANK = 4  # batch rows per rank; the global batch is WORLD * PER_RANK


class Tagger(nn.Module):
    """A small sequence model: bidirectional 2-layer LSTM (with proj_size) and a linear head."""

    def __init__(self):
        super().__init__()
        self.lstm = fused_lstm.LSTM(
            5, 8, num_layers=2, bidirectional=True, proj_size=4, batch_first=True
        )
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.lstm(x)[0])


def make_data():
    g = torch.Generator().manual_seed(1)
    shape = (STEPS, WORLD * PER_RANK, 6)
    return torch.randn(*shape, 5, generator=g), torch.randn(*shape, 3, generator=g)


def train(model, batches, targets):
    """STEPS of SGD on mean squared error; returns the gradients of the last step."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for x, y in zip(batches, targets):
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
    return [p.grad.clone() for p in model.parameters()]


def main(out_dir):
    import torch.distributed as dist

    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    dist.init_process_group("gloo")
    try:
        torch.manual_seed(0)
        model = nn.parallel.DistributedDataParallel(Tagger())
        x, y = make_data()
        shard = slice(
            rank * PER_RANK, (rank + 1) * PER_RANK
        )  # this rank's part of the global batch
        grads = train(model, x[:, shard], y[:, shard])
        torch.save({"grads": grads, "params": [p.detach() for p in model.module.parameters()]},
                   os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()  # both ranks have written their results
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
    # Leave without interpreter teardown. A gloo worker thread can still be dropping its last
    # reference to a collective's tensor while the interpreter finalizes; when that tensor's
    # Python object is owned by C++, the drop needs the GIL, the finalizing interpreter ends the
    # thread instead, and the process aborts ("terminate called without an active exception")
    # after all its work is done. Seen once in CI on torch 2.13 here and about 1 run in 10 of
    # benchmarks/train_char_lm.py under torchrun on torch 2.11: a torch/gloo teardown race, not a
    # result of this test, which checks the files both ranks wrote (closed by torch.save).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)

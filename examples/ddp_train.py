"""Data-parallel training of a model holding fused_lstm.LSTM with DistributedDataParallel.

    torchrun --nproc-per-node=2 examples/ddp_train.py
    (multi-node: add --nnodes, --node-rank and --rdzv-endpoint)

NCCL with one GPU per process when CUDA is available, gloo on CPU otherwise, so the same script
runs on a CPU-only machine. Each rank trains on its own batches; DDP averages the gradients, so
every rank ends with the same parameters (printed as a checksum at the end).
"""
import os

import torch
import torch.distributed as dist

import fused_lstm


def main():
    use_cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if use_cuda else "gloo")
    rank, local_rank = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    if use_cuda:
        torch.cuda.set_device(local_rank)
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")

    model = torch.nn.Sequential(fused_lstm.LSTM(16, 32, num_layers=2, batch_first=True),
                                ).to(device)
    # DDP broadcasts rank 0's parameters at construction, then all-reduces every gradient.
    model = torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[local_rank] if use_cuda else None)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    torch.manual_seed(rank)  # each rank its own data
    for _ in range(3):
        x = torch.randn(4, 10, 16, device=device)  # [batch, time, features]
        output, _ = model(x)
        loss = output.pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    checksum = sum(p.double().sum().item() for p in model.parameters())
    print(f"rank {rank}: loss {loss.item():.6f} parameter checksum {checksum:.12f}", flush=True)
    dist.barrier()  # every rank done with its collectives before any leaves the group
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

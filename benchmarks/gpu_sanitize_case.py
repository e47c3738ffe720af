"""A small CUDA forward+backward over every kernel variant, for compute-sanitizer.

Sizes are chosen to hit partial tiles (H=20: not a multiple of 16), the 16-byte-load path
(H=32, P % 8 == 0) and the scalar-load path, the small-batch split-K SIMT tile (B=5) and the
16 x 16 one (B=20), with the persistent and the per-step kernels (persistent includes the
tensor-core backward for half types), in float32, float64, float16 and bfloat16, with and
without projection, packed and padded, both directions. Prints the worst |CUDA - CPU(fp64)| per
case; sanitizer errors make compute-sanitizer exit non-zero (--error-exitcode).
"""

import os
import sys

import torch

import fused_lstm


def run_case(dtype, batch, hidden, proj, packed, reverse):
    torch.manual_seed(0)
    steps, inputs = 3, 7
    lstm = fused_lstm.LSTM(inputs, hidden, proj_size=proj, bidirectional=reverse,
                           dtype=torch.float64)
    x = torch.randn(steps, batch, inputs, dtype=torch.float64)
    if packed:  # sorted lengths 3, 3, 2, 1, 1, 3, 3, 2, ... -> sorted descending
        lengths = sorted(([3, 3, 2, 1, 1] * batch)[:batch], reverse=True)
        x = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor(lengths))
    ref_out, (ref_h, _) = lstm(x)
    cuda_lstm = fused_lstm.LSTM.from_torch(lstm.to_torch()).to("cuda", dtype)
    x_cuda = x.to("cuda", dtype) if not packed else torch.nn.utils.rnn.PackedSequence(
        x.data.to("cuda", dtype), x.batch_sizes)
    if not packed:
        x_cuda.requires_grad_(True)
    out, (h, c) = cuda_lstm(x_cuda)
    out_data = out.data if packed else out
    (out_data.float().square().sum() + h.float().sum() + c.float().sum()).backward()
    torch.cuda.synchronize()
    ref_data = ref_out.data if packed else ref_out
    err = (out_data.double().cpu() - ref_data).abs().max().item()
    return err


def main():
    assert torch.cuda.is_available(), "needs a GPU"
    quick = "--quick" in sys.argv  # scalar- and vector-load kernels, fewest launches
    cases = [(dtype, batch, hidden, proj, packed, reverse, algo)
             for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16)
             for batch in (5, 20)
             for hidden, proj in (((20, 0), (32, 0)) if quick else ((20, 0), (32, 0), (20, 8)))
             for packed in ((True,) if quick else (False, True))
             for reverse in ((True,) if quick else (False, True))
             for algo in ("persistent", "step")]
    for dtype, batch, hidden, proj, packed, reverse, algo in cases:
        os.environ["FUSED_LSTM_CUDA_ALGO"] = algo
        err = run_case(dtype, batch, hidden, proj, packed, reverse)
        print(f"{algo:10s} {str(dtype):15s} B={batch:2d} H={hidden:2d} P={proj} "
              f"packed={packed!s:5s} bidirectional={reverse!s:5s} max|cuda-cpu|={err:.2e}")


if __name__ == "__main__":
    main()

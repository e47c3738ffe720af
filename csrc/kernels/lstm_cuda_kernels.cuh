// CUDA kernels of the per-step LSTM recurrence. Torch-free (CUDA runtime and headers only), so
// plain `nvcc -c -Xptxas -v csrc/kernels/nvcc_check.cu` compile-checks them on any machine.
//
// The one header the glue (csrc/cuda/lstm_cuda.cu) and nvcc_check.cu include. What is where:
//   kernels/cuda_common.cuh       what both directions share: DeviceScalar (storage <-> arithmetic
//                                 types), the tile geometry constants, the tensor-core precision
//                                 helpers; Notes [K staging], [Persistent sequence kernels] and
//                                 [Tensor-core precision].
//   kernels/forward_tiles.cuh     the forward: step epilogues, the SIMT, split-K, 4-warp and 8-warp
//                                 tensor-core tiles, the per-step and persistent forward kernels;
//                                 Note [Fused forward step].
//   kernels/backward_kernels.cuh  the backward: pointwise kernel, SIMT backward step and persistent
//                                 kernels, tensor-core persistent backward; Note [Tensor-core
//                                 backward recurrence].
//   kernels/launch.cuh            the host side: DeviceLimits, widest_k_chunk, occupancy checks,
//                                 ForwardTileKind / forward_tile_kind, the launch_* / prepare_*
//                                 functions.
#pragma once

#include "kernels/backward_kernels.cuh"
#include "kernels/cuda_common.cuh"
#include "kernels/forward_tiles.cuh"
#include "kernels/launch.cuh"
